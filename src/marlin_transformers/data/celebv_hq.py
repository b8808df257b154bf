"""CelebV-HQ for MARLIN's facial attribute tasks: labels, a deterministic split, 224-pixel face clips, datasets.

CelebV-HQ (Zhu et al., ECCV 2022) labels 35,666 clips with 40 appearance and 35 action attributes (0/1 each). The
MARLIN paper (arXiv 2211.06627) trains one multi-label classifier per task and reports accuracy and one AUROC over
all (clip x attribute) pairs (`marlin_transformers.evaluation.metrics`).

Release layout read here::

    ROOT/celebvhq_info.json       {"mete_info": {"appearance_mapping": [40 names], "action_mapping": [35 names]},
                                   "clips": {"<clip id>": {"ytb_id", "duration": {"start_sec", "end_sec"},
                                             "bbox": {"top", "bottom", "left", "right"} (fractions of the frame),
                                             "attributes": {"appearance": [40 x 0/1], "action": [35 x 0/1],
                                                            "emotion": {...}}}}}
    ROOT/downloaded/<clip id>.mp4

(`"mete_info"` is the release's spelling; `"meta_info"` is accepted too.)

Prepared layout written by `prepare_celebvhq(root, out_dir)`::

    OUT/split.json                seed, fractions, the clip ids of each split, clips left out and why
    OUT/cropped/<clip id>.mp4     224 x 224 face clips (unless `crop=None`)
    OUT/appearance/{train,val,test}.csv
    OUT/action/{train,val,test}.csv

**Split.** All clip ids of the info file are sorted, shuffled with `numpy.random.default_rng(seed)` (seed 0 by
default) and cut 80/10/10: the first `int(0.8 * n)` are train, the next `int(0.1 * n)` val, the rest test. Only then
are the clips whose video is missing dropped, so a clip lands in the same split on every machine whatever else
that machine could download (the reference split follows `os.listdir` order and shifts with every missing video).

**Labels.** The CSVs are `data.labels` tables (one 0/1 column per attribute).

**Crops.** The paper's preprocessing (`preprocess/celebvhq_preprocess.py` of ControlNet/MARLIN) runs a face
detector (FaceX-Zoo RetinaFace) on every frame of the `downloaded` clips and crops a square of side max(w, h)
around the detection, zero-padded, resized to 224. Here the crop is a choice (`crop=`):

- `"bbox"` (default): the clip's `bbox` from the info file, as the CelebV-HQ release script applies it (box grown by
  0.02 of the frame on each side, then the centred square of its shorter side), resized to 224. For videos
  holding the whole YouTube frame.
- `"resize"`: the centred square of each frame resized to 224. For clips the CelebV-HQ script already cropped
  (they are square); refusing `"bbox"` on square videos guards against cropping twice.
- `"face"`: with a face detector, our way: `video.face_tracking.FaceTracker` (MTCNN) follows the face through
  each clip, smoothed; square of side max(w, h) around it, zero-padded, resized to 224
  (`data.task_preparation.face_tracker_cropper`, the face-clip job every task preparer shares).
- `"reference"`: as the paper code did (`task_preparation.reference_cropper`): a detector box per frame on its own
  (MTCNN standing in for RetinaFace), no tracking or smoothing, square of side 2 * int(max(w, h) / 2) centred on
  it, zero-padded, resized to 224; a frame without a face keeps the last box (the paper code cut a 2x2 corner). The
  paper's numbers came from crops made this way.
- a callable `(frames, clip) -> frames` (see `FrameCropper`), e.g. `face_tracker_cropper(FaceTracker(...))`.
- `None`: no new videos; the CSVs point at `downloaded/` (crop on the fly in the fine-tuning script instead).
"""

import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..constants import MARLIN_CROP_SIZE
from ..exceptions import DatasetError
from ..records import write_text_atomic
from ..video.decoding import resize_frames
from .labels import labels_dataset, write_labels_csv
from .task_preparation import (
    SPLIT_ORDER,
    FrameCropper,
    clip_job_kind,
    crop_clips,
    face_tracker_cropper,
    reference_cropper,
)

TASKS = ("appearance", "action")
DEFAULT_SPLIT_SEED = 0
DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
# The CelebV-HQ release script grows each box by this fraction of the frame on every side before squaring it.
BBOX_EXPAND = 0.02


