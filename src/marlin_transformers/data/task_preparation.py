"""The one face-clip job of the downstream tasks: videos in, 224-pixel face clips and labels tables out.

Every task preparer (CelebV-HQ, FaceForensics++, RAVDESS, CMU-MOSEI) reads its release's own layout into a list of
`TaskVideo`s (id, split, labels, the fields decoded from the release) and hands it here. `prepare_task` writes::

    OUT/clips/<id>.mp4                 face clips: MTCNN `FaceTracker` (one subject, smoothed), square of side
                                       max(w, h) around the face, zero-padded, resized to 224 (`face_tracker_cropper`)
    OUT/<task>/<split>.csv             `data.labels` tables, one per split (train, val, test, then any other split)
    OUT/videos.csv                     one row per source video: id, split, its decoded fields, video (the source's
                                       path), clip, error
    OUT/preparation.json               the protocol and its source, split sizes, class balance per split, failed ids
    OUT/manifest.jsonl                 the job's records (`jobs.run_job`)

The clips are a `jobs.run_job` (`crop_clips`), so a preparation resumes after a kill (videos done from the same file
with the same settings are skipped), holds its folder's lock, spreads over the processes of `torchrun` /
`accelerate launch` by rank, and says one error line per video that cannot be decoded: that video is left out of the
tables, marked in `videos.csv` and listed under `"failed"` in `preparation.json`, and the others are done. The
tables, `videos.csv` and `preparation.json` are written whole (renamed into place) by the main process once every
clip is done.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..constants import MARLIN_CROP_SIZE, PROBLEM_TYPES
from ..exceptions import DatasetError, VideoError
from ..jobs import Item, JobKind, JobSummary, each_item, is_keyed_record, run_job
from ..records import read_records, write_text_atomic
from ..video.decoding import resize_frames
from ..video.face_tracking import FaceTracker
from .labels import labels_dataset, read_labels_csv, write_labels_csv

CLIPS_FOLDER = "clips"
SPLIT_ORDER = ("train", "val", "test")
# videos.csv: id and split first, then the release's decoded fields, then these three.
VIDEOS_CSV_COLUMNS = ("id", "split", "video", "clip", "error")

FrameCropper = Callable[[Iterator[np.ndarray], object], Iterable[np.ndarray]]
"""Takes a video's frames, each (height, width, 3) uint8 RGB, in order, and its annotation `clip` (what the preparer
passes: a `TaskVideo`, a `CelebvHqClip`); yields one (size, size, 3) uint8 RGB face crop per frame."""


def face_tracker_cropper(tracker=None, size: int = MARLIN_CROP_SIZE, chunk_frames: int = 32) -> FrameCropper:
    """A `FrameCropper` cropping as the paper did: a face detector on every frame, a square around the face.

    Uses `video.face_tracking.FaceTracker` (MTCNN; one subject followed through the video, square of side max(w, h),
    zero-padded, resized to `size`), fed `chunk_frames` frames at a time and reset for every video. Frames before
    the first detection get the tracker's centre crop.

    Args:
        tracker: anything with `reset()` and `track(frames (T, H, W, 3) uint8, frame_indices) -> .crops
            (T, size, size, 3)`; by default a `FaceTracker(crop_size=size)` (MTCNN loads on the first video).
    """
    if tracker is None:
        tracker = FaceTracker(crop_size=size)

    def crop(frames: Iterator[np.ndarray], clip) -> Iterator[np.ndarray]:
        tracker.reset()
        chunk: list[np.ndarray] = []
        start = 0
        for frame in frames:
            chunk.append(frame)
            if len(chunk) == chunk_frames:
                yield from tracker.track(np.stack(chunk), list(range(start, start + len(chunk)))).crops
                start, chunk = start + len(chunk), []
        if chunk:
            yield from tracker.track(np.stack(chunk), list(range(start, start + len(chunk)))).crops

    return crop


def reference_cropper(detector=None, size: int = MARLIN_CROP_SIZE, chunk_frames: int = 32) -> FrameCropper:
    """A `FrameCropper` cropping as the paper code did: a face detector on every frame on its own, the square
    `video.cropping.reference_square` around its most confident face (zero-padded outside the frame), resized.

    The paper code used FaceX-Zoo's RetinaFace, which is not available here: this uses MTCNN
    (`video.face_detection.MtcnnDetector`), so boxes differ by a few pixels. No tracking, no smoothing: each frame
    has its own box, as in the paper code. Where it found no face it cropped a 2x2 corner (a defect); here such a
    frame keeps the last box found, and frames before any detection get the centred square of the frame.

    Args:
        detector: anything with `detect(frames (T, H, W, 3) uint8) -> [per frame: (boxes (n, 4) x1 y1 x2 y2,
            probabilities (n,), landmarks)]`; by default an `MtcnnDetector()` (loads on the first video).
    """
    from ..video.cropping import centre_boxes, crop_with_padding, reference_square

    if detector is None:
        from ..video.face_detection import MtcnnDetector

        detector = MtcnnDetector()

    def crop(frames: Iterator[np.ndarray], clip) -> Iterator[np.ndarray]:
        region = None

        def cut(chunk: list[np.ndarray]) -> Iterator[np.ndarray]:
            nonlocal region
            for frame, (boxes, probabilities, _) in zip(chunk, detector.detect(np.stack(chunk))):  # (H, W, 3) each
                if len(boxes):
                    region = reference_square(boxes[int(np.argmax(probabilities))])
                elif region is None:
                    region = tuple(int(v) for v in centre_boxes(1, *frame.shape[:2])[0])
                yield resize_frames(crop_with_padding(frame, region)[None], size)[0]

        chunk: list[np.ndarray] = []
        for frame in frames:
            chunk.append(frame)
            if len(chunk) == chunk_frames:
                yield from cut(chunk)
                chunk = []
        if chunk:
            yield from cut(chunk)

    return crop


FACE_CROPS = ("face", "reference")


def face_cropper_factory(
    crop: str | Callable[[], FrameCropper],
    size: int = MARLIN_CROP_SIZE,
    num_workers: int = 1,
    device: str | None = None,
) -> Callable[[], FrameCropper]:
    """What makes one worker's `FrameCropper`: "face" (`face_tracker_cropper`, the default), "reference"
    (`reference_cropper`, as the paper code), or your own factory. Each worker gets its own MTCNN (on `device`, by
    default the CPU) using `cpu_count // num_workers` torch threads, so workers never share a tracker's per-video
    state."""
    if callable(crop):
        return crop
    if crop not in FACE_CROPS:
        raise DatasetError(
            f"unknown crop {crop!r}: use one of {', '.join(FACE_CROPS)} or a function", parameter="crop"
        )
    threads = max(1, (os.cpu_count() or 1) // max(num_workers, 1))

    def make() -> FrameCropper:
        from ..video.face_detection import MtcnnDetector

        detector = MtcnnDetector(num_threads=threads, device=device or "cpu")
        if crop == "reference":
            return reference_cropper(detector, size=size)
        return face_tracker_cropper(FaceTracker(detector, crop_size=size), size=size)

    return make


def crop_video(
    source: str | os.PathLike,
    target: str | os.PathLike,
    cropper: FrameCropper,
    annotation=None,
    size: int = MARLIN_CROP_SIZE,
) -> int:
    """Decode `source` with PyAV, crop every frame with `cropper`, encode `target` (H.264, source frame rate).

    Frames are decoded upright (rotation metadata applied, as everywhere else) and streamed: memory holds what the
    cropper buffers, not the video. The target appears only once complete (`video.writing.write_video`);
    timestamps are re-made at the stream's frame rate.

    Returns:
        The number of frames written.
    """
    from ..video.decoding import frame_rate, frame_to_rgb, iter_frames
    from ..video.writing import write_video

    def faces() -> Iterator[np.ndarray]:
        frames = (frame_to_rgb(frame) for _, _, _, frame in iter_frames(source))
        for face in cropper(frames, annotation):
            if face.shape != (size, size, 3):
                raise DatasetError(f"{source}: the cropper returned a {face.shape} frame, not {size}x{size}x3")
            yield face

    num_frames = write_video(target, faces(), frame_rate(source), crf=18)
    if num_frames == 0:
        raise VideoError(f"{source}: no frame could be decoded; re-download it or leave it out")
    return num_frames


def clip_job_kind(command: str, key: str = "video_id", folder: str = CLIPS_FOLDER) -> JobKind:
    """The face-clip job of `command`: one record per video, keyed by `key`, its clip `folder/<key>.mp4`."""
    return JobKind(
        command,
        key,
        functools.partial(is_keyed_record, key),
        outputs=lambda record: [f"{folder}/{record[key]}.mp4"],
        made="clips cropped",
        nested=True,
    )


@dataclass
class FaceClips:
    """What `crop_clips` made: the clip of each video done ({id: path}), the error line of each that failed, the
    job's counts."""

    clips: dict[str, Path]
    failed: dict[str, str]
    summary: JobSummary


