"""CMU-MOSEI for sentiment and emotion: the official labels (read with h5py), the standard folds, face clips, tables.

CMU-MOSEI (Zadeh et al., ACL 2018) labels 23,453 opinion segments of 3,228 YouTube videos with a sentiment in
[-3, 3] and six emotion intensities in [0, 3]. The labels ship as a CMU Multimodal SDK "computational sequence",
`CMU_MOSEI_Labels.csd`: an HDF5 file read here with h5py, without the SDK::

    /All Labels/data/<video id>/features    (num_segments, 7) float: sentiment, happy, sad, anger, surprise,
                                            disgust, fear
    /All Labels/data/<video id>/intervals   (num_segments, 2) float: start and end of each segment, seconds
    /All Labels/metadata/...                the SDK's description (not needed)

(Any one top-level group is accepted; "All Labels" is preferred when there are several.) A segment's id is
`<video id>_<index>`, index the 0-based row of the video's `intervals`.

Videos (`source`):

- `"full"` (default): the full videos, `<video id>.mp4` anywhere under ROOT (the release's `Videos/Full/Combined/`),
  cut into segments by the labels' intervals; exact whatever else the folder holds.
- `"segmented"`: clips already cut, `<video id>_<index>.mp4` anywhere under ROOT (the release's
  `Videos/Segmented/Combined/`), used as they are: clip `<video>_<k>` gets row k's labels. That the release numbers
  its clips as the label rows are ordered is an assumption this module cannot check; prefer "full".

**Folds**: the CMU Multimodal SDK's standard folds (`data.mosei_folds`: `standard_train_fold`,
`standard_valid_fold`, `standard_test_fold`, 2250/300/678 videos), by video: all segments of a video are in its
video's fold. A segment of a video in no fold is left out and counted. `folds=` may name a file instead: JSON
`{"train": [...], "valid" (or "val"): [...], "test": [...]}`, or the SDK's `cmu_mosei_std_folds.py` itself (read as
data, never run).

**Tasks** (the shared format's tables, `data.labels`):

- `mosei-sentiment`: regression, one column `sentiment`, the raw label in [-3, 3]. The readings are derived from it
  by the metrics, as the literature defines them (MulT's `src/eval_metrics.py`, `eval_mosei_senti`, yaohungt/
  Multimodal-Transformer, the reading most papers reuse): Acc-2/F1 on `label > 0` vs `<= 0` over all segments, or
  over the non-zero ones only (`exclude_zero`); the "non-negative vs negative" reading (`>= 0`, e.g. s3prl's
  MOSEI task) is the other common one; Acc-7 on `round(clip(label, -3, 3))`; MAE and Pearson correlation on the raw
  values. `evaluation.metrics` names both binary readings.
- `mosei-emotions`: multi-label, six 0/1 columns happy, sad, anger, surprise, disgust, fear (present = intensity
  > 0, as MulT's `weighted_accuracy` binarizes); the raw intensities stay in `videos.csv`.

Prepared layout (`prepare_mosei`): the shared format of `data.task_preparation`: `OUT/clips/<segment id>.mp4`,
`OUT/mosei-sentiment/{train,val,test}.csv`, `OUT/mosei-emotions/{train,val,test}.csv`, `OUT/videos.csv` (one row
per segment: video_id, index, start, end, split, sentiment and the six raw intensities; `video` is the file it was
cut from), `OUT/preparation.json`.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..constants import MARLIN_CROP_SIZE
from ..exceptions import DatasetError, VideoError
from .task_preparation import SPLIT_ORDER, LabelTask, TaskVideo, face_cropper_factory, load_task, prepare_task

EMOTIONS = ("happy", "sad", "anger", "surprise", "disgust", "fear")
LABEL_COLUMNS = ("sentiment", *EMOTIONS)  # the order of a row of `features` in CMU_MOSEI_Labels.csd
TASKS = {"mosei-sentiment": "regression", "mosei-emotions": "multi_label_classification"}
LABELS_FILE = "CMU_MOSEI_Labels.csd"
LABELS_GROUP = "All Labels"
SOURCES = ("full", "segmented")
DEFAULT_SOURCE = "full"
TIME_TOLERANCE = 1e-4  # seconds: a frame at time t belongs to [start, end) when start <= t + this < end
FOLDS_SOURCE = (
    "CMU Multimodal SDK, mmsdk/mmdatasdk/dataset/standard_datasets/CMU_MOSEI/cmu_mosei_std_folds.py "
    "(standard_train_fold, standard_valid_fold, standard_test_fold)"
)


@dataclass(frozen=True)
class MoseiSegment:
    """One labelled segment.

    Attributes:
        id: `<video>_<index>`.
        video: the YouTube (or numeric) id of its video.
        index: its row in the video's labels, 0-based.
        start, end: its span in the full video, seconds.
        sentiment: in [-3, 3].
        emotions: the six raw intensities in `EMOTIONS` order, each in [0, 3].
    """

    id: str
    video: str
    index: int
    start: float
    end: float
    sentiment: float
    emotions: tuple[float, ...]

    def fields(self) -> dict:
        """Every field but the id, as `videos.csv` holds them."""
        return {
            "video_id": self.video,
            "index": self.index,
            "start": self.start,
            "end": self.end,
            "sentiment": self.sentiment,
            **dict(zip(EMOTIONS, self.emotions)),
        }

    def labels(self, task: str) -> list[float]:
        """The row of `task`'s table: [sentiment] or the six 0/1 emotions (present = intensity > 0)."""
        if task == "mosei-sentiment":
            return [self.sentiment]
        return [float(value > 0) for value in self.emotions]


