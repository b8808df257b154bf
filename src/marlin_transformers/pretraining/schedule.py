"""The paper's learning-rate schedule.

AdamW with betas (0.9, 0.95), no weight decay, `lr = 1.5e-4 * total_batch / 256`, linear warm-up from 0 over 40
epochs, then a cosine to `1e-5 * total_batch / 256` at the end of 2000 epochs. The reference computes this per
iteration but only applies one value per epoch (its scheduler steps once an epoch); here it is applied per optimizer
step (`learning_rate_at`, `LR_SCHEDULES[0]`), or, with `"reference"`, as the paper code applies it
(`reference_learning_rate_at`). `TrainingSchedule` is a run's: its length in optimizer steps and its rate at each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The released configs' rates per 256 clips, scaled linearly with the total batch (`scaled_learning_rates`).
BASE_LEARNING_RATE = 1.5e-4
BASE_MIN_LEARNING_RATE = 1e-5


def scaled_learning_rates(
    total_batch_size: int,
    base_learning_rate: float = BASE_LEARNING_RATE,
    base_min_learning_rate: float = BASE_MIN_LEARNING_RATE,
) -> tuple[float, float]:
    """The paper's linear scaling rule: (peak lr, final lr) = base * total_batch_size / 256.

    `total_batch_size` counts clips per optimizer step over every process and accumulation step.
    """
    return base_learning_rate * total_batch_size / 256, base_min_learning_rate * total_batch_size / 256


# How the schedule is applied (`PretrainingArguments.lr_schedule`), the default first: a value per optimizer step
# (ours), or one per epoch as the paper code steps it (its first step at lr 0).
LR_SCHEDULES = ("step", "reference")


def learning_rate_at(
    step: int, learning_rate: float, min_learning_rate: float, warmup_steps: int, total_steps: int
) -> float:
    """Learning rate for optimizer step `step` (from 0): the reference's per-iteration schedule.

    Steps `0 .. warmup_steps - 1` rise linearly from 0 to `learning_rate` (NumPy's `linspace(0, lr, warmup_steps)`);
    the remaining `total_steps - warmup_steps` follow `min + (lr - min) * (1 + cos(pi * i / remaining)) / 2`; steps
    past `total_steps` stay at `min_learning_rate`.
    """
    if step < warmup_steps:
        return learning_rate * step / (warmup_steps - 1) if warmup_steps > 1 else learning_rate
    remaining = total_steps - warmup_steps
    if remaining <= 0 or step >= total_steps:
        return min_learning_rate
    progress = (step - warmup_steps) / remaining
    return min_learning_rate + 0.5 * (learning_rate - min_learning_rate) * (1 + math.cos(math.pi * progress))


def reference_learning_rate_at(
    step: int,
    steps_per_epoch: int,
    learning_rate: float,
    min_learning_rate: float,
    warmup_epochs: int,
    num_epochs: int,
) -> float:
    """Learning rate for optimizer step `step` as the paper code applies the schedule (`model/marlin.py`).

    It keeps one value per epoch, the per-iteration schedule (`learning_rate_at`) at each epoch's first iteration,
    in a `LambdaLR` that it steps after the first batch of every epoch. Epoch `e`'s first step therefore runs at
    epoch `e`'s value and its other steps at epoch `e + 1`'s: the very first step at lr 0 (the warm-up starts there),
    every later one a whole epoch ahead. Past the last epoch the last value holds.
    """
    epoch, batch = divmod(step, steps_per_epoch)
    value_index = min(epoch + (batch > 0), num_epochs - 1)  # (batch > 0): after the scheduler's step of this epoch
    return learning_rate_at(
        value_index * steps_per_epoch,
        learning_rate,
        min_learning_rate,
        warmup_epochs * steps_per_epoch,
        num_epochs * steps_per_epoch,
    )


def optimizer_steps_per_epoch(num_clips: int, batch_size: int, num_processes: int, accumulation_steps: int) -> int:
    """Optimizer steps in an epoch of `num_clips` clips: full batches (a partial one is dropped) shared out among the
    processes, `accumulation_steps` to a step, the last step of an epoch taking what is left."""
    micro_batches = num_clips // batch_size / num_processes  # per process
    return math.ceil(micro_batches / accumulation_steps)


@dataclass(frozen=True)
class TrainingSchedule:
    """A run's length in optimizer steps and its learning rate at each step.

    Attributes:
        steps_per_epoch: optimizer steps per epoch (`optimizer_steps_per_epoch`).
        total_steps: the schedule's span (`num_epochs` epochs, or a stream's stated number of steps).
        max_steps: where the run stops (at most `total_steps`).
        learning_rate: the peak rate, after `warmup_epochs` of linear warm-up from 0.
        min_learning_rate: the final rate, at `total_steps`.
        lr_schedule: one of `LR_SCHEDULES`: a value per step, or as the reference applies it.
    """

    steps_per_epoch: int
    total_steps: int
    max_steps: int
    learning_rate: float
    min_learning_rate: float
    warmup_epochs: int
    num_epochs: int
    lr_schedule: str = LR_SCHEDULES[0]

    def learning_rate_at(self, step: int) -> float:
        """The rate of optimizer step `step` (from 0)."""
        if self.lr_schedule == "reference":
            return reference_learning_rate_at(
                step,
                self.steps_per_epoch,
                self.learning_rate,
                self.min_learning_rate,
                self.warmup_epochs,
                self.num_epochs,
            )
        warmup_steps = self.warmup_epochs * self.steps_per_epoch
        return learning_rate_at(step, self.learning_rate, self.min_learning_rate, warmup_steps, self.total_steps)