def crop_clips(
    sources: dict[str, Path],
    out_dir: str | os.PathLike,
    make_cropper: Callable[[], FrameCropper],
    settings: dict,
    kind: JobKind,
    annotations: dict | None = None,
    size: int = MARLIN_CROP_SIZE,
    num_workers: int = 1,
    progress: bool = True,
) -> FaceClips:
    """Crop every video of `sources` ({id: video path}, in order) to `out_dir/<kind's output>`, as a `jobs.run_job`.

    Args:
        make_cropper: makes a `FrameCropper`; called once per worker thread (a tracker's state is the thread's own).
        settings: what makes the clips (JSON values: crop, size, ...); a folder made with others is refused.
        kind: the job (`clip_job_kind`).
        annotations: {id: what the cropper is handed with the frames}; default None for every video.
        num_workers: videos cropped at once, in threads (PyAV and torch release the GIL).

    Returns:
        `FaceClips`: the clip of every video done by this run or an earlier one with the same settings, the error
        line of every video that failed (its last record's), and the counts.
    """
    out_dir = Path(out_dir)
    annotations = annotations or {}
    local = threading.local()

    def crop_one(item: Item) -> dict:
        if not hasattr(local, "cropper"):
            local.cropper = make_cropper()
        video_id = item.fields[kind.key]
        (output,) = kind.outputs(item.fields)
        num_frames = crop_video(item.source, out_dir / output, local.cropper, annotations.get(video_id), size)
        return {"output": output, "num_frames": num_frames}

    items = [Item({"input": str(path), kind.key: video_id}, Path(path)) for video_id, path in sources.items()]
    work = each_item(crop_one, failures=(VideoError,), num_threads=num_workers)
    summary = run_job(items, out_dir, settings, work, kind, progress)
    done = read_records(out_dir, kind.key, kind.is_record)
    status = {i: done.get(i, {}).get("status") for i in sources}
    return FaceClips(
        clips={i: out_dir / kind.outputs(done[i])[0] for i in sources if status[i] == "ok"},
        failed={i: done[i]["error"] for i in sources if status[i] == "error"},
        summary=summary,
    )


