"""Downstream metrics against scikit-learn, and the paper's flattened AUC against the per-label one."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, mean_absolute_error, mean_squared_error, roc_auc_score
from transformers import EvalPrediction

from marlin_transformers.evaluation.metrics import (
    DownstreamMetric,
    binary_auroc,
    build_compute_metrics,
    load_downstream_metric,
)


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_binary_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + targets, 1)  # rounding makes many ties
    assert binary_auroc(scores, targets) == pytest.approx(roc_auc_score(targets, scores), abs=1e-12)
    assert np.isnan(binary_auroc(scores, np.ones_like(targets)))


def test_multi_label_matches_sklearn_flattened_and_macro():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (120, 7))
    logits = rng.normal(size=(120, 7)) + 1.5 * labels + rng.normal(size=7)  # per-label offsets
    result = load_downstream_metric("multi_label_classification").compute(predictions=logits, references=labels)
    assert result["roc_auc"] == pytest.approx(roc_auc_score(labels.ravel(), logits.ravel()), abs=1e-12)
    assert result["roc_auc_macro"] == pytest.approx(roc_auc_score(labels, logits, average="macro"), abs=1e-12)
    assert result["accuracy"] == pytest.approx(accuracy_score(labels.ravel(), (logits > 0).ravel()))
    assert result["subset_accuracy"] == pytest.approx(accuracy_score(labels, logits > 0))


def test_paper_auc_differs_from_macro_auc():
    # Each label is ranked perfectly on its own, but label 1's scores all sit above label 0's.
    logits = np.array([[0.1, 0.8], [0.2, 0.9]])
    labels = np.array([[0, 0], [1, 1]])
    result = load_downstream_metric("multi_label_classification").compute(predictions=logits, references=labels)
    assert result["roc_auc_macro"] == pytest.approx(1.0)
    assert result["roc_auc"] == pytest.approx(0.75)  # negatives 0.1, 0.8 vs positives 0.2, 0.9: 3 of 4 pairs


def test_macro_auc_skips_labels_with_one_class():
    logits = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 0.5]])
    labels = np.array([[0, 1], [1, 1], [1, 1]])  # label 1 is always positive: its AUC is undefined
    result = load_downstream_metric("multi_label_classification").compute(predictions=logits, references=labels)
    assert result["roc_auc_macro"] == pytest.approx(1.0)


def test_single_label_multiclass_matches_sklearn():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, 200)
    logits = rng.normal(size=(200, 5)) + 2.0 * np.eye(5)[labels]
    result = load_downstream_metric("single_label_classification").compute(predictions=logits, references=labels)
    probabilities = _softmax(logits)
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, logits.argmax(axis=1)))
    assert result["roc_auc_macro"] == pytest.approx(roc_auc_score(labels, probabilities, multi_class="ovr"), abs=1e-9)
    micro = roc_auc_score(np.eye(5)[labels], probabilities, average="micro")
    assert result["roc_auc"] == pytest.approx(micro, abs=1e-9)
    assert result["roc_auc"] != pytest.approx(result["roc_auc_macro"], abs=1e-6)


def test_single_label_binary_two_logits_and_one_logit():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 100)
    logits = rng.normal(size=(100, 2)) + np.eye(2)[labels]
    metric = load_downstream_metric("single_label_classification")
    two = metric.compute(predictions=logits, references=labels)
    expected = roc_auc_score(labels, _softmax(logits)[:, 1])
    assert two["roc_auc"] == pytest.approx(expected) and two["roc_auc_macro"] == pytest.approx(expected)
    margin = logits[:, 1] - logits[:, 0]
    one = metric.compute(predictions=margin, references=labels)
    assert one["roc_auc"] == pytest.approx(expected)
    assert one["accuracy"] == pytest.approx(accuracy_score(labels, margin > 0))


def test_probabilities_instead_of_logits():
    probabilities = np.array([[0.3, 0.6], [0.7, 0.4]])
    labels = np.array([[0, 1], [1, 0]])
    metric = load_downstream_metric("multi_label_classification")
    assert metric.compute(predictions=probabilities, references=labels, from_logits=False)["accuracy"] == 1.0
    assert metric.compute(predictions=probabilities, references=labels)["accuracy"] == 0.5


def test_regression_matches_sklearn_and_numpy():
    rng = np.random.default_rng(4)
    targets = rng.normal(size=(80, 2))
    predictions = targets + 0.3 * rng.normal(size=(80, 2))
    metric = load_downstream_metric("regression")
    result = metric.compute(predictions=predictions, references=targets)
    assert result["mse"] == pytest.approx(mean_squared_error(targets, predictions))
    assert result["mae"] == pytest.approx(mean_absolute_error(targets, predictions))
    pearson = np.mean([np.corrcoef(predictions[:, k], targets[:, k])[0, 1] for k in range(2)])
    assert result["pearson"] == pytest.approx(pearson)
    one_output = metric.compute(predictions=predictions[:, 0], references=targets[:, 0])
    assert one_output["mse"] == pytest.approx(mean_squared_error(targets[:, 0], predictions[:, 0]))


def test_metric_accumulates_batches():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, (40, 3))
    logits = rng.normal(size=(40, 3)) + labels
    metric = load_downstream_metric("multi_label_classification")
    for start in range(0, 40, 16):
        metric.add_batch(predictions=logits[start : start + 16], references=labels[start : start + 16])
    assert metric.compute()["roc_auc"] == pytest.approx(roc_auc_score(labels.ravel(), logits.ravel()))


def test_works_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = DownstreamMetric("regression", keep_in_memory=True)
    assert metric.compute(predictions=[1.0, 2.0], references=[1.0, 4.0])["mae"] == pytest.approx(1.0)


def test_compute_metrics_for_trainer_takes_first_output():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, 30)
    logits = rng.normal(size=(30, 3))
    compute_metrics = build_compute_metrics("single_label_classification")
    result = compute_metrics(EvalPrediction(predictions=(logits, rng.normal(size=(30, 8))), label_ids=labels))
    assert set(result) == {"accuracy", "roc_auc", "roc_auc_macro"}
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, logits.argmax(axis=1)))


def test_compute_metrics_for_trainer_regression_and_float_labels():
    rng = np.random.default_rng(7)
    targets = rng.normal(size=20).astype(np.float32)
    head = (targets + 0.1 * rng.normal(size=20)).astype(np.float32)[:, None]  # (N, 1) from a one-target head
    result = build_compute_metrics("regression")(EvalPrediction(predictions=head, label_ids=targets))
    assert result["mse"] == pytest.approx(mean_squared_error(targets, head[:, 0]), rel=1e-5)
    labels = rng.integers(0, 2, (20, 4)).astype(np.float32)  # multi-label datasets hold float 0/1 for BCE
    logits = rng.normal(size=(20, 4)) + labels
    result = build_compute_metrics("multi_label_classification")(EvalPrediction(predictions=logits, label_ids=labels))
    assert result["roc_auc"] == pytest.approx(roc_auc_score(labels.ravel(), logits.ravel()))


def test_unknown_problem_type_is_rejected():
    with pytest.raises(ValueError, match="unknown problem type"):
        load_downstream_metric("multiclass")
