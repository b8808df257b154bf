"""Convert the released MARLIN checkpoints to Transformers folders.

Formats read (the variant is inferred from tensor shapes):

- `marlin_vit_*_ytf.encoder.pt`: marlin-pytorch's encoder-only state dict (`encoder.*`) -> `MarlinModel`;
- `marlin_vit_*_ytf.full.pt`: encoder + decoder (`encoder.*`, `decoder.*`, `enc_dec_proj.*`) -> `MarlinForPreTraining`;
- the training script's Lightning `.ckpt` (`state_dict`, with the critic under `discriminator.*`, kept so
  pretraining can resume) -> `MarlinForPreTraining`;
- the authors' Hub layout (`config.json` with `img_size`/`encoder_embed_dim`..., `model.safetensors` with keys
  `marlin.encoder.*`), as a local folder or a Hub id -> `MarlinModel`.
"""

import glob
import json
import os
import re
import shutil
from pathlib import Path

import torch

from .configuration_marlin import MARLIN_VARIANTS, MarlinConfig
from .constants import HUB_ID
from .exceptions import CheckpointError, MarlinError
from .modeling_marlin import (
    MARLIN_FIXED_REFERENCE_KEYS,
    REFERENCE_KEY_MAPPING,
    MarlinForPreTraining,
    MarlinModel,
    get_sinusoid_encoding_table,
)

RELEASE_URL = "https://github.com/ControlNet/MARLIN/releases/download/model_v1/{name}.{kind}.pt"


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
        return {re.sub(r"^marlin\.", "", k): v for k, v in read_checkpoint_folder(folder).items()}, "hub"
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
        return Path(snapshot_download(str(source), allow_patterns=["config.json", "*.safetensors", "*.bin"]))
    except Exception as error:  # offline, unknown repo, gated...
        raise CheckpointError(
            f"{source}: cannot download from the Hub ({type(error).__name__}); pass {example}."
        ) from None


def config_error_reason(error: Exception) -> str:
    """One line of what is wrong in a config, from `MarlinConfig`'s validation error (`@strict` wraps the cause)."""
    cause = error.__cause__ or error
    return " ".join(str(cause).split())


