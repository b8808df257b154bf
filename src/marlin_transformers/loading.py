"""The one way a MARLIN model is loaded (`load_marlin`): from a converted or trained folder, a Hub id, any released
checkpoint file, or a model already loaded; checked before it is used, so a source that would give a quietly random
or broken model stops with one `CheckpointError` line naming it.

Every command, the app, the demo, fine-tuning and reconstruction load through here; reading the released formats is
the converter's (`convert_marlin`).
"""

import copy
import json
import os
from pathlib import Path

import torch

from .constants import HUB_CHECKPOINTS, HUB_ID
from .convert_marlin import (
    abbreviate_keys,
    check_model_outputs,
    config_error_reason,
    convert_reference_checkpoint,
    resolve_checkpoint_folder,
)
from .exceptions import CheckpointError, MarlinError
from .modeling_marlin import MarlinForPreTraining, MarlinForVideoClassification, MarlinModel, MarlinPreTrainedModel

# Files read as a released checkpoint and converted in memory; any other source is a folder or a Hub id.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
# What `load_marlin` gives for each `kind`.
MODEL_KINDS = {
    "encoder": MarlinModel,
    "pretraining": MarlinForPreTraining,
    "classification": MarlinForVideoClassification,
}
# What an error suggests passing instead, by kind.
EXAMPLE_SOURCES = {
    "encoder": "a converted folder or an official checkpoint file, e.g. path/to/marlin_vit_base_ytf.encoder.pt",
    "pretraining": "a .full.pt file or a folder made by `marlin convert`",
}


def load_marlin(
    source: str | os.PathLike | MarlinPreTrainedModel,
    kind: str = "encoder",
    *,
    dtype: torch.dtype | None = torch.float32,
    device: str | torch.device = "cpu",
    config=None,
    **overrides,
) -> MarlinPreTrainedModel:
    """A checked MARLIN model of `kind`, in eval mode, on `device`.

    Args:
        source: a converted or trained folder; a Hub id (`marlin_vit_{small,base,large}_ytf` name the authors'
            repos); an official checkpoint file (`.encoder.pt`, `.full.pt`, a Lightning `.ckpt`, see
            `CHECKPOINT_SUFFIXES`), converted in memory; or a loaded model, left as it is unless `dtype` or `device`
            differ (then copied).
        kind: `encoder` (a `MarlinModel`; taken out of a pretraining or classification model), `pretraining` (a
            `MarlinForPreTraining`: the source must hold the decoder; a missing critic is freshly initialized), or
            `classification` (a `MarlinForVideoClassification`: a fine-tuned folder as it is, or, from any other
            source or with `overrides`, the source's encoder under a new linear head).
        dtype: the parameters' dtype; None keeps the stored one.
        config: a `MarlinConfig` to load the weights into, instead of the stored (or, for a released file,
            inferred) one.
        overrides: MarlinConfig fields set on the loaded config (for `classification`, on the new head's:
            `id2label`, `label2id`, `problem_type`); a loaded model takes them for `classification` only.

    Raises:
        CheckpointError: one line naming `source`: nothing there, an unreadable or invalid config or weight file,
            weights that do not fit the config, non-finite weights or outputs, or no decoder for `pretraining`.
    """
    if kind not in MODEL_KINDS:
        raise MarlinError(f"{kind}: not a kind of MARLIN model; use one of {', '.join(MODEL_KINDS)}.")
    if isinstance(source, MarlinPreTrainedModel):
        if config is not None or (overrides and kind != "classification"):
            raise MarlinError(f"{type(source).__name__}: a loaded model takes no config; pass its folder instead.")
        model = as_kind(source, kind, type(source).__name__, overrides)
        if model is source or model is getattr(source, "marlin", None):
            if (dtype is not None and model.dtype != dtype) or model.device != torch.device(device):
                model = copy.deepcopy(model)  # leave the caller's model as it was
    else:
        name = os.fspath(source)
        path = Path(name)
        if path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
            model, _ = convert_reference_checkpoint(name, config, **({} if kind == "classification" else overrides))
            model = as_kind(model, kind, name, overrides)
        elif path.is_dir() or HUB_ID.fullmatch(name) or name in HUB_CHECKPOINTS:
            model = _from_folder(name, kind, config, overrides)
        else:
            raise CheckpointError(
                f"{name}: no such model folder or checkpoint file; pass a converted folder, a Hub id, or an official "
                "checkpoint, e.g. path/to/marlin_vit_base_ytf.encoder.pt."
            )
    model = model.to(device=device) if dtype is None else model.to(device=device, dtype=dtype)
    return model.eval()


