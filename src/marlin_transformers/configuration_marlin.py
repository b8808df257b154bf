"""MARLIN model configuration."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# The three released variants (marlin_vit_{small,base,large}_ytf). Every other field keeps its default.
MARLIN_VARIANTS = {
    "small": dict(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        decoder_hidden_size=192,
        decoder_num_hidden_layers=4,
        decoder_num_attention_heads=3,
        decoder_intermediate_size=768,
    ),
    "base": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        decoder_hidden_size=384,
        decoder_num_hidden_layers=4,
        decoder_num_attention_heads=6,
        decoder_intermediate_size=1536,
    ),
    "large": dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        decoder_hidden_size=512,
        decoder_num_hidden_layers=12,
        decoder_num_attention_heads=8,
        decoder_intermediate_size=2048,
    ),
}

# The fields that are sizes or counts of the architecture (each at least 1).
SIZE_FIELDS = (
    "image_size",
    "patch_size",
    "num_channels",
    "num_frames",
    "tubelet_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "decoder_hidden_size",
    "decoder_num_hidden_layers",
    "decoder_num_attention_heads",
    "decoder_intermediate_size",
)

# Pretraining's masking strategies (`pretraining.masking` implements them; the config names the one in use).
MASKING_STRATEGIES = ("fasking", "fasking_opp", "random", "tube", "frame")

# Field names of the authors' Hub config (`ControlNet/marlin_vit_*_ytf`) and of marlin-pytorch -> ours.
_REFERENCE_FIELD_NAMES = {
    "img_size": "image_size",
    "n_frames": "num_frames",
    "encoder_embed_dim": "hidden_size",
    "encoder_depth": "num_hidden_layers",
    "encoder_num_heads": "num_attention_heads",
    "decoder_embed_dim": "decoder_hidden_size",
    "decoder_depth": "decoder_num_hidden_layers",
    "decoder_num_heads": "decoder_num_attention_heads",
    "drop_rate": "hidden_dropout_prob",
    "attn_drop_rate": "attention_probs_dropout_prob",
}


@strict
class MarlinConfig(PreTrainedConfig):
    r"""
    Configuration of a MARLIN model (Cai et al., CVPR 2023): a VideoMAE-style ViT encoder over 2x16x16 tubelets of
    16 RGB frames in [0, 1], a small decoder, and a per-token WGAN critic used in pretraining. The defaults are the
    released ViT-B (`marlin_vit_base_ytf`); `MarlinConfig.from_variant("small" | "base" | "large")` gives the others.

    Args:
        image_size (`int`): frame height and width in pixels.
        patch_size (`int`): spatial side of a tubelet in pixels.
        num_channels (`int`): 3 (RGB).
        num_frames (`int`): frames per clip.
        tubelet_size (`int`): frames per tubelet.
        hidden_size (`int`): encoder width.
        num_hidden_layers (`int`): encoder depth.
        num_attention_heads (`int`): encoder heads.
        intermediate_size (`int`): encoder MLP width.
        hidden_act (`str`): MLP activation (exact GELU, as the reference).
        hidden_dropout_prob (`float`): dropout after attention and MLP (0 in every released config).
        attention_probs_dropout_prob (`float`): dropout of attention weights (0 in every released config).
        qkv_bias (`bool`): learned query and value biases (the key bias is fixed at zero, as in the reference).
        layer_norm_eps (`float`): LayerNorm epsilon; the reference uses PyTorch's default 1e-5.
        initializer_range (`float`): std of the mask token's truncated-normal init.
        decoder_hidden_size (`int`): decoder width.
        decoder_num_hidden_layers (`int`): decoder depth.
        decoder_num_attention_heads (`int`): decoder heads.
        decoder_intermediate_size (`int`): decoder MLP width.
        mask_ratio (`float`): fraction of tokens masked in pretraining.
        mask_strategy (`str`): "fasking" (the paper), "fasking_opp", "random", "tube" or "frame".
        adv_weight (`float`): weight of the adversarial (critic) term of the generator loss.
        discriminator_hidden_size (`int`): width of the critic's hidden layer (4 x decoder width in the reference).
    """

    model_type = "marlin"

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    num_frames: int = 16
    tubelet_size: int = 2
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    decoder_hidden_size: int = 384
    decoder_num_hidden_layers: int = 4
    decoder_num_attention_heads: int = 6
    decoder_intermediate_size: int = 1536
    mask_ratio: float = 0.9
    mask_strategy: str = "fasking"
    adv_weight: float = 0.01
    discriminator_hidden_size: int | None = None

    def __post_init__(self, **kwargs):
        # Configs in the authors' layout (their Hub repos use this same model_type) carry their own field names.
        mlp_ratio = kwargs.pop("mlp_ratio", None)
        for old, new in _REFERENCE_FIELD_NAMES.items():
            if old in kwargs:
                value = kwargs.pop(old)
                if value is not None:
                    setattr(self, new, value)
        if mlp_ratio is not None:
            self.intermediate_size = int(self.hidden_size * mlp_ratio)
            self.decoder_intermediate_size = int(self.decoder_hidden_size * mlp_ratio)
        for unsupported, neutral in (("qk_scale", None), ("init_values", 0.0)):
            if kwargs.get(unsupported, neutral) not in (neutral, 0):
                raise ValueError(f"MarlinConfig: `{unsupported}={kwargs[unsupported]}` is not supported by this port.")
            kwargs.pop(unsupported, None)
        for ignored in ("norm_layer", "as_feature_extractor"):
            kwargs.pop(ignored, None)
        if self.discriminator_hidden_size is None:
            self.discriminator_hidden_size = 4 * self.decoder_hidden_size
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of `@strict` validation, run when a config is made or loaded: values that build a working MARLIN
        (a zero-layer encoder, a width the heads do not divide or a negative LayerNorm epsilon build a model that
        gives empty or NaN features). Raises ValueError naming the field."""
        super().validate_architecture()
        for name in (*SIZE_FIELDS, "discriminator_hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for width, heads in (
            ("hidden_size", "num_attention_heads"),
            ("decoder_hidden_size", "decoder_num_attention_heads"),
        ):
            if getattr(self, width) % getattr(self, heads):
                raise ValueError(
                    f"{width} ({getattr(self, width)}) must be a multiple of {heads} ({getattr(self, heads)})"
                )
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        if self.num_frames % self.tubelet_size:
            raise ValueError(
                f"num_frames ({self.num_frames}) must be a multiple of tubelet_size ({self.tubelet_size})"
            )
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be above 0, got {self.layer_norm_eps}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.mask_strategy not in MASKING_STRATEGIES:
            raise ValueError(f"mask_strategy {self.mask_strategy!r} is not one of {', '.join(MASKING_STRATEGIES)}")

    @classmethod
    def from_variant(cls, variant: str, **kwargs) -> "MarlinConfig":
        """The config of a released variant ("small", "base" or "large"); `kwargs` override fields."""
        if variant not in MARLIN_VARIANTS:
            raise ValueError(f"Unknown MARLIN variant {variant!r}: choose one of {sorted(MARLIN_VARIANTS)}.")
        return cls(**{**MARLIN_VARIANTS[variant], **kwargs})

    @property
    def num_patches(self) -> int:
        """Tokens per clip: (num_frames // tubelet_size) * (image_size // patch_size) ** 2 (1568 by default)."""
        return (self.num_frames // self.tubelet_size) * (self.image_size // self.patch_size) ** 2


__all__ = ["MarlinConfig", "MARLIN_VARIANTS", "MASKING_STRATEGIES", "SIZE_FIELDS"]