def load_pretrained_checked(model_class, source: str | os.PathLike, allow_missing: tuple[str, ...] = (), **kwargs):
    """`model_class.from_pretrained(source, **kwargs)` held to the converter's rules, so a folder that would load a
    quietly random or broken model stops with one `CheckpointError` line naming it: no, unreadable or invalid
    `config.json`; a truncated or unreadable weight file; weights missing (but those starting with an `allow_missing`
    prefix, e.g. a new classifier head), unexpected or of other shapes; non-finite weights or outputs
    (`check_model_outputs`). transformers' load report is not printed: this says what matters in its place."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(
            source, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    except StrictDataclassError as error:
        raise CheckpointError(
            f"{source}: invalid config.json ({config_error_reason(error)}); fix that value or convert the checkpoint "
            "again."
        ) from None
    except (OSError, ValueError) as error:  # no or unreadable config.json, no weights, not a MARLIN folder, offline
        reason = " ".join(str(error).split())[:200]
        raise CheckpointError(
            f"{source}: cannot load this model ({reason}); without the Hub, pass a folder made by `marlin convert` or "
            "an official checkpoint file, e.g. path/to/marlin_vit_base_ytf.encoder.pt."
        ) from None
    except Exception as error:  # safetensors' own errors: a truncated or corrupt weight file
        reason = f"{type(error).__name__}: {' '.join(str(error).split())[:160]}"
        raise CheckpointError(
            f"{source}: cannot read its weights ({reason}); the weight file is truncated or corrupt, convert or "
            "download it again."
        ) from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    missing = sorted(k for k in info["missing_keys"] if not k.startswith(allow_missing))
    unexpected = sorted(info["unexpected_keys"])
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info["mismatched_keys"])
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source}: weights do not match its config ({type(model).__name__}): missing {_abbreviate(missing)}, "
            f"unexpected {_abbreviate(unexpected)}, other shapes {_abbreviate(mismatched)}; convert the checkpoint "
            "again with `marlin convert`."
        )
    check_model_outputs(model, source)
    return model


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
            f"{source}: weights hold NaN or inf values ({_abbreviate(bad)}); the checkpoint is broken."
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
            f"missing keys {_abbreviate(missing)}, unexpected keys {_abbreviate(unexpected)}."
        )
    mismatched = [k for k, v in renamed.items() if v.shape != model.state_dict()[k].shape]
    if mismatched:
        raise CheckpointError(f"checkpoint tensors with unexpected shapes: {_abbreviate(mismatched)}.")
    model.load_state_dict(renamed, strict=False)
    return model.eval()


def _abbreviate(keys: list[str], limit: int = 6) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... ({len(keys)} in all)' if len(keys) > limit else ''}]"


def load_reference_checkpoint(source: str | Path, config: MarlinConfig | None = None):
    """Any released checkpoint (file, folder or Hub id) -> loaded `MarlinModel` or `MarlinForPreTraining`."""
    state_dict, _ = load_reference_state_dict(source)
    return _convert_named(state_dict, config, source)


def _convert_named(state_dict: dict[str, torch.Tensor], config: MarlinConfig | None, source) -> MarlinModel:
    """`convert_state_dict`, then `check_model_outputs`, with every error line naming the source."""
    try:
        model = convert_state_dict(state_dict, config)
        check_model_outputs(model, source)
    except CheckpointError as error:
        if str(source) in str(error):
            raise
        raise CheckpointError(f"{source}: {error}") from None
    return model


def convert_checkpoint(
    source: str | Path, output_dir: str | Path, config: MarlinConfig | None = None, model_id: str | None = None
) -> Path:
    """Convert a released checkpoint into a Transformers folder.

    Writes `model.safetensors`, `config.json` (with `auto_map` and the model code, so it also loads with
    `trust_remote_code=True` where this package is not installed), the video processor's config and a model card
    (`README.md`) whose examples load the model from `model_id` (the Hub repo it is meant for; default: `output_dir`).
    The folder is written next to `output_dir` and renamed into place, so an interrupted run leaves nothing behind.
    """
    import tempfile

    state_dict, kind = load_reference_state_dict(source)
    model = _convert_named(state_dict, config, source)
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise CheckpointError(f"{output_dir}: output folder exists and is not empty; choose another or remove it.")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(output_dir)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{output_dir.name}.{os.getpid()}.", suffix=".partial", dir=output_dir.parent)
    )
    try:
        save_marlin_folder(model, staging)
        write_model_card(
            staging,
            model.config,
            source=str(source),
            kind=kind,
            architecture=type(model).__name__,
            model_id=model_id or str(output_dir),
        )
        honour_umask(staging)
        if output_dir.exists():
            output_dir.rmdir()
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def remove_stale_staging(output_dir: Path) -> None:
    """Remove the staging folders (`.<name>.<pid>.<random>.partial` beside `output_dir`) of conversions whose
    process is gone: a killed `marlin convert` leaves its half-written folder hidden there."""
    for staging in output_dir.parent.glob(f".{glob.escape(output_dir.name)}.*.partial"):
        pid = staging.name[len(output_dir.name) + 2 :].split(".")[0]
        if staging.is_dir() and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


PROCESSOR_AUTO_MAP = "video_processing_marlin.MarlinVideoProcessor"


def honour_umask(folder: str | Path) -> None:
    """Give `folder`, and everything in it, the modes a plain `mkdir`/`open` would under this process's umask.

    safetensors writes its files 0600 and `tempfile.mkdtemp` makes folders 0700, so a saved model folder would be
    unreadable to the colleagues a umask of 022 means to share it with.
    """
    umask = os.umask(0)
    os.umask(umask)
    folder = Path(folder)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def save_marlin_folder(model, folder: str | Path) -> None:
    """`save_pretrained` plus the processor; `auto_map` (in `config.json` and the processor's JSON) names every MARLIN
    class, models and processor, and their three files are copied beside the weights, for remote code."""
    folder = Path(folder)
    model.save_pretrained(folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_marlin.MarlinConfig",
        "AutoModel": "modeling_marlin.MarlinModel",
        "AutoModelForPreTraining": "modeling_marlin.MarlinForPreTraining",
        "AutoModelForVideoClassification": "modeling_marlin.MarlinForVideoClassification",
        "AutoVideoProcessor": PROCESSOR_AUTO_MAP,
    }
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    package = Path(__file__).parent
    for module in ("configuration_marlin.py", "modeling_marlin.py", "video_processing_marlin.py"):
        shutil.copyfile(package / module, folder / module)
    from .video_processing_marlin import MarlinVideoProcessor

    size = model.config.image_size
    processor = MarlinVideoProcessor(size={"height": size, "width": size}, num_frames=model.config.num_frames)
    processor.save_pretrained(folder)
    processor_path = folder / "video_preprocessor_config.json"
    processor_config = json.loads(processor_path.read_text())
    processor_config["auto_map"] = {"AutoVideoProcessor": PROCESSOR_AUTO_MAP}
    processor_path.write_text(json.dumps(processor_config, indent=2, sort_keys=True) + "\n")
    honour_umask(folder)


def write_model_card(
    folder: Path, config: MarlinConfig, source: str, kind: str, architecture: str, model_id: str
) -> None:
    from .model_card import render_model_card

    card = render_model_card(config, source=source, kind=kind, architecture=architecture, model_id=model_id)
    (Path(folder) / "README.md").write_text(card)


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    commit_message: str = "MARLIN from marlin-transformers",
    private: bool | None = None,
) -> str:
    """Upload a model folder (not Trainer's checkpoints or logs) to the Hub repo `repo_id`, made if missing (private
    if `private`; None: the Hub's default for the account); returns its URL. The token is `token`, else
    huggingface_hub's own (`HF_TOKEN`, `hf auth login`).

    Raises:
        MarlinError: the upload failed (no network, no or wrong token, a bad repo id...), in one line; the folder is
            left as it is.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import httpx

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=url.repo_id,
            ignore_patterns=["checkpoint-*", "checkpoint-*/**", "runs/**", "*.partial"],
            commit_message=commit_message,
        )
    except (httpx.HTTPError, OSError, HFValidationError) as error:  # HfHubHTTPError is both of the first two
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise MarlinError(
            f"{folder}: upload to the Hub repo {repo_id} failed ({type(error).__name__}: {reason}); the folder is "
            "complete: check the network and token (HF_TOKEN or `hf auth login`), then push it again."
        ) from None
    return str(url)
