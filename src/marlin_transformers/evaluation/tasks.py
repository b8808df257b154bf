"""The downstream tasks the preparers write (`marlin prepare-ffpp`, `prepare-ravdess`, `prepare-mosei`), one table.

Each `Task` says how to train on and score its labels tables: the problem type, the label names the tables hold, the
metric the best checkpoint or epoch is chosen by, how fine-tuning's evaluation combines a video's windows, and its
metrics (`evaluation.metrics`, the module docstring says what each is and where it comes from). `examples/finetune.py
--task` and `examples/linear_probe.py --task` read it; any flag given still wins over what a task sets.

A prepared folder `OUT` holds each task's labels tables as `OUT/<task>/{train,val,test}.csv` (`prepared_labels`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.ffpp import TASK as FFPP_TABLE
from ..data.mosei import mosei_tasks
from ..data.ravdess import ravdess_task
from ..data.task_preparation import LabelTask
from ..exceptions import DatasetError
from .metrics import ffpp_metrics, mosei_emotion_metrics, mosei_sentiment_metrics, ravdess_metrics


def _sentiment_metrics(predictions: np.ndarray, references: np.ndarray, label_names: Sequence[str]) -> dict:
    return mosei_sentiment_metrics(predictions, references)  # one target: nothing to look up by name


@dataclass(frozen=True)
class Task:
    """One downstream task.

    Attributes:
        table: the labels table its preparer writes (`data.task_preparation.LabelTask`: its name, the task's folder
            in a prepared output and what `--task` takes; its problem type; its label names, which a training table
            must fit: `check_label_names`). Written in one place, the preparer's module.
        metric_for_best_model: the key of the metrics the best checkpoint (fine-tuning) or epoch (linear probe with
            a validation split) is chosen by.
        window_aggregation: how fine-tuning's evaluation combines a video's windows (`trainer.video_logits`): "logits"
            (their mean) or "probabilities" (the mean of their softmax probabilities).
        metrics: (predictions, references, label_names) -> {name: value}, the task's own metrics.
    """

    table: LabelTask
    metric_for_best_model: str
    window_aggregation: str
    metrics: Callable[[np.ndarray, np.ndarray, Sequence[str]], dict]

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def problem_type(self) -> str:
        return self.table.problem_type

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.table.label_names

    def finetuning_defaults(self) -> dict:
        """The `FinetuningArguments` fields this task sets."""
        return {
            "problem_type": self.problem_type,
            "metric_for_best_model": self.metric_for_best_model,
            "window_aggregation": self.window_aggregation,
        }

    def linear_probe_defaults(self) -> dict:
        """The linear probe's settings this task sets (its problem type and `LinearProbeConfig` field)."""
        return {"problem_type": self.problem_type, "metric_for_best_model": self.metric_for_best_model}

    def check_label_names(self, label_names: Sequence[str], source: str | os.PathLike) -> None:
        """Raise a `DatasetError` naming `source` unless a training table's label names fit this task: multi-label
        and regression, its columns (in any order); single-label, two or more of its classes (a table names the
        classes it holds: RAVDESS songs have no disgust or surprise)."""
        if self.problem_type == "single_label_classification":
            fits = len(set(label_names)) >= 2 and set(label_names) <= set(self.label_names)
        else:
            fits = sorted(label_names) == sorted(self.label_names)
        if not fits:
            needs = "two or more of" if self.problem_type == "single_label_classification" else "the columns"
            raise DatasetError(
                f"{source}: labels {', '.join(label_names)}; the {self.name} task needs {needs} "
                f"{', '.join(self.label_names)} (a table `marlin prepare-{self.name.split('-')[0]}` writes)"
            )

    def metrics_for(self, label_names: Sequence[str]) -> Callable[[np.ndarray, np.ndarray], dict]:
        """This task's metrics for a run whose outputs follow `label_names` (the training data's order)."""
        return functools.partial(self.metrics, label_names=list(label_names))


_MOSEI_SENTIMENT, _MOSEI_EMOTIONS = mosei_tasks()
TASKS = {
    task.name: task
    for task in (
        Task(FFPP_TABLE, "video_auc", "probabilities", ffpp_metrics),
        Task(ravdess_task(), "accuracy", "logits", ravdess_metrics),
        Task(_MOSEI_SENTIMENT, "mae", "logits", _sentiment_metrics),
        Task(_MOSEI_EMOTIONS, "weighted_accuracy", "logits", mosei_emotion_metrics),
    )
}


def get_task(name: str) -> Task:
    """The task called `name`; ValueError (an argument error) naming the known ones otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; use one of {', '.join(TASKS)}")
    return TASKS[name]


def prepared_labels(folder: str | os.PathLike, task: str, split: str) -> Path:
    """`folder/<task>/<split>.csv`, the labels table a preparer wrote; a `DatasetError` when it is missing.

    Args:
        folder: the preparer's output folder (OUT of `marlin prepare-ffpp FFPP_ROOT OUT`).
        split: one of `SPLIT_ORDER`.
    """
    path = Path(folder) / task / f"{split}.csv"
    if not path.is_file():
        raise DatasetError(
            f"{path}: no such labels table; give the folder a `marlin prepare-*` command wrote, or the tables "
            "themselves",
            parameter="data",
        )
    return path


def labels_tables(
    folder: str | os.PathLike | None,
    task: str | None,
    train: str | os.PathLike | None = None,
    val: str | os.PathLike | None = None,
    test: str | os.PathLike | None = None,
    required: Sequence[str] = ("train", "val"),
) -> tuple[str | None, str | None, str | None]:
    """A run's training, validation and test labels: each one given as it is, each other one from the prepared
    `folder` (`prepared_labels(folder, task, split)`), or None without a folder.

    Args:
        required: the splits the run cannot do without (fine-tuning: train and val; the linear probe: train and
            test).

    Raises:
        DatasetError: a folder without a task, or a folder that lacks a table; a required split missing.
    """
    given = {"train": train, "val": val, "test": test}
    if folder is not None:
        if task is None:
            raise DatasetError(f"{folder}: give the task whose tables to read from this prepared folder", "task")
        given = {split: value or prepared_labels(folder, task, split) for split, value in given.items()}
    missing = [split for split in required if given[split] is None]
    if missing:
        raise DatasetError(f"no {' or '.join(missing)} labels: give the tables, or a prepared folder and its task")
    return tuple(None if value is None else str(value) for value in given.values())
