"""Downstream metrics against scikit-learn, the paper's flattened AUC against the per-label one, and the tasks' metrics
against hand-computed examples."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, mean_absolute_error, mean_squared_error, roc_auc_score
from transformers import EvalPrediction

from marlin_transformers.evaluation.metrics import (
    DownstreamMetric,
    binary_auroc,
    build_compute_metrics,
    ffpp_metrics,
    load_downstream_metric,
    mosei_emotion_metrics,
    mosei_sentiment_metrics,
    ravdess_metrics,
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


# Task metrics (`--task`), each against numbers worked out by hand in the comments.


def test_ffpp_video_auc_and_accuracy_of_the_class_named_fake():
    # Fake probability per video (fake = class 0 of the sorted names fake, real):
    #   v0 fake 0.9, v1 fake 0.4, v2 real 0.6, v3 real 0.2
    # AUC: fake scores {0.9, 0.4} against real scores {0.6, 0.2}: 0.9 > 0.6, 0.9 > 0.2, 0.4 < 0.6, 0.4 > 0.2 -> 3/4
    # accuracy (fake when p > 0.5): v0 fake right, v1 real wrong, v2 fake wrong, v3 real right -> 2/4
    fake = np.array([0.9, 0.4, 0.6, 0.2])
    probabilities = np.stack([fake, 1 - fake], axis=1)  # (4, 2) columns fake, real
    labels = np.array([0, 0, 1, 1])
    result = ffpp_metrics(probabilities, labels, ["fake", "real"], from_logits=False)
    assert result == pytest.approx({"video_auc": 0.75, "video_accuracy": 0.5})
    # logits whose softmax is those probabilities (what the probability-averaging evaluation returns: their log)
    assert ffpp_metrics(np.log(probabilities), labels, ["fake", "real"]) == pytest.approx(result)
    # by name, not by index: the same videos with the classes the other way round
    swapped = ffpp_metrics(probabilities[:, ::-1], 1 - labels, ["real", "fake"], from_logits=False)
    assert swapped == pytest.approx(result)
    with pytest.raises(ValueError, match="no class named 'fake'"):
        ffpp_metrics(probabilities, labels, ["original", "manipulated"])


def test_ravdess_weighted_unweighted_and_per_class():
    # true:      angry angry angry calm  calm  happy     (disgust: no video, never predicted)
    # predicted: angry angry calm  calm  happy happy
    # accuracy (WA) = 4 right / 6 = 0.6667
    # recall: angry 2/3, calm 1/2, happy 1/1 -> unweighted accuracy (UA) = (2/3 + 1/2 + 1) / 3 = 0.7222
    # precision: angry 2/2, calm 1/2, happy 1/2
    # F1 = 2PR/(P+R): angry 2(1)(2/3)/(5/3) = 0.8, calm 0.5, happy 2(1/2)(1)/(3/2) = 2/3
    # unweighted F1 = (0.8 + 0.5 + 0.6667) / 3 = 0.6556; weighted by support 3, 2, 1: (2.4 + 1 + 0.6667) / 6 = 0.6778
    names = ["angry", "calm", "happy", "disgust"]
    labels = np.array([0, 0, 0, 1, 1, 2])
    logits = np.eye(4)[[0, 0, 1, 1, 2, 2]]  # (6, 4), the argmax is the prediction
    result = ravdess_metrics(logits, labels, names)
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["unweighted_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert result["unweighted_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert result["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert [result[f"recall_{n}"] for n in names[:3]] == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert [result[f"f1_{n}"] for n in names[:3]] == pytest.approx([0.8, 0.5, 2 / 3])
    assert np.isnan(result["recall_disgust"]) and np.isnan(result["f1_disgust"])


def test_mosei_sentiment_both_binary_readings_acc7_mae_pearson():
    # truth:      -2.0  -0.4   0.0   0.6   2.8
    # prediction: -1.6   0.2  -0.3   1.6   3.5
    # non-negative (>= 0): truth F F T T T, predicted F T F T T -> right at 0, 3, 4: acc2_has0 = 3/5
    #   F1 of "non-negative": TP 2, FP 1 (v1), FN 1 (v2) -> 2/3; of "negative": TP 1, FP 1 (v2), FN 1 (v1) -> 1/2;
    #   weighted by support 3, 2: (3 * 2/3 + 2 * 1/2) / 5 = 0.6
    # zeros left out (v2): truth positive F F T T, predicted F T T T -> acc2_non0 = 3/4
    #   F1 of "positive": TP 2, FP 1 -> P 2/3, R 1 -> 0.8; of "negative": TP 1, FN 1 -> P 1, R 1/2 -> 2/3;
    #   weighted by support 2, 2: (0.8 + 2/3) / 2 = 0.7333
    # acc7: round(clip(truth)) -2 -0 0 1 3, round(clip(prediction)) -2 0 -0 2 3 (3.5 clipped to 3) -> 4/5
    # MAE: (0.4 + 0.6 + 0.3 + 1.0 + 0.7) / 5 = 0.6
    # Pearson: means 0.2 and 0.68; deviations (-2.2, -0.6, -0.2, 0.4, 2.6) and (-2.28, -0.48, -0.98, 0.92, 2.82);
    #   sum of products 13.2, sums of squares 12.16 and 15.188 -> 13.2 / sqrt(12.16 * 15.188) = 0.97131
    truth = np.array([-2.0, -0.4, 0.0, 0.6, 2.8])
    prediction = np.array([-1.6, 0.2, -0.3, 1.6, 3.5])
    result = mosei_sentiment_metrics(prediction, truth)
    assert result["acc2_has0"] == pytest.approx(0.6) and result["f1_has0"] == pytest.approx(0.6)
    assert result["acc2_non0"] == pytest.approx(0.75) and result["f1_non0"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert result["acc7"] == pytest.approx(0.8)
    assert result["mae"] == pytest.approx(0.6)
    assert result["pearson"] == pytest.approx(13.2 / np.sqrt(12.16 * 15.188))
    assert result["pearson"] == pytest.approx(0.97131, abs=1e-5)
    # a one-target head's (N, 1) output reads the same
    assert mosei_sentiment_metrics(prediction[:, None], truth) == pytest.approx(result)


def test_mosei_emotions_weighted_accuracy_per_emotion_and_mean():
    # happy: truth 1 1 0 0 0 0 (P 2, N 4), predicted 1 0 1 0 0 0 -> TP 1, TN 3
    #   WA = (TP * N / P + TN) / (2N) = (1 * 4/2 + 3) / 8 = 0.625
    #   F1 of present: TP 1, FP 1, FN 1 -> 0.5; of absent: TP 3, FP 1, FN 1 -> 0.75; weighted (2, 4): 4/6
    # sad: never present -> WA undefined (no P), left out of the mean; predicted never: F1 of absent 1.0
    # anger: truth 1 0 1 0 1 0 (P 3, N 3), predicted 1 1 1 0 0 0 -> TP 2, TN 2
    #   WA = (2 * 3/3 + 2) / 6 = 2/3; F1 of present: TP 2, FP 1, FN 1 -> 2/3; of absent likewise 2/3; weighted 2/3
    # means: WA (0.625 + 2/3) / 2 = 0.6458; F1 (2/3 + 1 + 2/3) / 3 = 0.7778
    truth = np.array([[1, 1, 0, 0, 0, 0], [0] * 6, [1, 0, 1, 0, 1, 0]]).T  # (6 videos, 3 emotions)
    predicted = np.array([[1, 0, 1, 0, 0, 0], [0] * 6, [1, 1, 1, 0, 0, 0]]).T
    logits = np.where(predicted == 1, 2.0, -2.0)
    result = mosei_emotion_metrics(logits, truth, ["happy", "sad", "anger"])
    assert result["weighted_accuracy_happy"] == pytest.approx(0.625)
    assert np.isnan(result["weighted_accuracy_sad"])
    assert result["weighted_accuracy_anger"] == pytest.approx(2 / 3)
    assert result["weighted_accuracy"] == pytest.approx((0.625 + 2 / 3) / 2)
    assert [result[f"f1_{e}"] for e in ("happy", "sad", "anger")] == pytest.approx([4 / 6, 1.0, 2 / 3])
    assert result["f1"] == pytest.approx((4 / 6 + 1 + 2 / 3) / 3)
    probabilities = np.where(predicted == 1, 0.7, 0.2)
    assert mosei_emotion_metrics(probabilities, truth, ["happy", "sad", "anger"], from_logits=False) == (
        pytest.approx(result, nan_ok=True)
    )


def test_compute_metrics_adds_a_tasks_metrics():
    from marlin_transformers.evaluation.tasks import get_task

    # the FF++ example above, through Trainer's compute_metrics, on logits log(p)
    fake = np.array([0.9, 0.4, 0.6, 0.2])
    logits = np.log(np.stack([fake, 1 - fake], axis=1))
    labels = np.array([0, 0, 1, 1])
    compute = build_compute_metrics(
        "single_label_classification", task_metrics=get_task("ffpp").metrics_for(["fake", "real"])
    )
    result = compute(EvalPrediction(predictions=logits, label_ids=labels))
    assert result["video_auc"] == pytest.approx(0.75) and result["video_accuracy"] == pytest.approx(0.5)
    assert result["roc_auc"] == pytest.approx(0.75)  # two classes: the AUC of `real` is the same number
    head = np.array([[-1.6], [0.2], [-0.3], [1.6], [3.5]])  # a one-target regression head, (N, 1)
    compute = build_compute_metrics("regression", task_metrics=get_task("mosei-sentiment").metrics_for(["sentiment"]))
    result = compute(EvalPrediction(predictions=head, label_ids=np.array([-2.0, -0.4, 0.0, 0.6, 2.8])))
    assert result["acc7"] == pytest.approx(0.8) and result["mse"] > 0
