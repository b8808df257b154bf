"""The folder `marlin prepare-ytf` / `marlin prepare-faces` write, and reading it back.

Layout::

    OUT/dataset.json                 name ("youtube_faces" or "face_videos"), the preparation settings
    OUT/split.json                   how the split was made, the video ids of train and validation, the ones left out
    OUT/train_set.csv, val_set.csv   the same split as the paper's files (`path,len`), once preparation has ended
    OUT/manifest.jsonl               one JSON line per video and attempt: input, identity, settings, status, error
    OUT/clips/<video_id>.mp4         the 224x224 face crops of every frame (H.264; lossless RGB H.264 if asked)
    OUT/annotations/<video_id>.npz   per frame: landmarks (T, 5, 2) float32 crop pixels, parsing (T, 224, 224)
                                     uint8 LaPa labels, frame_indices (T,) int64, detected (T,) bool, crop_boxes
                                     (T, 4) int64 frame pixels, frame_names (T,) (frame folders); fps () float64

A video is prepared when the manifest's last line for it says `ok` (written after its two files, so a line never
points at a partial file). `read_prepared` returns those, by split.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import records
from ..exceptions import DatasetError

INFO_FILE = "dataset.json"
SPLIT_FILE = "split.json"
MANIFEST = records.MANIFEST
CLIPS = "clips"
ANNOTATIONS = "annotations"
# The paper's split files, written from split.json for the reference's loaders.
SPLIT_CSV = {"train": "train_set.csv", "validation": "val_set.csv"}


@dataclass(frozen=True)
class PreparedVideo:
    """One prepared video: ids, its files (absolute) and frame count and rate."""

    video_id: str
    person: str
    clip: Path
    annotations: Path
    num_frames: int
    fps: float


def clip_path(out_dir: str | os.PathLike, video_id: str, suffix: str = ".mp4") -> Path:
    return Path(out_dir) / CLIPS / f"{video_id}{suffix}"


def annotations_path(out_dir: str | os.PathLike, video_id: str) -> Path:
    return Path(out_dir) / ANNOTATIONS / f"{video_id}.npz"


def is_prepared_record(record) -> bool:
    """A manifest line as the preparation writes it: a dict with a `video_id` and a `status`."""
    return isinstance(record, dict) and isinstance(record.get("video_id"), str) and "status" in record


def read_prepared_records(out_dir: str | os.PathLike) -> dict[str, dict]:
    """The last whole record per video id over `manifest.jsonl` and the per-process `manifest.rank*.jsonl`.

    Lines that are not records (cut short by a crash, garbage) are skipped: that video is simply prepared again."""
    return records.read_records(out_dir, "video_id", is_prepared_record)


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: cannot read the {what} ({error}); prepare the folder again.") from None


def read_prepared(out_dir: str | os.PathLike) -> tuple[dict, dict[str, list[PreparedVideo]]]:
    """(dataset.json's content, {"train": videos, "validation": videos}) of a prepared folder; failed videos and
    those of no split are left out.

    Raises:
        DatasetError: not a prepared folder, or no prepared video at all.
    """
    out_dir = Path(out_dir)
    if not (out_dir / INFO_FILE).is_file() or not (out_dir / SPLIT_FILE).is_file():
        raise DatasetError(
            f"{out_dir}: not a prepared face-video folder (no {INFO_FILE} or {SPLIT_FILE}); make it with "
            "`marlin prepare-ytf` or `marlin prepare-faces`."
        )
    info = read_json(out_dir / INFO_FILE, "dataset description")
    split = read_json(out_dir / SPLIT_FILE, "split")
    records = read_prepared_records(out_dir)
    videos = {}
    for name in SPLIT_CSV:
        videos[name] = []
        for video_id in split.get(name, []):
            record = records.get(video_id)
            if record is None or record.get("status") != "ok":
                continue
            videos[name].append(
                PreparedVideo(
                    video_id=video_id,
                    person=record["person"],
                    clip=out_dir / record["clip"],
                    annotations=out_dir / record["annotations"],
                    num_frames=int(record["num_frames"]),
                    fps=float(record["fps"]),
                )
            )
    if not any(videos.values()):
        raise DatasetError(f"{out_dir}: no video prepared yet; run the preparation (again) and read its errors.")
    return info, videos


def read_annotations(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an `annotations/<video_id>.npz` (see the module docstring), loaded without pickle."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}