def as_kind(model: MarlinPreTrainedModel, kind: str, name: str, overrides: dict) -> MarlinPreTrainedModel:
    """`model` as a model of `kind` (see `load_marlin`), sharing its weights where it already is one."""
    if kind == "pretraining":
        if not isinstance(model, MarlinForPreTraining):
            raise _no_decoder(name)
        return model
    if kind == "classification" and isinstance(model, MarlinForVideoClassification) and not overrides:
        return model
    encoder = getattr(model, "marlin", model)
    return encoder if kind == "encoder" else with_new_head(encoder, **overrides)


def with_new_head(encoder: MarlinModel, **overrides) -> MarlinForVideoClassification:
    """A `MarlinForVideoClassification` with (a copy of) `encoder`'s weights and a new linear head, its config
    `encoder`'s with `overrides` (`id2label`, `label2id`, `problem_type`...) set."""
    config = copy.deepcopy(encoder.config)
    for field, value in overrides.items():
        setattr(config, field, value)
    config.architectures = ["MarlinForVideoClassification"]
    classifier = MarlinForVideoClassification(config)
    classifier.marlin.load_state_dict(encoder.state_dict())
    return classifier


def _no_decoder(name: str) -> CheckpointError:
    return CheckpointError(
        f"{name}: an encoder-only model; reconstruction and pretraining need the decoder too: pass a .full.pt, a "
        "Lightning .ckpt or a folder converted from one (a MarlinForPreTraining)."
    )


def _from_folder(name: str, kind: str, config, overrides: dict) -> MarlinPreTrainedModel:
    folder = resolve_checkpoint_folder(HUB_CHECKPOINTS.get(name, name), example=EXAMPLE_SOURCES.get(kind, "a folder"))
    architectures = stored_architectures(folder)
    if kind == "pretraining":
        if architectures and "MarlinForPreTraining" not in architectures:
            raise _no_decoder(name)  # an encoder or a classifier
        # A folder without a critic (an encoder-and-decoder export) gets a fresh one, as a released .full.pt does.
        return from_pretrained_checked(
            MarlinForPreTraining, folder, name, allow_missing=("discriminator.",), config=config, **overrides
        )
    if kind == "classification" and not overrides and "MarlinForVideoClassification" in architectures:
        return from_pretrained_checked(MarlinForVideoClassification, folder, name, config=config)
    from transformers import AutoModel

    encoder_overrides = {} if kind == "classification" else overrides
    encoder = from_pretrained_checked(AutoModel, folder, name, config=config, **encoder_overrides)
    if not isinstance(encoder, MarlinModel):
        raise CheckpointError(f"{name}: not a MARLIN model (got {type(encoder).__name__}).")
    return as_kind(encoder, kind, name, overrides)


def stored_architectures(folder: Path) -> list[str]:
    """The `architectures` a folder's `config.json` names; empty where it names none or cannot be read (loading
    then says what is wrong with it)."""
    try:
        return json.loads((folder / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return []


def from_pretrained_checked(
    model_class, folder: str | os.PathLike, name: str, allow_missing: tuple[str, ...] = (), **kwargs
) -> MarlinPreTrainedModel:
    """`model_class.from_pretrained(folder, **kwargs)` held to the converter's rules, each error one
    `CheckpointError` line naming `name`: no, unreadable or invalid `config.json`; a truncated or unreadable weight
    file; weights missing (but those starting with an `allow_missing` prefix, e.g. a new critic), unexpected or of
    other shapes; non-finite weights or outputs (`check_model_outputs`). transformers' load report is not printed:
    this says what matters in its place."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers.utils import logging as transformers_logging

    kwargs = {key: value for key, value in kwargs.items() if not (key == "config" and value is None)}
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(
            folder, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    except StrictDataclassError as error:
        raise CheckpointError(
            f"{name}: invalid config.json ({config_error_reason(error)}); fix that value or convert the checkpoint "
            "again."
        ) from None
    except (OSError, ValueError) as error:  # no or unreadable config.json, no weights, not a MARLIN folder, offline
        reason = " ".join(str(error).split())[:200]
        raise CheckpointError(
            f"{name}: cannot load this model ({reason}); without the Hub, pass a folder made by `marlin convert` or "
            "an official checkpoint file, e.g. path/to/marlin_vit_base_ytf.encoder.pt."
        ) from None
    except Exception as error:  # safetensors' own errors: a truncated or corrupt weight file
        reason = f"{type(error).__name__}: {' '.join(str(error).split())[:160]}"
        raise CheckpointError(
            f"{name}: cannot read its weights ({reason}); the weight file is truncated or corrupt, convert or "
            "download it again."
        ) from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    missing = sorted(k for k in info["missing_keys"] if not k.startswith(allow_missing))
    unexpected = sorted(info["unexpected_keys"])
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info["mismatched_keys"])
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{name}: weights do not match its config ({type(model).__name__}): missing {abbreviate_keys(missing)}, "
            f"unexpected {abbreviate_keys(unexpected)}, other shapes {abbreviate_keys(mismatched)}; convert the "
            "checkpoint again with `marlin convert`."
        )
    check_model_outputs(model, name)
    return model
