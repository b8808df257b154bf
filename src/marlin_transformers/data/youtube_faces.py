"""YouTube Faces: the original frame folders, the paper's split files, and the layout the MARLIN reference prepares.

The release (Wolf et al., CVPR 2011) holds `frame_images_DB/<person>/<video>/<frame>.jpg`: 3,425 videos of 1,595
people, frames named `<video>.<number>.jpg` (`0.555.jpg`, `0.1000.jpg`). `ytf_videos` lists them for `marlin
prepare-ytf`. The MARLIN paper's split (`train_set.csv`, `val_set.csv`: `path,len` rows such as `AJ_Cook/0,79`;
2,593 and 633 videos, no person in both) is read by `read_split_files`.

**Frame order.** The reference sorts a video's frame files as strings, so `0.1000.jpg` comes before `0.555.jpg`
and every video longer than a few hundred frames is shuffled in blocks (frames 1000-1999 before 555-999, ...).
`marlin prepare-ytf` sorts them by their numbers by default (`numeric`); `reference` reproduces the string order
(`video.decoding.FRAME_ORDERS`, the orders of `video.decoding.frame_files`).

The reference's own output (`crop_images_DB`, `face_parsing_images_DB`) is read by `youtube_faces_clips` and
`precomputed_label_maps`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..exceptions import DatasetError
from ..video.decoding import IMAGE_EXTENSIONS, frame_files
from .face_videos import SPLITS, FaceVideo


def ytf_frames_root(root: str | os.PathLike) -> Path:
    """`root/frame_images_DB`, or `root` itself if it is that folder (holds person folders of video folders).

    Raises:
        DatasetError: neither.
    """
    root = Path(root)
    for candidate in (root / "frame_images_DB", root):
        if candidate.is_dir() and any(p.is_dir() for p in candidate.iterdir()):
            return candidate
    raise DatasetError(
        f"{root}: not a YouTube Faces folder; pass the folder holding frame_images_DB/<person>/<video>."
    )


def ytf_videos(root: str | os.PathLike) -> list[FaceVideo]:
    """Every video folder of a YouTube Faces release (`ytf_frames_root`), sorted by id `<person>/<video>`.

    Folders without frame images are left out; the release's `<person>.labeled_faces.txt` files are ignored."""
    frames_root = ytf_frames_root(root)
    videos = []
    for person in sorted(p for p in frames_root.iterdir() if p.is_dir()):
        for folder in sorted(p for p in person.iterdir() if p.is_dir()):
            if any(f.suffix.lower() in IMAGE_EXTENSIONS for f in folder.iterdir()):
                videos.append(FaceVideo(f"{person.name}/{folder.name}", person.name, folder))
    if not videos:
        raise DatasetError(f"{frames_root}: no <person>/<video>/ folders of frame images found.")
    return videos


def read_split_files(train_csv: str | os.PathLike, validation_csv: str | os.PathLike) -> dict[str, list[str]]:
    """{"train": ids, "validation": ids} from the paper's split files (`path,len` rows, `path` = `<person>/<video>`).

    Raises:
        DatasetError: a missing file, one without a `path` column, or a video listed in both.
    """
    split = {}
    for name, path in zip(SPLITS, (train_csv, validation_csv)):
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"{path}: no such split file; pass the paper's train_set.csv and val_set.csv.")
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if "path" not in (reader.fieldnames or []):
                raise DatasetError(f"{path}: no `path` column; a split file has `path,len` rows like AJ_Cook/0,79.")
            split[name] = [row["path"].strip().strip("/") for row in reader if row["path"].strip()]
    both = set(split["train"]) & set(split["validation"])
    if both:
        raise DatasetError(f"{train_csv} and {validation_csv} both list {sorted(both)[0]} ({len(both)} videos).")
    return split


def youtube_faces_clips(root: str | os.PathLike, split: str) -> list[Path]:
    """The frame folders of a YouTube Faces split, laid out as the MARLIN reference prepares it.

    `root/{split}_set.csv` lists the clips (columns `path,len`, e.g. `AJ_Cook/0,79`); the face crops of clip `path`
    are `root/crop_images_DB/<path>/*.jpg`. Face parsing maps, if the reference's preprocessing made them, are read
    from `root/face_parsing_images_DB/<path>/<frame>.npy` (see `precomputed_label_maps`).

    Raises:
        DatasetError: missing split file or clip folder.
    """
    root = Path(root)
    split_file = root / f"{split}_set.csv"
    if not split_file.is_file():
        raise DatasetError(f"{split_file}: no such split file; a YouTube Faces root holds train_set.csv, val_set.csv.")
    with open(split_file, newline="") as f:
        clips = [root / "crop_images_DB" / row["path"] for row in csv.DictReader(f)]
    missing = [str(c) for c in clips if not c.is_dir()]
    if missing:
        raise DatasetError(f"{missing[0]}: clip listed in {split_file} has no frame folder ({len(missing)} missing).")
    return clips


def precomputed_label_maps(
    source: str | os.PathLike, frame_indices: Sequence[int], frame_order: str = "numeric"
) -> np.ndarray | None:
    """The reference's saved LaPa maps of a YouTube Faces frame folder, (T, 224, 224) uint8, or None if it has none.
    `frame_indices` count its frames in `frame_order` (`video.decoding.frame_files`).

    For `.../crop_images_DB/<clip>/<frame>.jpg` the map is `.../face_parsing_images_DB/<clip>/<frame>.npy`, a
    (1, 224, 224) array, or an empty one where no face was parsed (an all-background map here: random masking).
    """
    source = Path(source)
    if not source.is_dir() or "crop_images_DB" not in source.parts:
        return None
    parts = list(source.parts)
    parts[len(parts) - 1 - parts[::-1].index("crop_images_DB")] = "face_parsing_images_DB"
    parsing_folder = Path(*parts)
    if not parsing_folder.is_dir():
        return None
    files = frame_files(source, frame_order)
    maps = []
    for index in frame_indices:
        saved = np.load(parsing_folder / f"{files[index].stem}.npy")
        maps.append(saved[0] if saved.shape[0] > 0 else np.zeros(saved.shape[1:] or (224, 224), np.uint8))
    return np.stack(maps).astype(np.uint8)
