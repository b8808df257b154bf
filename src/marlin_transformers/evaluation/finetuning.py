"""Fine-tuning MARLIN on labelled face videos with `transformers.Trainer`, or training only its head.

The model is a `MarlinForVideoClassification` (pooled MARLIN feature -> one linear layer) whose encoder comes from
any MARLIN checkpoint `loading.load_marlin` reads (`build_model`). Videos are decoded (and, with
`ClipOptions.crop_face`, their face tracked and cropped) on the fly in `VideoClipDataset.__getitem__`, so nothing is
prepared beforehand. `examples/finetune.py` is the command line around these pieces.

Clips (`num_frames` frames every `sample_rate` decoded frames, the windows of `video.windows`):

- training: one window per video and epoch, drawn uniformly among the windows that start every `train_stride`
  sampled frames (plus the one aligned to the video's end). The draw is seeded by (seed, epoch, video index), so a
  run is reproducible whatever the number of data-loader workers or processes (`EpochSeedCallback`).
- evaluation (`eval_clips="all"`): every window of the video on the `marlin extract` grid (a window every
  `eval_stride` sampled frames, default one window length, and one aligned to the end), and the video's logits are
  the mean of its windows' logits (`VideoClipTrainer`). The head is linear, so this equals the head applied to the
  temporal mean of the window features: the paper's linear-probe protocol. `eval_clips="first"` scores the first
  window only; `max_eval_windows` keeps that many evenly spaced windows of long videos. `eval_clips="random"` scores
  one window per video drawn as in training, seeded by (seed, video index) alone, so every evaluation sees the same
  windows: the paper code's evaluation (which draws anew each time), made reproducible (`evaluation.recipes`).

Labels come from `data.labels.read_labels` (labels CSV, class folders, JSON, saved datasets).

With a frozen encoder the head is MAE's linear-probe head (`ProbeHead`: BatchNorm without affine parameters, then
the linear layer), folded into a single linear layer by `export_model` before saving.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import HubStrategy, IntervalStrategy, SaveStrategy, SchedulerType

from ..constants import MARLIN_CROP_SIZE, NUM_FRAMES, SAMPLE_RATE
from ..data.labels import align_label_names, read_labels
from ..exceptions import DatasetError
from ..modeling_marlin import MarlinForVideoClassification, MarlinModel
from ..video.decoding import skip_unreadable
from ..video.face_tracking import FaceTracker
from ..video_processing_marlin import MarlinVideoProcessor
from .metrics import PROBLEM_TYPES, build_compute_metrics
from .selection import default_metric_for_best_model, greater_is_better

# ---------------------------------------------------------------------------------------------------------- dataset


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
    evaluated = read_labels(eval_source, problem_type, eval_split)
    eval_labels = align_label_names(train, evaluated, problem_type, str(eval_source))
    return (
        VideoClipDataset(train.paths, train.labels, problem_type, options, True, seed, source=str(train_source)),
        VideoClipDataset(evaluated.paths, eval_labels, problem_type, options, False, seed, source=str(eval_source)),
        list(train.label_names),
    )


# ------------------------------------------------------------------------------------------------------------ model


class ProbeHead(torch.nn.Module):
    """The linear-probe head of MAE (He et al. 2022, appendix A.2): BatchNorm without affine parameters, then the
    linear layer. It keeps the model linear in the frozen features, and standardizing them makes the head train in a
    few epochs where a bare linear layer on raw MARLIN features trains slowly (their scales and offsets differ a lot,
    see `evaluation.linear_probe`, which standardizes too). `fold()` absorbs the norm into the linear layer.
    """

    def __init__(self, linear: torch.nn.Linear, eps: float = 1e-6):
        super().__init__()
        # momentum=None: running statistics are the plain average over every training batch seen
        self.norm = torch.nn.BatchNorm1d(linear.in_features, eps=eps, affine=False, momentum=None)
        self.linear = linear

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (batch, hidden) -> (batch, num_labels)
        if self.training and len(features) == 1:  # a last batch of one video has no batch statistics
            norm = self.norm
            normalized = torch.nn.functional.batch_norm(
                features, norm.running_mean, norm.running_var, training=False, eps=norm.eps
            )
            return self.linear(normalized)
        return self.linear(self.norm(features))

    @torch.no_grad()
    def fold(self) -> torch.nn.Linear:
        """The single `nn.Linear` equal to this head in eval mode (running statistics)."""
        scale = (self.norm.running_var + self.norm.eps).rsqrt()  # (hidden,)
        folded = torch.nn.Linear(self.linear.in_features, self.linear.out_features)
        folded.weight.copy_(self.linear.weight * scale)
        folded.bias.copy_(self.linear.bias - folded.weight @ self.norm.running_mean)
        return folded


def build_model(
    model: str | os.PathLike | MarlinModel,
    problem_type: str,
    label_names: Sequence[str],
    freeze_encoder: bool = False,
) -> MarlinForVideoClassification:
    """A `MarlinForVideoClassification` with the encoder of any MARLIN checkpoint and a new linear head.

    Args:
        model: converted folder (also a fine-tuned one: its head is replaced), Hub id, official `.pt`/`.ckpt`, or a
            loaded `MarlinModel`.
        label_names: one output per name (classes, labels or regression targets).
        freeze_encoder: train only the head (the encoder's parameters get `requires_grad=False`), a `ProbeHead`
            (standardization then linear) that `export_model` folds back into the linear layer.
    """
    from ..loading import load_marlin

    classifier = load_marlin(
        model,
        "classification",
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        problem_type=problem_type,
    )
    if freeze_encoder:
        classifier.marlin.requires_grad_(False)
        classifier.classifier = ProbeHead(classifier.classifier)
    return classifier


# Every linear layer of the encoder's blocks: the fused attention projection, its output, and the MLP.
LORA_TARGET_MODULES = ("qkv", "proj", "fc1", "fc2")


def add_lora(
    model: MarlinForVideoClassification,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: Sequence[str] = LORA_TARGET_MODULES,
):
    """Freeze `model` and train LoRA adapters (Hu et al. 2021, through `peft`) on the encoder's `target_modules`;
    the classification head, new, trains in full (`modules_to_save`).

    Returns:
        The `peft.PeftModel`; `save_finetuned` saves its adapter (or merged weights).
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        modules_to_save=["classifier"],
    )
    return get_peft_model(model, config)


