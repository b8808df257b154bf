"""The data of a pretraining run: its training and eval datasets, and the fixed eval batch.

Three sources: face videos (`FaceClipDataset`, optionally with held-out ends), the reference's YouTube Faces layout
(its train and val splits, read as clips of frame folders), and a prepared face-video dataset (`dataset_clips`), loaded
or streamed. `examples/pretrain.py`'s `get_dataloaders` puts them in dataloaders.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..configuration_marlin import MarlinConfig
from ..data.youtube_faces import youtube_faces_clips
from ..exceptions import DatasetError
from ..video.decoding import find_videos
from .clips import FaceClipDataset


def clip_videos(
    train_data: Sequence[str], eval_data: Sequence[str], youtube_faces: str | None, eval_batch_size: int
) -> tuple[list[Path], list[Path]]:
    """(training videos, held-out videos): the files and folders of `train_data` and `eval_data` (the training
    videos again without it), or a YouTube Faces root's train split and the first `eval_batch_size` of its val one."""
    if youtube_faces:  # the reference's layout: train_set.csv / val_set.csv over crop_images_DB/<clip>/
        return youtube_faces_clips(youtube_faces, "train"), youtube_faces_clips(youtube_faces, "val")[:eval_batch_size]
    train_videos = find_videos(train_data)
    return train_videos, find_videos(eval_data) if eval_data else train_videos


def face_clip_datasets(
    config: MarlinConfig,
    train_videos: Sequence[str | os.PathLike],
    eval_videos: Sequence[str | os.PathLike],
    holdout_fraction: float,
    *,
    seed: int,
    clips_per_video: int,
    eval_batch_size: int,
    **dataset_kwargs,
) -> tuple[FaceClipDataset, FaceClipDataset]:
    """(training, eval) `FaceClipDataset`s of videos: the eval one holds `eval_batch_size` clips spread over
    `eval_videos`, drawn with `seed + 1`. With a `holdout_fraction`, the eval clips come from the last fraction of each
    video and the training clips from the rest. `dataset_kwargs` (`FaceClipDataset`'s: cache_dir, crop, sample_rate,
    face_parser) go to both."""
    train_dataset = FaceClipDataset.from_config(
        config,
        train_videos,
        seed=seed,
        clips_per_video=clips_per_video,
        frame_range=(0.0, 1.0 - holdout_fraction),
        **dataset_kwargs,
    )
    eval_dataset = FaceClipDataset.from_config(
        config,
        eval_videos,
        seed=seed + 1,
        clips_per_video=math.ceil(eval_batch_size / len(eval_videos)),
        frame_range=(1.0 - holdout_fraction, 1.0) if holdout_fraction else (0.0, 1.0),
        **dataset_kwargs,
    )
    return train_dataset, eval_dataset


def prepared_clip_datasets(
    path_or_repo_id: str,
    config: MarlinConfig,
    streaming: bool,
    shuffle_buffer: int,
    *,
    seed: int,
    sample_rate: int,
    clips_per_video: int,
    eval_batch_size: int,
):
    """(training, eval) datasets of a prepared face-video dataset: clips and Fasking masks from its stored maps, the
    eval clips (`eval_batch_size`, drawn with `seed + 1`) from its first validation rows. Streaming, the training one
    is the train split's rows shuffled in a `shuffle_buffer` seeded by `seed` (a `PreparedClipCollator` draws the
    clips), else a `PreparedClipDataset` of `clips_per_video` clips per video.

    Raises:
        DatasetError: a streamed dataset whose validation split is empty.
    """
    from .dataset_clips import PreparedClipDataset, load_prepared_rows

    rows = {
        split: load_prepared_rows(path_or_repo_id, split, streaming=streaming) for split in ("train", "validation")
    }
    if streaming:
        eval_rows = list(rows["validation"].take(eval_batch_size))
        if not eval_rows:
            raise DatasetError(f"{path_or_repo_id}: its validation split is empty; give a dataset with one.")
        train_dataset = rows["train"].shuffle(seed=seed, buffer_size=shuffle_buffer)
    else:
        eval_rows = rows["validation"].select(range(min(eval_batch_size, len(rows["validation"]))))
        train_dataset = PreparedClipDataset(rows["train"], config, sample_rate, seed, clips_per_video=clips_per_video)
    per_video = math.ceil(eval_batch_size / len(eval_rows))
    return train_dataset, PreparedClipDataset(eval_rows, config, sample_rate, seed + 1, per_video)


def fixed_eval_batch(eval_dataset, eval_batch_size: int) -> dict[str, torch.Tensor]:
    """`eval_batch_size` clips of a dataset of `clips_per_video` clips per video, spread over the videos: item i is
    clip (i % clips_per_video) of video (i // clips_per_video). `pixel_values_videos` (eval_batch_size, frames, 3,
    size, size) in [0, 1] and `bool_masked_pos` (eval_batch_size, tokens): the same clips and masks at every
    evaluation."""
    order = sorted(range(len(eval_dataset)), key=lambda i: (i % eval_dataset.clips_per_video, i))
    items = [eval_dataset[i] for i in order[:eval_batch_size]]
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def streaming_train_size(train_dataloader) -> int | None:
    """The rows of the streaming train split behind a dataloader, as its dataset card states them (None: unstated)."""
    from .dataset_clips import split_size

    return split_size(train_dataloader.dataset, "train")
