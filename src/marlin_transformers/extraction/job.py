"""`marlin extract` over many videos: input discovery, output names, the manifest, resuming and sharding.

Each input gets `OUT/<name>.npy` (written to a temporary file and renamed, so a killed job never leaves half a
file) and one JSON line in `OUT/manifest.jsonl`. A re-run skips inputs whose last line says `ok` and whose npy
exists, and retries the rest. Under `accelerate launch`, process `r` of `n` takes every n-th input, appends to its
own `manifest.rank<r>.jsonl`, and the main process folds those into `manifest.jsonl` at the end.

Outputs are bound to their input and settings: a record holds the input's identity (resolved path, size, mtime) and
the fingerprint of the model and options; a re-run skips an input only when both match (a changed file is done
again), a folder made with other settings is refused with one line, and an output name once given to one input is
never given to another in a later run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..exceptions import MarlinError
from ..video.decoding import videos_in_folder

LIST_EXTENSIONS = {".txt", ".lst", ".list"}
MANIFEST = "manifest.jsonl"


def discover_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files, folders (recursively, by video extension) and text files listing paths (one per line).

    Paths that do not exist are kept, so that they get their own error line. Duplicates are dropped, order kept.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(videos_in_folder(path))
        elif path.suffix.lower() in LIST_EXTENSIONS and path.is_file():
            for line in path.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    listed = Path(line)
                    found.append(listed if listed.is_absolute() else path.parent / listed)
        else:
            found.append(path)
    unique = dict.fromkeys(p.absolute() for p in found)
    return list(unique)


def output_names(inputs: list[Path]) -> dict[Path, str]:
    """`<stem>.npy` per input; inputs sharing a stem all get `<stem>-<8 hex of their path>.npy` instead."""
    counts: dict[str, int] = {}
    for path in inputs:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    return {path: f"{path.stem}.npy" if counts[path.stem] == 1 else hashed_output_name(path) for path in inputs}


def hashed_output_name(path: Path) -> str:
    """`<stem>-<8 hex of the path>.npy`: the name of an input whose stem another input has (in this run or before)."""
    return f"{path.stem}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}.npy"


LOCK = ".marlin-extract.lock"


def lock_folder(out_dir: Path):
    """Hold `out_dir` for this run: an exclusive `flock` on its lock file, which the OS drops when the process ends,
    however it ends (so a killed run never leaves the folder locked). Returns the open file: closing it (as a `with`
    block does, on any exit) releases the folder."""
    import fcntl

    handle = open(out_dir / LOCK, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise MarlinError(
            f"{out_dir}: another marlin extract is writing into this folder; wait for it to end or use another --out."
        ) from None
    return handle


def input_identity(path: Path) -> dict | None:
    """What a record binds its output to: the input's resolved path, size and modification time (None if missing)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return {"resolved": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def model_identity(model: str | os.PathLike) -> str | dict:
    """A model as outputs are bound to it: a Hub id as given; a local file or folder by its resolved path and the
    size and modification time of its weight and config files (so a folder overwritten in place is another model)."""
    path = Path(model)
    if not path.exists():
        return str(model)
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.iterdir() if p.suffix in {".json", ".safetensors", ".pt", ".bin", ".ckpt"})
    )
    stats = {f.name: f.stat() for f in files}
    return {"resolved": str(path.resolve()), "files": {name: [s.st_size, s.st_mtime_ns] for name, s in stats.items()}}


def settings_fingerprint(settings: dict) -> str:
    """16 hex digits of SHA-256 over the settings that make the features (model identity and options)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_manifest_records(out_dir: Path) -> dict[str, dict]:
    """Last record per input over `manifest.jsonl` and any per-process shards left by an interrupted run."""
    records: dict[str, dict] = {}
    for manifest in [out_dir / MANIFEST, *sorted(out_dir.glob("manifest.rank*.jsonl"))]:
        if not manifest.is_file():
            continue
        for line in manifest.read_text().splitlines():
            try:
                record = json.loads(line)
                records[record["input"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by a crash: that input is simply done again
    return records


def _append_lines(path: Path, lines: list[str]) -> None:
    """Append whole lines, synced; after a line torn by a crash (no final newline), start on a new line, so the torn
    fragment stays one unreadable line (skipped on read) and never swallows a record."""
    torn = False
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as file:
            file.seek(-1, os.SEEK_END)
            torn = file.read(1) != b"\n"
    with open(path, "a") as file:
        file.write(("\n" if torn else "") + "".join(line + "\n" for line in lines))
        file.flush()
        os.fsync(file.fileno())


def _append_line(path: Path, record: dict) -> None:
    _append_lines(path, [json.dumps(record)])


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(partial, "wb") as file:
        np.save(file, array)
    os.replace(partial, path)


@dataclass
class JobSummary:
    """Inputs extracted, skipped as already done, and failed; over every process of a multi-process run."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    is_main_process: bool = True  # the one process that reports a multi-process run


