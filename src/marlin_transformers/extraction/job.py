"""`marlin extract` over many videos: input discovery, output names, the manifest, resuming and sharding.

Each input gets `OUT/<name>.npy` (written to a temporary file and renamed, so a killed job never leaves half a
file) and one JSON line in `OUT/manifest.jsonl`. A re-run skips inputs whose last line says `ok` and whose npy
exists, and retries the rest. Under `accelerate launch`, process `r` of `n` takes every n-th input, appends to its
own `manifest.rank<r>.jsonl`, and the main process folds those into `manifest.jsonl` at the end.

Outputs are bound to their input and settings: a record holds the input's identity (resolved path, size, mtime) and
the fingerprint of the model and options; a re-run skips an input only when both match (a changed file is done
again), a folder made with other settings is refused with one line, and an output name once given to one input is
never given to another in a later run.

Faults: a record is appended in one write, cut back if the write fails; the next run cuts off a torn tail, skips lines
that are not records, merges stranded shards and removes temporary files; a full disk stops the run in one line, a
file-size limit fails the inputs it hits (docs/reliability.md). With `--all-faces` the output is `OUT/<name>.npz`,
one set of arrays per face.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import MarlinError
from ..records import (  # noqa: F401  (LOCK, MANIFEST, PARTIAL_SUFFIX: the folder's names, as the job's readers know them)
    LOCK,
    MANIFEST,
    PARTIAL_SUFFIX,
    OutputWriteError,
    append_lines,
    lock_folder,
    merge_manifest_shards,
    read_records,
    remove_stale_partials,
    repair_torn_tail,
    save_arrays_atomic,
)
from ..video.decoding import VIDEO_EXTENSIONS, videos_in_folder
from .pipeline import error_text, iter_outcomes

LIST_EXTENSIONS = {".txt", ".lst", ".list"}


def discover_inputs(inputs: Iterable[str | os.PathLike], empty_folders: list[Path] | None = None) -> list[Path]:
    """Expand files, folders (recursively, by video extension) and text files listing paths (one per line).

    Paths are made absolute and normalized (`sub/../sub/a.mp4` is `sub/a.mp4`); two spellings of one file (a
    symbolic link, say) count once, the first kept. Paths that do not exist are kept, so that they get their own error
    line. Folders holding no video are appended to `empty_folders` when it is given.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            videos = videos_in_folder(path)
            found.extend(videos)
            if not videos and empty_folders is not None:
                empty_folders.append(path)
        elif path.suffix.lower() in LIST_EXTENSIONS and path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    listed = Path(line)
                    found.append(listed if listed.is_absolute() else path.parent / listed)
        else:
            found.append(path)
    unique: dict[Path, Path] = {}
    for path in found:
        path = Path(os.path.normpath(path.absolute()))
        unique.setdefault(path.resolve() if path.exists() else path, path)
    return list(unique.values())


NAME_MAX = 255  # bytes in a file name on Linux and macOS file systems


def output_names(inputs: list[Path], suffix: str = ".npy") -> dict[Path, str]:
    """`<stem><suffix>` per input; inputs sharing a stem all get `<stem>-<8 hex of their path><suffix>` instead, and
    so does a stem too long for a file name (shortened to fit)."""
    counts: dict[str, int] = {}
    for path in inputs:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    names = {}
    for path in inputs:
        name = f"{path.stem}{suffix}"
        fits = counts[path.stem] == 1 and len(name.encode()) <= NAME_MAX
        names[path] = name if fits else hashed_output_name(path, suffix)
    return names


def hashed_output_name(path: Path, suffix: str = ".npy") -> str:
    """`<stem>-<8 hex of the path><suffix>`: the name of an input whose stem another input has (in this run or
    before), the stem cut (on a character boundary) so that the name fits in `NAME_MAX` bytes."""
    suffix = f"-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}{suffix}"
    stem = path.stem.encode()[: NAME_MAX - len(suffix)].decode(errors="ignore")
    return stem + suffix


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
    """Last record per input over `manifest.jsonl` and any per-process shards left by an interrupted run.

    A line that is not a whole record of this format (cut short by a crash, garbage, another program's lines, an
    output name that is not a plain file name of this folder) is skipped: that input is simply done again."""
    return read_records(out_dir, "input", is_manifest_record)


def is_manifest_record(record) -> bool:
    """A manifest line as `run_extraction` writes it: an `input`, a `status`, and an `output` that is a file name in
    the folder (or None for a failed input)."""
    if not isinstance(record, dict) or not isinstance(record.get("input"), str):
        return False
    output = record.get("output")
    if record.get("status") == "ok":
        return isinstance(output, str) and output == Path(output).name and output not in ("", ".", "..")
    return record.get("status") == "error"


def _append_line(path: Path, record: dict) -> None:
    append_lines(path, [json.dumps(record)])