@dataclass(frozen=True)
class CelebvHqClip:
    """One annotated clip of `celebvhq_info.json`.

    Attributes:
        clip_id: e.g. `"M2Ohb0FAaJU_1"`; the video is `downloaded/<clip_id>.mp4`.
        ytb_id: the YouTube video the clip was cut from.
        start_sec, end_sec: the clip's span in that video, seconds.
        bbox: (top, bottom, left, right) of the face region, fractions of the frame height/width in [0, 1].
        appearance: 40 0/1 labels, in the order of `CelebvHqInfo.appearance_names`.
        action: 35 0/1 labels, in the order of `CelebvHqInfo.action_names`.
    """

    clip_id: str
    ytb_id: str
    start_sec: float
    end_sec: float
    bbox: tuple[float, float, float, float]
    appearance: tuple[int, ...]
    action: tuple[int, ...]

    def labels(self, task: str) -> tuple[int, ...]:
        """The 0/1 labels of `task` ("appearance" or "action")."""
        return self.appearance if task == "appearance" else self.action


@dataclass(frozen=True)
class CelebvHqInfo:
    """The label names and clips of `celebvhq_info.json`."""

    appearance_names: tuple[str, ...]
    action_names: tuple[str, ...]
    clips: dict[str, CelebvHqClip]

    def label_names(self, task: str) -> tuple[str, ...]:
        _check_task(task)
        return self.appearance_names if task == "appearance" else self.action_names


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise DatasetError(f"unknown CelebV-HQ task {task!r}: use one of {', '.join(TASKS)}")


def read_celebvhq_info(path: str | os.PathLike) -> CelebvHqInfo:
    """Read `celebvhq_info.json` (release layout, see the module docstring)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise DatasetError(
            f"{path}: no CelebV-HQ info file here; pass the folder holding celebvhq_info.json"
        ) from None
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error}); download celebvhq_info.json again") from None
    meta = raw.get("mete_info", raw.get("meta_info"))
    if not isinstance(meta, dict) or "clips" not in raw:
        raise DatasetError(f"{path}: expected top-level 'mete_info' and 'clips' as in the CelebV-HQ release")
    appearance_names = tuple(meta["appearance_mapping"])
    action_names = tuple(meta["action_mapping"])
    clips = {}
    for clip_id, entry in raw["clips"].items():
        try:
            attributes = entry["attributes"]
            bbox = entry["bbox"]
            clip = CelebvHqClip(
                clip_id=clip_id,
                ytb_id=entry["ytb_id"],
                start_sec=float(entry["duration"]["start_sec"]),
                end_sec=float(entry["duration"]["end_sec"]),
                bbox=(float(bbox["top"]), float(bbox["bottom"]), float(bbox["left"]), float(bbox["right"])),
                appearance=tuple(int(v) for v in attributes["appearance"]),
                action=tuple(int(v) for v in attributes["action"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(
                f"{path}: clip {clip_id!r} lacks or mangles {error}; expected the release layout"
            ) from None
        if len(clip.appearance) != len(appearance_names) or len(clip.action) != len(action_names):
            raise DatasetError(
                f"{path}: clip {clip_id!r} has {len(clip.appearance)} appearance and {len(clip.action)} action "
                f"labels, the mappings name {len(appearance_names)} and {len(action_names)}"
            )
        clips[clip_id] = clip
    return CelebvHqInfo(appearance_names, action_names, clips)


def split_clip_ids(
    clip_ids: Iterable[str],
    seed: int = DEFAULT_SPLIT_SEED,
    fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
) -> dict[str, list[str]]:
    """Deterministic train/val/test split: sort, shuffle with `default_rng(seed)`, cut by `fractions`.

    Train gets the first `int(fractions[0] * n)` shuffled ids, val the next `int(fractions[1] * n)`, test the rest.
    The result depends only on the set of ids and the seed (not on their order or on the machine). Each split's
    list is returned sorted.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise DatasetError(f"split fractions {tuple(fractions)} must be three non-negative numbers summing to 1")
    ordered = sorted(set(clip_ids))
    shuffled = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    num_train = int(fractions[0] * len(ordered))
    num_val = int(fractions[1] * len(ordered))
    parts = (shuffled[:num_train], shuffled[num_train : num_train + num_val], shuffled[num_train + num_val :])
    return {split: sorted(part) for split, part in zip(SPLIT_ORDER, parts)}


def celebvhq_split(
    info: CelebvHqInfo,
    video_dir: str | os.PathLike,
    seed: int = DEFAULT_SPLIT_SEED,
    fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
) -> tuple[dict[str, list[str]], list[str]]:
    """Split every clip of `info`, then keep those whose `video_dir/<clip id>.mp4` exists.

    Returns:
        ({split: clip ids}, the clip ids left out because their video is missing, sorted).
    """
    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise DatasetError(f"{video_dir}: no such folder; CelebV-HQ videos are expected in ROOT/downloaded/")
    present = {p.stem for p in video_dir.glob("*.mp4")}
    full = split_clip_ids(info.clips, seed, fractions)
    split = {name: [c for c in ids if c in present] for name, ids in full.items()}
    missing = sorted(c for c in info.clips if c not in present)
    return split, missing