@dataclass(frozen=True)
class LabelTask:
    """One labels table a preparation writes: `OUT/<name>/<split>.csv`.

    Attributes:
        name: the task's folder ("ffpp", "ravdess", "mosei-sentiment").
        problem_type: one of `constants.PROBLEM_TYPES`.
        label_names: single-label: the class names (written sorted, as they are read back); multi-label and
            regression: the columns.
    """

    name: str
    problem_type: str
    label_names: tuple[str, ...]

    def __post_init__(self):
        if self.problem_type not in PROBLEM_TYPES:
            raise DatasetError(f"unknown problem type {self.problem_type!r}; use one of {', '.join(PROBLEM_TYPES)}")


@dataclass(frozen=True)
class TaskVideo:
    """One source video of a task release.

    Attributes:
        video_id: unique, usable as a file name: the clip is `clips/<video_id>.mp4`.
        path: the source video.
        split: "train", "val", "test" or another held-out set ("dfd"); one table per split.
        labels: {task name: label}: a class name (single-label), a list of 0/1 (multi-label) or of numbers
            (regression), in the order of the task's `label_names`. A video without a task's label is left out of it.
        fields: what the release's names and files say of it (label, method, actor, ...), written to `videos.csv`.
    """

    video_id: str
    path: Path
    split: str
    labels: dict
    fields: dict = field(default_factory=dict)


@dataclass
class TaskPreparation:
    """What `prepare_task` wrote: {split: ids in its tables}, the error line of each video that failed, the class
    balance (as in `preparation.json`), the job's counts."""

    splits: dict[str, list[str]]
    failed: dict[str, str]
    balance: dict
    summary: JobSummary


