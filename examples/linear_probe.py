"""Linear probing on `marlin extract` features, the MARLIN paper's frozen-encoder protocol.

Each video's window features (`DIR/<name>.npy`, (windows, hidden) float32) are averaged over time (the paper's
temporal mean), standardized with the training set's mean and std, and fed to one linear layer trained with AdamW.
The held-out split is scored with `evaluation.metrics` (accuracy, the paper's flattened ROC AUC, the
per-label macro AUC; MSE/MAE/Pearson for regression) and the numbers are written to a JSON file.

    marlin extract CelebV-HQ/cropped --model marlin_vit_base_ytf --out features/
    python examples/linear_probe.py --features features/ \
        --train-labels CelebV-HQ/appearance/train.csv --eval-labels CelebV-HQ/appearance/test.csv \
        --problem-type multi_label_classification --output probe_appearance.json

Labels files are the project's labels CSV (`marlin_transformers.celebv_hq`): a `path` (or `input`) column, then
`label` (single-label), one 0/1 column per label (multi-label) or one column per target (regression). A row is
matched to the manifest's `input` by path, else by file name without its video extension (so the CSV may list
bare stems). The features are read once per manifest into `DIR/linear_probe_cache.npz` (rebuilt when the manifest
changes), so trying other hyper-parameters costs only the training.
"""

import argparse
import hashlib
import io
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from marlin_transformers.data.labels import read_labels_csv
from marlin_transformers.evaluation.metrics import PROBLEM_TYPES, load_downstream_metric
from marlin_transformers.exceptions import DatasetError, MarlinError
from marlin_transformers.video import VIDEO_EXTENSIONS

CACHE_NAME = "linear_probe_cache.npz"
LOWER_IS_BETTER = {"mse", "mae"}


def video_key(path: str) -> str:
    """A video's file name without its video extension: the fallback key matching labels to features."""
    name = os.path.basename(path)
    stem, extension = os.path.splitext(name)
    return stem if extension.lower() in VIDEO_EXTENSIONS else name


def _feature_path(extract_dir: Path, output: str) -> Path:
    # `marlin extract` writes the npy's name within DIR; an absolute path, or one relative to where it ran, also do
    candidates = [Path(output)] if Path(output).is_absolute() else [extract_dir / output, Path(output)]
    for candidate in [*candidates, extract_dir / Path(output).name]:
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{output}: feature file listed in {extract_dir / 'manifest.jsonl'} is missing")


def load_features(extract_dir: str | os.PathLike, cache_path: str | os.PathLike | None = None):
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
            f"{extract_dir}: no manifest.jsonl; point --features at a `marlin extract --out` folder"
        ) from None
    key = hashlib.sha256(manifest_bytes).hexdigest()
    cache_path = Path(cache_path) if cache_path is not None else extract_dir / CACHE_NAME
    if cache_path.is_file():
        with np.load(cache_path, allow_pickle=False) as cache:
            if str(cache["manifest_sha256"]) == key:
                return cache["inputs"].tolist(), cache["features"]

    entries: dict[str, dict] = {}
    for line_number, line in enumerate(manifest_bytes.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            entries[entry["input"]] = entry
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DatasetError(f"{manifest}:{line_number}: not a manifest line with an 'input'") from None
    inputs, features = [], []
    for name, entry in entries.items():
        if entry.get("status") != "ok":
            continue
        path = _feature_path(extract_dir, entry["output"])
        array = np.load(path)
        if array.ndim < 2 or array.shape[0] == 0:
            raise DatasetError(f"{path}: expected (windows, hidden) features, got shape {array.shape}")
        inputs.append(name)
        features.append(array.reshape(-1, array.shape[-1]).astype(np.float64).mean(axis=0))  # (hidden,)
    if not inputs:
        raise DatasetError(f"{manifest}: no input has status ok; nothing to probe")
    stacked = np.stack(features).astype(np.float32)  # (num_videos, hidden)

    buffer = io.BytesIO()
    np.savez(buffer, manifest_sha256=np.array(key), inputs=np.array(inputs), features=stacked)
    partial = cache_path.with_name(f".{cache_path.name}.partial")
    partial.write_bytes(buffer.getvalue())
    os.replace(partial, cache_path)
    return inputs, stacked


def match_features(inputs: list[str], video_paths: list[str], skip_missing: bool = False):
    """Row of `inputs` for each labelled video: by absolute path, else by `video_key` when that is unique.

    Returns:
        (feature_rows, label_rows): equal-length int arrays; label rows without features are left out only when
        `skip_missing`, otherwise they raise.
    """
    by_path = {os.path.normpath(os.path.abspath(name)): i for i, name in enumerate(inputs)}
    by_key: dict[str, list[int]] = {}
    for i, name in enumerate(inputs):
        by_key.setdefault(video_key(name), []).append(i)
    feature_rows, label_rows, missing = [], [], []
    for row, path in enumerate(video_paths):
        index = by_path.get(os.path.normpath(path))
        if index is None:
            candidates = by_key.get(video_key(path), [])
            if len(candidates) > 1:
                raise DatasetError(f"{path}: {len(candidates)} extracted inputs share its name; list full paths")
            index = candidates[0] if candidates else None
        if index is None:
            missing.append(path)
            continue
        feature_rows.append(index)
        label_rows.append(row)
    if missing and not skip_missing:
        raise DatasetError(
            f"{missing[0]}: no features for it ({len(missing)} labelled videos lack them); "
            "extract them or pass --skip-missing"
        )
    if not feature_rows:
        raise DatasetError("none of the labelled videos has extracted features")
    return np.array(feature_rows), np.array(label_rows)


class LinearProbe(nn.Module):
    """Standardization (fixed, from the training features) then one linear layer: (N, hidden) -> (N, num_labels)."""

    def __init__(self, hidden_size: int, num_labels: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(hidden_size))
        self.register_buffer("std", torch.ones(hidden_size))
        self.linear = nn.Linear(hidden_size, num_labels)
        nn.init.zeros_(self.linear.weight)  # the problem is convex: a zero start is as good as any, and seed-free
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.std)


