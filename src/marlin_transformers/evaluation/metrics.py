"""Downstream metrics as a local `evaluate` module: accuracy, ROC AUC (the paper's and per-label), MSE/MAE/Pearson.

`evaluate.load("accuracy")` fetches a script from the Hub; `DownstreamMetric` is defined here instead, so it works
offline (`HF_HUB_OFFLINE=1`) and in every process of a distributed run.

The paper (arXiv 2211.06627, code `ControlNet/MARLIN` `model/classifier.py`) evaluates CelebV-HQ as a multi-label task
with *one* binary AUROC over all (video x attribute) pairs flattened together, and an accuracy over the same pairs
with the sigmoid thresholded at 0.5. That flattened AUC is `roc_auc` here. `roc_auc_macro` is the usual per-label AUC
averaged over labels; the two differ (a label that is easy and frequent weighs more in the flattened one), so compare
against the paper with `roc_auc`.

Keys returned, by problem type (the names `transformers` uses in `config.problem_type`):

- `single_label_classification`: `accuracy` (argmax), `roc_auc` (one-vs-rest pairs flattened, i.e. micro-averaged,
  on softmax probabilities), `roc_auc_macro` (one-vs-rest per class, averaged). With two classes both AUCs are the
  plain binary AUROC of the positive class.
- `multi_label_classification`: `accuracy` (over all pairs, score > 0.5 after sigmoid), `roc_auc` (all pairs
  flattened, the paper's), `roc_auc_macro` (per label, averaged), `subset_accuracy` (every label of a video right).
- `regression`: `mse`, `mae`, `pearson` (averaged over outputs when there are several).

A per-label AUC is undefined when the evaluated split holds only one class for that label; such labels are left out
of `roc_auc_macro` (NaN when none is defined).

`roc_auc_batch_mean` (classification, when `build_compute_metrics` or `evaluate_probe` is given a batch size) is the
paper code's validation AUC: `roc_auc` of each consecutive batch, averaged with the batch sizes as weights (Lightning's
epoch mean of a per-step metric). It depends on the batch size and the order of the videos, which is why it is not
our default; `batch_mean_auroc` computes it.

## Task metrics

The tasks `evaluation.tasks` names (`--task` of the examples) add their papers' metrics to the keys above, computed
with scikit-learn (`build_compute_metrics(..., task_metrics=...)`, `linear_probe.evaluate_probe`). Classes are looked
up by name in the run's label names, never by index.

- `ffpp` (`ffpp_metrics`): `video_auc`, the ROC AUC of the probability of the class named `fake` over videos (fake
  positive), and `video_accuracy` (fake when that probability is > 0.5). Fine-tuning's evaluation otherwise scores a
  video by the mean of its windows' logits (`trainer.video_logits`); the `ffpp` task averages the windows' softmax
  probabilities instead (`window_aggregation="probabilities"`: the video's logits are the log of that mean, so its
  softmax is the mean probability), as FF++ video-level AUCs are computed. With two classes the AUC of `fake`
  equals the generic `roc_auc` (the AUC of `1 - p` against the other class is the same number); by name it stays
  right whatever the class order.
- `ravdess` (`ravdess_metrics`): `accuracy` is the weighted accuracy (WA) of the emotion-recognition literature (each
  class weighted by its support), `unweighted_accuracy` the mean of the per-class recalls (UA, balanced accuracy),
  `weighted_f1` and `unweighted_f1` (macro), and per class `recall_<class>` (the class's accuracy) and `f1_<class>`
  (NaN for a class the split lacks). RAVDESS's WA is not MOSEI's `weighted_accuracy` below, hence no key of that name.
- `mosei-sentiment` (`mosei_sentiment_metrics`), from one regression output x in [-3, 3]: both binary readings of
  the multimodal sentiment literature, as MMSA (thuiar/MMSA `metricsTop.py`) names them: `acc2_has0`/`f1_has0`
  (negative, x < 0, against non-negative, x >= 0, over every video) and `acc2_non0`/`f1_non0` (negative against
  positive, x > 0, over the videos whose label is not 0; MulT's `exclude_zero=True`, yaohungt/Multimodal-Transformer
  `src/eval_metrics.py`); F1 weighted by class support as both codes compute it; `acc7`, the accuracy of
  round(clip(x, -3, 3)) (numpy's round: halves to even, as both codes); `mae` and `pearson`.
- `mosei-emotions` (`mosei_emotion_metrics`), six multi-label outputs (present when the logit is > 0):
  `weighted_accuracy_<emotion>` = (TP * N / P + TN) / (2 N), P and N the videos with and without the emotion (Tong et
  al., ACL 2017, P17-1142, the weighted accuracy CMU-MOSEI's paper, Zadeh et al. ACL 2018, and MulT report; it equals
  the mean of the two recalls, scikit-learn's balanced accuracy), `weighted_accuracy` their mean, `f1_<emotion>`
  (weighted by support, as for sentiment) and `f1` their mean. An emotion the split holds in no or every video has no
  weighted accuracy (NaN), left out of the mean.
"""

