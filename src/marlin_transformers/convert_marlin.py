"""Convert the released MARLIN checkpoints: every released format -> the reference's state dict -> a MARLIN model,
with the config inferred from tensor shapes and the reference's key names renamed to this model's.

Formats read (the variant is inferred from tensor shapes):

- `marlin_vit_*_ytf.encoder.pt`: marlin-pytorch's encoder-only state dict (`encoder.*`) -> `MarlinModel`;
- `marlin_vit_*_ytf.full.pt`: encoder + decoder (`encoder.*`, `decoder.*`, `enc_dec_proj.*`) -> `MarlinForPreTraining`;
- the training script's Lightning `.ckpt` (`state_dict`, with the critic under `discriminator.*`, kept so
  pretraining can resume) -> `MarlinForPreTraining`;
- the authors' Hub layout (`config.json` with `img_size`/`encoder_embed_dim`..., `model.safetensors` with keys
  `marlin.encoder.*`), as a local folder or a Hub id -> `MarlinModel`.

`convert_checkpoint` writes the result as a Transformers folder (`hub_folders`); `loading.load_marlin` loads any of
these formats as a model without writing anything. `init_marlin_folder` writes the same folder with random weights,
for where the released ones cannot be had.
"""

import os
import re
from pathlib import Path

import torch

from .configuration_marlin import MARLIN_VARIANTS, MarlinConfig
from .constants import HUB_ID
from .exceptions import CheckpointError, MarlinError
from .hub_folders import save_marlin_folder, staged_folder
from .model_card import RANDOM_INIT, render_model_card
from .modeling_marlin import (
    MARLIN_FIXED_REFERENCE_KEYS,
    REFERENCE_KEY_MAPPING,
    MarlinForPreTraining,
    MarlinModel,
    get_sinusoid_encoding_table,
)

RELEASE_URL = "https://github.com/ControlNet/MARLIN/releases/download/model_v1/{name}.{kind}.pt"
# A key of this package's own weights (`marlin.` prefix removed), in no released format: how a folder this package
# wrote is told from the authors' Hub layout, whose config.json has the same model_type.
OWN_FORMAT_KEY = "embeddings.patch_embeddings.projection.weight"