def read_mosei_labels(path: str | os.PathLike) -> dict[str, MoseiSegment]:
    """Read `CMU_MOSEI_Labels.csd` (layout in the module docstring) into {segment id: segment}, ordered by video id
    and index.

    Raises:
        DatasetError: not an HDF5 file, no `data` group, or a video whose features are not (N, 7) or whose intervals
            are not (N, 2) of the same N, or hold NaN.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such labels file; pass CMU_MOSEI_Labels.csd with --labels", parameter="labels")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise DatasetError(f"{path}: not a readable .csd (HDF5) file ({error}); download it again") from None
    segments = {}
    with handle:
        groups = [name for name in handle if isinstance(handle[name], h5py.Group) and "data" in handle[name]]
        if not groups:
            raise DatasetError(
                f"{path}: no '<sequence>/data' group; expected the SDK's layout ('{LABELS_GROUP}/data')"
            )
        data = handle[LABELS_GROUP if LABELS_GROUP in groups else groups[0]]["data"]
        for video in sorted(data):
            entry = data[video]
            try:
                features = np.asarray(entry["features"], dtype=np.float64)
                intervals = np.asarray(entry["intervals"], dtype=np.float64)
            except KeyError as error:
                raise DatasetError(f"{path}: video {video!r} lacks {error}; expected features and intervals") from None
            if features.ndim != 2 or features.shape[1] != len(LABEL_COLUMNS):
                raise DatasetError(
                    f"{path}: video {video!r} has features of shape {features.shape}, expected (N, 7): "
                    f"{', '.join(LABEL_COLUMNS)}"
                )
            if intervals.shape != (len(features), 2):
                raise DatasetError(
                    f"{path}: video {video!r} has {len(features)} label rows but intervals of shape {intervals.shape}"
                )
            if not (np.isfinite(features).all() and np.isfinite(intervals).all()):
                raise DatasetError(f"{path}: video {video!r} has NaN or infinite labels or intervals")
            for index, (row, (start, end)) in enumerate(zip(features, intervals)):
                segment_id = f"{video}_{index}"
                segments[segment_id] = MoseiSegment(
                    segment_id, video, index, float(start), float(end), float(row[0]), tuple(float(v) for v in row[1:])
                )
    if not segments:
        raise DatasetError(f"{path}: holds no labelled segment")
    return segments


def find_labels_file(root: str | os.PathLike) -> Path:
    """`CMU_MOSEI_Labels.csd` under `root` (at any depth), for when `--labels` is not given."""
    root = Path(root)
    found = sorted(root.rglob(LABELS_FILE))
    if not found:
        raise DatasetError(
            f"{root}: no {LABELS_FILE} under it; pass the labels file with --labels", parameter="labels"
        )
    if len(found) > 1:
        raise DatasetError(
            f"{root}: {len(found)} {LABELS_FILE} files ({found[0]}, {found[1]}, ...); choose one with --labels",
            parameter="labels",
        )
    return found[0]


def standard_folds() -> dict[str, tuple[str, ...]]:
    """{split: video ids} of the SDK's standard folds (`data.mosei_folds`; "valid" is called "val" here)."""
    from . import mosei_folds

    return {"train": mosei_folds.TRAIN, "val": mosei_folds.VALID, "test": mosei_folds.TEST}