import warnings
from collections.abc import Callable, Sequence

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score, roc_auc_score

from ..constants import CITATION, PROBLEM_TYPES

_INPUTS_DESCRIPTION = """
Args:
    predictions: model outputs. Classification: logits (num_videos, num_labels), or (num_videos,) for a binary
        single-label task with one logit. Regression: (num_videos,) or (num_videos, num_outputs).
    references: single-label: class indices (num_videos,); multi-label: 0/1 (num_videos, num_labels);
        regression: targets shaped like the predictions.
    from_logits: classification only; True (default) when predictions are logits, False when they are already
        probabilities (the accuracy threshold becomes 0.5 instead of 0).
"""


def binary_auroc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area under the ROC curve of one binary problem, from ranks (Mann-Whitney U), ties counted half.

    Args:
        scores: any shape; higher means more likely positive. Only the order matters.
        targets: same number of elements, 0/1 or bool.

    Returns:
        The AUC in [0, 1], or NaN when `targets` holds only one class.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    targets = np.asarray(targets).ravel().astype(bool)
    if scores.shape != targets.shape:
        raise ValueError(f"scores ({scores.size} values) and targets ({targets.size} values) differ in size")
    num_pos = int(targets.sum())
    num_neg = targets.size - num_pos
    if num_pos == 0 or num_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # 1-based rank of each distinct score, averaged over its ties
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = average_rank[inverse.ravel()]
    u_statistic = ranks[targets].sum() - num_pos * (num_pos + 1) / 2.0
    return float(u_statistic / (num_pos * num_neg))