def load_reference_state_dict(source: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read a checkpoint in any released format.

    Returns:
        The state dict with the reference's key names (`encoder.*`, `decoder.*`, `enc_dec_proj.*`,
        `discriminator.*`; the Hub's `marlin.` prefix removed) and the format's name.
    """
    path = Path(source)
    if path.is_dir() or (not path.exists() and HUB_ID.fullmatch(str(source))):
        folder = resolve_checkpoint_folder(
            source, example="a local checkpoint file, e.g. marlin_vit_base_ytf.encoder.pt"
        )
        state_dict = {re.sub(r"^marlin\.", "", k): v for k, v in read_checkpoint_folder(folder).items()}
        if OWN_FORMAT_KEY in state_dict:
            raise CheckpointError(
                f"{source}: already a marlin-transformers folder (made by `marlin convert` or `marlin init`), nothing "
                "to convert; load it as it is (AutoModel.from_pretrained, load_marlin) or copy the folder."
            )
        return state_dict, "hub"
    if not path.exists():
        raise CheckpointError(f"{source}: no such checkpoint file or folder.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = f"{type(error).__name__}: {' '.join(str(error).split())[:100]}"  # an empty file's message is empty
        raise CheckpointError(
            f"{source}: not a readable PyTorch checkpoint ({reason}); it is truncated or not a MARLIN file, download "
            "it again."
        ) from None
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        return dict(checkpoint["state_dict"]), "lightning"
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise CheckpointError(f"{source}: expected a state dict of tensors (a MARLIN .pt or .ckpt file).")
    kind = "full" if any(k.startswith("decoder.") for k in checkpoint) else "encoder"
    return dict(checkpoint), kind


def read_checkpoint_folder(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a `save_pretrained`-style folder: its `*.safetensors` files, or else its `*.bin` files.

    Raises:
        CheckpointError: a folder with neither.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    state_dict = {}
    if files:
        from safetensors.torch import load_file

        for file in files:
            state_dict.update(load_file(str(file)))
        return state_dict
    bins = sorted(folder.glob("*.bin"))
    if not bins:
        raise CheckpointError(f"{folder}: no *.safetensors or *.bin weights in this folder.")
    for file in bins:
        state_dict.update(torch.load(file, map_location="cpu", weights_only=True))
    return state_dict


def resolve_checkpoint_folder(source: str | os.PathLike, example: str = "a local folder") -> Path:
    """A local folder as it is, or a Hub id downloaded (or found in the local cache) with `huggingface_hub`.

    Args:
        source: a folder or an `owner/name` Hub id.
        example: what the error message suggests passing instead when the download fails.
    """
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists() or not HUB_ID.fullmatch(str(source)):
        raise CheckpointError(f"{source}: not a checkpoint folder or Hub id (owner/name); check the path.")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors", "*.bin"]))
    except Exception as error:  # offline, unknown repo, gated...
        raise CheckpointError(
            f"{source}: cannot download from the Hub ({type(error).__name__}); pass {example}."
        ) from None


def config_error_reason(error: Exception) -> str:
    """One line of what is wrong in a config, from `MarlinConfig`'s validation error (`@strict` wraps the cause)."""
    cause = error.__cause__ or error
    return " ".join(str(cause).split())


def check_model_outputs(model, source: str | os.PathLike) -> None:
    """Refuse a model whose weights hold NaN/inf, or whose encoder gives non-finite features on a small seeded clip
    (one tubelet of 2x2 patches through every layer, with the position table resampled to that grid: milliseconds)."""
    bad = [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not tensor.isfinite().all()
    ]
    if bad:
        raise CheckpointError(
            f"{source}: weights hold NaN or inf values ({abbreviate_keys(bad)}); the checkpoint is broken."
        )
    encoder = getattr(model, "marlin", model)
    config = encoder.config
    generator = torch.Generator().manual_seed(0)
    side = 2 * config.patch_size
    clip = torch.rand(1, config.tubelet_size, config.num_channels, side, side, generator=generator)
    parameter = next(encoder.parameters())
    with torch.no_grad():
        features = encoder(clip.to(parameter.device, parameter.dtype), interpolate_pos_encoding=True).last_hidden_state
    if not features.isfinite().all():
        raise CheckpointError(
            f"{source}: the model gives NaN or inf features on a test clip; check its config (layer_norm_eps, sizes) "
            "and weights, or convert the checkpoint again."
        )


def infer_config(state_dict: dict[str, torch.Tensor], **overrides) -> MarlinConfig:
    """Build the config from tensor shapes (reference key names). Heads are width / 64 in every release."""
    try:
        projection = state_dict["encoder.patch_embedding.projection.weight"]  # (hidden, 3, pt, ph, pw)
    except KeyError:
        raise CheckpointError(
            "not a MARLIN checkpoint: missing key encoder.patch_embedding.projection.weight "
            f"(found e.g. {sorted(state_dict)[:3]})."
        ) from None
    hidden_size, num_channels, tubelet_size, patch_size, _ = projection.shape
    fields = dict(
        hidden_size=hidden_size,
        num_channels=num_channels,
        tubelet_size=tubelet_size,
        patch_size=patch_size,
        num_hidden_layers=_count_blocks(state_dict, "encoder"),
        num_attention_heads=max(1, hidden_size // 64),
        intermediate_size=_tensor(state_dict, "encoder.blocks.0.mlp.layers.0.linear.weight").shape[0],
        qkv_bias="encoder.blocks.0.attn.q_bias" in state_dict,
    )
    if "decoder.head.weight" in state_dict:
        decoder_hidden = state_dict["decoder.head.weight"].shape[1]
        fields.update(
            decoder_hidden_size=decoder_hidden,
            decoder_num_hidden_layers=_count_blocks(state_dict, "decoder"),
            decoder_num_attention_heads=max(1, decoder_hidden // 64),
            decoder_intermediate_size=_tensor(state_dict, "decoder.blocks.0.mlp.layers.0.linear.weight").shape[0],
        )
    else:  # encoder only: keep the released decoder that goes with this encoder width
        for variant in MARLIN_VARIANTS.values():
            if variant["hidden_size"] == hidden_size:
                fields.update({k: v for k, v in variant.items() if k.startswith("decoder_")})
    if "discriminator.layers.0.linear.weight" in state_dict:
        fields["discriminator_hidden_size"] = state_dict["discriminator.layers.0.linear.weight"].shape[0]
    if "encoder.pos_embedding.emb" in state_dict:
        # num_patches = (frames / tubelet) * (image / patch)**2: every release has 16 frames, so solve for the size.
        num_patches = state_dict["encoder.pos_embedding.emb"].shape[1]
        num_frames = overrides.get("num_frames", 16)
        side = round((num_patches / (num_frames // tubelet_size)) ** 0.5)
        if (num_frames // tubelet_size) * side**2 == num_patches:
            fields.update(num_frames=num_frames, image_size=side * patch_size)
    fields.update(overrides)
    from huggingface_hub.errors import StrictDataclassError

    try:
        return MarlinConfig(**fields)
    except StrictDataclassError as error:
        raise CheckpointError(f"not a valid MARLIN config ({config_error_reason(error)}).") from None


def _tensor(state_dict: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state_dict:
        raise CheckpointError(f"not a complete MARLIN checkpoint: missing key {key}.")
    return state_dict[key]


def _count_blocks(state_dict: dict[str, torch.Tensor], part: str) -> int:
    indices = {int(m.group(1)) for k in state_dict if (m := re.match(rf"{part}\.blocks\.(\d+)\.", k))}
    return max(indices) + 1 if indices else 0


def rename_reference_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference key names -> `MarlinForPreTraining`'s (encoder keys under `marlin.`)."""
    renamed = {}
    for key, tensor in state_dict.items():
        if key in MARLIN_FIXED_REFERENCE_KEYS:
            continue
        for pattern, replacement in REFERENCE_KEY_MAPPING:
            key = re.sub(pattern, replacement, key)
        renamed[key] = tensor
    return renamed


def check_position_tables(state_dict: dict[str, torch.Tensor]) -> None:
    """The stored sin-cos tables are fixed, not learned: they must equal the ones the model recomputes."""
    for key in MARLIN_FIXED_REFERENCE_KEYS:
        if key in state_dict:
            stored = state_dict[key].float()
            expected = get_sinusoid_encoding_table(stored.shape[1], stored.shape[2])
            if not torch.allclose(stored, expected, atol=1e-5):
                raise CheckpointError(f"{key} is not the fixed sin-cos table this model uses; cannot convert it.")


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], config: MarlinConfig | None = None
) -> MarlinModel | MarlinForPreTraining:
    """Reference state dict -> a loaded `MarlinModel` (encoder only) or `MarlinForPreTraining` (with decoder).

    Raises `CheckpointError` naming missing or unexpected keys. A checkpoint without a critic (the released
    `.full.pt`) gets a freshly initialized one.
    """
    config = config or infer_config(state_dict)
    check_position_tables(state_dict)
    renamed = rename_reference_keys(state_dict)
    has_decoder = any(k.startswith("decoder.") for k in renamed)
    if has_decoder:
        model = MarlinForPreTraining(config)
    else:
        model = MarlinModel(config)
        renamed = {re.sub(r"^marlin\.", "", k): v for k, v in renamed.items()}
    expected = set(model.state_dict())
    missing = sorted(expected - set(renamed))
    unexpected = sorted(set(renamed) - expected)
    if has_decoder:  # the released .full.pt has no critic: keep it freshly initialized
        missing = [k for k in missing if not k.startswith("discriminator.")]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not match a MARLIN {config.hidden_size}-wide model: "
            f"missing keys {abbreviate_keys(missing)}, unexpected keys {abbreviate_keys(unexpected)}."
        )
    mismatched = [k for k, v in renamed.items() if v.shape != model.state_dict()[k].shape]
    if mismatched:
        raise CheckpointError(f"checkpoint tensors with unexpected shapes: {abbreviate_keys(mismatched)}.")
    model.load_state_dict(renamed, strict=False)
    return model.eval()


def abbreviate_keys(keys: list[str], limit: int = 6) -> str:
    """At most `limit` of `keys` for a one-line message: `[a, b, ... (9 in all)]`, or `none`."""
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... ({len(keys)} in all)' if len(keys) > limit else ''}]"


def convert_reference_checkpoint(
    source: str | Path, config: MarlinConfig | None = None, **overrides
) -> tuple[MarlinModel | MarlinForPreTraining, str]:
    """Any released checkpoint (file, folder or Hub id) -> a checked `MarlinModel` (encoder only) or
    `MarlinForPreTraining`, and the format's name (`load_reference_state_dict`).

    Args:
        config: the model's config; default: inferred from the tensor shapes, with `overrides` (MarlinConfig fields,
            e.g. `num_attention_heads`, which shapes do not tell) on top.

    Raises:
        CheckpointError: one line naming `source`: unreadable, not MARLIN, keys or shapes that do not fit, or
            non-finite weights or outputs (`check_model_outputs`).
    """
    state_dict, kind = load_reference_state_dict(source)
    try:
        model = convert_state_dict(state_dict, config or infer_config(state_dict, **overrides))
        check_model_outputs(model, source)
    except CheckpointError as error:
        if str(source) in str(error):
            raise
        raise CheckpointError(f"{source}: {error}") from None
    return model, kind


def convert_checkpoint(
    source: str | Path,
    output_dir: str | Path,
    config: MarlinConfig | None = None,
    model_id: str | None = None,
    **overrides,
) -> Path:
    """Convert a released checkpoint into a Transformers folder.

    Writes `model.safetensors`, `config.json` (with `auto_map`, and the model code, so it also loads with
    `trust_remote_code=True` where this package is not installed), the video processor's config and a model card
    (`README.md`) whose examples load the model from `model_id` (the Hub repo it is meant for; default: `output_dir`).
    The folder is written next to `output_dir` and renamed into place, so an interrupted run leaves nothing behind.
    `config` and `overrides` (MarlinConfig fields; None values are left out) are `convert_reference_checkpoint`'s.
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    model, kind = convert_reference_checkpoint(source, config, **overrides)
    with staged_folder(output_dir) as staging:
        write_model_folder(model, staging, str(source), kind, model_id or str(output_dir))
    return Path(output_dir)


def write_model_folder(model, folder: Path, source: str, kind: str, model_id: str) -> None:
    """`hub_folders.save_marlin_folder` and the model card (`model_card.render_model_card`'s arguments)."""
    save_marlin_folder(model, folder)
    card = render_model_card(
        model.config, source=source, kind=kind, architecture=type(model).__name__, model_id=model_id
    )
    (folder / "README.md").write_text(card)


def init_marlin_folder(output_dir: str | Path, variant: str, pretraining: bool = False, seed: int = 0) -> Path:
    """Write a randomly initialized MARLIN of a released `variant` (`small`, `base`, `large`) as a complete folder:
    the same files `convert_checkpoint` writes (weights, config, video processor config, remote code) and a card
    saying the weights are random, with Apache-2.0 as their licence and the `randomly-initialized` tag, which a card
    fine-tuned from the folder carries on (`model_card.weights_provenance`). Written whole, like `convert_checkpoint`.

    Args:
        pretraining: a `MarlinForPreTraining` (encoder, decoder and critic, for `examples/pretrain.py` and
            `marlin reconstruct`) instead of an encoder-only `MarlinModel`.
        seed: the weights' seed: one seed, one folder, bit for bit.

    Raises:
        MarlinError: an unknown `variant`.
        CheckpointError: `output_dir` exists and is not empty.
    """
    if variant not in MARLIN_VARIANTS:
        raise MarlinError(f"{variant}: not a MARLIN variant; use one of {', '.join(MARLIN_VARIANTS)}.")
    config = MarlinConfig.from_variant(variant)
    with staged_folder(output_dir) as staging:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = (MarlinForPreTraining if pretraining else MarlinModel)(config).eval()
        write_model_folder(model, staging, f"seed {seed}", RANDOM_INIT, str(output_dir))
    return Path(output_dir)
