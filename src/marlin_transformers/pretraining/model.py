"""The model a pretraining run starts from: `build_model` (a fresh config, or initialized from VideoMAE or MARLIN)."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub.errors import StrictDataclassError

from ..configuration_marlin import MarlinConfig
from ..convert_marlin import config_error_reason, resolve_checkpoint_folder
from ..exceptions import ConfigError
from ..loading import load_marlin
from ..modeling_marlin import MarlinForPreTraining
from .videomae import (
    VIDEOMAE_HEAD_LAYOUTS,
    load_videomae_release,
    load_videomae_weights,
    marlin_config_from_videomae,
    read_videomae_release,
)


def build_model(
    model_config: str = "base",
    init_from: str | None = None,
    config_overrides: dict | None = None,
    videomae_head: str = VIDEOMAE_HEAD_LAYOUTS[0],
) -> MarlinForPreTraining:
    """A fresh model of `model_config` (a variant name, a config JSON or a model folder), or one initialized from
    `init_from`: a VideoMAE or MARLIN folder / Hub id, an original VideoMAE `.pth` (its decoder head loaded as
    `videomae_head` says, see `videomae.load_videomae_release`), or a released MARLIN `.full.pt` / Lightning `.ckpt`
    file. `config_overrides` (MarlinConfig fields) apply to all but a released MARLIN file.

    Raises:
        ConfigError: `model_config` with the overrides is no buildable config (`MarlinConfig`'s own validation).
        CheckpointError: an `init_from` whose weights do not fit (`load_marlin`).
    """
    overrides = config_overrides or {}
    source = f"model config {model_config if init_from is None else init_from}" + (" with overrides" * bool(overrides))

    def make_config(build) -> MarlinConfig:
        try:
            return build()
        except StrictDataclassError as error:  # the strict dataclass's message spans lines
            raise ConfigError(f"{source}: {config_error_reason(error)}") from None
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{source}: {' '.join(str(error).split())}") from None

    if init_from is None:
        if Path(model_config).is_file():
            config = make_config(lambda: MarlinConfig(**{**json.loads(Path(model_config).read_text()), **overrides}))
        elif Path(model_config).is_dir():
            config = make_config(lambda: MarlinConfig.from_pretrained(model_config, **overrides))
        else:
            config = make_config(lambda: MarlinConfig.from_variant(model_config, **overrides))
        return MarlinForPreTraining(config)
    release = read_videomae_release(init_from) if Path(init_from).is_file() else None
    if release is not None:  # an original VideoMAE .pth
        model, kept = load_videomae_release(init_from, videomae_head, release, **overrides)
        print(f"initialized from VideoMAE {init_from} (decoder head: {videomae_head}); left at init: {kept}")
        return model.train()
    if Path(init_from).is_file():  # a released MARLIN .pt / Lightning .ckpt
        return load_marlin(init_from, "pretraining").train()
    folder = resolve_checkpoint_folder(init_from)
    hub_config = json.loads((folder / "config.json").read_text())
    if hub_config.get("model_type") == "videomae":
        model = MarlinForPreTraining(make_config(lambda: marlin_config_from_videomae(hub_config, **overrides)))
        kept = load_videomae_weights(model, folder)
        print(f"initialized from VideoMAE {init_from}; left at init: {kept}")
        return model
    config = make_config(lambda: MarlinConfig.from_pretrained(folder, **overrides))
    # A folder without a critic (an encoder-and-decoder export) gets a fresh one, as a released .full.pt does.
    return load_marlin(folder, "pretraining", config=config)
