"""Initialize MARLIN from a Transformers VideoMAE checkpoint (the paper starts from VideoMAE's weights)."""

from __future__ import annotations

import os
import re

import torch

from ..configuration_marlin import SIZE_FIELDS, MarlinConfig
from ..convert_marlin import read_checkpoint_folder, resolve_checkpoint_folder
from ..exceptions import CheckpointError

# Transformers' VideoMAE names -> ours, applied in order after the "videomae." prefix is handled. The attention's
# separate query/key/value matrices are fused into `qkv` by `videomae_to_marlin_state_dict`.
VIDEOMAE_KEY_MAPPING = [
    (r"^embeddings\.patch_embeddings\.", "marlin.embeddings.patch_embeddings."),
    (r"^encoder\.layer\.", "marlin.encoder.layer."),
    (r"^layernorm\.", "marlin.layernorm."),
    (r"^mask_token$", "decoder.mask_token"),
    (r"^decoder\.decoder_layers\.", "decoder.layer."),
    (r"^decoder\.norm\.", "decoder.layernorm."),
    (r"\.attention\.output\.dense\.", ".attention.proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]
# Fixed sin-cos tables and heads a VideoMAE checkpoint may carry that MARLIN does not have.
_VIDEOMAE_IGNORED = re.compile(r"(position_embeddings|^fc_norm\.|^classifier\.)")
_VIDEOMAE_ATTENTION = re.compile(r"^(.*)\.attention\.attention\.(query|key|value|q_bias|v_bias)(?:\.(weight|bias))?$")


def videomae_to_marlin_state_dict(
    state_dict: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a Transformers VideoMAE state dict (`VideoMAEForPreTraining`, or `VideoMAEModel`) to
    `MarlinForPreTraining`'s names.

    Each layer's `query.weight`, `key.weight`, `value.weight` (hidden, hidden) are stacked into our fused
    `qkv.weight` (3 * hidden, hidden); `query.bias` / `value.bias` (or the older `q_bias` / `v_bias`) become our
    `q_bias` / `v_bias` (the key has no bias in either model).

    Returns:
        (renamed state dict, names of the VideoMAE keys left out: position tables, classifier heads).
    """
    renamed: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    attention: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        name = key[len("videomae.") :] if key.startswith("videomae.") else key
        if _VIDEOMAE_IGNORED.search(name):
            skipped.append(key)
            continue
        match = _VIDEOMAE_ATTENTION.match(name)
        if match:
            prefix, part, kind = match.groups()
            slot = {"q_bias": "query.bias", "v_bias": "value.bias"}.get(part, f"{part}.{kind}")
            attention.setdefault(prefix, {})[slot] = tensor
            continue
        for pattern, replacement in VIDEOMAE_KEY_MAPPING:
            name = re.sub(pattern, replacement, name)
        renamed[name] = tensor
    for prefix, parts in attention.items():
        for pattern, replacement in VIDEOMAE_KEY_MAPPING:
            prefix = re.sub(pattern, replacement, prefix)
        try:
            weights = [parts[f"{part}.weight"] for part in ("query", "key", "value")]
        except KeyError as missing:
            raise CheckpointError(f"VideoMAE checkpoint: attention of {prefix} lacks {missing.args[0]}.") from None
        renamed[f"{prefix}.attention.qkv.weight"] = torch.cat(weights, dim=0)  # (3 * hidden, hidden)
        for part, ours in (("query", "q_bias"), ("value", "v_bias")):
            if f"{part}.bias" in parts:
                renamed[f"{prefix}.attention.{ours}"] = parts[f"{part}.bias"]
    return renamed, skipped


def marlin_config_from_videomae(videomae_config: dict, **overrides) -> MarlinConfig:
    """A `MarlinConfig` with the sizes of a VideoMAE `config.json` (MARLIN's own defaults for everything else:
    LayerNorm eps 1e-5, raw [0, 1] inputs, no normalized-pixel loss)."""
    fields = {name: videomae_config[name] for name in SIZE_FIELDS if name in videomae_config}
    fields["qkv_bias"] = videomae_config.get("qv_bias", videomae_config.get("qkv_bias", True))
    return MarlinConfig(**{**fields, **overrides})


def load_videomae_weights(model, source: str | os.PathLike) -> list[str]:
    """Initialize a `MarlinForPreTraining` (or the model without its critic) from a Transformers VideoMAE checkpoint.

    Args:
        model: the MARLIN model; its config must have the checkpoint's sizes (see `marlin_config_from_videomae`).
        source: a folder saved by `save_pretrained` or a Hub id such as "MCG-NJU/videomae-base".

    Returns:
        Our parameter names the checkpoint did not provide, which keep their initialization (the critic always; the
        encoder's final LayerNorm when the VideoMAE model pools by mean and so has none).

    Raises:
        CheckpointError: unreadable checkpoint, a key we cannot place, or a shape that does not match the model.
    """
    renamed, _ = videomae_to_marlin_state_dict(
        read_checkpoint_folder(resolve_checkpoint_folder(source, example="a local VideoMAE folder"))
    )
    expected = model.state_dict()
    unexpected = sorted(set(renamed) - set(expected))
    if unexpected:
        raise CheckpointError(f"{source}: VideoMAE keys with no MARLIN counterpart: {unexpected[:6]}.")
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in renamed.items()]
    mismatched = [m for m, (k, v) in zip(mismatched, renamed.items()) if v.shape != expected[k].shape]
    if mismatched:
        raise CheckpointError(
            f"{source}: shapes differ from this MARLIN config ({mismatched[0]}); build the config with "
            "marlin_config_from_videomae."
        )
    model.load_state_dict(renamed, strict=False)
    return sorted(set(expected) - set(renamed))
