"""Named training recipes for fine-tuning and the linear probe: ours (the defaults) and the paper code's.

A recipe is a set of field values laid over the defaults of `FinetuningArguments` / the clip flags of
`examples/finetune.py` (`finetuning`) and of `LinearProbeConfig` (`linear_probe`). `ours` is empty: our defaults
live on those dataclasses and nowhere else. `marlin` is what the MARLIN paper code trains with (ControlNet/MARLIN
`evaluate.py`, `model/classifier.py`, `dataset/celebv_hq.py`, `util/earlystop_lr.py`, configs `config/celebv_hq/*`):

- Adam, betas (0.5, 0.9), no weight decay (AdamW with weight decay 0 is the same update), lr 1e-4;
- ReduceLROnPlateau (factor 0.5, patience 7, min_lr 1e-8, mode min) stepped once an epoch on the epoch's mean
  training loss (the reference's `monitor: train_loss`), and training stops at the start of the first epoch whose
  lr is at most 1e-6 (`EarlyStoppingLR(1e-6)`), or after 2000 epochs;
- batches of 32 videos; no gradient clipping (Lightning's default);
- one random clip per video at every start frame (train) and also at validation (`eval_clips="random"`, seeded);
- the epoch kept is the one with the best validation AUC computed as the mean of per-batch AUCs
  (`roc_auc_batch_mean`, Lightning's epoch mean of a per-step metric);
- the linear probe trains on the raw features (no standardization) from PyTorch's default `nn.Linear` init.

Every value stays overridable by its own flag; `docs/fidelity.md` gives the reason for each difference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# ReduceLROnPlateau's settings in the paper code (`model/classifier.py`).
PAPER_PLATEAU = {"factor": 0.5, "patience": 7, "min_lr": 1e-8}
# `EarlyStoppingLR(1e-6)` in the paper code's `evaluate.py`.
PAPER_STOP_LEARNING_RATE = 1e-6
# `Seed.set(42)` before the paper code's test pass: its one random test clip per video is drawn from it.
PAPER_SEED = 42


@dataclass(frozen=True)
class Recipe:
    """A named preset.

    Attributes:
        name: what `--recipe` takes.
        description: one line, printed at start.
        finetuning: field name -> value, for `FinetuningArguments` and the clip flags of `examples/finetune.py`.
        linear_probe: field name -> value, for `LinearProbeConfig`.
    """

    name: str
    description: str
    finetuning: dict = field(default_factory=dict)
    linear_probe: dict = field(default_factory=dict)


RECIPES = {
    "ours": Recipe("ours", "this library's defaults (AdamW, linear decay, all evaluation windows)"),
    "marlin": Recipe(
        "marlin",
        "the MARLIN paper code's (Adam 0.5/0.9, plateau x0.5 on training loss, stop at lr 1e-6, batch 32, "
        "one random clip per video, per-batch-mean validation AUC)",
        finetuning={
            "learning_rate": 1e-4,
            "weight_decay": 0.0,
            "adam_beta1": 0.5,
            "adam_beta2": 0.9,
            "adam_epsilon": 1e-8,
            "max_grad_norm": 0.0,
            "warmup_steps": 0,
            "lr_scheduler_type": "reduce_lr_on_plateau",
            "lr_scheduler_kwargs": dict(PAPER_PLATEAU),
            "plateau_monitor": "train_loss",
            "stop_learning_rate": PAPER_STOP_LEARNING_RATE,
            "num_train_epochs": 2000.0,
            "per_device_train_batch_size": 32,
            "per_device_eval_batch_size": 32,
            "metric_for_best_model": "roc_auc_batch_mean",
            "train_stride": 1,
            "eval_clips": "random",
            "seed": PAPER_SEED,
        },
        linear_probe={
            "epochs": 2000,
            "batch_size": 32,
            "learning_rate": 1e-4,
            "weight_decay": 0.0,
            "adam_beta1": 0.5,
            "adam_beta2": 0.9,
            "standardize": False,
            "zero_init": False,
            "lr_scheduler": "plateau",
            "lr_scheduler_kwargs": dict(PAPER_PLATEAU),
            "stop_learning_rate": PAPER_STOP_LEARNING_RATE,
            "eval_every": 1,
            "metric_for_best_model": "roc_auc_batch_mean",
            "seed": PAPER_SEED,
        },
    ),
}


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`; ValueError (an argument error) naming the known ones otherwise."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; use one of {', '.join(RECIPES)}")
    return RECIPES[name]


def describe(recipe: Recipe, values: dict) -> str:
    """The line printed at start: the recipe's name and the values its fields ended with (after any flag)."""
    return f"recipe {recipe.name}: {recipe.description}; " + json.dumps(values, sort_keys=True, default=str)
