"""The one resumable job: items in, one output set and one manifest line each, safe to kill, resume and share.

`marlin extract` (`extraction.job`), `marlin prepare-faces` / `prepare-ytf` (`pretraining.preparation`) and the
downstream tasks' face clips (`data.task_preparation`, which `prepare_celebvhq` uses too) are each a `run_job` over
their items with a work function of their own. The runner owns the rest (over `records`): the folder and its lock
(one run at a time); the repair of what a killed run left (a torn manifest tail, records stranded in per-process
shards, temporary files); the settings fingerprint that binds every record to what made it (a folder made with other
settings is refused in one line naming what changed); the skip of items done before from the same input
(`input_identity`) whose outputs are still there; under `torchrun` / `accelerate launch` the items spread over the
processes by rank (process `r` of `n` takes every n-th, appends to `manifest.rank<r>.jsonl`, merged at the end); the
progress bar, the error lines and the counts.

A record is one JSON line: the item's own fields (`Item.fields`, the key among them), `status` ("ok" or "error"),
`error`, what the work said of the outputs (`Outcome.fields`), `identity`, `fingerprint`, `settings`, what the work
said of their content (`Outcome.details`), `seconds`. It is appended after the item's outputs are whole, so a line
never points at a partial file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import records
from .exceptions import DatasetError, MarlinError


@dataclass(frozen=True)
class Item:
    """One input of a job: the record fields that name it (the job's key among them) and the file or folder it is
    read from (what its records are bound to)."""

    fields: dict
    source: Path


@dataclass
class Outcome:
    """What the work made of one item.

    Attributes:
        fields: record fields saying what was written (output names...), placed before the binding.
        details: record fields saying what the outputs hold (windows, shapes...), placed after it.
        error: what failed the item (an exception or its line); None when it is done. An `OutputWriteError` that
            `stops_run` (a full disk) stops the run.
        seconds: how long the item took.
    """

    item: Item
    fields: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    error: BaseException | str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class JobKind:
    """What a job's folder holds.

    Attributes:
        command: names the job in messages ("marlin extract").
        key: the record field naming an item ("input", "video_id"); one record per key is current.
        is_record: whether a parsed manifest line is a whole record of this job.
        outputs: the files of a done record, relative to the folder (all must exist for the item to be skipped).
        made: what the folder holds, for the refusal of other settings ("features made", "videos prepared").
        nested: outputs lie in subfolders, so temporary files are looked for there too.
    """

    command: str
    key: str
    is_record: Callable[[object], bool]
    outputs: Callable[[dict], list[str]]
    made: str = "outputs made"
    nested: bool = False


@dataclass(frozen=True)
class Shard:
    """This process's part of a run, as the work sees it.

    Attributes:
        device: the process's device ("cpu", "cuda:1").
        label: "[r] " under several processes ("" alone), for progress bars.
        private_files: descriptors a forked worker must not keep open (the folder's lock).
        show_progress: whether bars are drawn.
        previous: the last record per key found when the run started.
        timings: where the work's time goes, seconds by stage (`timed`); the run's `JobSummary.timings`.
    """

    device: str
    label: str
    private_files: tuple[int, ...]
    show_progress: bool
    previous: dict[str, dict]
    timings: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def timed(timings: dict[str, float] | None, stage: str) -> Iterator[None]:
    """Add the block's wall-clock seconds to `timings[stage]` (nothing when `timings` is None): the one stage clock of
    the jobs, two `perf_counter` calls a block."""
    if timings is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def timed_iter(iterable: Iterable, timings: dict[str, float] | None, stage: str) -> Iterator:
    """The items of `iterable`, the seconds spent making each added to `timings[stage]`."""
    iterator = iter(iterable)
    while True:
        with timed(timings, stage):
            item = next(iterator, _END)
        if item is _END:
            return
        yield item


_END = object()


Work = Callable[[list[Item], Shard], Iterable[Outcome]]
"""Does the items left to do (a process's share, never empty); yields one `Outcome` per item, in any order."""


@dataclass
class JobSummary:
    """Items done, skipped as already done, and failed; over every process of a multi-process run. `timings`: where
    this process's time went, seconds by stage (what the work recorded with `timed`; e.g. `marlin extract`'s model
    load, decode, detection, tracking, crop, encode, write)."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    is_main_process: bool = True  # the one process that reports a multi-process run
    timings: dict[str, float] = field(default_factory=dict)

    def gathered(self, state, out_dir: Path, is_record) -> JobSummary:
        """The end of a multi-process run (every process calls it): the main process merges the per-process records
        (`is_record` says what one is) into the manifest, and every process gets the whole run's counts, so all exit
        alike. Returns once the merge is done (the counts are summed after it)."""
        import torch

        state.wait_for_everyone()
        if state.is_main_process:
            records.merge_manifest_shards(out_dir, is_record)
        counts = torch.tensor([self.done, self.skipped, self.failed], device=state.device)
        torch.distributed.all_reduce(counts)
        done, skipped, failed = (int(count) for count in counts.tolist())
        return JobSummary(done, skipped, failed, is_main_process=state.is_main_process, timings=self.timings)


def input_identity(path: Path) -> dict | None:
    """What a record binds its output to: the input's resolved path, size and modification time (None if missing);
    for a folder of frames also its number of files and their total size (a folder's own mtime does not change when
    a frame is rewritten in place)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    identity = {"resolved": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if path.is_dir():
        sizes = [p.stat().st_size for p in path.iterdir() if p.is_file()]
        identity.update(files=len(sizes), bytes=sum(sizes))
    return identity


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
    """16 hex digits of SHA-256 over the settings that make the outputs (model identity and options)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def error_text(error: BaseException | str) -> str:
    """One line for a failed item: a project error's own message, anything else prefixed with its type."""
    if isinstance(error, str):
        message = error
    else:
        message = str(error) if isinstance(error, MarlinError) else f"{type(error).__name__}: {error}"
    return " ".join(message.split())


def is_keyed_record(key: str, record) -> bool:
    """A dict naming its item by a string `record[key]`, with a status of "ok" or "error"."""
    return isinstance(record, dict) and isinstance(record.get(key), str) and record.get("status") in ("ok", "error")


def each_item(
    function: Callable[[Item], dict], failures: tuple[type[BaseException], ...] = (Exception,), num_threads: int = 1
) -> Work:
    """A `Work` calling `function(item) -> record fields` on every item, in `num_threads` threads (results in input
    order); an error of a `failures` kind fails its item, any other stops the run."""

    def work(todo: list[Item], shard: Shard) -> Iterator[Outcome]:
        def outcome(item: Item) -> Outcome:
            started = time.perf_counter()
            try:
                return Outcome(item, function(item), seconds=time.perf_counter() - started)
            except failures as error:
                return Outcome(item, error=error, seconds=time.perf_counter() - started)

        if num_threads <= 1:
            yield from map(outcome, todo)
            return
        pool = ThreadPoolExecutor(max_workers=num_threads)
        try:
            yield from pool.map(outcome, todo)
        finally:
            pool.shutdown(cancel_futures=True)  # on an error, stop at once rather than after every queued item

    return work


def make_folder(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file of that name, a read-only parent
        raise DatasetError(
            f"{out_dir}: cannot make this output folder ({error.strerror}); choose another.", parameter="out_dir"
        ) from None


def tidy_folder(out_dir: Path, kind: JobKind) -> None:
    """What a killed run left (called holding the lock, so no run of ours is writing here): a torn manifest tail,
    records stranded in per-process shards, temporary files."""
    records.repair_torn_tail(out_dir / records.MANIFEST, kind.is_record)
    if any(out_dir.glob("manifest.rank*.jsonl")):
        records.merge_manifest_shards(out_dir, kind.is_record)
    records.remove_stale_partials(out_dir, nested=kind.nested)


def check_settings(out_dir: Path, kind: JobKind, previous: dict[str, dict], settings: dict, fingerprint: str) -> None:
    """Refuse, in one line naming the settings that changed, a folder holding outputs made with other settings (one
    folder, one set of outputs made one way: its readers take them as comparable)."""
    other = [r for r in previous.values() if r.get("status") == "ok" and r.get("fingerprint") != fingerprint]
    if other:
        before = other[0].get("settings") if isinstance(other[0].get("settings"), dict) else {}
        changed = sorted(k for k in settings if before.get(k) != settings[k])
        said = ", ".join(changed) if changed else "unrecorded: made by an earlier version"
        raise DatasetError(
            f"{out_dir}: holds {kind.made} with other settings ({said}); use another folder.", parameter="out_dir"
        )


def is_done(out_dir: Path, kind: JobKind, record: dict | None, item: Item, fingerprint: str) -> bool:
    """Whether `record` (the item's last) says it was done from the same input with the same settings, and its
    outputs are still there."""
    return (
        record is not None
        and record.get("status") == "ok"
        and record.get("fingerprint") == fingerprint
        and record.get("identity") == input_identity(item.source)  # the same file, unchanged since
        and all((out_dir / output).is_file() for output in kind.outputs(record))
    )


def run_job(
    items: Sequence[Item],
    out_dir: str | os.PathLike,
    settings: dict,
    work: Work,
    kind: JobKind,
    show_progress: bool = True,
    start: Callable[[], None] | None = None,
    end: Callable[[], None] | None = None,
) -> JobSummary:
    """Do every item of `items` not done yet into `out_dir` (see the module docstring); returns the counts.

    Args:
        settings: what makes the outputs (JSON values): each record holds them and their `settings_fingerprint`.
        work: does the items left to do.
        start, end: called by the main process, holding the lock: once the folder is checked, and after the work.

    Raises:
        DatasetError: `out_dir` cannot be made or holds outputs made with other settings.
        MarlinError: another run holds the folder.
        OutputWriteError: the disk is full (what is done is kept).
    """
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    # Without a GPU, processes started by `accelerate launch`/`torchrun` share the work over gloo.
    state = PartialState(cpu=not torch.cuda.is_available())
    out_dir = Path(out_dir)
    make_folder(out_dir)
    fingerprint = settings_fingerprint(settings)
    # One run at a time per folder (the main process holds it for the run's processes, released on any exit).
    with records.lock_folder(out_dir, kind.command) if state.is_main_process else contextlib.nullcontext() as lock:
        if state.is_main_process:
            tidy_folder(out_dir, kind)
        state.wait_for_everyone()
        previous = records.read_records(out_dir, kind.key, kind.is_record)
        check_settings(out_dir, kind, previous, settings, fingerprint)
        if state.is_main_process and start is not None:
            start()
        summary = JobSummary()
        todo = []
        for item in items[state.process_index :: state.num_processes]:
            if is_done(out_dir, kind, previous.get(item.fields[kind.key]), item, fingerprint):
                summary.skipped += 1
            else:
                todo.append(item)
        several = state.num_processes > 1
        manifest = out_dir / (f"manifest.rank{state.process_index}.jsonl" if several else records.MANIFEST)
        label = f"[{state.process_index}] " if several else ""
        private = (lock.fileno(),) if lock is not None else ()
        shard = Shard(str(state.device), label, private, show_progress, previous, summary.timings)
        bar = tqdm(total=len(todo), desc=f"{label}videos", unit="video", disable=not show_progress, position=0)
        for outcome in work(todo, shard) if todo else ():
            bar.set_postfix_str(outcome.item.source.name[-40:])
            failed = write_record(manifest, outcome, settings, fingerprint, kind.command)
            summary.failed += failed
            summary.done += not failed
            bar.update(1)
        bar.close()
        if several:
            summary = summary.gathered(state, out_dir, kind.is_record)
        if state.is_main_process and end is not None:
            end()
    return summary


def write_record(manifest: Path, outcome: Outcome, settings: dict, fingerprint: str, command: str) -> bool:
    """Append the item's record to `manifest`, saying its error in one line; returns whether it failed.

    Raises:
        OutputWriteError: the outcome's own, when it stops the run (a full disk).
    """
    from tqdm.auto import tqdm

    item, error = outcome.item, outcome.error
    if isinstance(error, records.OutputWriteError) and error.stops_run:  # every later write would fail too
        raise error
    message = None if error is None else error_text(error)
    record = {
        **item.fields,
        "status": "ok" if error is None else "error",
        "error": message,
        **outcome.fields,
        "identity": input_identity(item.source),
        "fingerprint": fingerprint,
        "settings": settings,
        **outcome.details,
        "seconds": round(outcome.seconds, 3),
    }
    if message is not None:
        named = message if str(item.source) in message else f"{item.source}: {message}"  # errors name the input
        tqdm.write(f"{command}: {named}", file=sys.stderr)
    records.append_lines(manifest, [json.dumps(record, default=str)])
    return message is not None