def export_model(model: MarlinForVideoClassification) -> MarlinForVideoClassification:
    """The model as `AutoModelForVideoClassification` loads it: a probe head folded into one linear layer."""
    if isinstance(model.classifier, ProbeHead):
        model.classifier = model.classifier.fold().to(model.device)
    return model


def video_logits(model: torch.nn.Module, videos: torch.Tensor, window_mask: torch.Tensor, chunk: int) -> torch.Tensor:
    """Mean logits over each video's windows.

    Args:
        videos: (batch, windows, frames, 3, H, W); padding windows are skipped.
        window_mask: (batch, windows) True on real windows.
        chunk: windows per forward pass.

    Returns:
        (batch, num_labels) float32.
    """
    clips = videos[window_mask]  # (num_real_windows, frames, 3, H, W)
    owner = window_mask.nonzero()[:, 0]  # (num_real_windows,) video of each window
    logits = torch.cat(
        [model(pixel_values_videos=clips[i : i + chunk]).logits.float() for i in range(0, len(clips), chunk)]
    )
    sums = logits.new_zeros(len(videos), logits.shape[1]).index_add_(0, owner, logits)
    return sums / window_mask.sum(dim=1, keepdim=True).to(sums.dtype)


# ---------------------------------------------------------------------------------------------------------- trainer


