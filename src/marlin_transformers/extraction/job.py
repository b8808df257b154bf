"""`marlin extract` over many videos: a `jobs.run_job` whose items are the videos `find_videos` finds.

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

import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..constants import SAMPLE_RATE, STRIDE
from ..jobs import Item, JobKind, JobSummary, Outcome, Shard, model_identity, run_job, timed
from ..records import MANIFEST, read_records, save_arrays_atomic  # noqa: F401  (MANIFEST: as readers know it)
from ..video.decoding import find_videos
from .extractor import MarlinFeatureExtractor
from .pipeline import iter_outcomes

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


EXTRACTION = JobKind(
    "marlin extract", "input", is_manifest_record, outputs=lambda record: [record["output"]], made="features made"
)


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
        settings: what makes the features (`extraction_settings`): each line records their fingerprint, and a folder
            holding features made with other settings is refused (one folder, one feature set: the linear probe and
            the readers of a folder take its features as comparable).
        output_suffix: ".npy", or ".npz" for an extractor whose results hold one set of arrays per face.
        num_workers: processes decoding and cropping while the model encodes (`pipeline.iter_outcomes`); 0 runs
            each video in turn in this process. Records and outputs come in input order either way.
    """
    empty_folders: list[Path] = []
    paths = find_videos(inputs, keep_missing=True, empty_folders=empty_folders)
    names = output_names(paths, output_suffix)
    out_dir = Path(out_dir)

    def extract(todo: list[Item], shard: Shard) -> Iterator[Outcome]:
        from tqdm.auto import tqdm

        # An output name a previous run gave another input is never reused: this input gets its hashed name.
        done_before = [r for r in shard.previous.values() if r.get("status") == "ok"]
        taken = {r["output"]: r["input"] for r in done_before if r.get("output")}
        for item in todo:
            if taken.get(names[item.source], str(item.source)) != str(item.source):
                names[item.source] = hashed_output_name(item.source, output_suffix)
        extractor = make_extractor(shard.device)
        shown = shard.show_progress
        bar = tqdm(desc=f"{shard.label}windows", unit="window", disable=not shown, position=1, leave=False)
        videos = iter_outcomes(
            extractor, [item.source for item in todo], num_workers, progress=bar, private_files=shard.private_files
        )
        try:
            for item, video in zip(todo, videos):
                fields = {"output": names[item.source], **(metadata or {}), **getattr(extractor, "settings", {})}
                with timed(shard.timings, "write"):
                    outcome = save_features(out_dir / names[item.source], item, video, fields)
                yield outcome
        finally:
            bar.close()
            for stage, seconds in getattr(extractor, "timings", {}).items():  # the summary's: model load, decode...
                shard.timings[stage] = shard.timings.get(stage, 0.0) + seconds

    def say_empty_folders() -> None:
        for folder in empty_folders:
            print(f"marlin extract: {folder}: folder holds no video files; skipped.", file=sys.stderr)

    items = [Item({"input": str(path)}, path) for path in paths]
    return run_job(items, out_dir, settings or {}, extract, EXTRACTION, show_progress, start=say_empty_folders)


def save_features(path: Path, item: Item, video, fields: dict) -> Outcome:
    """The outcome of one video (`pipeline.VideoOutcome`): its features written to `path`, or the error that failed
    it (one bad input never stops the job; a full disk does, when the runner sees it)."""
    try:
        if video.error is not None:
            raise video.error
        result = video.result
        save_arrays_atomic(path, result.arrays())
    except Exception as error:
        return Outcome(item, {**fields, "output": None}, {"windows": []}, error, video.seconds)
    if result.subjects is None:
        details = {"windows": result.windows, "shape": list(result.features.shape)}
    else:  # every face: its windows and time span here, its features and boxes in the .npz
        details = {"windows": [], "subjects": [subject.record() for subject in result.subjects]}
    return Outcome(item, fields, details, seconds=video.seconds)


def extraction_settings(
    model: str | os.PathLike,
    dtype: str = "float32",
    crop_face: bool = False,
    on_no_face: str = "error",
    face_margin: float = 1.0,
    keep_seq: bool = False,
    all_faces: bool = False,
    sample_rate: int = SAMPLE_RATE,
    stride: int = STRIDE,
    stride_seconds: float | None = None,
    num_frames: int | None = None,
    image_size: int | None = None,
) -> dict:
    """What makes the features (not the batch size, device or compilation, which change only how fast they come),
    as each record holds them: the model by `model_identity` and the `MarlinFeatureExtractor` options."""
    return {
        "model": model_identity(model),
        **{"dtype": dtype, "crop_face": crop_face, "no_face": on_no_face, "face_margin": face_margin},
        **{"keep_seq": keep_seq, "all_faces": all_faces, "sample_rate": sample_rate, "stride": stride},
        **{"stride_seconds": stride_seconds, "num_frames": num_frames, "image_size": image_size},
    }


def extract_corpus(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    model: str | os.PathLike,
    device: str | None = None,
    batch_size: int = 4,
    compile: bool = False,
    num_workers: int = 0,
    show_progress: bool = True,
    **settings,
) -> JobSummary:
    """`marlin extract`: every video of `inputs` (`find_videos`) through a `MarlinFeatureExtractor` of `model` into
    `out_dir` (`run_extraction`), bound to `extraction_settings(model, **settings)`.

    Args:
        device: the extractor's device (None: each process's own).
        settings: the options of `extraction_settings` (dtype, crop_face, on_no_face...).
    """
    bound = extraction_settings(model, **settings)

    def make_extractor(process_device: str) -> MarlinFeatureExtractor:
        options = {"device": device or process_device, "batch_size": batch_size, "compile": compile, **settings}
        return MarlinFeatureExtractor(model, **options)

    metadata = {"model": str(model), **{k: bound[k] for k in ("dtype", "crop_face", "keep_seq")}}
    suffix = ".npz" if bound["all_faces"] else ".npy"
    return run_extraction(inputs, out_dir, make_extractor, metadata, show_progress, bound, suffix, num_workers)
