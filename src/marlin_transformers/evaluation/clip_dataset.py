"""Labelled videos as clips for `transformers.Trainer`: the dataset, its options and the collator.

Videos are decoded (and, with `ClipOptions.crop_face`, their face tracked and cropped) on the fly in
`VideoClipDataset.__getitem__`, so nothing is prepared beforehand. Labels come from `data.labels.read_labels`
(labels CSV, class folders, JSON, saved datasets).

Clips (`num_frames` frames every `sample_rate` decoded frames, the windows of `video.windows`):

- training: one window per video and epoch, drawn uniformly among the windows that start every `train_stride`
  sampled frames (plus the one aligned to the video's end). The draw is seeded by (seed, epoch, video index), so a
  run is reproducible whatever the number of data-loader workers or processes (`trainer.EpochSeedCallback`).
- evaluation (`eval_clips="all"`): every window of the video on the `marlin extract` grid (a window every
  `eval_stride` sampled frames, default one window length, and one aligned to the end), and the video's logits are
  the mean of its windows' logits (`trainer.VideoClipTrainer`). The head is linear, so this equals the head applied
  to the temporal mean of the window features: the paper's linear-probe protocol. `eval_clips="first"` scores the
  first window only; `max_eval_windows` keeps that many evenly spaced windows of long videos. `eval_clips="random"`
  scores one window per video drawn as in training, seeded by (seed, video index) alone, so every evaluation sees the
  same windows: the paper code's evaluation (which draws anew each time), made reproducible (`evaluation.recipes`).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..constants import MARLIN_CROP_SIZE, NUM_FRAMES, SAMPLE_RATE
from ..data.labels import LabelsTable, align_label_names, read_labels
from ..exceptions import DatasetError
from ..video.decoding import skip_unreadable
from ..video.face_tracking import FaceTracker
from ..video_processing_marlin import MarlinVideoProcessor

# How many windows of a video an evaluation scores (`ClipOptions.eval_clips`).
EVAL_CLIPS = ("all", "first", "random")


@dataclass
class ClipOptions:
    """How videos become model inputs.

    Attributes:
        num_frames: frames per window (the model's `config.num_frames`).
        image_size: side of the model's input frames, pixels (`config.image_size`).
        sample_rate: take every `sample_rate`-th decoded frame.
        train_stride: training windows start every `train_stride` sampled frames; one is drawn per video and epoch.
        eval_stride: evaluation windows start every `eval_stride` sampled frames (None: `num_frames`, as `marlin
            extract`).
        eval_clips: "all" (every evaluation window, logits averaged), "first", or "random" (one window drawn on the
            training grid, seeded by (seed, video index): the paper code's evaluation, reproducible).
        max_eval_windows: keep at most this many evenly spaced evaluation windows per video (0: all).
        crop_face: track the face with `video.face_tracking.FaceTracker` and crop around it.
        face_margin: crop side as a multiple of the face box side.
    """

    num_frames: int = NUM_FRAMES
    image_size: int = MARLIN_CROP_SIZE
    sample_rate: int = SAMPLE_RATE
    train_stride: int = 4
    eval_stride: int | None = None
    eval_clips: str = "all"
    max_eval_windows: int = 0
    crop_face: bool = False
    face_margin: float = 1.0

    def __post_init__(self):
        # ValueError, as `TrainingArguments` raises: examples/finetune.py turns it into an argparse error line.
        for name in ("num_frames", "image_size", "sample_rate", "train_stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_stride is not None and self.eval_stride < 1:
            raise ValueError(f"eval_stride must be at least 1 (or None: num_frames), got {self.eval_stride}")
        if self.eval_clips not in EVAL_CLIPS:
            raise ValueError(f"eval_clips must be one of {', '.join(EVAL_CLIPS)}, got {self.eval_clips!r}")
        if self.max_eval_windows < 0:
            raise ValueError(f"max_eval_windows must be >= 0 (0: all), got {self.max_eval_windows}")
        if not self.face_margin > 0:
            raise ValueError(f"face_margin must be > 0, got {self.face_margin}")


class VideoClipDataset(torch.utils.data.Dataset):
    """Labelled videos, decoded and cropped on the fly.

    Items: `pixel_values_videos` (num_frames, 3, size, size) float32 in [0, 1] in training, (num_windows, num_frames,
    3, size, size) at evaluation, made by `MarlinVideoProcessor`; `labels` int64 () single-label, float32
    (num_labels,) otherwise.

    Args:
        paths: the videos (see `read_labels`).
        labels: their labels, one row per video.
        problem_type: one of `metrics.PROBLEM_TYPES`.
        options: the clip sampling.
        training: one seeded random window per item (True) or the evaluation windows (False).
        seed: with the epoch (`set_epoch`) and the item's index, seeds its window draw.
        source: where the videos are listed (e.g. the labels file), named in messages.

    A missing video is an error; one that does not open or decode its first frame (`video.decoding.probe_video`) is
    left out with a line on stderr, and a count (`video.decoding.skip_unreadable`), before anything trains.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: np.ndarray,
        problem_type: str,
        options: ClipOptions,
        training: bool,
        seed: int = 0,
        source: str = "the labels",
    ):
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise DatasetError(
                f"{missing[0]}: video not found ({len(missing)} of {len(paths)} labelled videos missing)"
            )
        # A corrupt video would otherwise stop the run at its first batch, in a data-loader worker.
        readable = list(skip_unreadable(paths, what=f"videos of {source}"))
        self.paths = [paths[i] for i in readable]
        dtype = torch.long if problem_type == "single_label_classification" else torch.float32
        labels = np.asarray(labels)[readable]  # (num_readable,) or (num_readable, num_labels)
        self.labels = torch.as_tensor(labels, dtype=dtype)
        if problem_type != "single_label_classification":
            self.labels = self.labels.reshape(len(self.paths), -1)
        self.options = options
        self.training = training
        self.seed = seed
        self.epoch = 0
        # Cheap to build and to pickle: each data-loader worker loads MTCNN on its first detection.
        self.tracker = FaceTracker(margin=options.face_margin, crop_size=options.image_size)
        size = options.image_size
        self.processor = MarlinVideoProcessor(size={"height": size, "width": size}, num_frames=options.num_frames)

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path = self.paths[index]
        if self.training:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            clips = [self.train_clip(path, rng)]
        elif self.options.eval_clips == "random":
            # Two numbers where training seeds with three: never the training draw of the same video.
            clips = [self.train_clip(path, np.random.default_rng([self.seed, index]))]
        else:
            clips = self.eval_clips(path)
        pixel_values = self.processor(clips, return_tensors="pt")["pixel_values_videos"]  # (clips, T, 3, H, W)
        return {
            "pixel_values_videos": pixel_values[0] if self.training else pixel_values,
            "labels": self.labels[index],
        }

    def all_windows(self) -> VideoClipDataset:
        """This evaluation dataset scoring every window of each video (`eval_clips="all"`): our evaluation, reported
        beside a recipe's one-random-clip evaluation."""
        view = copy.copy(self)
        view.options = dataclasses.replace(self.options, eval_clips="all")
        return view

    def train_clip(self, path: str, rng: np.random.Generator) -> np.ndarray:
        """One window drawn uniformly (reservoir sampling while streaming), face-cropped if asked: (T, H, W, 3)."""
        from ..video.windows import iter_windows

        o = self.options
        chosen = None
        windows = iter_windows(path, num_frames=o.num_frames, sample_rate=o.sample_rate, stride=o.train_stride)
        for count, window in enumerate(windows, start=1):
            if rng.integers(count) == 0:
                chosen = window
        if not o.crop_face:
            return chosen.frames
        self.tracker.reset()
        return self.tracker.track(chosen.frames, chosen.frame_indices).crops

    def eval_clips(self, path: str) -> list[np.ndarray]:
        """The evaluation windows of a video, each (T, H, W, 3) uint8, face-cropped if asked (tracked in order)."""
        from ..video.windows import iter_windows

        o = self.options
        stride = o.eval_stride or o.num_frames
        windows = iter_windows(path, num_frames=o.num_frames, sample_rate=o.sample_rate, stride=stride)
        if o.crop_face:
            from ..video.face_tracking import iter_face_windows

            tracked = iter_face_windows(windows, self.tracker, source=path, on_no_face="centre")
            clips = (crops.crops for _, crops in tracked)
        else:
            clips = (window.frames for window in windows)
        if o.eval_clips == "first":
            return list(itertools.islice(clips, 1))
        clips = list(clips)
        if o.max_eval_windows and len(clips) > o.max_eval_windows:
            keep = np.linspace(0, len(clips) - 1, o.max_eval_windows).round().astype(int)
            clips = [clips[i] for i in keep]
        return clips


def collate_clips(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack training items; pad evaluation items to the longest video, with `window_mask` (batch, windows) True
    on real windows."""
    labels = torch.stack([item["labels"] for item in items])
    videos = [item["pixel_values_videos"] for item in items]
    if videos[0].ndim == 4:  # training: (T, 3, H, W) each
        return {"pixel_values_videos": torch.stack(videos), "labels": labels}
    num_windows = max(len(v) for v in videos)
    padded = videos[0].new_zeros((len(videos), num_windows, *videos[0].shape[1:]))  # (B, W, T, 3, H, W)
    window_mask = torch.zeros(len(videos), num_windows, dtype=torch.bool)
    for i, video in enumerate(videos):
        padded[i, : len(video)] = video
        window_mask[i, : len(video)] = True
    return {"pixel_values_videos": padded, "window_mask": window_mask, "labels": labels}


def build_datasets(
    train_source: str | os.PathLike,
    eval_source: str | os.PathLike,
    problem_type: str,
    options: ClipOptions,
    seed: int = 0,
    train_split: str | None = "train",
    eval_split: str | None = None,
) -> tuple[VideoClipDataset, VideoClipDataset, list[str]]:
    """The training and evaluation datasets, and the class/label/target names (from the training data)."""
    train = read_labels(train_source, problem_type, train_split)
    return (
        VideoClipDataset(train.paths, train.labels, problem_type, options, True, seed, source=str(train_source)),
        _evaluation_dataset(train, eval_source, problem_type, options, seed, eval_split),
        list(train.label_names),
    )


def build_test_dataset(
    test_source: str | os.PathLike,
    train_source: str | os.PathLike,
    problem_type: str,
    options: ClipOptions,
    seed: int = 0,
    train_split: str | None = "train",
    test_split: str | None = None,
) -> VideoClipDataset:
    """A held-out evaluation dataset (a test split scored once, after model selection), its labels in the terms of
    the training data's label names (as `build_datasets`' evaluation dataset)."""
    train = read_labels(train_source, problem_type, train_split)
    return _evaluation_dataset(train, test_source, problem_type, options, seed, test_split)


def _evaluation_dataset(
    train: LabelsTable,
    source: str | os.PathLike,
    problem_type: str,
    options: ClipOptions,
    seed: int,
    split: str | None,
) -> VideoClipDataset:
    evaluated = read_labels(source, problem_type, split)
    labels = align_label_names(train, evaluated, problem_type, str(source))
    return VideoClipDataset(evaluated.paths, labels, problem_type, options, False, seed, source=str(source))