def run_extraction(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    make_extractor: Callable[[str], object],
    metadata: dict | None = None,
    show_progress: bool = True,
    settings: dict | None = None,
) -> JobSummary:
    """Extract every input into `out_dir`, resuming and sharding as described in the module docstring.

    Args:
        make_extractor: called once with the process's device (e.g. "cpu", "cuda:1"); returns a
            `MarlinFeatureExtractor`-like callable `(path, progress=bar) -> VideoFeatures`. Called only if there is
            something to do.
        metadata: extra fields for every manifest line (model, dtype...).
        settings: what makes the features (model identity, dtype, cropping, windows...): each line records their
            `settings_fingerprint`, and a folder holding features made with other settings is refused (one folder,
            one feature set: the linear probe and the readers of a folder take its features as comparable).
    """
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    # Without a GPU, processes started by `accelerate launch`/`torchrun` share the work over gloo.
    state = PartialState(cpu=not torch.cuda.is_available())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_inputs = discover_inputs(inputs)
    names = output_names(all_inputs)
    # One run at a time per folder (the main process holds it for the run's processes, released on any exit).
    with lock_folder(out_dir) if state.is_main_process else contextlib.nullcontext():
        # Per-process records an interrupted multi-process run left behind join the manifest before anything else.
        if state.is_main_process and any(out_dir.glob("manifest.rank*.jsonl")):
            _merge_shards(out_dir)
        state.wait_for_everyone()
        previous = read_manifest_records(out_dir)
        fingerprint = settings_fingerprint(settings or {})
        done_before = [r for r in previous.values() if r.get("status") == "ok"]
        other = [r for r in done_before if r.get("fingerprint") != fingerprint]
        if other:
            changed = sorted(k for k in (settings or {}) if other[0].get("settings", {}).get(k) != settings[k])
            said = ", ".join(changed) if changed else "unrecorded: made by an earlier version"
            raise MarlinError(
                f"{out_dir}: holds features made with other settings ({said}); extract into another --out folder "
                "(one folder holds one model's features made one way)."
            )
        # An output name a previous run gave another input is never reused: this input gets its hashed name.
        taken = {r["output"]: r["input"] for r in done_before if r.get("output")}
        for path in all_inputs:
            if taken.get(names[path], str(path)) != str(path):
                names[path] = hashed_output_name(path)
        shard = all_inputs[state.process_index :: state.num_processes]
        manifest = out_dir / (MANIFEST if state.num_processes == 1 else f"manifest.rank{state.process_index}.jsonl")

        summary = JobSummary()
        todo = []
        for path in shard:
            record = previous.get(str(path))
            if (
                record
                and record.get("status") == "ok"
                and record.get("identity") == input_identity(path)  # the same file, unchanged since
                and (out_dir / record["output"]).is_file()
            ):
                summary.skipped += 1
            else:
                todo.append(path)

        extractor = make_extractor(str(state.device)) if todo else None
        label = f"[{state.process_index}] " if state.num_processes > 1 else ""
        videos_bar = tqdm(todo, desc=f"{label}videos", unit="video", disable=not show_progress, position=0)
        for path in videos_bar:
            videos_bar.set_postfix_str(path.name[-40:])
            record = {"input": str(path), "status": "ok", "error": None, "output": names[path], **(metadata or {})}
            record.update(getattr(extractor, "settings", {}))
            record.update(identity=input_identity(path), fingerprint=fingerprint, settings=settings or {})
            started = time.perf_counter()
            windows_bar = tqdm(
                desc=f"{label}windows", unit="window", disable=not show_progress, position=1, leave=False
            )
            try:
                result = extractor(path, progress=windows_bar)
                save_npy_atomic(out_dir / names[path], result.features)
                record.update(windows=result.windows, shape=list(result.features.shape))
                summary.done += 1
            except Exception as error:  # one bad input never stops the job
                message = str(error) if isinstance(error, MarlinError) else f"{type(error).__name__}: {error}"
                message = " ".join(message.split())
                record.update(status="error", error=message, output=None, windows=[])
                summary.failed += 1
                named = message if str(path) in message else f"{path}: {message}"  # our errors name the input already
                tqdm.write(f"marlin extract: {named}", file=sys.stderr)
            finally:
                windows_bar.close()
            record["seconds"] = round(time.perf_counter() - started, 3)
            _append_line(manifest, record)

        if state.num_processes > 1:
            state.wait_for_everyone()
            if state.is_main_process:
                _merge_shards(out_dir)
            counts = torch.tensor([summary.done, summary.skipped, summary.failed], device=state.device)
            torch.distributed.all_reduce(counts)  # the whole run's counts on every process, so all exit alike
            done, skipped, failed = (int(count) for count in counts.tolist())
            summary = JobSummary(done, skipped, failed, is_main_process=state.is_main_process)
    return summary


def _merge_shards(out_dir: Path) -> None:
    """Append the per-process shards to `manifest.jsonl`, then remove them (main process only)."""
    shards = sorted(out_dir.glob("manifest.rank*.jsonl"))
    _append_lines(out_dir / MANIFEST, [line for shard in shards for line in shard.read_text().splitlines() if line])
    for shard in shards:
        shard.unlink()