def ordered_splits(names: Iterable[str]) -> list[str]:
    """train, val, test first, then any other split by name."""
    names = set(names)
    return [s for s in SPLIT_ORDER if s in names] + sorted(names - set(SPLIT_ORDER))


def class_balance(videos: Sequence[TaskVideo], task: LabelTask) -> dict:
    """Per split, how the labels of `task` fall: single-label {class: videos}; multi-label {label: positives} and
    "videos"; regression per target {"mean", "min", "max"} and "videos"."""
    balance = {}
    for split in ordered_splits(v.split for v in videos):
        values = [v.labels[task.name] for v in videos if v.split == split and task.name in v.labels]
        if task.problem_type == "single_label_classification":
            balance[split] = {name: sum(value == name for value in values) for name in sorted(task.label_names)}
            continue
        matrix = np.asarray(values, dtype=np.float64).reshape(len(values), len(task.label_names))
        if task.problem_type == "multi_label_classification":
            counts = {name: int(matrix[:, j].sum()) for j, name in enumerate(task.label_names)}
        else:
            counts = {
                name: {"mean": round(float(col.mean()), 4), "min": float(col.min()), "max": float(col.max())}
                if len(col)
                else {}
                for name, col in zip(task.label_names, matrix.T)
            }
        balance[split] = {"videos": len(values), **counts}
    return balance


def prepare_task(
    videos: Sequence[TaskVideo],
    out_dir: str | os.PathLike,
    tasks: Sequence[LabelTask],
    protocol: dict,
    command: str,
    crop: str | Callable[[], FrameCropper] = "face",
    size: int = MARLIN_CROP_SIZE,
    num_workers: int = 1,
    device: str | None = None,
    balance_by: Sequence[str] = (),
    progress: bool = True,
) -> TaskPreparation:
    """Crop the faces of `videos` and write the prepared layout of the module docstring.

    Args:
        videos: the release's videos, in the order the job does them; ids unique.
        tasks: the labels tables to write.
        protocol: written to `preparation.json` as it is: its name, its source, the choices the preparer made.
        command: names the job in messages and in the folder's lock ("marlin prepare-ffpp").
        crop: "face" (default), "reference", or a factory of `FrameCropper`s (see `face_cropper_factory`).
        size: side of the clips, pixels.
        num_workers: videos cropped at once, in threads, each with its own detector.
        device: where MTCNN runs ("cuda"); default the CPU. Not part of the settings: clips made on either are kept.
        balance_by: fields of `TaskVideo.fields` whose values are counted per split too (`balance["by <field>"]`).

    Returns:
        `TaskPreparation`.
    """
    out_dir = Path(out_dir)
    ids = [v.video_id for v in videos]
    if not ids:
        raise DatasetError(f"{command}: no video to prepare; check the release folder")
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise DatasetError(f"{command}: two videos share the id {duplicate!r}")
    reserved = sorted({name for v in videos for name in v.fields} & set(VIDEOS_CSV_COLUMNS))
    if reserved:
        raise DatasetError(f"{command}: a decoded field may not be called {reserved[0]!r} (a column of videos.csv)")
    crop_name = crop if isinstance(crop, str) else getattr(crop, "__name__", "custom")
    settings = {"crop": crop_name, "size": size}
    kind = clip_job_kind(command)
    made = crop_clips(
        {v.video_id: Path(v.path) for v in videos},
        out_dir,
        face_cropper_factory(crop, size, num_workers, device),
        settings,
        kind,
        annotations={v.video_id: v for v in videos},
        size=size,
        num_workers=num_workers,
        progress=progress,
    )
    kept = [v for v in videos if v.video_id in made.clips]
    splits = {s: [v.video_id for v in kept if v.split == s] for s in ordered_splits(v.split for v in kept)}
    balance = {task.name: class_balance(kept, task) for task in tasks}
    for name in balance_by:
        balance[f"by {name}"] = {
            split: dict(sorted(Counter(str(v.fields.get(name, "")) for v in kept if v.split == split).items()))
            for split in splits
        }
    if made.summary.is_main_process:
        for task in tasks:
            write_task_tables(out_dir, task, kept, made.clips)
        write_videos_csv(out_dir / "videos.csv", videos, made.clips, made.failed)
        record = {
            "command": command,
            "protocol": protocol,
            "settings": settings,
            "tasks": {t.name: {"problem_type": t.problem_type, "label_names": list(t.label_names)} for t in tasks},
            "splits": {split: len(split_ids) for split, split_ids in splits.items()},
            "class_balance": balance,
            "failed": made.failed,
        }
        write_text_atomic(out_dir / "preparation.json", json.dumps(record, indent=1) + "\n")
    return TaskPreparation(splits, made.failed, balance, made.summary)


