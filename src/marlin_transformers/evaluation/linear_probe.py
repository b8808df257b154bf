"""Linear probing on `marlin extract` features, the MARLIN paper's frozen-encoder protocol.

Each video's window features (`DIR/<name>.npy`, (windows, hidden) float32) are averaged over time (the paper's
temporal mean), standardized with the training set's mean and std, and fed to one linear layer trained with AdamW.
`evaluation.recipes.RECIPES["marlin"].linear_probe` holds the paper code's settings instead: raw features, PyTorch's
default init, Adam (0.5, 0.9) with the lr halved on plateaus of the training loss until it reaches 1e-6.
The held-out split is scored with `evaluation.metrics` (accuracy, the paper's flattened ROC AUC, the per-label macro
AUC; MSE/MAE/Pearson for regression).

Labels come from labels CSVs (`data.labels`); a row is matched to the manifest's `input` by path, else by file name
without its video extension (`data.labels.match_videos`). The features are read once per manifest into
`DIR/linear_probe_cache.npz` (rebuilt when the manifest changes), so trying other hyper-parameters costs only the
training. `run_linear_probe` does all of it; `examples/linear_probe.py` is its command line.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.labels import align_label_names, match_videos, read_labels_csv
from ..exceptions import DatasetError
from .metrics import batch_mean_auroc, load_downstream_metric
from .probe_head import ProbeHead
from .selection import finite_metrics, greater_is_better, is_better
from .tasks import Task

CACHE_NAME = "linear_probe_cache.npz"


@dataclass
class LinearProbeConfig:
    """Hyper-parameters of `train_linear_probe`.

    Attributes:
        epochs: passes over the training features.
        batch_size: videos per AdamW step; 0 trains full-batch.
        learning_rate: AdamW's learning rate.
        weight_decay: AdamW's (decoupled) weight decay (at 0, AdamW is Adam).
        adam_beta1, adam_beta2: AdamW's betas.
        standardize: divide the centred features by their training std (a fixed affine map, kept in the probe).
        zero_init: start the linear layer at zero (seed-free); False keeps `nn.Linear`'s own (seeded) init.
        lr_scheduler: "constant", or "plateau": `ReduceLROnPlateau(**lr_scheduler_kwargs)` stepped once an epoch on
            the mean of the epoch's batch losses (the paper code's).
        lr_scheduler_kwargs: the plateau's settings (factor, patience, min_lr...).
        stop_learning_rate: stop before an epoch that would start with the lr at most this (0: never).
        seed: seeds the minibatch order (and the init without `zero_init`), so a run is reproducible.
        metric_for_best_model: with a validation split, the `evaluation.metrics` key the best epoch is chosen by
            (lower is better for mse and mae); `roc_auc_batch_mean` scores the split in batches of `batch_size`.
        eval_every: with a validation split, epochs between its evaluations (the last epoch is always evaluated).

    Raises:
        ValueError: a setting that would train nothing or nonsense (epochs < 1, a negative batch size, a learning
            rate <= 0, ...).
    """

    epochs: int = 100
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    standardize: bool = True
    zero_init: bool = True
    lr_scheduler: str = "constant"
    lr_scheduler_kwargs: dict = field(default_factory=dict)
    stop_learning_rate: float = 0.0
    seed: int = 0
    metric_for_best_model: str = "roc_auc"
    eval_every: int = 5

    def __post_init__(self):
        # ValueError, as a dataclass of arguments raises: examples/linear_probe.py turns it into an argparse error.
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}; 0 would train nothing")
        if self.batch_size < 0:
            raise ValueError(f"batch_size must be >= 0 (0: full batch), got {self.batch_size}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.lr_scheduler not in ("constant", "plateau"):
            raise ValueError(f"lr_scheduler must be 'constant' or 'plateau', got {self.lr_scheduler!r}")
        if not (math.isfinite(self.stop_learning_rate) and self.stop_learning_rate >= 0):
            raise ValueError(f"stop_learning_rate must be >= 0 (0: never), got {self.stop_learning_rate}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be at least 1, got {self.eval_every}")


def _feature_path(extract_dir: Path, output: str) -> Path:
    # `marlin extract` writes the npy's name within DIR; an absolute path, or one relative to where it ran, also do
    candidates = [Path(output)] if Path(output).is_absolute() else [extract_dir / output, Path(output)]
    for candidate in [*candidates, extract_dir / Path(output).name]:
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{output}: feature file listed in {extract_dir / 'manifest.jsonl'} is missing")


def load_features(
    extract_dir: str | os.PathLike, cache_path: str | os.PathLike | None = None
) -> tuple[list[str], np.ndarray]:
    """Temporal-mean feature of every input `marlin extract` wrote into `extract_dir`.

    Reads `manifest.jsonl` (the last line of an input wins, so a re-run that fixed an error counts) and each
    `status: ok` input's npy: (windows, hidden), or (windows, tokens, hidden) from `--keep-seq`, averaged over every
    axis but the last. The result is cached in `cache_path` (default `extract_dir/linear_probe_cache.npz`), keyed
    by the manifest's SHA-256.

    Returns:
        (inputs, features): the `input` of each video as the manifest gives it, and (num_videos, hidden) float32.
    """
    extract_dir = Path(extract_dir)
    manifest = extract_dir / "manifest.jsonl"
    try:
        manifest_bytes = manifest.read_bytes()
    except FileNotFoundError:
        raise DatasetError(
            f"{extract_dir}: no manifest.jsonl; give a folder `marlin extract` wrote", parameter="features_dir"
        ) from None
    key = hashlib.sha256(manifest_bytes).hexdigest()
    cache_path = Path(cache_path) if cache_path is not None else extract_dir / CACHE_NAME
    if cache_path.is_file():
        with np.load(cache_path, allow_pickle=False) as cache:
            if str(cache["manifest_sha256"]) == key:
                return cache["inputs"].tolist(), cache["features"]

    entries: dict[str, dict] = {}
    for line in manifest_bytes.decode("utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash, as `marlin extract` skips it (and cuts it off on its next run)
        if isinstance(entry, dict) and isinstance(entry.get("input"), str):
            entries[entry["input"]] = entry
    inputs, features = [], []
    for name, entry in entries.items():
        if entry.get("status") != "ok" or not isinstance(entry.get("output"), str):
            continue
        path = _feature_path(extract_dir, entry["output"])
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise DatasetError(f"{path}: not a readable .npy file ({error}); extract {name} again") from None
        if array.ndim < 2 or array.shape[0] == 0:
            raise DatasetError(f"{path}: expected (windows, hidden) features, got shape {array.shape}")
        inputs.append(name)
        features.append(array.reshape(-1, array.shape[-1]).astype(np.float64).mean(axis=0))  # (hidden,)
    if not inputs:
        raise DatasetError(f"{manifest}: no input has status ok; nothing to probe")
    sizes = sorted({len(feature) for feature in features})
    if len(sizes) > 1:
        raise DatasetError(f"{extract_dir}: features of sizes {sizes} mixed; extract every video with one model")
    stacked = np.stack(features).astype(np.float32)  # (num_videos, hidden)

    buffer = io.BytesIO()
    np.savez(buffer, manifest_sha256=np.array(key), inputs=np.array(inputs), features=stacked)
    partial = cache_path.with_name(f".{cache_path.name}.partial")
    partial.write_bytes(buffer.getvalue())
    os.replace(partial, cache_path)
    return inputs, stacked


def _loss(problem_type: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if problem_type == "single_label_classification":
        return nn.functional.cross_entropy(logits, labels)
    if problem_type == "multi_label_classification":
        return nn.functional.binary_cross_entropy_with_logits(logits, labels)
    return nn.functional.mse_loss(logits, labels)


def new_probe(features: torch.Tensor, num_labels: int, config: LinearProbeConfig) -> ProbeHead:
    """The untrained `ProbeHead` for (num_videos, hidden) training features: fixed statistics (the features' mean and
    std with `config.standardize`, else the identity), the linear layer at zero (`zero_init`) or seeded."""
    torch.manual_seed(config.seed)  # nn.Linear's own init, without zero_init
    linear = nn.Linear(features.shape[1], num_labels)
    if config.zero_init:  # the problem is convex: a zero start is as good as any, and seed-free
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
    probe = ProbeHead(linear, statistics="fixed")
    if config.standardize:
        probe.norm.fit(features)
    return probe


def _tensors(features: np.ndarray, labels: np.ndarray, problem_type: str, num_labels: int):
    """(features as float, labels as `_loss` takes them): class indices, or (num_videos, num_labels) floats."""
    x = torch.as_tensor(features, dtype=torch.float32)
    if problem_type == "single_label_classification":
        return x, torch.as_tensor(labels, dtype=torch.long)
    return x, torch.as_tensor(labels, dtype=torch.float32).reshape(len(x), num_labels)


def train_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    problem_type: str,
    num_labels: int,
    config: LinearProbeConfig | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    task_metrics: Callable | None = None,
) -> tuple[ProbeHead, dict]:
    """Fit a `ProbeHead` (fixed standardization, then the linear layer) with AdamW, optionally keeping the epoch best
    on a validation split (the paper's way).

    Args:
        features: (num_videos, hidden) float.
        labels: single-label (num_videos,) class indices; multi-label (num_videos, num_labels) 0/1; regression
            (num_videos, num_labels) or (num_videos,) targets.
        num_labels: output size (classes, labels or targets).
        config: the hyper-parameters (default `LinearProbeConfig()`).
        validation: (features, labels) of a validation split, shaped like the training ones. When given, the probe
            is scored every `config.eval_every` epochs and after the last, and the best state by
            `config.metric_for_best_model` is returned.
        task_metrics: a task's metrics, (logits, labels) -> dict (`tasks.Task.metrics_for`), added to the
            validation's (so `metric_for_best_model` may name one of them).

    Returns:
        (probe in eval mode, {"best_epoch": int, "validation": metrics of the returned probe or None,
        "epochs_trained": int (fewer than `config.epochs` when `stop_learning_rate` stopped it)}).
    """
    config = config or LinearProbeConfig()
    metric = config.metric_for_best_model
    x, y = _tensors(features, labels, problem_type, num_labels)
    probe = new_probe(x, num_labels, config)
    betas, decay = (config.adam_beta1, config.adam_beta2), config.weight_decay
    optimizer = torch.optim.AdamW(probe.parameters(), lr=config.learning_rate, betas=betas, weight_decay=decay)
    plateau = None
    if config.lr_scheduler == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", **config.lr_scheduler_kwargs)
    generator = torch.Generator().manual_seed(config.seed)
    batch_size = config.batch_size or len(x)
    eval_batch_size = batch_size if metric == "roc_auc_batch_mean" else None
    best = {"best_epoch": config.epochs, "validation": None}
    best_state = None
    greater, best_loss = greater_is_better(metric), math.inf
    if validation is not None:
        validation_tensors = _tensors(*validation, problem_type, num_labels)
    epochs_trained = 0
    for epoch in range(1, config.epochs + 1):
        mean_loss = _train_epoch(
            probe, x, y, torch.randperm(len(x), generator=generator), batch_size, optimizer, problem_type
        )
        epochs_trained = epoch
        if plateau is not None:  # the paper code's: once an epoch, on the epoch's mean training loss
            plateau.step(mean_loss)
        # The paper code's EarlyStoppingLR stops as the next epoch starts; the same epochs train.
        floor = config.stop_learning_rate
        last = epoch == config.epochs or (floor > 0 and all(g["lr"] <= floor for g in optimizer.param_groups))
        if validation is not None and (epoch % config.eval_every == 0 or last):
            metrics = evaluate_probe(probe.eval(), *validation, problem_type, eval_batch_size, task_metrics)
            if metric not in metrics:
                raise DatasetError(f"metric_for_best_model {metric!r}: not one of {sorted(metrics)}")
            with torch.no_grad():  # breaks a tie of the metric: the lower validation loss wins
                loss = _loss(problem_type, probe(validation_tensors[0]), validation_tensors[1]).item()
            previous = best["validation"]
            if previous is None or is_better(metrics[metric], loss, previous[metric], best_loss, greater):
                best, best_loss = {"best_epoch": epoch, "validation": metrics}, loss
                best_state = {k: v.clone() for k, v in probe.state_dict().items()}
        if last:
            break
    if best_state is not None:
        probe.load_state_dict(best_state)
    else:
        best["best_epoch"] = epochs_trained
    best["epochs_trained"] = epochs_trained
    return probe.eval(), best


def _train_epoch(
    probe: ProbeHead,
    x: torch.Tensor,
    y: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    problem_type: str,
) -> float:
    """One pass over the training videos in `order`, `batch_size` at a time; the mean of the batches' losses."""
    probe.train()
    losses = []
    for start in range(0, len(x), batch_size):
        batch = order[start : start + batch_size]
        loss = _loss(problem_type, probe(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)


def evaluate_probe(
    probe: ProbeHead,
    features: np.ndarray,
    labels: np.ndarray,
    problem_type: str,
    batch_size: int | None = None,
    task_metrics: Callable | None = None,
) -> dict:
    """The metrics of `evaluation.metrics` for the probe's logits on (num_videos, hidden) features; with
    `batch_size` (classification), also `roc_auc_batch_mean` over consecutive batches of that many videos; with
    `task_metrics` ((logits, labels) -> dict, `tasks.Task.metrics_for`), a task's metrics too."""
    with torch.no_grad():
        logits = probe(torch.as_tensor(features, dtype=torch.float32)).numpy()
    if problem_type == "regression" and logits.shape[1] == 1:
        logits, labels = logits[:, 0], np.asarray(labels).reshape(-1)
    metrics = load_downstream_metric(problem_type).compute(predictions=logits, references=labels)
    if batch_size and problem_type != "regression":
        metrics["roc_auc_batch_mean"] = batch_mean_auroc(logits, labels, problem_type, batch_size)
    if task_metrics is not None:
        metrics.update(task_metrics(logits, labels))
    return metrics


def run_linear_probe(
    features_dir: str | os.PathLike,
    train_labels: str | os.PathLike,
    eval_labels: str | os.PathLike,
    problem_type: str,
    config: LinearProbeConfig | None = None,
    val_labels: str | os.PathLike | None = None,
    cache_path: str | os.PathLike | None = None,
    skip_missing: bool = False,
    task: Task | None = None,
) -> dict:
    """Probe the features of `features_dir` (a `marlin extract --out` folder) on labels CSVs and score it.

    Args:
        train_labels: labels CSV of the training videos.
        eval_labels: labels CSV of the held-out videos.
        config: the hyper-parameters (default `LinearProbeConfig()`).
        val_labels: a labels CSV to pick the best epoch on (`config.metric_for_best_model`); None keeps the last.
        cache_path: the feature cache (default `features_dir/linear_probe_cache.npz`).
        skip_missing: leave out labelled videos without features instead of raising.
        task: a downstream task (`evaluation.tasks`): the training labels must be its labels, and its metrics join
            the others. A video is scored from its temporal-mean feature (the paper's probe), so a task's window
            aggregation does not apply: the probe sees one feature per video, not its windows.

    Returns:
        The report, ready for JSON (NaN metrics as None): `problem_type`, `task` (its name or None), `eval`, `train`
        and `validation` metrics, `best_epoch`, `num_train`, `num_eval`, `skipped_without_features`, `hidden_size`,
        `label_names`, `hyperparameters`, `features` (the folder's absolute path).

    Raises:
        DatasetError: a missing or malformed manifest, feature file or labels file, or videos without features.
    """
    config = config or LinearProbeConfig()
    inputs, features = load_features(features_dir, cache_path)
    train = read_labels_csv(train_labels, problem_type)
    evaluated = read_labels_csv(eval_labels, problem_type)
    eval_targets = align_label_names(train, evaluated, problem_type, str(eval_labels))
    train_rows, train_label_rows = match_videos(inputs, train.paths, skip_missing)
    eval_rows, eval_label_rows = match_videos(inputs, evaluated.paths, skip_missing)
    validation = None
    if val_labels:
        val = read_labels_csv(val_labels, problem_type)
        val_targets = align_label_names(train, val, problem_type, str(val_labels))
        val_rows, val_label_rows = match_videos(inputs, val.paths, skip_missing)
        validation = (features[val_rows], val_targets[val_label_rows])
    train_x, train_y = features[train_rows], train.labels[train_label_rows]  # (num_train, hidden), labels
    eval_x, eval_y = features[eval_rows], eval_targets[eval_label_rows]
    task_metrics = None
    if task is not None:
        task.check_label_names(train.label_names, train_labels)
        task_metrics = task.metrics_for(train.label_names)
    probe, selection = train_linear_probe(
        train_x, train_y, problem_type, len(train.label_names), config, validation, task_metrics
    )
    hyperparameters = asdict(config)
    del hyperparameters["eval_every"]
    if not val_labels:
        hyperparameters["metric_for_best_model"] = None
    return {
        "problem_type": problem_type,
        "task": task.name if task is not None else None,
        "eval": finite_metrics(evaluate_probe(probe, eval_x, eval_y, problem_type, task_metrics=task_metrics)),
        "train": finite_metrics(evaluate_probe(probe, train_x, train_y, problem_type, task_metrics=task_metrics)),
        "validation": finite_metrics(selection["validation"]) if selection["validation"] else None,
        "best_epoch": selection["best_epoch"],
        "epochs_trained": selection["epochs_trained"],
        "num_train": len(train_rows),
        "num_eval": len(eval_rows),
        "skipped_without_features": {
            "train": len(train.paths) - len(train_rows),
            "eval": len(evaluated.paths) - len(eval_rows),
        },
        "hidden_size": int(features.shape[1]),
        "label_names": list(train.label_names),
        "hyperparameters": hyperparameters,
        "features": str(Path(features_dir).absolute()),
    }