def _usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS has one, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _training_field(name: str, default=None, default_factory=None):
    """`TrainingArguments`' field `name` (its help kept) with another default."""
    metadata = TrainingArguments.__dataclass_fields__[name].metadata
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# What a ReduceLROnPlateau scheduler is stepped on (`FinetuningArguments.plateau_monitor`).
PLATEAU_MONITORS = ("metric_for_best_model", "train_loss")


@dataclass
class FinetuningArguments(TrainingArguments):
    """`TrainingArguments` for `VideoClipTrainer`, with the fine-tuning recipe's defaults.

    Adds `problem_type`. Differs from `TrainingArguments` in its defaults: `output_dir` is required; evaluation and
    saving every epoch, and the best checkpoint by `metric_for_best_model` (default `roc_auc`, `mse` for regression;
    `greater_is_better` follows the metric) loaded at the end; 10 epochs at learning rate 1e-4, weight decay 0.05;
    2 videos (all their windows) per evaluation batch; 4 data-loader workers; seed 0; a log every 10 steps; at most 2
    checkpoints kept; `hub_strategy="end"` (with `push_to_hub`, the Trainer only creates the repo: upload the final
    folder with `hub_folders.push_folder_to_hub`). Without an accelerator it runs on the CPU (`use_cpu`).
    Settings that would train nothing (no epochs, batches of no video, a learning rate <= 0) raise ValueError.

    Adds, for the paper code's recipe (`evaluation.recipes`): `recipe` (the preset's name, recorded with the run),
    `plateau_monitor` (with `lr_scheduler_type="reduce_lr_on_plateau"`: `train_loss` steps the plateau once an epoch
    on the epoch's mean training loss, as the paper code; `metric_for_best_model` is Trainer's own stepping on the
    evaluation metric) and `stop_learning_rate` (stop after the first epoch that ends with every lr at most this).
    """

    output_dir: str = field(metadata={"help": "where checkpoints, metrics and the final model folder are written"})
    problem_type: str = field(
        default="single_label_classification",
        metadata={
            "help": "the task, as transformers names it: it picks the loss and the metrics",
            "choices": PROBLEM_TYPES,
        },
    )
    recipe: str = field(
        default="ours",
        metadata={"help": "named preset of these defaults (evaluation.recipes): ours or marlin (the paper code's)"},
    )
    plateau_monitor: str = field(
        default="metric_for_best_model",
        metadata={
            "help": "what --lr-scheduler-type reduce_lr_on_plateau watches: the evaluation metric (Trainer's) or "
            "each epoch's mean training loss (the paper code's)",
            "choices": PLATEAU_MONITORS,
        },
    )
    stop_learning_rate: float = field(
        default=0.0, metadata={"help": "stop once every lr is at most this after an epoch (0: never)"}
    )
    eval_strategy: IntervalStrategy | str = _training_field("eval_strategy", "epoch")
    save_strategy: SaveStrategy | str = _training_field("save_strategy", "epoch")
    load_best_model_at_end: bool = _training_field("load_best_model_at_end", True)
    num_train_epochs: float = _training_field("num_train_epochs", 10.0)
    learning_rate: float = _training_field("learning_rate", 1e-4)
    weight_decay: float = _training_field("weight_decay", 0.05)
    per_device_eval_batch_size: int = field(
        default=2, metadata={"help": "videos (with all their windows) per evaluation batch and device"}
    )
    # Decoding workers: up to 4, never more than this process may run on (torch warns past the core count).
    dataloader_num_workers: int = _training_field("dataloader_num_workers", min(4, _usable_cores()))
    seed: int = _training_field("seed", 0)
    logging_steps: float = _training_field("logging_steps", 10)
    save_total_limit: int | None = _training_field("save_total_limit", 2)
    hub_strategy: HubStrategy | str = _training_field("hub_strategy", "end")
    remove_unused_columns: bool = _training_field("remove_unused_columns", False)
    label_names: list[str] | None = _training_field("label_names", default_factory=lambda: ["labels"])

    def __post_init__(self):
        self._check_training_settings()
        if self.metric_for_best_model is None:
            self.metric_for_best_model = default_metric_for_best_model(self.problem_type)
        if self.greater_is_better is None:
            self.greater_is_better = greater_is_better(self.metric_for_best_model)
        if not torch.accelerator.is_available():
            # Trainer must be told it runs on the CPU: it refuses bf16 otherwise (recent CPUs do bf16 well), and
            # under torchrun it would run one independent training per process instead of DDP (gloo).
            self.use_cpu = True
            self.dataloader_pin_memory = False
        super().__post_init__()

    def _check_training_settings(self) -> None:
        """Raise ValueError (as `TrainingArguments` does) on settings that would train nothing, or nonsense, and
        still exit 0: no epochs (without `max_steps`), batches of no video, no or a negative learning rate."""
        if self.max_steps <= 0 and not (math.isfinite(self.num_train_epochs) and self.num_train_epochs > 0):
            raise ValueError(
                f"num_train_epochs (--num-train-epochs) must be > 0, got {self.num_train_epochs}; "
                "that would train nothing (or give --max-steps)"
            )
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{name} ({flag}) must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate (--learning-rate) must be > 0, got {self.learning_rate}")
        if self.plateau_monitor not in PLATEAU_MONITORS:
            choices = ", ".join(PLATEAU_MONITORS)
            raise ValueError(f"plateau_monitor must be one of {choices}, got {self.plateau_monitor}")
        if not (math.isfinite(self.stop_learning_rate) and self.stop_learning_rate >= 0):
            raise ValueError(f"stop_learning_rate must be >= 0 (0: never), got {self.stop_learning_rate}")


