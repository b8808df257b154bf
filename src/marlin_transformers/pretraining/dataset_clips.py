"""Pretraining clips from a prepared face-video dataset (`data.face_video_builder` rows, from a folder or the Hub).

A row holds a whole video (its clip as mp4 bytes, its parsing maps as compressed bytes); a sample is the paper's
clip of it: `num_frames` frames every `sample_rate` frames from a random start (the last frame repeats in a video
too short for one clip), with its Fasking mask made from the stored maps (`masking.generate_mask`). Every random
choice of sample `i` comes from `seeded_generator(seed, epoch, i)`, as in `clips.FaceClipDataset`.

- `PreparedClipDataset` wraps a map-style `datasets.Dataset` split (what `examples/pretrain.py --dataset` uses);
- `PreparedClipCollator` turns a list of rows (a streaming `IterableDataset`'s, what `--dataset ... --streaming`
  uses) into a batch, drawing each clip from `seeded_generator(seed, epoch, worker, call, position)`.
"""

from __future__ import annotations

import torch

from ..configuration_marlin import MarlinConfig
from ..constants import SAMPLE_RATE
from ..data.face_video_builder import decode_clip, decode_parsing_maps
from .clip_sampling import EpochSeeded, clip_frame_indices, masked_clip


def sample_clip(row: dict, config: MarlinConfig, sample_rate: int, generator: torch.Generator) -> dict:
    """`pixel_values_videos` (num_frames, 3, image_size, image_size) float32 in [0, 1] and `bool_masked_pos`
    (num_tokens,) bool (True where masked) of one random clip of a dataset row (`clip_sampling`)."""
    indices = clip_frame_indices(int(row["num_frames"]), config.num_frames, sample_rate, generator)
    frames = decode_clip(row["clip"], indices)
    maps = decode_parsing_maps(row["parsing_maps"])[indices] if config.mask_strategy.startswith("fasking") else None
    return masked_clip(
        frames,
        maps,
        config.image_size,
        config.patch_size,
        config.tubelet_size,
        config.mask_ratio,
        config.mask_strategy,
        generator,
    )


class PreparedClipDataset(EpochSeeded, torch.utils.data.Dataset):
    """`clips_per_video` random clips per row of a `datasets.Dataset` split; item `i` is a clip of row
    `i // clips_per_video` (see the module docstring). Call `set_epoch` to draw new clips each epoch."""

    def __init__(
        self, rows, config: MarlinConfig, sample_rate: int = SAMPLE_RATE, seed: int = 0, clips_per_video: int = 1
    ):
        self.rows = rows
        self.config = config
        self.sample_rate = sample_rate
        self.seed = seed
        self.clips_per_video = clips_per_video

    def __len__(self) -> int:
        return len(self.rows) * self.clips_per_video

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = self.epoch_generator(index)
        return sample_clip(self.rows[index // self.clips_per_video], self.config, self.sample_rate, generator)


class PreparedClipCollator(EpochSeeded):
    """Rows of a prepared face-video dataset -> `pixel_values_videos` (batch, num_frames, 3, size, size) in [0, 1]
    and `bool_masked_pos` (batch, num_tokens); for streaming datasets, where rows come already in order."""

    def __init__(self, config: MarlinConfig, sample_rate: int = SAMPLE_RATE, seed: int = 0):
        self.config = config
        self.sample_rate = sample_rate
        self.seed = seed
        self.calls = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.calls = 0

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        # Each dataloader worker holds its own copy (and count of calls): its id keeps their draws apart.
        worker_info = torch.utils.data.get_worker_info()
        keys = (0 if worker_info is None else worker_info.id, self.calls)
        samples = [
            sample_clip(row, self.config, self.sample_rate, self.epoch_generator(*keys, i))
            for i, row in enumerate(rows)
        ]
        self.calls += 1
        return {key: torch.stack([sample[key] for sample in samples]) for key in samples[0]}


def load_prepared_rows(path_or_repo_id: str, split: str, streaming: bool = False, cache_dir: str | None = None):
    """A split of a prepared face-video dataset: a folder `prepare-ytf`/`prepare-faces` wrote (built with
    `face_video_builder`), a folder of Parquet shards (`push-dataset --export-only`) or a Hub dataset repo id."""
    from pathlib import Path

    import datasets

    from ..data.prepared_faces import INFO_FILE

    path = Path(path_or_repo_id)
    if (path / INFO_FILE).is_file():
        from ..data.face_video_builder import load_prepared_faces

        rows = load_prepared_faces(path, cache_dir=cache_dir)[split]
        return rows.to_iterable_dataset() if streaming else rows
    return datasets.load_dataset(path_or_repo_id, split=split, streaming=streaming, cache_dir=cache_dir)


def split_size(rows, split: str) -> int | None:
    """The number of rows of a (streaming) split as its dataset's metadata states it (the dataset card's
    `dataset_info`, which `push-dataset` writes, or the prepared folder's builder), or None where none is stated."""
    splits = rows.info.splits
    if splits is None or split not in splits or not splits[split].num_examples:
        return None
    return int(splits[split].num_examples)
