"""Job folders that survive crashes: records written whole, outputs written atomically, one run per folder.

Every job of `jobs.run_job` (`marlin extract`, corpus and CelebV-HQ preparation) keeps the same kind of folder:
outputs beside a `manifest.jsonl` of one JSON record per line. Here is what makes such a folder safe to kill, fill up
or share: a record is appended in one write and cut back if the write fails; outputs go to a hidden `.partial` file
renamed into place; an `flock` keeps a second run out and dies with its holder; the next run repairs a torn last
line, merges what each process of a multi-process run left in `manifest.rank<r>.jsonl`, and removes temporary files.
A full disk or a file-size limit is an `OutputWriteError` line. Each job says what a record of its own is
(`is_record`) and what keys it (`key`).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .exceptions import MarlinError

MANIFEST = "manifest.jsonl"


def read_records(out_dir: str | os.PathLike, key: str, is_record: Callable[[object], bool]) -> dict[str, dict]:
    """The last record per `record[key]` over `manifest.jsonl` and the per-process `manifest.rank*.jsonl`; lines that
    are not records (`is_record`: cut short by a crash, garbage) are skipped, so their item is simply done again."""
    out_dir = Path(out_dir)
    records: dict[str, dict] = {}
    for manifest in [out_dir / MANIFEST, *sorted(out_dir.glob("manifest.rank*.jsonl"))]:
        if not manifest.is_file():
            continue
        for line in manifest.read_bytes().decode(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if is_record(record):
                records[record[key]] = record
    return records


LOCK = ".marlin-extract.lock"


def lock_folder(out_dir: Path, command: str = "marlin extract"):
    """Hold `out_dir` for this run of `command`: an exclusive `flock` on its lock file, which the OS drops when the
    process ends, however it ends (so a killed run never leaves the folder locked). Returns the open file: closing it
    (as a `with` block does, on any exit) releases the folder."""
    import fcntl

    try:
        handle = open(out_dir / LOCK, "a")
    except OSError as error:  # a read-only file system, no permission
        raise MarlinError(
            f"{out_dir}: cannot write in this folder ({error.strerror}); choose a writable one.", parameter="out_dir"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise MarlinError(
            f"{out_dir}: another {command} is writing into this folder; wait for it to end or use another output "
            "folder."
        ) from None
    return handle


class OutputWriteError(MarlinError):
    """An output that could not be written whole: the disk is full, a quota or a file-size limit was hit.

    `stops_run`: the device itself is full (every later write would fail too), not just this file too large."""

    def __init__(self, message: str, stops_run: bool = True):
        super().__init__(message)
        self.stops_run = stops_run


def _write_error(path: Path, error: OSError) -> OutputWriteError:
    what = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EFBIG: "file larger than this process may write (ulimit -f)",
    }.get(error.errno, error.strerror or type(error).__name__)
    return OutputWriteError(
        f"{path}: cannot write ({what}); nothing partial was left, free space or raise the limit and run again: "
        "what is done is kept.",
        stops_run=error.errno != errno.EFBIG,
    )


def append_lines(path: Path, lines: list[str]) -> None:
    """Append whole lines, synced, in one write: if it fails (disk full, file-size limit) the file is cut back to
    where it was, so a record is written whole or not at all. After a line torn by a crash (no final newline), start
    on a new line, so the torn fragment stays one unreadable line (skipped on read) and never swallows a record."""
    if not lines:
        return
    data = "".join(line + "\n" for line in lines).encode()
    descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(descriptor).st_size
        if size and os.pread(descriptor, 1, size - 1) != b"\n":
            data = b"\n" + data
        try:
            written = 0
            while written < len(data):
                written += os.write(descriptor, data[written:])
            os.fsync(descriptor)
        except OSError as error:
            os.ftruncate(descriptor, size)
            raise _write_error(path, error) from None
    finally:
        os.close(descriptor)


PARTIAL_SUFFIX = ".partial"


def write_bytes_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write `data` to a hidden temporary file beside `path`, synced, renamed onto it when whole: a reader sees the
    old file or the new one, never part of it. On any failure the temporary file is removed; a disk-full or file-size
    error is an `OutputWriteError` line. The temporary name is short (`.<8 hex>.<pid>.partial`), so the longest output
    name still has one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha1(path.name.encode()).hexdigest()[:8]
    partial = path.with_name(f".{tag}.{os.getpid()}{PARTIAL_SUFFIX}")
    try:
        with open(partial, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException as error:
        partial.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _write_error(path, error) from None
        raise


def save_arrays_atomic(path: Path, array: np.ndarray | dict[str, np.ndarray], compressed: bool = False) -> None:
    """`np.save` (a dict of arrays: `np.savez`, or `np.savez_compressed` with `compressed`), written whole by
    `write_bytes_atomic`."""
    buffer = io.BytesIO()
    # In memory: numpy's own file writes lose the errno that tells a full disk.
    if isinstance(array, dict):
        (np.savez_compressed if compressed else np.savez)(buffer, **array)
    else:
        np.save(buffer, array)
    write_bytes_atomic(path, buffer.getbuffer())


def write_text_atomic(path: Path, text: str) -> None:
    """`text` as UTF-8, written whole by `write_bytes_atomic`."""
    write_bytes_atomic(path, text.encode("utf-8"))


def remove_stale_partials(out_dir: Path, nested: bool = False) -> int:
    """Remove the temporary files a killed run left in `out_dir`, and with `nested` in its subfolders too (called
    while holding the folder's lock, so no live run of ours is writing them); returns how many."""
    pattern = f".*{PARTIAL_SUFFIX}*"  # `.<name>.partial.mp4` too (`video.writing`)
    stale = [p for p in (out_dir.rglob(pattern) if nested else out_dir.glob(pattern)) if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def repair_torn_tail(path: Path, is_record: Callable[[object], bool]) -> None:
    """A manifest that does not end with a newline was cut by a crash mid-record: a whole record there (`is_record`)
    gets its newline, a fragment is cut off (that input was not recorded, so it is done again). Called holding the
    lock."""
    if not path.is_file() or not path.stat().st_size:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    try:
        whole = is_record(json.loads(data[start:]))
    except (json.JSONDecodeError, UnicodeDecodeError):
        whole = False
    with open(path, "r+b") as file:
        if whole:
            file.seek(0, os.SEEK_END)
            file.write(b"\n")
        else:
            file.truncate(start)
        file.flush()
        os.fsync(file.fileno())


def merge_manifest_shards(out_dir: Path, is_record: Callable[[object], bool]) -> None:
    """Append the whole records (`is_record`) of the per-process shards `manifest.rank<r>.jsonl` to `manifest.jsonl`
    in rank order, then remove them (main process only, holding the folder's lock; a line cut by a crash is left
    out)."""
    shards = sorted(out_dir.glob("manifest.rank*.jsonl"), key=lambda path: (len(path.name), path.name))  # rank 2 < 10
    lines = []
    for shard in shards:
        for line in shard.read_bytes().decode(errors="replace").splitlines():
            try:
                if is_record(json.loads(line)):
                    lines.append(line)
            except json.JSONDecodeError:
                continue
    append_lines(out_dir / MANIFEST, lines)
    for shard in shards:
        shard.unlink()
