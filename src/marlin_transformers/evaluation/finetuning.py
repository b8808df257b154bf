"""The classifier fine-tuning trains: a `MarlinForVideoClassification` (pooled MARLIN feature -> one linear layer)
whose encoder comes from any MARLIN checkpoint `loading.load_marlin` reads (`build_classifier`), optionally with
LoRA adapters (`add_lora`), and how it is saved (`save_finetuned`).

With a frozen encoder the head is MAE's linear-probe head (`probe_head.ProbeHead` with batch statistics: BatchNorm
without affine parameters, then the linear layer), folded into a single linear layer by `export_model` before saving.
The data are `clip_dataset`'s, the training loop `trainer`'s; `examples/finetune.py` is the command line around them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..modeling_marlin import MarlinForVideoClassification, MarlinModel
from .probe_head import ProbeHead


def build_classifier(
    model: str | os.PathLike | MarlinModel,
    problem_type: str,
    label_names: Sequence[str],
    freeze_encoder: bool = False,
) -> MarlinForVideoClassification:
    """A `MarlinForVideoClassification` with the encoder of any MARLIN checkpoint and a new linear head.

    Args:
        model: converted folder (also a fine-tuned one: its head is replaced), Hub id, official `.pt`/`.ckpt`, or a
            loaded `MarlinModel`.
        label_names: one output per name (classes, labels or regression targets).
        freeze_encoder: train only the head (the encoder's parameters get `requires_grad=False`), a `ProbeHead`
            with batch statistics (standardization then linear) that `export_model` folds back into the linear
            layer.
    """
    from ..loading import load_marlin

    classifier = load_marlin(
        model,
        "classification",
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        problem_type=problem_type,
    )
    if freeze_encoder:
        classifier.marlin.requires_grad_(False)
        classifier.classifier = ProbeHead(classifier.classifier)
    return classifier


# Every linear layer of the encoder's blocks: the fused attention projection, its output, and the MLP.
LORA_TARGET_MODULES = ("qkv", "proj", "fc1", "fc2")


def add_lora(
    model: MarlinForVideoClassification,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: Sequence[str] = LORA_TARGET_MODULES,
):
    """Freeze `model` and train LoRA adapters (Hu et al. 2021, through `peft`) on the encoder's `target_modules`;
    the classification head, new, trains in full (`modules_to_save`).

    Returns:
        The `peft.PeftModel`; `save_finetuned` saves its adapter (or merged weights).
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        modules_to_save=["classifier"],
    )
    return get_peft_model(model, config)


def export_model(model: MarlinForVideoClassification) -> MarlinForVideoClassification:
    """The model as `AutoModelForVideoClassification` loads it: a probe head folded into one linear layer."""
    if isinstance(model.classifier, ProbeHead):
        model.classifier = model.classifier.fold().to(model.device)
    return model


def save_finetuned(model, folder: str | os.PathLike, merge_lora: bool = False) -> None:
    """Save a fine-tuned model so that `AutoModelForVideoClassification.from_pretrained(folder)` loads it.

    A `MarlinForVideoClassification` (probe head folded, `export_model`) and, with `merge_lora`, a LoRA model whose
    adapters are merged into the weights, are saved with `hub_folders.save_marlin_folder`. A LoRA model without
    `merge_lora` saves its adapter only (`adapter_config.json`, `adapter_model.safetensors`: the adapters and the
    head, a few MB) plus the classifier's `config.json`; load it onto the encoder it was trained from:

        config = AutoConfig.from_pretrained(folder)
        base = AutoModelForVideoClassification.from_pretrained(encoder_folder, config=config)
        model = peft.PeftModel.from_pretrained(base, folder)
    """
    from ..hub_folders import honour_umask, save_marlin_folder

    if hasattr(model, "peft_config"):
        if merge_lora:
            save_marlin_folder(model.merge_and_unload(), folder)
            return
        model.save_pretrained(folder)
        model.get_base_model().config.save_pretrained(folder)
        honour_umask(folder)
        return
    save_marlin_folder(export_model(model), folder)