def _macro_auroc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean over columns of the per-column AUROC, skipping undefined columns. Both (num_videos, num_labels)."""
    per_label = np.array([binary_auroc(scores[:, j], targets[:, j]) for j in range(scores.shape[1])])
    if np.isnan(per_label).all():
        return float("nan")
    return float(np.nanmean(per_label))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def single_label_metrics(predictions: np.ndarray, references: np.ndarray, from_logits: bool = True) -> dict:
    """Metrics of a single-label task; see the module docstring. predictions (N, C) or (N,), references (N,)."""
    predictions = np.asarray(predictions, dtype=np.float64)
    references = np.asarray(references).astype(np.int64).ravel()
    if predictions.ndim == 2 and predictions.shape[1] == 1:
        predictions = predictions[:, 0]
    if predictions.ndim == 1:  # one score for a binary task
        threshold = 0.0 if from_logits else 0.5
        auc = binary_auroc(predictions, references == 1)
        return {
            "accuracy": float(((predictions > threshold) == (references == 1)).mean()),
            "roc_auc": auc,
            "roc_auc_macro": auc,
        }
    num_classes = predictions.shape[1]
    if references.min() < 0 or references.max() >= num_classes:
        raise ValueError(f"class indices must lie in [0, {num_classes}), got [{references.min()}, {references.max()}]")
    probabilities = _softmax(predictions) if from_logits else predictions
    accuracy = float((predictions.argmax(axis=1) == references).mean())
    one_hot = np.eye(num_classes, dtype=bool)[references]  # (N, C)
    if num_classes == 2:
        auc = binary_auroc(probabilities[:, 1], one_hot[:, 1])
        return {"accuracy": accuracy, "roc_auc": auc, "roc_auc_macro": auc}
    return {
        "accuracy": accuracy,
        "roc_auc": binary_auroc(probabilities, one_hot),
        "roc_auc_macro": _macro_auroc(probabilities, one_hot),
    }


def multi_label_metrics(predictions: np.ndarray, references: np.ndarray, from_logits: bool = True) -> dict:
    """Metrics of a multi-label task; see the module docstring. Both (num_videos, num_labels)."""
    predictions = np.asarray(predictions, dtype=np.float64)
    references = np.asarray(references).astype(bool)
    if predictions.ndim != 2 or predictions.shape != references.shape:
        raise ValueError(
            f"multi-label predictions and references must both be (num_videos, num_labels), "
            f"got {predictions.shape} and {references.shape}"
        )
    # AUROC needs only the order, and logits keep it where a float sigmoid would saturate to ties at 1.0
    threshold = 0.0 if from_logits else 0.5
    predicted = predictions > threshold
    return {
        "accuracy": float((predicted == references).mean()),
        "roc_auc": binary_auroc(predictions, references),
        "roc_auc_macro": _macro_auroc(predictions, references),
        "subset_accuracy": float((predicted == references).all(axis=1).mean()),
    }


def batch_mean_auroc(
    predictions: np.ndarray, references: np.ndarray, problem_type: str, batch_size: int, from_logits: bool = True
) -> float:
    """The paper code's validation AUC: `roc_auc` of each consecutive `batch_size` rows, weighted by rows.

    Args:
        predictions: as `single_label_metrics` / `multi_label_metrics` take them, in loader order.
        references: likewise, in the same order.
        batch_size: videos per evaluation batch (the last batch may be smaller, and weighs less).

    Returns:
        The weighted mean over the batches whose AUC is defined (a batch holding one class has none), NaN if none is.
    """
    compute = single_label_metrics if problem_type == "single_label_classification" else multi_label_metrics
    predictions, references = np.asarray(predictions), np.asarray(references)
    scores, weights = [], []
    for start in range(0, len(predictions), batch_size):
        rows = slice(start, start + batch_size)
        auc = compute(predictions[rows], references[rows], from_logits)["roc_auc"]
        if not np.isnan(auc):
            scores.append(auc)
            weights.append(len(predictions[rows]))
    return float(np.average(scores, weights=weights)) if scores else float("nan")


def regression_metrics(predictions: np.ndarray, references: np.ndarray) -> dict:
    """MSE, MAE and Pearson correlation (mean over outputs). predictions and references (N,) or (N, K)."""
    predictions = np.asarray(predictions, dtype=np.float64)
    references = np.asarray(references, dtype=np.float64)
    if predictions.size != references.size:
        raise ValueError(f"predictions ({predictions.shape}) and references ({references.shape}) differ in size")
    predictions = predictions.reshape(len(predictions), -1)  # (N, K)
    references = references.reshape(predictions.shape)
    error = predictions - references
    pearsons = []
    for k in range(predictions.shape[1]):
        if predictions[:, k].std() == 0 or references[:, k].std() == 0:
            pearsons.append(float("nan"))
        else:
            pearsons.append(float(np.corrcoef(predictions[:, k], references[:, k])[0, 1]))
    return {
        "mse": float((error**2).mean()),
        "mae": float(np.abs(error).mean()),
        "pearson": float("nan") if np.isnan(pearsons).all() else float(np.nanmean(pearsons)),
    }


def _class_index(label_names: Sequence[str], name: str) -> int:
    names = list(label_names)
    if name not in names:
        raise ValueError(f"no class named {name!r} among the labels {names}")
    return names.index(name)


def ffpp_metrics(
    predictions: np.ndarray, references: np.ndarray, label_names: Sequence[str], from_logits: bool = True
) -> dict:
    """FF++ video-level metrics (module docstring): `video_auc` and `video_accuracy` of the class named `fake`.

    Args:
        predictions: (num_videos, num_classes) logits (the log of the windows' mean probability under the `ffpp`
            task's aggregation), or probabilities with `from_logits=False`.
        references: (num_videos,) class indices into `label_names`.
        label_names: the run's class names; one is `fake`.
    """
    predictions = np.asarray(predictions, dtype=np.float64)
    references = np.asarray(references).astype(np.int64).ravel()
    if predictions.ndim != 2 or len(predictions) != len(references):
        raise ValueError(f"FF++ metrics take (num_videos, num_classes) scores, got {predictions.shape}")
    fake = _class_index(label_names, "fake")
    probabilities = _softmax(predictions) if from_logits else predictions
    fake_probability, is_fake = probabilities[:, fake], references == fake  # (N,), (N,)
    both = is_fake.any() and not is_fake.all()
    return {
        "video_auc": float(roc_auc_score(is_fake, fake_probability)) if both else float("nan"),
        "video_accuracy": float(accuracy_score(is_fake, fake_probability > 0.5)),
    }


def _balanced_accuracy(references: np.ndarray, predicted: np.ndarray) -> float:
    """The mean recall of the classes `references` holds (a class only predicted has no recall: not a warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(references, predicted))


def ravdess_metrics(predictions: np.ndarray, references: np.ndarray, label_names: Sequence[str]) -> dict:
    """RAVDESS emotion metrics (module docstring): weighted and unweighted accuracy and F1, recall and F1 per class.

    Args:
        predictions: (num_videos, num_classes) scores (logits or probabilities: only the argmax counts).
        references: (num_videos,) class indices into `label_names`.
    """
    predicted = np.asarray(predictions).argmax(axis=1)  # (N,)
    references = np.asarray(references).astype(np.int64).ravel()
    classes = list(range(len(label_names)))
    # NaN for a class with nothing to score (no video of it: no recall; none true or predicted: no F1)
    recalls = recall_score(references, predicted, labels=classes, average=None, zero_division=np.nan)
    f1s = f1_score(references, predicted, labels=classes, average=None, zero_division=np.nan)
    metrics = {
        "accuracy": float(accuracy_score(references, predicted)),
        "unweighted_accuracy": _balanced_accuracy(references, predicted),
        "weighted_f1": float(f1_score(references, predicted, average="weighted", zero_division=0)),
        "unweighted_f1": float(f1_score(references, predicted, average="macro", zero_division=0)),
    }
    metrics.update({f"recall_{name}": float(value) for name, value in zip(label_names, recalls)})
    metrics.update({f"f1_{name}": float(value) for name, value in zip(label_names, f1s)})
    return metrics


def mosei_sentiment_metrics(predictions: np.ndarray, references: np.ndarray) -> dict:
    """CMU-MOSEI sentiment metrics (module docstring) of one regression output. Both (num_videos,) or (N, 1), in
    [-3, 3] (predictions may leave it: they are clipped for `acc7` only)."""
    predictions = np.asarray(predictions, dtype=np.float64).ravel()
    references = np.asarray(references, dtype=np.float64).ravel()
    if predictions.shape != references.shape:
        raise ValueError(f"predictions ({predictions.size}) and references ({references.size}) differ in size")
    non_negative, predicted_non_negative = references >= 0, predictions >= 0
    non_zero = references != 0
    positive, predicted_positive = references[non_zero] > 0, predictions[non_zero] > 0
    metrics = {
        "acc2_has0": float(accuracy_score(non_negative, predicted_non_negative)),
        "f1_has0": float(f1_score(non_negative, predicted_non_negative, average="weighted", zero_division=0)),
        "acc2_non0": float(accuracy_score(positive, predicted_positive)) if non_zero.any() else float("nan"),
        "f1_non0": (
            float(f1_score(positive, predicted_positive, average="weighted", zero_division=0))
            if non_zero.any()
            else float("nan")
        ),
        "acc7": float(accuracy_score(np.round(np.clip(references, -3, 3)), np.round(np.clip(predictions, -3, 3)))),
    }
    regression = regression_metrics(predictions, references)
    return {**metrics, "mae": regression["mae"], "pearson": regression["pearson"]}


def mosei_emotion_metrics(
    predictions: np.ndarray, references: np.ndarray, label_names: Sequence[str], from_logits: bool = True
) -> dict:
    """CMU-MOSEI emotion metrics (module docstring): weighted accuracy and F1 per emotion, and their means.

    Args:
        predictions: (num_videos, num_emotions) logits (present when > 0), or probabilities (present when > 0.5)
            with `from_logits=False`.
        references: (num_videos, num_emotions) 0/1.
        label_names: the emotions, in the columns' order.
    """
    predictions = np.asarray(predictions, dtype=np.float64)
    references = np.asarray(references).astype(bool)
    if predictions.shape != references.shape or predictions.shape[1] != len(label_names):
        raise ValueError(
            f"emotion predictions {predictions.shape} and references {references.shape} must both be "
            f"(num_videos, {len(label_names)})"
        )
    predicted = predictions > (0.0 if from_logits else 0.5)
    metrics, accuracies, f1s = {}, [], []
    for j, name in enumerate(label_names):
        truth = references[:, j]
        # (TP * N / P + TN) / (2 N) = (TP / P + TN / N) / 2: balanced accuracy; undefined without P or N
        defined = truth.any() and not truth.all()
        accuracy = _balanced_accuracy(truth, predicted[:, j]) if defined else float("nan")
        f1 = float(f1_score(truth, predicted[:, j], average="weighted", zero_division=0))
        metrics[f"weighted_accuracy_{name}"], metrics[f"f1_{name}"] = accuracy, f1
        accuracies.append(accuracy)
        f1s.append(f1)
    metrics["weighted_accuracy"] = float("nan") if np.isnan(accuracies).all() else float(np.nanmean(accuracies))
    metrics["f1"] = float(np.mean(f1s))
    return metrics


class DownstreamMetric(evaluate.Metric):
    """The metrics above as an `evaluate.Metric`; `config_name` is the problem type.

    Example:
        >>> metric = DownstreamMetric("multi_label_classification", keep_in_memory=True)
        >>> metric.add_batch(predictions=logits, references=labels)  # (N, 40) and (N, 40)
        >>> metric.compute()  # {"accuracy": ..., "roc_auc": ..., "roc_auc_macro": ..., "subset_accuracy": ...}
    """

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in PROBLEM_TYPES:
            raise ValueError(f"unknown problem type {self.config_name!r}; use one of {', '.join(PROBLEM_TYPES)}")
        scores = datasets.Sequence(datasets.Value("float64"))
        if self.config_name == "single_label_classification":
            features = [
                datasets.Features({"predictions": scores, "references": datasets.Value("int64")}),
                datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}),
            ]
        elif self.config_name == "multi_label_classification":
            features = datasets.Features(
                {"predictions": scores, "references": datasets.Sequence(datasets.Value("int64"))}
            )
        else:
            features = [
                datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
                datasets.Features({"predictions": scores, "references": datasets.Sequence(datasets.Value("float64"))}),
            ]
        return evaluate.MetricInfo(
            description=__doc__.split("\n")[0],
            citation=CITATION,
            inputs_description=_INPUTS_DESCRIPTION,
            features=features,
        )

    def _compute(self, predictions, references, from_logits: bool = True) -> dict:
        predictions, references = np.asarray(predictions), np.asarray(references)  # lists from the arrow table
        if self.config_name == "single_label_classification":
            return single_label_metrics(predictions, references, from_logits)
        if self.config_name == "multi_label_classification":
            return multi_label_metrics(predictions, references, from_logits)
        return regression_metrics(predictions, references)


