"""`transformers.Trainer` for video clips: `FinetuningArguments` (the fine-tuning recipe's defaults), the
`VideoClipTrainer` that scores a video by the mean logits of its windows, its callbacks (epoch seeding, the
training-loss plateau, the stop at a learning rate) and `build_trainer`, which puts them together.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import HubStrategy, IntervalStrategy, SaveStrategy, SchedulerType

from ..exceptions import ArgumentValueError
from ..modeling_marlin import MarlinForVideoClassification
from .clip_dataset import VideoClipDataset, collate_clips
from .metrics import PROBLEM_TYPES, build_compute_metrics
from .selection import default_metric_for_best_model, greater_is_better, is_better

# How a video's windows are combined at evaluation (`FinetuningArguments.window_aggregation`, `video_logits`).
WINDOW_AGGREGATIONS = ("logits", "probabilities")


def video_logits(
    model: torch.nn.Module,
    videos: torch.Tensor,
    window_mask: torch.Tensor,
    chunk: int,
    aggregation: str = "logits",
    problem_type: str = "single_label_classification",
) -> torch.Tensor:
    """Each video's logits from its windows': their mean, or the logits of their mean probability.

    Args:
        videos: (batch, windows, frames, 3, H, W); padding windows are skipped.
        window_mask: (batch, windows) True on real windows.
        chunk: windows per forward pass.
        aggregation: "logits" (the mean of the windows' logits) or "probabilities": the windows' softmax
            (single-label) or sigmoid (multi-label) probabilities averaged, returned as logits of that mean (its log,
            or its log-odds), so the softmax or sigmoid of the result is the mean probability and the loss is that of
            the mean probability.
        problem_type: which probabilities "probabilities" averages.

    Returns:
        (batch, num_labels) float32.
    """
    if aggregation not in WINDOW_AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(WINDOW_AGGREGATIONS)}, got {aggregation!r}")
    clips = videos[window_mask]  # (num_real_windows, frames, 3, H, W)
    owner = window_mask.nonzero()[:, 0]  # (num_real_windows,) video of each window
    logits = torch.cat(
        [model(pixel_values_videos=clips[i : i + chunk]).logits.float() for i in range(0, len(clips), chunk)]
    )
    if aggregation == "probabilities":
        if problem_type == "single_label_classification":
            logits = logits.softmax(dim=-1)
        elif problem_type == "multi_label_classification":
            logits = logits.sigmoid()
        else:
            raise ValueError(f"window_aggregation 'probabilities' needs a classification task, not {problem_type}")
    sums = logits.new_zeros(len(videos), logits.shape[1]).index_add_(0, owner, logits)
    mean = sums / window_mask.sum(dim=1, keepdim=True).to(sums.dtype)  # (batch, num_labels)
    if aggregation == "logits":
        return mean
    tiny = torch.finfo(mean.dtype).tiny  # a probability that underflowed stays a finite logit
    if problem_type == "single_label_classification":
        return mean.clamp_min(tiny).log()
    return torch.logit(mean.clamp(tiny, 1 - torch.finfo(mean.dtype).eps))


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
    `greater_is_better` follows the metric; a tie goes to the lower `eval_loss`) loaded at the end; 10 epochs at
    learning rate 1e-4, weight decay 0.05; 2 videos (all their windows) per evaluation batch; 4 data-loader workers;
    seed 0; a log every 10 steps; at most 2 checkpoints kept; `hub_strategy="end"` (with `push_to_hub`, the Trainer
    only creates the repo: upload the final folder with `hub_folders.push_folder_to_hub`). Without an accelerator it
    runs on the CPU (`use_cpu`). Settings that would train nothing (no epochs, batches of no video, a learning rate
    <= 0) raise ValueError.

    Adds, for the paper code's recipe (`evaluation.recipes`): `recipe` (the preset's name, recorded with the run),
    `plateau_monitor` (with `lr_scheduler_type="reduce_lr_on_plateau"`: `train_loss` steps the plateau once an epoch
    on the epoch's mean training loss, as the paper code; `metric_for_best_model` is Trainer's own stepping on the
    evaluation metric) and `stop_learning_rate` (stop after the first epoch that ends with every lr at most this).
    Adds `window_aggregation` (`video_logits`: an evaluated video's logits are the mean of its windows', or the logits
    of their mean probability, which the `ffpp` task sets, `evaluation.tasks`).
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
    window_aggregation: str = field(
        default="logits",
        metadata={
            "help": "how an evaluated video's windows combine: the mean of their logits, or of their probabilities",
            "choices": WINDOW_AGGREGATIONS,
        },
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
        """Raise a ValueError (as `TrainingArguments` does; an `ArgumentValueError` naming the fields where it can) on
        settings that would train nothing, or nonsense, and still exit 0: no epochs (without `max_steps`), batches of
        no video, no or a negative learning rate."""
        if self.max_steps <= 0 and not (math.isfinite(self.num_train_epochs) and self.num_train_epochs > 0):
            raise ArgumentValueError(
                f"num_train_epochs must be > 0, got {self.num_train_epochs}; that would train nothing (or give "
                "max_steps)",
                "num_train_epochs",
                "max_steps",
            )
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ArgumentValueError(f"{name} must be at least 1, got {getattr(self, name)}", name)
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ArgumentValueError(f"learning_rate must be > 0, got {self.learning_rate}", "learning_rate")
        if self.plateau_monitor not in PLATEAU_MONITORS:
            choices = ", ".join(PLATEAU_MONITORS)
            raise ValueError(f"plateau_monitor must be one of {choices}, got {self.plateau_monitor}")
        if not (math.isfinite(self.stop_learning_rate) and self.stop_learning_rate >= 0):
            raise ValueError(f"stop_learning_rate must be >= 0 (0: never), got {self.stop_learning_rate}")
        if self.window_aggregation not in WINDOW_AGGREGATIONS:
            raise ValueError(
                f"window_aggregation must be one of {', '.join(WINDOW_AGGREGATIONS)}, got {self.window_aggregation}"
            )
        if self.window_aggregation == "probabilities" and self.problem_type == "regression":
            raise ArgumentValueError(
                "window_aggregation 'probabilities' needs a classification problem_type; a regression has none",
                "window_aggregation",
                "problem_type",
            )


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
    mean of its windows' logits (or, with `window_aggregation="probabilities"`, the logits of their mean
    probability), and the loss is computed on those. With `plateau_monitor="train_loss"` its
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
        aggregation = getattr(self.args, "window_aggregation", "logits")
        unwrapped = self.accelerator.unwrap_model(model)
        with torch.no_grad(), self.compute_loss_context_manager():
            logits = video_logits(
                model,
                inputs["pixel_values_videos"],
                inputs["window_mask"],
                self.window_chunk,
                aggregation,
                unwrapped.config.problem_type,
            )
        loss = None
        if labels is not None:
            loss = unwrapped.loss_function(labels, logits, unwrapped.config).detach()
        if prediction_loss_only:
            return loss, None, None
        return loss, logits, labels


class TieOnLossCallback(TrainerCallback):
    """Makes a tie of `metric_for_best_model` go to the lower `eval_loss` (`selection.is_better`, the linear probe's
    rule too): Trainer's strict comparison would keep the earlier checkpoint, even with twice the loss. Runs after an
    evaluation is logged and before Trainer compares it."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        name = args.metric_for_best_model or ""
        key = name if name.startswith("eval_") else f"eval_{name}"
        if not metrics or state.best_metric is None or metrics.get(key) != state.best_metric:
            return
        logged = [e for e in state.log_history if e.get("step") == state.best_global_step and "eval_loss" in e]
        loss, best_loss = metrics.get("eval_loss", math.inf), logged[-1]["eval_loss"] if logged else math.inf
        if logged and is_better(metrics[key], loss, state.best_metric, best_loss, args.greater_is_better):
            # The stored best, moved out of the way: Trainer's own comparison then takes this evaluation.
            state.best_metric = -math.inf if args.greater_is_better else math.inf


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
    task_metrics: Callable | None = None,
) -> VideoClipTrainer:
    """A `VideoClipTrainer` with the clip collator, the metrics of `problem_type` (and `roc_auc_batch_mean` when
    `metric_for_best_model` asks for it), when training the epoch seeding of `train_dataset`'s window draws, the
    training-loss plateau and the stop at `stop_learning_rate`.

    Args:
        args: `FinetuningArguments` (or `TrainingArguments` with `remove_unused_columns=False` and
            `label_names=["labels"]`).
        task_metrics: a task's metrics, (logits, labels) -> dict (`tasks.Task.metrics_for`), added to the others.
    """
    callbacks = [EpochSeedCallback(train_dataset)] if train_dataset is not None else []
    callbacks += [PlateauCallback(), TieOnLossCallback()]
    if getattr(args, "stop_learning_rate", 0):
        callbacks.append(StopAtLearningRateCallback(args.stop_learning_rate))
    batch_mean = (args.metric_for_best_model or "").removeprefix("eval_") == "roc_auc_batch_mean"
    return VideoClipTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collate_clips,
        compute_metrics=build_compute_metrics(
            problem_type, args.per_device_eval_batch_size if batch_mean else None, task_metrics
        ),
        callbacks=callbacks,
    )