class TrainingLossPlateau(torch.optim.lr_scheduler.LRScheduler):
    """ReduceLROnPlateau on each epoch's mean training loss, as the paper code (Lightning, `monitor: train_loss`).

    Trainer steps it every optimizer step, which changes nothing; `record(loss)` adds a batch's loss and
    `end_epoch()` steps the plateau on the mean of the epoch's batch losses (`PlateauCallback`). Trainer's own
    ReduceLROnPlateau handling (stepping on the evaluation metric) does not apply: this is not one.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, **plateau_kwargs):
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", **plateau_kwargs)
        self.loss_sum, self.loss_count = 0.0, 0
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def record(self, loss: torch.Tensor) -> None:
        self.loss_sum += float(loss.detach())
        self.loss_count += 1

    def end_epoch(self) -> None:
        if self.loss_count:
            self.plateau.step(self.loss_sum / self.loss_count)
        self.loss_sum, self.loss_count = 0.0, 0
        self._last_lr = self.get_lr()

    def state_dict(self) -> dict:
        return {"plateau": self.plateau.state_dict(), "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self.plateau.load_state_dict(state_dict["plateau"])
        self.last_epoch = state_dict["last_epoch"]
        self._last_lr = self.get_lr()


class PlateauCallback(TrainerCallback):
    """At each epoch's end, steps a `TrainingLossPlateau` on the epoch's training loss, before evaluation."""

    def on_epoch_end(self, args, state, control, lr_scheduler=None, **kwargs):
        if isinstance(lr_scheduler, TrainingLossPlateau):
            lr_scheduler.end_epoch()


class StopAtLearningRateCallback(TrainerCallback):
    """Stops training after the epoch that leaves every learning rate at most `floor` (the paper code's
    `EarlyStoppingLR`, which stops at the start of the next epoch: the same epochs train). That epoch is still
    evaluated and saved."""

    def __init__(self, floor: float):
        self.floor = floor

    def on_epoch_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None and all(group["lr"] <= self.floor for group in optimizer.param_groups):
            control.should_training_stop = True


class VideoClipTrainer(Trainer):
    """`Trainer` whose evaluation batches carry several windows per video (`window_mask`): a video's logits are the
    mean of its windows' logits, and the loss is computed on those. With `plateau_monitor="train_loss"` its
    ReduceLROnPlateau is a `TrainingLossPlateau`."""

    window_chunk = 16

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        plateau = SchedulerType(self.args.lr_scheduler_type) == SchedulerType.REDUCE_ON_PLATEAU
        if self.lr_scheduler is None and plateau and getattr(self.args, "plateau_monitor", None) == "train_loss":
            kwargs = self.args.lr_scheduler_kwargs or {}
            self.lr_scheduler = TrainingLossPlateau(optimizer or self.optimizer, **kwargs)
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training and isinstance(self.lr_scheduler, TrainingLossPlateau):
            self.lr_scheduler.record(result[0] if return_outputs else result)
        return result

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if "window_mask" not in inputs:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad(), self.compute_loss_context_manager():
            logits = video_logits(model, inputs["pixel_values_videos"], inputs["window_mask"], self.window_chunk)
        loss = None
        if labels is not None:
            unwrapped = self.accelerator.unwrap_model(model)
            loss = unwrapped.loss_function(labels, logits, unwrapped.config).detach()
        if prediction_loss_only:
            return loss, None, None
        return loss, logits, labels


class EpochSeedCallback(TrainerCallback):
    """Tells the training dataset the epoch before its data loader starts, so each epoch draws new windows."""

    def __init__(self, dataset: VideoClipDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(round(state.epoch or 0)))


def build_trainer(
    model: MarlinForVideoClassification,
    args: TrainingArguments,
    problem_type: str,
    train_dataset: VideoClipDataset | None = None,
    eval_dataset: VideoClipDataset | None = None,
) -> VideoClipTrainer:
    """A `VideoClipTrainer` with the clip collator, the metrics of `problem_type` (and `roc_auc_batch_mean` when
    `metric_for_best_model` asks for it), when training the epoch seeding of `train_dataset`'s window draws, the
    training-loss plateau and the stop at `stop_learning_rate`.

    Args:
        args: `FinetuningArguments` (or `TrainingArguments` with `remove_unused_columns=False` and
            `label_names=["labels"]`).
    """
    callbacks = [EpochSeedCallback(train_dataset)] if train_dataset is not None else []
    callbacks.append(PlateauCallback())
    if getattr(args, "stop_learning_rate", 0):
        callbacks.append(StopAtLearningRateCallback(args.stop_learning_rate))
    batch_mean = (args.metric_for_best_model or "").removeprefix("eval_") == "roc_auc_batch_mean"
    return VideoClipTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collate_clips,
        compute_metrics=build_compute_metrics(problem_type, args.per_device_eval_batch_size if batch_mean else None),
        callbacks=callbacks,
    )


def save_finetuned(model, folder: str | os.PathLike, merge_lora: bool = False) -> None:
    """Save a fine-tuned model so that `AutoModelForVideoClassification.from_pretrained(folder)` loads it.

    A `MarlinForVideoClassification` (probe head folded, `export_model`) and, with `merge_lora`, a LoRA model whose
    adapters are merged into the weights, are saved with `hub_folders.save_marlin_folder`. A LoRA model without
    `merge_lora` saves its adapter only (`adapter_config.json`, `adapter_model.safetensors`: the adapters and the
    head, a few MB) plus the classifier's `config.json`; load it onto the encoder it was trained from:

        config = AutoConfig.from_pretrained(folder)
        base = AutoModelForVideoClassification.from_pretrained(encoder_folder, config=config)
        model = peft.PeftModel.from_pretrained(base, folder)
    """
    from ..hub_folders import honour_umask, save_marlin_folder

    if hasattr(model, "peft_config"):
        if merge_lora:
            save_marlin_folder(model.merge_and_unload(), folder)
            return
        model.save_pretrained(folder)
        model.get_base_model().config.save_pretrained(folder)
        honour_umask(folder)
        return
    save_marlin_folder(export_model(model), folder)