@dataclass
class JobSummary:
    """Inputs extracted, skipped as already done, and failed; over every process of a multi-process run."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    is_main_process: bool = True  # the one process that reports a multi-process run

    def gathered(self, state, out_dir: Path, is_record) -> JobSummary:
        """The end of a multi-process run (every process calls it): the main process merges the per-process records
        (`is_record` says what one is) into the manifest, and every process gets the whole run's counts, so all exit
        alike."""
        import torch

        state.wait_for_everyone()
        if state.is_main_process:
            merge_manifest_shards(out_dir, is_record)
        counts = torch.tensor([self.done, self.skipped, self.failed], device=state.device)
        torch.distributed.all_reduce(counts)
        done, skipped, failed = (int(count) for count in counts.tolist())
        return JobSummary(done, skipped, failed, is_main_process=state.is_main_process)


def run_extraction(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    make_extractor: Callable[[str], object],
    metadata: dict | None = None,
    show_progress: bool = True,
    settings: dict | None = None,
    output_suffix: str = ".npy",
    num_workers: int = 0,
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
        output_suffix: ".npy", or ".npz" for an extractor whose results hold one set of arrays per face.
        num_workers: processes decoding and cropping while the model encodes (`pipeline.iter_outcomes`); 0 runs
            each video in turn in this process. Records and outputs come in input order either way.
    """
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    # Without a GPU, processes started by `accelerate launch`/`torchrun` share the work over gloo.
    state = PartialState(cpu=not torch.cuda.is_available())
    out_dir = Path(out_dir)
    inputs = [os.fspath(i) for i in inputs]
    empty_folders: list[Path] = []
    all_inputs = discover_inputs(inputs, empty_folders)
    if state.is_main_process:
        for folder in empty_folders:
            print(f"marlin extract: {folder}: folder holds no video files; skipped.", file=sys.stderr)
    if not all_inputs:
        raise MarlinError(
            f"{' '.join(inputs)}: no video found (folders are searched for {', '.join(VIDEO_EXTENSIONS)}); pass video "
            "files, folders holding them, or a .txt list."
        )
    names = output_names(all_inputs, output_suffix)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file of that name, a read-only parent
        raise MarlinError(
            f"{out_dir}: cannot make this output folder ({error.strerror}); use another folder.", parameter="out_dir"
        ) from None
    # One run at a time per folder (the main process holds it for the run's processes, released on any exit).
    with lock_folder(out_dir) if state.is_main_process else contextlib.nullcontext() as lock:
        # The main process, holding the lock (so no run of ours is writing here), tidies what a crash left: a torn
        # manifest tail, records stranded in per-process shards, temporary files.
        if state.is_main_process:
            repair_torn_tail(out_dir / MANIFEST, is_manifest_record)
            if any(out_dir.glob("manifest.rank*.jsonl")):
                merge_manifest_shards(out_dir, is_manifest_record)
            remove_stale_partials(out_dir)
        state.wait_for_everyone()
        previous = read_manifest_records(out_dir)
        fingerprint = settings_fingerprint(settings or {})
        done_before = [r for r in previous.values() if r.get("status") == "ok"]
        other = [r for r in done_before if r.get("fingerprint") != fingerprint]
        if other:
            before = other[0].get("settings") if isinstance(other[0].get("settings"), dict) else {}
            changed = sorted(k for k in (settings or {}) if before.get(k) != settings[k])
            said = ", ".join(changed) if changed else "unrecorded: made by an earlier version"
            raise MarlinError(
                f"{out_dir}: holds features made with other settings ({said}); extract into another folder "
                "(one folder holds one model's features made one way).",
                parameter="out_dir",
            )
        # An output name a previous run gave another input is never reused: this input gets its hashed name.
        taken = {r["output"]: r["input"] for r in done_before if r.get("output")}
        for path in all_inputs:
            if taken.get(names[path], str(path)) != str(path):
                names[path] = hashed_output_name(path, output_suffix)
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
        videos_bar = tqdm(total=len(todo), desc=f"{label}videos", unit="video", disable=not show_progress, position=0)
        windows_bar = tqdm(desc=f"{label}windows", unit="window", disable=not show_progress, position=1, leave=False)
        private = (lock.fileno(),) if lock is not None else ()
        for outcome in iter_outcomes(extractor, todo, num_workers, progress=windows_bar, private_files=private):
            path = outcome.path
            videos_bar.set_postfix_str(path.name[-40:])
            record = {"input": str(path), "status": "ok", "error": None, "output": names[path], **(metadata or {})}
            record.update(getattr(extractor, "settings", {}))
            record.update(identity=input_identity(path), fingerprint=fingerprint, settings=settings or {})
            try:
                if outcome.error is not None:
                    raise outcome.error
                result = outcome.result
                save_arrays_atomic(out_dir / names[path], result.arrays())
                if result.subjects is None:
                    record.update(windows=result.windows, shape=list(result.features.shape))
                else:  # every face: its windows and time span here, its features and boxes in the .npz
                    record.update(windows=[], subjects=[subject.record() for subject in result.subjects])
                summary.done += 1
            except OutputWriteError as error:
                if error.stops_run:  # a full disk: every later write would fail too
                    raise
                record.update(status="error", error=str(error), output=None, windows=[])
                summary.failed += 1
                tqdm.write(f"marlin extract: {error}", file=sys.stderr)
            except Exception as error:  # one bad input never stops the job
                message = error_text(error)
                record.update(status="error", error=message, output=None, windows=[])
                summary.failed += 1
                named = message if str(path) in message else f"{path}: {message}"  # our errors name the input already
                tqdm.write(f"marlin extract: {named}", file=sys.stderr)
            record["seconds"] = round(outcome.seconds, 3)
            _append_line(manifest, record)
            videos_bar.update(1)
        windows_bar.close()
        videos_bar.close()

        if state.num_processes > 1:
            summary = summary.gathered(state, out_dir, is_manifest_record)
    return summary