def bbox_crop_box(bbox: Sequence[float], height: int, width: int) -> tuple[int, int, int]:
    """Pixel square of a CelebV-HQ `bbox` in a `height` x `width` frame, as the release script computes it.

    The box (top, bottom, left, right; fractions) grows by `BBOX_EXPAND` on each side (clamped to the frame), is
    turned into pixels, and shrinks to the square of its shorter side around its centre.

    Returns:
        (top, left, side) in pixels; the square lies inside the frame.
    """
    top, bottom, left, right = bbox
    top, bottom = max(top - BBOX_EXPAND, 0.0), min(bottom + BBOX_EXPAND, 1.0)
    left, right = max(left - BBOX_EXPAND, 0.0), min(right + BBOX_EXPAND, 1.0)
    top, bottom = round(top * height), round(bottom * height)
    left, right = round(left * width), round(right * width)
    half = min(bottom - top, right - left) // 2
    if half <= 0:
        raise DatasetError(f"bbox {tuple(bbox)} is empty in a {width}x{height} frame")
    centre_y, centre_x = (top + bottom) / 2, (left + right) / 2
    side = 2 * half
    crop_top = min(max(int(round(centre_y - half)), 0), height - side)
    crop_left = min(max(int(round(centre_x - half)), 0), width - side)
    return crop_top, crop_left, side


def bbox_cropper(size: int = MARLIN_CROP_SIZE) -> FrameCropper:
    """A `FrameCropper` cutting each frame to the clip's `bbox` square (`bbox_crop_box`), resized to `size`."""

    def crop(frames: Iterator[np.ndarray], clip: CelebvHqClip) -> Iterator[np.ndarray]:
        box = None
        for frame in frames:  # (H, W, 3)
            if box is None:
                height, width = frame.shape[:2]
                if abs(height - width) <= 2:
                    raise DatasetError(
                        f"{clip.clip_id}: the video is square ({width}x{height}), so the CelebV-HQ script already "
                        "cropped it; prepare with --crop resize (crop='resize' in Python) instead of bbox"
                    )
                box = bbox_crop_box(clip.bbox, height, width)
            top, left, side = box
            yield resize_frames(frame[None, top : top + side, left : left + side], size)[0]

    return crop


def resize_cropper(size: int = MARLIN_CROP_SIZE) -> FrameCropper:
    """A `FrameCropper` taking the centred square of each frame, resized to `size` (for already cropped clips).

    A clip that is not square loses its sides: said once per cropper (one warning a run), naming the first such clip.
    """
    warned = []

    def crop(frames: Iterator[np.ndarray], clip: CelebvHqClip) -> Iterator[np.ndarray]:
        for frame in frames:  # (H, W, 3)
            height, width = frame.shape[:2]
            if abs(height - width) > 2 and not warned:
                warned.append(clip.clip_id)
                warnings.warn(
                    f"--crop resize: {clip.clip_id} is {width}x{height}, not square; its centred square is kept and "
                    "the rest cut (said once a run). For full CelebV-HQ frames use --crop bbox.",
                    stacklevel=2,
                )
            side = min(height, width)
            top, left = (height - side) // 2, (width - side) // 2
            yield resize_frames(frame[None, top : top + side, left : left + side], size)[0]

    return crop


def celebvhq_cropper(crop: str | FrameCropper | None, size: int = MARLIN_CROP_SIZE) -> FrameCropper | None:
    """The `FrameCropper` `crop` names: "bbox", "resize", "face", "reference", a function, or None (no crops)."""
    named = dict(bbox=bbox_cropper, resize=resize_cropper, face=face_tracker_cropper, reference=reference_cropper)
    if isinstance(crop, str) and crop in named:
        return named[crop](size=size)
    if crop is None or callable(crop):
        return crop
    raise DatasetError(
        f"unknown crop {crop!r}: use 'bbox', 'resize', 'face', 'reference', None or a function (frames, clip)"
    )


# The crops' job (`data.task_preparation`): one record per clip, `cropped/<clip id>.mp4`.
CROPPED = clip_job_kind("marlin prepare-celebvhq", key="clip_id", folder="cropped")


