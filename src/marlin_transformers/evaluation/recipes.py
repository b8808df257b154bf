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

Per task (`--task`, `evaluation.tasks`), what the paper code has:

- CelebV-HQ appearance and action: the configs above (`config/celebv_hq/{appearance,action}/*_{ft,lp}.yaml`: lr 1e-4,
  temporal mean, `marlin_vit_base_ytf`).
- `ravdess`: no config in the released code. An unmerged pull request (ControlNet/MARLIN#24, "enable MARLIN for
  emotion recognition on the ravdess and celebvhq dataset", closed 2025) trained RAVDESS through the CelebV-HQ code
  with `config/celebv_hq/appearance/ravdess_marlin_emotion_ft.yaml`: the same values (lr 1e-4, fine-tuning, temporal
  mean), the 8 emotions as one-hot multi-label targets with BCE and the flattened AUC as the validation metric;
  `config/celebv_hq/emotion/celebvhq_marlin_emotion_ft.yaml` (CelebV-HQ emotion) holds the same values.
  So `--recipe marlin` gives the CelebV-HQ values; we keep RAVDESS single-label (softmax, cross-entropy).
- `ffpp`, `mosei-sentiment`, `mosei-emotions`: no config, data module or script in the released code (deepfake
  fine-tuning code was asked for in ControlNet/MARLIN#3 and #26, unanswered): `--recipe marlin` gives the CelebV-HQ
  values. Its `metric_for_best_model` (`roc_auc_batch_mean`) exists for classification only: for a regression
  (`mosei-sentiment`) the task's metric (`mae`) stays (`Recipe.finetuning_for`).
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
    """A named preset. What a run trained with is described from the values in force (`finetuning_summary`,
    `probe_summary`), not here: a flag can change any of them.

    Attributes:
        name: what `--recipe` takes.
        finetuning: field name -> value, for `FinetuningArguments` and the clip flags of `examples/finetune.py`.
        linear_probe: field name -> value, for `LinearProbeConfig`.
    """

    name: str
    finetuning: dict = field(default_factory=dict)
    linear_probe: dict = field(default_factory=dict)

    def finetuning_for(self, problem_type: str) -> dict:
        """`finetuning`, less a metric `problem_type` has no value for (an AUC of a regression)."""
        return _applicable(self.finetuning, problem_type)

    def linear_probe_for(self, problem_type: str) -> dict:
        """`linear_probe`, less a metric `problem_type` has no value for (an AUC of a regression)."""
        return _applicable(self.linear_probe, problem_type)


def _applicable(values: dict, problem_type: str) -> dict:
    metric = str(values.get("metric_for_best_model", ""))
    if problem_type == "regression" and "auc" in metric:
        return {name: value for name, value in values.items() if name != "metric_for_best_model"}
    return dict(values)


RECIPES = {
    "ours": Recipe("ours"),
    "marlin": Recipe(
        "marlin",
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


def _optimizer(values: dict) -> str:
    betas = f"betas {values['adam_beta1']}/{values['adam_beta2']}"
    decay = values["weight_decay"]
    name = f"AdamW (weight decay {decay})" if decay else "Adam"  # AdamW without weight decay is Adam
    return f"{name}, {betas}, lr {values['learning_rate']:g}"


def _plateau(kwargs: dict, monitor: str) -> str:
    factor, patience = kwargs.get("factor", 0.1), kwargs.get("patience", 10)  # ReduceLROnPlateau's defaults
    return f"lr x{factor} after {patience} epochs without a lower {monitor}"


def _stop(values: dict) -> str:
    return f"; stop at lr {values['stop_learning_rate']:g}" if values.get("stop_learning_rate") else ""


def probe_summary(values: dict) -> str:
    """The linear probe's recipe in words, from a `LinearProbeConfig`'s values (`dataclasses.asdict`)."""
    if values["lr_scheduler"] == "plateau":
        schedule = _plateau(values["lr_scheduler_kwargs"], "training loss")
    else:
        schedule = "constant lr"
    batch = f"batches of {values['batch_size']}" if values["batch_size"] else "full batch"
    features = "standardized features" if values["standardize"] else "raw features"
    init = "zero init" if values["zero_init"] else "nn.Linear's init"
    return f"{_optimizer(values)}, {schedule}{_stop(values)}, {batch}, {values['epochs']} epochs, {features}, {init}"


def finetuning_summary(values: dict) -> str:
    """Fine-tuning's recipe in words, from `FinetuningArguments.to_dict()` with the clip flags."""
    scheduler = str(values["lr_scheduler_type"]).removeprefix("SchedulerType.").lower()
    if scheduler == "reduce_lr_on_plateau":
        schedule = _plateau(values.get("lr_scheduler_kwargs") or {}, values.get("plateau_monitor", "eval loss"))
    else:
        warmup = values.get("warmup_steps") or values.get("warmup_ratio") or 0
        schedule = f"{scheduler} schedule" + (f" after warmup {warmup}" if warmup else "")
    batch, clips = values["per_device_train_batch_size"], values["eval_clips"]
    return f"{_optimizer(values)}, {schedule}{_stop(values)}, batches of {batch} per device, {clips} evaluation clips"


def describe(recipe: Recipe, summary: str, values: dict) -> str:
    """The line printed at start: the recipe's name, `summary` (the values in force in words) and the values its
    fields ended with (after any flag)."""
    return f"recipe {recipe.name}: {summary}; " + json.dumps(values, sort_keys=True, default=str)
