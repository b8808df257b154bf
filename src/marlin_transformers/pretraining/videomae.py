"""Initialize MARLIN from VideoMAE (the paper starts from VideoMAE's weights): a Transformers checkpoint, or an
original VideoMAE release `.pth` (the authors' re-hosted file), its decoder head mapped into MARLIN's pixel layout."""

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


# The original VideoMAE release (MCG-NJU/VideoMAE `modeling_pretrain.py`, the `.pth` files the MARLIN authors
# re-host) -> marlin-pytorch's names, applied in order; `convert_marlin` takes it from there. Its other names
# (`encoder.blocks.N.attn.qkv`, `q_bias`, `norm1`, `encoder.norm`, `decoder.head`...) are already marlin-pytorch's.
VIDEOMAE_RELEASE_KEY_MAPPING = [
    (r"^encoder\.patch_embed\.proj\.", "encoder.patch_embedding.projection."),
    (r"\.mlp\.fc1\.", ".mlp.layers.0.linear."),
    (r"\.mlp\.fc2\.", ".mlp.layers.1.linear."),
    (r"^encoder_to_decoder\.", "enc_dec_proj."),
    (r"^mask_token$", "decoder.mask_token"),
]
# Fixed sin-cos tables and the (identity or fine-tuning) heads of the release, which MARLIN does not have.
_VIDEOMAE_RELEASE_IGNORED = re.compile(r"(pos_embed|^encoder\.head\.|^encoder\.fc_norm\.|^head\.|^fc_norm\.)")
# How `--videomae-head` loads the release's decoder head: re-ordered into MARLIN's pixel layout, or as it is (the
# paper code's load). The first is the default.
VIDEOMAE_HEAD_LAYOUTS = ("marlin", "reference")


def read_videomae_release(path: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    """The state dict of an original VideoMAE `.pth` (under `model`, `module` or `state_dict`, or bare), or None
    when the file is not in that layout (e.g. a released MARLIN checkpoint).

    Raises:
        CheckpointError: a file torch cannot read with `weights_only=True`.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = f"{type(error).__name__}: {' '.join(str(error).split())[:100]}"
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint of tensors only ({reason}); save its `model` state dict alone "
            "(torch.save(torch.load(path)['model'], out)) where you trust the file, and pass that."
        ) from None
    for key in ("model", "module", "state_dict"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, dict) or "encoder.patch_embed.proj.weight" not in checkpoint:
        return None
    return dict(checkpoint)


def videomae_head_to_marlin(
    weight: torch.Tensor, bias: torch.Tensor, num_channels: int, tubelet_size: int, patch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-order VideoMAE's decoder head outputs into MARLIN's.

    VideoMAE predicts each tubelet's pixels in (t, y, x, c) order (its targets: `b c (t p0) (h p1) (w p2) -> b n
    (p0 p1 p2 c)`), MARLIN in (c, t, y, x) order (`patchify_video`). Permuting the head's output rows makes the
    loaded head predict, in MARLIN's layout, the pixels VideoMAE's head predicts. (VideoMAE's targets were also
    normalized per patch; MARLIN's are raw [0, 1] pixels: that difference an initialization cannot remove.)

    Args:
        weight: (c * t * p * p, decoder_hidden) in VideoMAE's order; bias: (c * t * p * p,).

    Returns:
        (weight, bias) with rows in MARLIN's order.
    """
    shape = (tubelet_size, patch_size, patch_size, num_channels)
    rows = torch.arange(weight.shape[0]).reshape(shape).permute(3, 0, 1, 2).reshape(-1)  # MARLIN row -> VideoMAE row
    return weight[rows].clone(), bias[rows].clone()


def load_videomae_release(
    path: str | os.PathLike, head: str = VIDEOMAE_HEAD_LAYOUTS[0], state_dict: dict | None = None, **overrides
):
    """A `MarlinForPreTraining` initialized from an original VideoMAE `.pth`.

    Args:
        path: the file (named in messages; read unless `state_dict` is given).
        head: "marlin" re-orders the decoder head into MARLIN's pixel layout (`videomae_head_to_marlin`);
            "reference" loads it unchanged, as the paper code does.
        state_dict: what `read_videomae_release(path)` returned, to skip a second read.
        overrides: `MarlinConfig` fields over the sizes read from the weights (heads: width / 64, as every release).

    Returns:
        (model, our parameter names the file did not provide: the critic).

    Raises:
        CheckpointError: not a VideoMAE release, keys we cannot place, or shapes that do not fit.
    """
    from ..convert_marlin import infer_config, rename_reference_keys

    if head not in VIDEOMAE_HEAD_LAYOUTS:
        raise ValueError(f"head must be one of {', '.join(VIDEOMAE_HEAD_LAYOUTS)}, got {head!r}")
    release = state_dict if state_dict is not None else read_videomae_release(path)
    if release is None:
        raise CheckpointError(f"{path}: not an original VideoMAE checkpoint (no encoder.patch_embed.proj.weight).")
    named = {}
    for key, tensor in release.items():
        if _VIDEOMAE_RELEASE_IGNORED.search(key):
            continue
        for pattern, replacement in VIDEOMAE_RELEASE_KEY_MAPPING:
            key = re.sub(pattern, replacement, key)
        named[key] = tensor
    config = infer_config(named, **overrides)
    if head == "marlin" and "decoder.head.weight" in named:
        named["decoder.head.weight"], named["decoder.head.bias"] = videomae_head_to_marlin(
            named["decoder.head.weight"],
            named["decoder.head.bias"],
            config.num_channels,
            config.tubelet_size,
            config.patch_size,
        )
    from ..modeling_marlin import MarlinForPreTraining

    model = MarlinForPreTraining(config)
    renamed = rename_reference_keys(named)
    expected = model.state_dict()
    unexpected = sorted(set(renamed) - set(expected))
    if unexpected:
        raise CheckpointError(f"{path}: VideoMAE keys with no MARLIN counterpart: {unexpected[:6]}.")
    mismatched = [k for k, v in renamed.items() if v.shape != expected[k].shape]
    if mismatched:
        key = mismatched[0]
        raise CheckpointError(
            f"{path}: {key} is {tuple(renamed[key].shape)}, the config wants {tuple(expected[key].shape)}; "
            "fix the sizes with config_overrides.",
            parameter="config_overrides",
        )
    model.load_state_dict(renamed, strict=False)
    return model, sorted(set(expected) - set(renamed))
