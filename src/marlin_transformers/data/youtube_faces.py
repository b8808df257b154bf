"""YouTube Faces in the layout the MARLIN reference prepares: frame folders of face crops, saved LaPa parsing maps."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..exceptions import DatasetError
from ..video.decoding import frame_files


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


def precomputed_label_maps(source: str | os.PathLike, frame_indices: Sequence[int]) -> np.ndarray | None:
    """The reference's saved LaPa maps of a YouTube Faces frame folder, (T, 224, 224) uint8, or None if it has none.

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
    files = frame_files(source)
    maps = []
    for index in frame_indices:
        saved = np.load(parsing_folder / f"{files[index].stem}.npy")
        maps.append(saved[0] if saved.shape[0] > 0 else np.zeros(saved.shape[1:] or (224, 224), np.uint8))
    return np.stack(maps).astype(np.uint8)