def _loss(problem_type: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if problem_type == "single_label_classification":
        return nn.functional.cross_entropy(logits, labels)
    if problem_type == "multi_label_classification":
        return nn.functional.binary_cross_entropy_with_logits(logits, labels)
    return nn.functional.mse_loss(logits, labels)


def train_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    problem_type: str,
    num_labels: int,
    epochs: int = 100,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    metric_for_best_model: str = "roc_auc",
    eval_every: int = 5,
) -> tuple[LinearProbe, dict]:
    """Fit a `LinearProbe` with AdamW, optionally keeping the epoch best on a validation split (the paper's way).

    Args:
        features: (num_videos, hidden) float.
        labels: single-label (num_videos,) class indices; multi-label (num_videos, num_labels) 0/1; regression
            (num_videos, num_labels) or (num_videos,) targets.
        num_labels: output size (classes, labels or targets).
        batch_size: minibatch size; 0 trains full-batch.
        seed: seeds the minibatch order (the weights start at zero), so a run is reproducible.
        validation: (features, labels) of a validation split, shaped like the training ones. When given, the probe
            is scored every `eval_every` epochs and after the last, and the best state by `metric_for_best_model`
            (a key of `evaluation.metrics`; lower is better for mse and mae) is returned.

    Returns:
        (probe in eval mode, {"best_epoch": int, "validation": metrics of the returned probe or None}).
    """
    x = torch.as_tensor(features, dtype=torch.float32)
    if problem_type == "single_label_classification":
        y = torch.as_tensor(labels, dtype=torch.long)
    else:
        y = torch.as_tensor(labels, dtype=torch.float32).reshape(len(x), num_labels)
    probe = LinearProbe(x.shape[1], num_labels)
    probe.mean.copy_(x.mean(dim=0))
    probe.std.copy_(x.std(dim=0).clamp_min(1e-6))
    optimizer = torch.optim.AdamW(probe.parameters(), lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    batch_size = batch_size or len(x)
    best = {"best_epoch": epochs, "validation": None}
    best_state = None
    for epoch in range(1, epochs + 1):
        probe.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            loss = _loss(problem_type, probe(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if validation is not None and (epoch % eval_every == 0 or epoch == epochs):
            metrics = evaluate_probe(probe.eval(), *validation, problem_type)
            if metric_for_best_model not in metrics:
                raise DatasetError(f"--metric-for-best-model {metric_for_best_model}: not one of {sorted(metrics)}")
            score = metrics[metric_for_best_model]
            sign = -1.0 if metric_for_best_model in LOWER_IS_BETTER else 1.0
            previous = best["validation"]
            if previous is None or (not math.isnan(score) and sign * score > sign * previous[metric_for_best_model]):
                best = {"best_epoch": epoch, "validation": metrics}
                best_state = {k: v.clone() for k, v in probe.state_dict().items()}
    if best_state is not None:
        probe.load_state_dict(best_state)
    return probe.eval(), best


def evaluate_probe(probe: LinearProbe, features: np.ndarray, labels: np.ndarray, problem_type: str) -> dict:
    """The metrics of `evaluation.metrics` for the probe's logits on (num_videos, hidden) features."""
    with torch.no_grad():
        logits = probe(torch.as_tensor(features, dtype=torch.float32)).numpy()
    if problem_type == "regression" and logits.shape[1] == 1:
        logits, labels = logits[:, 0], np.asarray(labels).reshape(-1)
    return load_downstream_metric(problem_type).compute(predictions=logits, references=labels)


def _align_labels(train, evaluated, problem_type: str, eval_path: str) -> np.ndarray:
    """Eval labels re-indexed to the training label names (single-label), or checked to share them."""
    if problem_type != "single_label_classification":
        if evaluated.label_names != train.label_names:
            raise DatasetError(f"{eval_path}: label columns differ from the training labels file's")
        return evaluated.labels
    index = {name: i for i, name in enumerate(train.label_names)}
    unknown = sorted({evaluated.label_names[i] for i in np.unique(evaluated.labels)} - set(index))
    if unknown:
        raise DatasetError(f"{eval_path}: class {unknown[0]!r} never occurs in the training labels")
    return np.array([index[evaluated.label_names[i]] for i in evaluated.labels], dtype=np.int64)


def _finite(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--features", required=True, help="folder written by `marlin extract --out`")
    parser.add_argument("--train-labels", required=True, help="labels CSV of the training videos")
    parser.add_argument("--eval-labels", required=True, help="labels CSV of the held-out videos")
    parser.add_argument("--val-labels", default=None, help="labels CSV to pick the best epoch on (optional)")
    parser.add_argument("--metric-for-best-model", default="roc_auc", help="validation metric (with --val-labels)")
    parser.add_argument("--eval-every", type=int, default=5, help="epochs between validations")
    parser.add_argument("--problem-type", choices=PROBLEM_TYPES, default="multi_label_classification")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=256, help="0 for full-batch training")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None, help=f"feature cache file (default: FEATURES/{CACHE_NAME})")
    parser.add_argument("--skip-missing", action="store_true", help="leave out labelled videos without features")
    parser.add_argument("--output", default=None, help="metrics JSON (default: FEATURES/linear_probe_metrics.json)")
    args = parser.parse_args(argv)

    try:
        inputs, features = load_features(args.features, args.cache)
        train = read_labels_csv(args.train_labels, args.problem_type)
        evaluated = read_labels_csv(args.eval_labels, args.problem_type)
        eval_labels = _align_labels(train, evaluated, args.problem_type, args.eval_labels)
        train_rows, train_label_rows = match_features(inputs, train.paths, args.skip_missing)
        eval_rows, eval_label_rows = match_features(inputs, evaluated.paths, args.skip_missing)
        validation = None
        if args.val_labels:
            val = read_labels_csv(args.val_labels, args.problem_type)
            val_labels = _align_labels(train, val, args.problem_type, args.val_labels)
            val_rows, val_label_rows = match_features(inputs, val.paths, args.skip_missing)
            validation = (features[val_rows], val_labels[val_label_rows])
        train_x, train_y = features[train_rows], train.labels[train_label_rows]
        eval_x, eval_y = features[eval_rows], eval_labels[eval_label_rows]
        probe, selection = train_linear_probe(
            train_x,
            train_y,
            args.problem_type,
            len(train.label_names),
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            weight_decay=args.weight_decay,
            seed=args.seed,
            validation=validation,
            metric_for_best_model=args.metric_for_best_model,
            eval_every=args.eval_every,
        )
    except MarlinError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    report = {
        "problem_type": args.problem_type,
        "eval": _finite(evaluate_probe(probe, eval_x, eval_y, args.problem_type)),
        "train": _finite(evaluate_probe(probe, train_x, train_y, args.problem_type)),
        "validation": _finite(selection["validation"]) if selection["validation"] else None,
        "best_epoch": selection["best_epoch"],
        "num_train": len(train_rows),
        "num_eval": len(eval_rows),
        "skipped_without_features": {
            "train": len(train.paths) - len(train_rows),
            "eval": len(evaluated.paths) - len(eval_rows),
        },
        "hidden_size": int(features.shape[1]),
        "label_names": list(train.label_names),
        "hyperparameters": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "weight_decay": args.weight_decay,
            "seed": args.seed,
            "metric_for_best_model": args.metric_for_best_model if args.val_labels else None,
        },
        "features": str(Path(args.features).absolute()),
    }
    output = Path(args.output) if args.output else Path(args.features) / "linear_probe_metrics.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({"eval": report["eval"], "num_train": report["num_train"], "num_eval": report["num_eval"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
