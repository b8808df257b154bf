"""Choosing the best model by a metric, and reporting metrics: shared by fine-tuning and the linear probe.

Metric names are the keys of `evaluation.metrics` (`accuracy`, `roc_auc`, `mse`, ...), with or without `Trainer`'s
`eval_` prefix, and `loss`.
"""

from __future__ import annotations

import math

# Metrics where a smaller value is a better model; every other one is better larger.
LOWER_IS_BETTER = ("loss", "mse", "mae")


def default_metric_for_best_model(problem_type: str) -> str:
    """`roc_auc` (the paper's flattened AUC) for classification, `mse` for regression."""
    return "mse" if problem_type == "regression" else "roc_auc"


def greater_is_better(metric: str) -> bool:
    """Whether a larger value of `metric` means a better model (False for loss, mse, mae)."""
    return metric.removeprefix("eval_") not in LOWER_IS_BETTER


def is_better(score: float, loss: float, best_score: float, best_loss: float, greater: bool) -> bool:
    """Whether a model with metric `score` and loss `loss` beats the best so far (`best_score`, `best_loss`): a better
    metric, or the same metric and a lower loss (a tie goes to the better fit, not the earlier one). A NaN score
    never wins."""
    if math.isnan(score):
        return False
    if score == best_score:
        return loss < best_loss
    return score > best_score if greater else score < best_score


def finite_metrics(metrics: dict) -> dict:
    """`metrics` with NaN values (an AUC of a split holding one class) replaced by None, for strict JSON."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
