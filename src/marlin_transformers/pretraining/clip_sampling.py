"""One pretraining sample from any source of face crops: the paper's clip drawn, its Fasking mask made.

Every pretraining dataset reads its clips through here: `clips.FaceClipDataset` (videos, frame folders, the
reference's `crop_images_DB`, its npy cache) and `dataset_clips` (prepared mp4 + npz rows, from a folder or the Hub).
A sample is `num_frames` frames every `sample_rate` frames from a random start (`clip_frame_indices`), resized to the
model's input and masked (`masked_clip`); every random choice comes from the generator the dataset seeds with
`masking.seeded_generator`, so samples do not depend on the number of workers and a resumed run sees the same ones.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..video.decoding import resize_frames
from .masking import generate_mask, seeded_generator


class EpochSeeded:
    """Draws seeded by `seed` and the epoch: `epoch_generator(*keys)` is `seeded_generator(seed, epoch, *keys)`, the
    same on every process and worker and after a resume. `set_epoch` picks the epoch (Accelerate's prepared dataloaders
    call it on the sampler and the dataset); a subclass sets `seed`."""

    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # Not named `generator`: Accelerate takes a sampler's `generator` attribute for a torch.Generator to synchronize.
    def epoch_generator(self, *keys: int) -> torch.Generator:
        return seeded_generator(self.seed, self.epoch, *keys)


def clip_frame_indices(
    total: int,
    num_frames: int,
    sample_rate: int,
    generator: torch.Generator,
    frame_range: tuple[float, float] = (0.0, 1.0),
) -> list[int]:
    """`num_frames` indices every `sample_rate` frames from a random start, within `frame_range` (fractions of a
    video of `total` frames); the range's last frame repeats when it is shorter than a clip."""
    first, end = math.floor(frame_range[0] * total), math.ceil(frame_range[1] * total)
    span = (num_frames - 1) * sample_rate + 1
    start = first + int(torch.randint(0, max(end - first - span, 0) + 1, (), generator=generator))
    return [min(start + i * sample_rate, end - 1) for i in range(num_frames)]


def masked_clip(
    frames: np.ndarray,
    label_maps: np.ndarray | None,
    image_size: int,
    patch_size: int,
    tubelet_size: int,
    mask_ratio: float,
    mask_strategy: str,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """A clip's frames (and LaPa maps) as a sample, masked by `mask_strategy` with `generator`.

    Args:
        frames: (num_frames, H, W, 3) uint8 RGB face crops, resized (bilinear) to `image_size` if not that size.
        label_maps: (num_frames, H, W) uint8 LaPa labels for the Fasking strategies, resized (nearest), or None.

    Returns:
        `pixel_values_videos` (num_frames, 3, image_size, image_size) float32 in [0, 1] and `bool_masked_pos`
        (num_tokens,) bool, True where masked.
    """
    frames = resize_frames(np.asarray(frames), image_size)
    maps = None
    if label_maps is not None:
        maps = resize_frames(np.asarray(label_maps, np.uint8)[..., None], image_size, nearest=True)[..., 0]
        maps = torch.from_numpy(np.ascontiguousarray(maps))
    bool_masked_pos = generate_mask(
        mask_strategy, len(frames), image_size, patch_size, tubelet_size, mask_ratio, generator, label_maps=maps
    )
    pixel_values_videos = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
    return {"pixel_values_videos": pixel_values_videos, "bool_masked_pos": bool_masked_pos}
