"""The Fasking mask of one clip of face crops, and its picture (`marlin show-mask`).

Parsing the crops and drawing the mask is pretraining's work (`face_parsing`, `masking`); the picture is
`visualization.render_mask_overlay`'s, which only draws the arrays it is given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..visualization import render_mask_overlay
from .face_parsing import LandmarkFaceParser
from .masking import generate_mask


def render_fasking_preview(
    face_crops: torch.Tensor | np.ndarray,
    landmarks: torch.Tensor | np.ndarray,
    path: str | Path,
    mask_ratio: float,
    patch_size: int,
    tubelet_size: int,
    parser=None,
    boxes: torch.Tensor | np.ndarray | None = None,
    strategy: str = "fasking",
    seed: int = 0,
    num_shown: int = 4,
    frame_indices: list[int] | None = None,
):
    """Parse a clip of face crops, draw its Fasking mask and write the picture of `render_mask_overlay`.

    What `marlin show-mask` needs after decoding and cropping: `face_crops` `(num_frames, size, size, 3)` uint8 RGB
    with `num_frames` a multiple of `tubelet_size`, `landmarks` `(num_frames, 5, 2)` in crop pixels (NaN where no
    face), `parser` defaulting to `LandmarkFaceParser()`, `frame_indices` each frame's index in its video (to name
    the columns). Returns the picture.
    """
    face_crops = torch.as_tensor(np.asarray(face_crops))
    num_frames, image_size = face_crops.shape[:2]
    parser = LandmarkFaceParser() if parser is None else parser
    label_maps = parser(face_crops, torch.as_tensor(np.asarray(landmarks)), boxes)
    bool_masked_pos = generate_mask(
        strategy, num_frames, image_size, patch_size, tubelet_size, mask_ratio, seed, label_maps=label_maps
    )
    title = f"masking strategy {strategy}, mask ratio {mask_ratio:g}"
    return render_mask_overlay(
        face_crops, label_maps, bool_masked_pos, path, patch_size, tubelet_size, num_shown, title, frame_indices
    )