def read_folds_file(path: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    """{split: video ids} from a JSON folds file or the SDK's `cmu_mosei_std_folds.py` (its three list assignments
    are read with `ast.literal_eval`; the file is never run)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DatasetError(f"{path}: cannot read the folds file ({error.strerror})", parameter="folds") from None
    raw: dict = {}
    if path.suffix == ".py":
        try:
            tree = ast.parse(text)
        except SyntaxError as error:
            raise DatasetError(f"{path}: not Python ({error.msg}, line {error.lineno})", parameter="folds") from None
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id.removeprefix("standard_").removesuffix("_fold")
                try:
                    raw[name] = ast.literal_eval(node.value)
                except ValueError:
                    continue
    else:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path}: not valid JSON ({error})", parameter="folds") from None
    if isinstance(raw, dict) and "valid" in raw and "val" not in raw:
        raw["val"] = raw.pop("valid")
    if not isinstance(raw, dict) or any(not isinstance(raw.get(s), list | tuple) for s in SPLIT_ORDER):
        raise DatasetError(
            f"{path}: expected lists 'train', 'valid' (or 'val') and 'test' of video ids "
            "(JSON, or the SDK's standard_train_fold / standard_valid_fold / standard_test_fold)",
            parameter="folds",
        )
    folds = {split: tuple(str(v) for v in raw[split]) for split in SPLIT_ORDER}
    check_folds(folds, str(path))
    return folds


def check_folds(folds: Mapping[str, tuple[str, ...]], source: str) -> None:
    """Refuse folds that share a video (a video in two splits leaks its speaker into the test)."""
    seen: dict[str, str] = {}
    for split in SPLIT_ORDER:
        for video in folds[split]:
            if video in seen and seen[video] != split:
                raise DatasetError(
                    f"{source}: video {video!r} is in both {seen[video]} and {split}", parameter="folds"
                )
            seen[video] = split


def split_mosei(
    segments: Mapping[str, MoseiSegment], folds: Mapping[str, tuple[str, ...]]
) -> tuple[dict[str, list[str]], list[str]]:
    """Each segment in its video's fold.

    Returns:
        ({split: segment ids in label order}, the ids of segments whose video is in no fold).
    """
    split_of = {video: split for split in SPLIT_ORDER for video in folds[split]}
    split: dict[str, list[str]] = {name: [] for name in SPLIT_ORDER}
    unassigned = []
    for segment_id, segment in segments.items():
        name = split_of.get(segment.video)
        if name is None:
            unassigned.append(segment_id)
        else:
            split[name].append(segment_id)
    return split, unassigned


def find_videos(root: str | os.PathLike, names: set[str]) -> dict[str, Path]:
    """{name: path} of the `<name>.mp4` files under `root` (any depth) whose name is one of `names`.

    Raises:
        DatasetError: two files of one name (say which to keep).
    """
    found: dict[str, Path] = {}
    for path in sorted(Path(root).rglob("*.mp4")):
        if path.stem in names and not path.name.startswith("."):
            if path.stem in found:
                raise DatasetError(f"{path}: {path.stem} is also at {found[path.stem]}; keep one copy")
            found[path.stem] = path
    return found


def mosei_tasks() -> list:
    """The two `data.task_preparation.LabelTask`s: mosei-sentiment (regression), mosei-emotions (multi-label)."""
    return [
        LabelTask("mosei-sentiment", TASKS["mosei-sentiment"], ("sentiment",)),
        LabelTask("mosei-emotions", TASKS["mosei-emotions"], EMOTIONS),
    ]


def segment_cropper(cropper: Callable, rate: Callable[[Path], float] | None = None) -> Callable:
    """A `FrameCropper` handing `cropper` only the frames of the segment `[start, end)` seconds of the full video
    (`clip.fields["start"]`, `["end"]` of the `TaskVideo` it is given), frame k at k / frame rate (to within
    `TIME_TOLERANCE`). Decoding stops at the segment's end; the face detector sees the segment's frames only.

    Raises:
        VideoError: the segment holds no frame (the video is shorter than its labels say).
    """
    if rate is None:
        from ..video.decoding import frame_rate

        def rate(path: Path) -> float:
            return float(frame_rate(path))

    def crop(frames: Iterator[np.ndarray], clip) -> Iterator[np.ndarray]:
        start, end = float(clip.fields["start"]), float(clip.fields["end"])
        fps = rate(clip.path)

        def inside() -> Iterator[np.ndarray]:
            for index, frame in enumerate(frames):
                time = index / fps + TIME_TOLERANCE  # intervals stored as float32 miss a frame's time by ~1e-7 s
                if time >= end:
                    return
                if time >= start:
                    yield frame

        made = 0
        for face in cropper(inside(), clip):
            made += 1
            yield face
        if not made:
            raise VideoError(
                f"{clip.path}: no frame in {start:.2f}-{end:.2f} s (segment {clip.video_id}); the video is shorter "
                "than its labels say, download it again"
            )

    return crop


def segment_cropper_factory(crop: str, size: int, num_workers: int, device: str | None = None) -> Callable:
    """What makes one worker's cropper of segments: the face cropper `crop` ("face", "reference") behind
    `segment_cropper`."""
    make_face_cropper = face_cropper_factory(crop, size, num_workers, device)

    def make() -> Callable:
        return segment_cropper(make_face_cropper())

    make.__name__ = f"{crop}, cut by the labels' intervals"
    return make


def mosei_videos(
    segments: Mapping[str, MoseiSegment], split: Mapping[str, list[str]], sources: Mapping[str, Path], source: str
):
    """The segments with a video as `data.task_preparation.TaskVideo`s: both tasks' labels, every field.

    Args:
        sources: {video id: full video} for `source` "full", {segment id: clip} for "segmented".
    """
    videos = []
    for name in SPLIT_ORDER:
        for segment_id in split[name]:
            segment = segments[segment_id]
            path = sources.get(segment.video if source == "full" else segment_id)
            if path is not None:
                labels = {task: segment.labels(task) for task in TASKS}
                videos.append(TaskVideo(segment_id, path, name, labels, segment.fields()))
    return videos


def prepare_mosei(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    folds: str | os.PathLike | None = None,
    source: str = DEFAULT_SOURCE,
    crop: str = "face",
    size: int = MARLIN_CROP_SIZE,
    num_workers: int = 1,
    device: str | None = None,
    progress: bool = True,
):
    """Read the labels and folds, find the videos under `root` and prepare face clips and the `mosei-sentiment` and
    `mosei-emotions` tables (the shared format of `data.task_preparation`, see the module docstring).

    Args:
        root: the CMU-MOSEI folder (videos at any depth: `Videos/Full/Combined/`, `Videos/Segmented/Combined/`).
        out_dir: the prepared folder (re-running it resumes).
        labels: `CMU_MOSEI_Labels.csd` (default: the one under `root`).
        folds: a folds file (JSON or the SDK's `cmu_mosei_std_folds.py`); default the SDK's standard folds.
        source: "full" (cut by the labels' intervals) or "segmented" (`<video>_<index>.mp4` clips as they are).
        crop: "face" (MTCNN tracking) or "reference" (a detector box per frame, as the paper code).
        num_workers: videos cropped at once, in threads, each with its own detector.
        device: where MTCNN runs ("cuda"); default the CPU.

    Returns:
        `data.task_preparation.TaskPreparation`.
    """
    if source not in SOURCES:
        raise DatasetError(f"source {source!r}: use one of {', '.join(SOURCES)}", parameter="source")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder; pass the CMU-MOSEI folder", parameter="root")
    labels_path = Path(labels) if labels is not None else find_labels_file(root)
    segments = read_mosei_labels(labels_path)
    fold_ids = read_folds_file(folds) if folds is not None else standard_folds()
    split, unassigned = split_mosei(segments, fold_ids)
    wanted = {s.video for s in segments.values()} if source == "full" else set(segments)
    sources = find_videos(root, wanted)
    videos = mosei_videos(segments, split, sources, source)
    if not videos:
        expected = "<video id>.mp4" if source == "full" else "<video id>_<index>.mp4"
        raise DatasetError(
            f"{root}: none of the {len(segments)} labelled segments has a video ({expected}, source {source!r}); "
            "check the folder and --source",
            parameter="root",
        )
    assigned = [segment_id for ids in split.values() for segment_id in ids]
    found = {v.video_id for v in videos}
    missing = [segment_id for segment_id in assigned if segment_id not in found]
    record = {
        "name": "standard folds" if folds is None else "folds file",
        "source": FOLDS_SOURCE if folds is None else str(Path(folds).resolve()),
        "labels": str(labels_path.resolve()),
        "video_source": source,
        "segments_labelled": len(segments),
        "segments_in_no_fold": len(unassigned),
        "segments_without_video": len(missing),
        "binary_and_7_class_readings": "derived from the sentiment column by evaluation.metrics (see data.mosei)",
    }
    crop_factory = segment_cropper_factory(crop, size, num_workers, device) if source == "full" else crop
    return prepare_task(
        videos,
        out_dir,
        mosei_tasks(),
        record,
        "marlin prepare-mosei",
        crop=crop_factory,
        size=size,
        num_workers=num_workers,
        device=device,
        progress=progress,
    )


def load_mosei(prepared_dir: str | os.PathLike, task: str = "mosei-sentiment"):
    """A prepared MOSEI task as a `datasets.DatasetDict` (train, val, test): `path` (absolute clip path), `labels`
    ([sentiment] for `mosei-sentiment`, six float32 0/1 for `mosei-emotions`)."""
    if task not in TASKS:
        raise DatasetError(f"unknown CMU-MOSEI task {task!r}: use one of {', '.join(TASKS)}", parameter="task")
    return load_task(prepared_dir, task, TASKS[task])