def load_downstream_metric(problem_type: str) -> DownstreamMetric:
    """A `DownstreamMetric` held in memory (nothing written to the evaluate cache, nothing fetched)."""
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"unknown problem type {problem_type!r}; use one of {', '.join(PROBLEM_TYPES)}")
    return DownstreamMetric(config_name=problem_type, keep_in_memory=True)


def build_compute_metrics(
    problem_type: str, batch_size: int | None = None, task_metrics: Callable | None = None
) -> Callable:
    """A `compute_metrics` for `transformers.Trainer`: takes an `EvalPrediction`, returns {name: float}.

    Trainer prefixes the keys with `eval_`, so `--metric-for-best-model roc_auc` selects on `eval_roc_auc`.
    Logits come from the model (the first element when it returns a tuple); labels are as in the dataset.
    With `batch_size` (videos per evaluation batch, one process: Trainer's evaluation is in order), classification
    also gets `roc_auc_batch_mean` (`batch_mean_auroc`). `task_metrics(logits, labels) -> dict` (a task's metrics,
    `tasks.Task.metrics_for`) adds its keys, given the logits and labels as the problem type's metrics take them.
    """
    metric = load_downstream_metric(problem_type)

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        if isinstance(logits, tuple | list):
            logits = logits[0]
        logits, labels = np.asarray(logits), np.asarray(eval_prediction.label_ids)
        if problem_type == "regression":
            # a one-target head gives (N, 1) next to labels (N,): compare them as (N,)
            logits = logits.reshape(len(logits), -1)
            labels = labels.reshape(logits.shape)
            if logits.shape[1] == 1:
                logits, labels = logits[:, 0], labels[:, 0]
        metrics = metric.compute(predictions=logits, references=labels)
        if batch_size and problem_type != "regression":
            metrics["roc_auc_batch_mean"] = batch_mean_auroc(logits, labels, problem_type, batch_size)
        if task_metrics is not None:
            metrics.update(task_metrics(logits, labels))
        return metrics

    return compute_metrics
