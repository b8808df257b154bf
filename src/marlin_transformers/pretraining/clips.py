"""Face clips for pretraining: crops (and LaPa maps for Fasking) of videos or frame folders, and their sampler.

Every random choice goes through `masking.seeded_generator(seed, epoch, index)`, so samples do not depend on the
number of dataloader workers and a resumed run sees the same clips and masks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..configuration_marlin import MarlinConfig
from ..constants import MARLIN_CROP_SIZE, SAMPLE_RATE
from ..data.youtube_faces import precomputed_label_maps
from ..video.decoding import count_frames, decode_frames, probe_video, skip_unreadable
from .clip_sampling import EpochSeeded, clip_frame_indices, masked_clip
from .preparation import FacePreparer, PreparationSettings


def _probed_frame_count(video: Path) -> int:
    """`count_frames` of a video whose first frame decodes (`probe_video`): counting demuxes packets only, so a file
    whose packets do not decode would pass it."""
    probe_video(video)
    return count_frames(video)


class FaceClipDataset(EpochSeeded, torch.utils.data.Dataset):
    """Random clips of face videos with their pretraining masks, as MARLIN samples YouTube Faces.

    Item `i` is a clip of video `i // clips_per_video`: `num_frames` frames taken every `sample_rate` frames from a
    random start (a video too short for one clip repeats its last frame), its face crops
    in [0, 1], and a mask drawn with `masking.generate_mask` (from the crops' LaPa parsing for Fasking).

    Every random choice of item `i` comes from `seeded_generator(seed, epoch, i)`, so a sample does not depend on
    the number of dataloader workers, on which worker loads it, or on what was loaded before: runs are reproducible
    and a resumed run sees the same clips and masks. Call `set_epoch` to draw new clips each epoch (Accelerate's
    prepared dataloaders forward their `set_epoch` to the dataset).

    Args:
        videos: video files (see `find_videos`) or folders of frames (e.g. `youtube_faces_clips`).
        num_frames: clip length (16 in the paper).
        sample_rate: frame step (2 in the paper).
        image_size: as in `MarlinConfig` (see `from_config`).
        patch_size: as in `MarlinConfig`.
        tubelet_size: as in `MarlinConfig`.
        mask_ratio: as in `MarlinConfig`.
        mask_strategy: as in `MarlinConfig`.
        seed: base seed.
        clips_per_video: items per video per epoch.
        cache_dir: if given, every video is cropped and parsed once into this folder (`FacePreparer.cache_video`) and
            clips are read from memory-mapped arrays; otherwise each item decodes, tracks and parses its frames.
        crop, face_parser: see `FacePreparer`.
        frame_range: the part of each video clips come from, as fractions of its frames: (0, 0.7) and (0.7, 1)
            give disjoint training and held-out clips of the same videos.

    A video that cannot be read (it does not open or decode its first frame, or, with `cache_dir`, fails to decode
    while cached) is left out with a line on stderr and a count (`video.decoding.skip_unreadable`): `videos` lists
    the videos kept. None readable is a VideoError.
    """

    def __init__(
        self,
        videos: Sequence[str | os.PathLike],
        num_frames: int = 16,
        sample_rate: int = SAMPLE_RATE,
        image_size: int = MARLIN_CROP_SIZE,
        patch_size: int = 16,
        tubelet_size: int = 2,
        mask_ratio: float = 0.9,
        mask_strategy: str = "fasking",
        seed: int = 0,
        clips_per_video: int = 1,
        cache_dir: str | os.PathLike | None = None,
        crop: str = "auto",
        face_parser=None,
        frame_range: tuple[float, float] = (0.0, 1.0),
    ):
        if not 0 <= frame_range[0] < frame_range[1] <= 1:
            raise ValueError(f"frame_range must be fractions 0 <= start < end <= 1, got {frame_range}")
        self.frame_range = frame_range
        self.videos = [Path(v) for v in videos]
        self.num_frames = num_frames
        self.sample_rate = sample_rate
        self.image_size = image_size
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.mask_ratio = mask_ratio
        self.mask_strategy = mask_strategy
        self.seed = seed
        self.clips_per_video = clips_per_video
        self.preparer = FacePreparer(
            PreparationSettings(crop=crop, crop_size=image_size),
            parse=mask_strategy.startswith("fasking"),
            face_parser=face_parser,
        )
        self.cache_entries = None
        # One corrupt video among thousands would otherwise abort the run: it is left out, with a line on stderr.
        if cache_dir is not None:
            kept = skip_unreadable(self.videos, lambda video: self.preparer.cache_video(video, cache_dir))
            self.cache_entries = list(kept.values())
            self.frame_counts = [len(np.load(e / "crops.npy", mmap_mode="r")) for e in self.cache_entries]
        else:
            kept = skip_unreadable(self.videos, _probed_frame_count)
            self.frame_counts = list(kept.values())
        self.videos = [self.videos[i] for i in kept]

    @classmethod
    def from_config(cls, config: MarlinConfig, videos: Sequence[str | os.PathLike], **kwargs) -> FaceClipDataset:
        """A dataset whose clip size and masking follow `config` (frames, image size, tubelets, mask ratio and
        strategy)."""
        fields = dict(
            num_frames=config.num_frames,
            image_size=config.image_size,
            patch_size=config.patch_size,
            tubelet_size=config.tubelet_size,
            mask_ratio=config.mask_ratio,
            mask_strategy=config.mask_strategy,
        )
        return cls(videos, **{**fields, **kwargs})

    def __len__(self) -> int:
        return len(self.videos) * self.clips_per_video

    def frame_indices(self, index: int, generator: torch.Generator) -> list[int]:
        """The clip's frame indices: `num_frames` every `sample_rate` frames from a random start in `frame_range`
        (`clip_sampling.clip_frame_indices`)."""
        total = self.frame_counts[index // self.clips_per_video]
        return clip_frame_indices(total, self.num_frames, self.sample_rate, generator, self.frame_range)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """`pixel_values_videos` (num_frames, 3, image_size, image_size) float32 in [0, 1] and `bool_masked_pos`
        (num_tokens,) bool, True where masked."""
        generator = self.epoch_generator(index)
        video = index // self.clips_per_video
        indices = self.frame_indices(index, generator)
        if self.cache_entries is not None:
            entry = self.cache_entries[video]
            crops = np.load(entry / "crops.npy", mmap_mode="r")[indices]
            labels = np.load(entry / "labels.npy", mmap_mode="r")[indices] if self.preparer.parse else None
        else:
            self.preparer.reset()
            saved_maps = precomputed_label_maps(self.videos[video], indices) if self.preparer.parse else None
            crops, labels = self.preparer(decode_frames(self.videos[video], indices), indices, saved_maps)
        return masked_clip(
            crops,
            labels,
            self.image_size,
            self.patch_size,
            self.tubelet_size,
            self.mask_ratio,
            self.mask_strategy,
            generator,
        )


class EpochShuffleSampler(EpochSeeded, torch.utils.data.Sampler):
    """A permutation of `range(num_items)` drawn from `seeded_generator(seed, epoch)`: the same order on every process
    and after a resume. `set_epoch` picks the epoch (Accelerate's prepared dataloaders call it)."""

    def __init__(self, num_items: int, seed: int = 0):
        self.num_items = num_items
        self.seed = seed

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self):
        return iter(torch.randperm(self.num_items, generator=self.epoch_generator()).tolist())