def write_task_tables(out_dir: Path, task: LabelTask, videos: Sequence[TaskVideo], clips: dict[str, Path]) -> None:
    """`out_dir/<task>/<split>.csv` for every split of `videos` (those with a clip and a label of `task`); a table
    of a split this run has not (an earlier run's, with another protocol or fold) is removed, never left to be read
    as this run's."""
    labelled = [v for v in videos if task.name in v.labels and v.video_id in clips]
    splits = ordered_splits(v.split for v in labelled)
    for stale in (out_dir / task.name).glob("*.csv"):
        if stale.stem not in splits:
            stale.unlink()
    for split in splits:
        rows = [v for v in labelled if v.split == split]
        labels = [v.labels[task.name] for v in rows]
        names = sorted(task.label_names) if task.problem_type == "single_label_classification" else task.label_names
        path = out_dir / task.name / f"{split}.csv"
        write_labels_csv(path, [clips[v.video_id] for v in rows], labels, names, task.problem_type)


def write_videos_csv(path: Path, videos: Sequence[TaskVideo], clips: dict[str, Path], failed: dict[str, str]) -> None:
    """One row per source video: id, split, every decoded field, `video` (the source's absolute path), the clip
    (relative to `path`'s folder; empty where none was made) and the error of a video that failed."""
    columns: list[str] = []
    for video in videos:
        columns.extend(name for name in video.fields if name not in columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*VIDEOS_CSV_COLUMNS[:2], *columns, *VIDEOS_CSV_COLUMNS[2:]])
    for video in videos:
        clip = clips.get(video.video_id)
        writer.writerow(
            [
                video.video_id,
                video.split,
                *(video.fields.get(name, "") for name in columns),
                str(Path(video.path).absolute()),
                os.path.relpath(clip, path.parent) if clip is not None else "",
                failed.get(video.video_id, ""),
            ]
        )
    write_text_atomic(path, buffer.getvalue())


def read_videos_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a prepared folder's `videos.csv`, as {column: text}."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no videos.csv here; prepare the folder first") from None


def load_task(prepared_dir: str | os.PathLike, task: str, problem_type: str, label_names: Sequence[str] = ()):
    """A prepared folder's `task` as a `datasets.DatasetDict`, one split per `<task>/<split>.csv` (train, val, test
    first). Rows: `path` (absolute clip path), `labels` (as `data.labels.labels_dataset` reads them).

    Args:
        label_names: single-label: every class of the task, in index order. A table names only the classes it holds,
            so without them a split of one class would index it 0 whatever it is; with them every split shares one
            `ClassLabel`.
    """
    import datasets

    folder = Path(prepared_dir) / task
    tables = {p.stem: p for p in folder.glob("*.csv")} if folder.is_dir() else {}
    if not tables:
        raise DatasetError(f"{prepared_dir}: no {task}/ tables; prepare the folder first", parameter="prepared_dir")
    if problem_type != "single_label_classification" or not label_names:
        return datasets.DatasetDict({s: labels_dataset(tables[s], problem_type) for s in ordered_splits(tables)})
    features = datasets.Features(
        {"path": datasets.Value("string"), "labels": datasets.ClassLabel(names=list(label_names))}
    )
    splits = {}
    for split in ordered_splits(tables):
        table = read_labels_csv(tables[split], problem_type)
        unknown = sorted(set(table.label_names) - set(label_names))
        if unknown:
            raise DatasetError(f"{tables[split]}: class {unknown[0]!r} is not one of {', '.join(label_names)}")
        labels = [list(label_names).index(table.label_names[i]) for i in table.labels]
        splits[split] = datasets.Dataset.from_dict({"path": table.paths, "labels": labels}, features=features)
    return datasets.DatasetDict(splits)