def prepare_celebvhq(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    crop: str | FrameCropper | None = "bbox",
    size: int = MARLIN_CROP_SIZE,
    seed: int = DEFAULT_SPLIT_SEED,
    fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    num_workers: int = 1,
    progress: bool = True,
) -> dict[str, list[str]]:
    """Split CelebV-HQ, crop its clips to `size` and write the labels CSVs (prepared layout in the module docstring).

    The crops are a `jobs.run_job` (a manifest, resumed, refused into a folder cropped with another `crop` or
    `size`). A clip whose video cannot be decoded is left out of the CSVs and listed in `split.json` under `"failed"`
    with its error.

    Args:
        root: the CelebV-HQ folder (`celebvhq_info.json`, `downloaded/`).
        out_dir: where the prepared layout goes (may be `root`).
        crop: `"bbox"`, `"resize"`, `"face"`, a `FrameCropper`, or None (see the module docstring).
        size: side of the crops, pixels.
        num_workers: clips cropped at once, in threads (PyAV, PIL and torch release the GIL), each with its own
            cropper (its own MTCNN for "face" and "reference"); a cropper function of yours runs with 1.

    Returns:
        {split: clip ids written to that split's CSVs}.
    """
    root, out_dir = Path(root), Path(out_dir)
    info = read_celebvhq_info(root / "celebvhq_info.json")
    split, missing = celebvhq_split(info, root / "downloaded", seed, fractions)
    if not any(split.values()):
        raise DatasetError(f"{root / 'downloaded'}: none of the {len(info.clips)} clips of the info file has a video")
    cropper = celebvhq_cropper(crop, size)
    if num_workers > 1 and callable(crop):  # a named crop is made anew in each worker thread, a function is shared
        raise DatasetError(
            f"{num_workers}: your crop function may keep per-clip state and would be shared by the workers, so it "
            "runs in one worker; give 1, or a named crop",
            parameter="num_workers",
        )
    crop_name = crop if isinstance(crop, str) or crop is None else getattr(crop, "__name__", "custom")
    ordered = [clip_id for name in SPLIT_ORDER for clip_id in split[name]]
    videos = {clip_id: root / "downloaded" / f"{clip_id}.mp4" for clip_id in ordered}
    failed: dict[str, str] = {}
    is_main_process = True
    if cropper is not None:
        sources = {clip_id: videos[clip_id] for clip_id in ordered}
        made = crop_clips(
            sources,
            out_dir,
            (lambda: celebvhq_cropper(crop, size)) if isinstance(crop, str) else (lambda: cropper),
            {"crop": crop_name, "size": size},
            CROPPED,
            annotations=info.clips,
            size=size,
            num_workers=num_workers,
            progress=progress,
        )
        is_main_process = made.summary.is_main_process
        failed, videos = made.failed, made.clips

    kept = {name: [c for c in split[name] if c in videos] for name in SPLIT_ORDER}
    if is_main_process:
        write_celebvhq_csvs(out_dir, info, kept, videos)
        record = {"seed": seed, "fractions": list(fractions), "crop": crop_name, "size": size, **kept}
        split_record = json.dumps({**record, "missing_video": missing, "failed": failed}, indent=1)
        write_text_atomic(out_dir / "split.json", split_record)
    return kept


def write_celebvhq_csvs(out_dir: Path, info: CelebvHqInfo, split: dict[str, list[str]], videos: dict[str, Path]):
    """`out_dir/<task>/<split>.csv` for both tasks: the clips of each split (their `videos`) and their labels."""
    for task in TASKS:
        for name in SPLIT_ORDER:
            labels = np.array([info.clips[c].labels(task) for c in split[name]], dtype=np.int64)
            paths = [videos[c] for c in split[name]]
            write_labels_csv(out_dir / task / f"{name}.csv", paths, labels, info.label_names(task))


def load_celebvhq(prepared_dir: str | os.PathLike, task: str):
    """The prepared CelebV-HQ `task` as a `datasets.DatasetDict` with splits train/val/test.

    Each row: `path` (absolute video path), `labels` (list of 40 or 35 float32 0/1, in the order of the CSV
    header, i.e. the release's mapping). Build it from `prepare_celebvhq`'s output; no loading script is run.
    """
    import datasets

    _check_task(task)
    prepared_dir = Path(prepared_dir)
    if not (prepared_dir / task).is_dir():
        raise DatasetError(
            f"{prepared_dir}: no {task}/ folder; run prepare_celebvhq (or the preparation command) first"
        )
    return datasets.DatasetDict(
        {
            name: labels_dataset(prepared_dir / task / f"{name}.csv", "multi_label_classification")
            for name in SPLIT_ORDER
        }
    )
