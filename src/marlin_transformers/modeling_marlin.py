# Copyright 2026 The marlin-transformers authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""PyTorch MARLIN: a masked autoencoder for facial video (Cai et al., CVPR 2023).

The encoder is a plain ViT over 2x16x16 tubelets with a fixed sin-cos position table; the decoder is a narrower ViT
that reads the visible tokens plus one mask token per hidden position and predicts the raw pixels of the masked
tubelets. Numerically it follows the reference release (marlin-pytorch 0.3.4): LayerNorm eps 1e-5, exact GELU, a
fused qkv projection with learned q/v biases and a zero k bias, final LayerNorm applied after mean pooling.

This file imports only torch and transformers, so `save_pretrained` can ship it as Hub remote code; it computes the
plain forward. The CPU fast path of this package is applied to a loaded model apart from it
(`marlin_transformers.kernels.enable_cpu_fast_path`).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, auto_docstring
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_marlin import MarlinConfig

# Parameter names of the reference release (marlin-pytorch's `Marlin`, its Lightning module, and the authors' Hub
# repos, whose keys carry a `marlin.` prefix) -> ours, as (regex, replacement) applied in order. Position tables
# are not listed: they are fixed and recomputed here (see `MARLIN_FIXED_REFERENCE_KEYS`).
REFERENCE_KEY_MAPPING = [
    (r"^marlin\.", ""),
    (r"^encoder\.patch_embedding\.projection\.", "marlin.embeddings.patch_embeddings.projection."),
    (r"^encoder\.blocks\.", "marlin.encoder.layer."),
    (r"^encoder\.norm\.", "marlin.layernorm."),
    (r"^decoder\.blocks\.", "decoder.layer."),
    (r"^decoder\.norm\.", "decoder.layernorm."),
    (r"^enc_dec_proj\.", "encoder_to_decoder."),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
    (r"\.attn\.", ".attention."),
    (r"^discriminator\.layers\.0\.linear\.", "discriminator.fc1."),
    (r"^discriminator\.layers\.1\.linear\.", "discriminator.fc2."),
    (r"\.mlp\.layers\.0\.linear\.", ".mlp.fc1."),
    (r"\.mlp\.layers\.1\.linear\.", ".mlp.fc2."),
]
MARLIN_FIXED_REFERENCE_KEYS = ("encoder.pos_embedding.emb", "decoder.pos_embedding.emb")


def get_sinusoid_encoding_table(num_positions: int, dim: int) -> torch.Tensor:
    """Fixed sin-cos position table of shape (1, num_positions, dim), float32.

    Computed with the same float32 operations as the reference, so the table matches it bit for bit.
    """
    exponent = 2 * torch.div(torch.arange(dim, device="cpu"), 2, rounding_mode="trunc") / dim
    denominator = torch.tensor(10000, device="cpu").pow(exponent)  # (dim,), float32
    # `position / tensor` in the reference runs as `tensor.reciprocal() * position` (Tensor.__rtruediv__).
    table = torch.arange(num_positions, device="cpu", dtype=torch.float32)[:, None] * denominator.reciprocal()
    table[:, 0::2] = torch.sin(table[:, 0::2])
    table[:, 1::2] = torch.cos(table[:, 1::2])
    return table.unsqueeze(0)


def interpolate_position_table(table: torch.Tensor, grid: tuple[int, int, int], new_grid: tuple[int, int, int]):
    """Resample a position table laid out on a (time, height, width) token grid to another grid.

    Trilinear interpolation of each channel over the grid (`align_corners=False`), in float32, as transformers' ViT
    and ViViT resample theirs (bicubic there, over 2-D grids). The table itself is returned for the same grid, so
    clips of the native shape are encoded bit for bit as without interpolation.

    Args:
        table: (1, t * h * w, dim), tokens in (time, row, column) order.
        grid: (t, h, w) token counts of the table.
        new_grid: (t, h, w) token counts of the clips to encode.

    Returns:
        (1, new_t * new_h * new_w, dim), in `table`'s dtype.
    """
    if tuple(new_grid) == tuple(grid):
        return table
    dim = table.shape[-1]
    volume = table.float().reshape(1, *grid, dim).permute(0, 4, 1, 2, 3)  # (1, dim, t, h, w)
    volume = F.interpolate(volume, size=tuple(new_grid), mode="trilinear", align_corners=False)
    return volume.permute(0, 2, 3, 4, 1).reshape(1, -1, dim).to(table.dtype)


def patchify_video(pixel_values_videos: torch.Tensor, patch_size: int, tubelet_size: int) -> torch.Tensor:
    """Cut a video into tubelets in the reference's layout.

    Args:
        pixel_values_videos: (batch, frames, channels, height, width).

    Returns:
        (batch, num_tokens, channels * tubelet_size * patch_size**2), tokens in (time, row, column) order and each
        tubelet flattened channel-major as (channel, frame, y, x), as marlin-pytorch's decoder predicts them.
    """
    b, t, c, h, w = pixel_values_videos.shape
    x = pixel_values_videos.reshape(
        b, t // tubelet_size, tubelet_size, c, h // patch_size, patch_size, w // patch_size, patch_size
    )
    x = x.permute(0, 1, 4, 6, 3, 2, 5, 7)  # (b, nt, nh, nw, c, pt, ph, pw)
    return x.reshape(b, (t // tubelet_size) * (h // patch_size) * (w // patch_size), c * tubelet_size * patch_size**2)


def unpatchify_video(
    patches: torch.Tensor, patch_size: int, tubelet_size: int, num_frames: int, image_size: int, num_channels: int = 3
) -> torch.Tensor:
    """Inverse of `patchify_video`: (batch, num_tokens, c*pt*ph*pw) -> (batch, frames, channels, height, width)."""
    b = patches.shape[0]
    nt, nh = num_frames // tubelet_size, image_size // patch_size
    x = patches.reshape(b, nt, nh, nh, num_channels, tubelet_size, patch_size, patch_size)
    x = x.permute(0, 1, 5, 4, 2, 6, 3, 7)  # (b, nt, pt, c, nh, ph, nw, pw)
    return x.reshape(b, num_frames, num_channels, image_size, image_size)


def masked_patch_targets(
    pixel_values_videos: torch.Tensor, bool_masked_pos: torch.BoolTensor, patch_size: int, tubelet_size: int
) -> torch.Tensor:
    """The raw pixels the decoder must predict.

    Args:
        pixel_values_videos: (batch, frames, channels, height, width) in [0, 1].
        bool_masked_pos: (batch, num_tokens), True where masked; the same count in every clip.

    Returns:
        (batch, num_masked, channels * tubelet_size * patch_size**2), in `patchify_video`'s layout, token order.
    """
    patches = patchify_video(pixel_values_videos, patch_size, tubelet_size)  # (b, n, c * pt * ph * pw)
    return patches[bool_masked_pos].reshape(patches.shape[0], -1, patches.shape[-1])


def reconstruction_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every pixel of every masked tubelet, computed in float32."""
    return F.mse_loss(logits.float(), targets.float())


def generator_adversarial_loss(fake_scores: torch.Tensor, adv_weight: float) -> torch.Tensor:
    """`adv_weight * -mean D(prediction)`: the generator is pushed toward tubelets the critic scores as real."""
    return adv_weight * -fake_scores.float().mean()


@auto_docstring(custom_intro="The outputs of `MarlinForPreTraining`: predicted pixels of the masked tubelets, losses.")
@dataclass
class MarlinForPreTrainingOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*):
        The generator's objective of the paper: `reconstruction_loss + adversarial_loss`, or `reconstruction_loss`
        alone when the model holds no critic (`detach_critic`) or `config.adv_weight` is 0.
    logits (`torch.FloatTensor` of shape `(batch_size, num_masked, channels * tubelet_size * patch_size**2)`):
        Predicted pixels of the masked tubelets, in `patchify_video`'s layout, in token order.
    reconstruction_loss (`torch.FloatTensor` of shape `()`, *optional*):
        MSE between `logits` and the raw pixels of the masked tubelets.
    adversarial_loss (`torch.FloatTensor` of shape `()`, *optional*):
        `config.adv_weight * -mean D(logits)`, the critic `D` being `discriminator`; None without a critic.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    # After the fields transformers outputs share, so a tuple output keeps their positions.
    reconstruction_loss: torch.FloatTensor | None = None
    adversarial_loss: torch.FloatTensor | None = None


class MarlinPatchEmbeddings(nn.Module):
    """(batch, frames, channels, height, width) -> (batch, num_patches, hidden_size) with a strided Conv3d."""

    def __init__(self, config: MarlinConfig, hidden_size: int):
        super().__init__()
        self.image_size = config.image_size
        self.num_frames = config.num_frames
        self.num_channels = config.num_channels
        self.patch_size = config.patch_size
        self.tubelet_size = config.tubelet_size
        # The (time, height, width) token grid of the clips the model was built for.
        self.grid = (config.num_frames // config.tubelet_size,) + (config.image_size // config.patch_size,) * 2
        kernel = (config.tubelet_size, config.patch_size, config.patch_size)
        self.projection = nn.Conv3d(config.num_channels, hidden_size, kernel_size=kernel, stride=kernel)

    def token_grid(self, pixel_values_videos: torch.Tensor, interpolate_pos_encoding: bool = False):
        """(time, height, width) token counts of a clip, after checking its shape fits the model."""
        _, frames, num_channels, height, width = pixel_values_videos.shape
        native = (self.num_frames, self.num_channels, self.image_size, self.image_size)
        if not interpolate_pos_encoding and (frames, num_channels, height, width) != native:
            raise ValueError(
                f"MARLIN expects clips of {self.num_frames} frames of {self.num_channels}x{self.image_size}x"
                f"{self.image_size} (batch, frames, channels, height, width); got {tuple(pixel_values_videos.shape)}. "
                "For other frame counts and sizes pass `interpolate_pos_encoding=True`."
            )
        if (
            num_channels != self.num_channels
            or frames % self.tubelet_size
            or height % self.patch_size
            or width % self.patch_size
        ):
            raise ValueError(
                f"MARLIN reads {self.num_channels}-channel clips whose frame count is a multiple of "
                f"{self.tubelet_size} and whose sides are multiples of {self.patch_size}; "
                f"got {tuple(pixel_values_videos.shape)}."
            )
        return frames // self.tubelet_size, height // self.patch_size, width // self.patch_size

    def forward(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        x = self.projection(pixel_values_videos.transpose(1, 2))  # (b, hidden, nt, nh, nw)
        return x.flatten(2).transpose(1, 2)  # (b, num_patches, hidden)


class MarlinEmbeddings(nn.Module):
    """Tubelet embeddings plus the fixed sin-cos table; keeps only the visible tokens when given a mask."""

    def __init__(self, config: MarlinConfig):
        super().__init__()
        self.patch_embeddings = MarlinPatchEmbeddings(config, config.hidden_size)
        self.register_buffer(
            "position_embeddings",
            get_sinusoid_encoding_table(config.num_patches, config.hidden_size),
            persistent=False,
        )

    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        bool_masked_pos: torch.BoolTensor | None = None,
        interpolate_pos_encoding: bool = False,
    ):
        grid = self.patch_embeddings.token_grid(pixel_values_videos, interpolate_pos_encoding)
        embeddings = self.patch_embeddings(pixel_values_videos)
        positions = interpolate_position_table(self.position_embeddings, self.patch_embeddings.grid, grid)
        embeddings = embeddings + positions.to(embeddings.dtype)
        if bool_masked_pos is not None:
            batch_size, _, hidden_size = embeddings.shape
            embeddings = embeddings[~bool_masked_pos].reshape(batch_size, -1, hidden_size)
        return embeddings


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    # The reference scales the queries before the product: keep its order of operations.
    attn_weights = torch.matmul(query * scaling, key.transpose(2, 3))
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class MarlinSelfAttention(nn.Module):
    """Multi-head self-attention with one fused qkv matrix, learned q/v biases and a zero k bias."""

    def __init__(self, config: MarlinConfig, hidden_size: int, num_attention_heads: int):
        super().__init__()
        if hidden_size % num_attention_heads != 0:
            raise ValueError(f"hidden size {hidden_size} is not a multiple of {num_attention_heads} attention heads.")
        self.config = config
        self.num_heads = num_attention_heads
        self.head_dim = hidden_size // num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        if config.qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(hidden_size))
            self.v_bias = nn.Parameter(torch.zeros(hidden_size))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(batch, tokens, hidden) -> the attention output projected back to the hidden size, and the attention
        weights (batch, heads, tokens, tokens) where the implementation forms them."""
        qkv = self.qkv(hidden_states)  # (b, n, 3 * hidden)
        bias = self.qkv_bias()
        if bias is not None:
            qkv = qkv + bias
        context, attn_weights = self.attend(qkv, **kwargs)
        return self.proj(context), attn_weights

    def qkv_bias(self) -> torch.Tensor | None:
        """The bias of `qkv`, (3 * hidden,): the learned q and v biases around a zero k bias (None without them)."""
        if self.q_bias is None:
            return None
        return torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))

    def attend(self, qkv: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """softmax(q k^T * scaling) v per head through `config._attn_implementation`: `qkv` (batch, tokens, 3 * hidden)
        -> the heads' outputs side by side (batch, tokens, hidden), and the attention weights or None."""
        dropout = self.config.attention_probs_dropout_prob if self.training else 0.0
        batch_size, seq_len, _ = qkv.shape
        qkv = qkv.reshape(batch_size, seq_len, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)  # each (b, heads, n, head_dim)

        if kwargs.get("output_attentions") and self.config._attn_implementation != "eager":
            # Fused kernels (sdpa, flash, flex) never form the attention matrix: compute this call eagerly instead.
            attention_interface: Callable = eager_attention_forward
        else:
            attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        context, attn_weights = attention_interface(
            self, query, key, value, None, is_causal=False, scaling=self.scaling, dropout=dropout, **kwargs
        )  # context: (b, n, heads, head_dim)
        return context.reshape(batch_size, seq_len, self.num_heads * self.head_dim), attn_weights


class MarlinMLP(nn.Module):
    def __init__(self, config: MarlinConfig, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.activation = config.hidden_act
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """fc2(dropout(act(fc1(x)))), dropped out."""
        hidden_states = self.dropout(ACT2FN[self.activation](self.fc1(hidden_states)))
        return self.dropout(self.fc2(hidden_states))


class MarlinLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block (the reference's `Block`, without layer scale: every release has it off)."""

    def __init__(self, config: MarlinConfig, hidden_size: int, num_attention_heads: int, intermediate_size: int):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.attention = MarlinSelfAttention(config, hidden_size, num_attention_heads)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layernorm_after = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.mlp = MarlinMLP(config, hidden_size, intermediate_size)

    def forward(self, hidden_states: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
        attention_output, _ = self.attention(self.layernorm_before(hidden_states), **kwargs)
        hidden_states = hidden_states + self.dropout(attention_output)
        return hidden_states + self.mlp(self.layernorm_after(hidden_states))


class MarlinEncoder(nn.Module):
    def __init__(self, config: MarlinConfig):
        super().__init__()
        self.layer = nn.ModuleList(
            [
                MarlinLayer(config, config.hidden_size, config.num_attention_heads, config.intermediate_size)
                for _ in range(config.num_hidden_layers)
            ]
        )
        self.gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
        for layer in self.layer:
            hidden_states = layer(hidden_states, **kwargs)
        return hidden_states


def default_linear_init(linear: nn.Linear) -> None:
    """`nn.Linear.reset_parameters`, through transformers' init functions (which leave loaded weights alone)."""
    init.kaiming_uniform_(linear.weight, a=math.sqrt(5))
    if linear.bias is not None:
        bound = linear.in_features**-0.5
        init.uniform_(linear.bias, -bound, bound)


class MarlinDiscriminator(nn.Module):
    """The pretraining critic: a per-token MLP (c*pt*ph*pw -> discriminator_hidden_size -> 1, LeakyReLU).

    Input (batch, num_tokens, c*pt*ph*pw) tubelets in `patchify_video`'s layout; output (batch, num_tokens, 1) scores.
    """

    def __init__(self, config: MarlinConfig):
        super().__init__()
        patch_dim = config.num_channels * config.tubelet_size * config.patch_size**2
        self.fc1 = nn.Linear(patch_dim, config.discriminator_hidden_size)
        self.act = nn.LeakyReLU()
        self.fc2 = nn.Linear(config.discriminator_hidden_size, 1)
        self.fc1.keeps_default_init = self.fc2.keeps_default_init = True  # see `_init_weights`

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(patches)))


class MarlinDecoder(nn.Module):
    """Visible tokens + mask tokens (each plus its fixed position) -> pixels of the masked tubelets."""

    def __init__(self, config: MarlinConfig):
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_hidden_size))
        self.grid = (config.num_frames // config.tubelet_size,) + (config.image_size // config.patch_size,) * 2
        self.register_buffer(
            "position_embeddings",
            get_sinusoid_encoding_table(config.num_patches, config.decoder_hidden_size),
            persistent=False,
        )
        self.layer = nn.ModuleList(
            [
                MarlinLayer(
                    config,
                    config.decoder_hidden_size,
                    config.decoder_num_attention_heads,
                    config.decoder_intermediate_size,
                )
                for _ in range(config.decoder_num_hidden_layers)
            ]
        )
        self.layernorm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        self.head = nn.Linear(
            config.decoder_hidden_size, config.num_channels * config.tubelet_size * config.patch_size**2
        )
        self.gradient_checkpointing = False

    def forward(
        self, visible_tokens: torch.Tensor, bool_masked_pos: torch.BoolTensor, grid: tuple[int, int, int] | None = None
    ) -> torch.Tensor:
        """`grid`: the clip's (time, height, width) token grid when it is not the model's (see
        `interpolate_position_table`)."""
        batch_size, _, hidden_size = visible_tokens.shape
        positions = interpolate_position_table(self.position_embeddings, self.grid, grid or self.grid)
        positions = positions.to(visible_tokens.dtype).expand(batch_size, -1, -1)
        visible_positions = positions[~bool_masked_pos].reshape(batch_size, -1, hidden_size)
        masked_positions = positions[bool_masked_pos].reshape(batch_size, -1, hidden_size)
        num_masked = masked_positions.shape[1]
        # Visible tokens first, then one mask token per masked position; only the latter are predicted.
        hidden_states = torch.cat([visible_tokens + visible_positions, self.mask_token + masked_positions], dim=1)
        for layer in self.layer:
            hidden_states = layer(hidden_states)
        hidden_states = self.layernorm(hidden_states[:, -num_masked:])
        return self.head(hidden_states)  # (b, num_masked, c * pt * ph * pw)


@auto_docstring
class MarlinPreTrainedModel(PreTrainedModel):
    config: MarlinConfig
    config_class = MarlinConfig
    base_model_prefix = "marlin"
    main_input_name = "pixel_values_videos"
    input_modalities = "video"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MarlinEmbeddings", "MarlinLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": MarlinLayer, "attentions": MarlinSelfAttention}
    # The authors' Hub checkpoints store the fixed position table; it is recomputed here.
    _keys_to_ignore_on_load_unexpected = [r"pos_embedding\.emb"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # The reference's scheme: xavier-uniform linears with zero bias, unit LayerNorms, PyTorch's default Conv3d,
        # mask token ~ N(0, 0.02) truncated to +-0.02. Fixed position tables are recomputed (never loaded or trained).
        # The critic and the encoder-to-decoder projection live outside the reference's encoder and decoder, whose
        # init never reaches them: their linears (marked `keeps_default_init`) keep nn.Linear's own default.
        if isinstance(module, nn.Linear) and getattr(module, "keeps_default_init", False):
            default_linear_init(module)
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv3d):
            # PyTorch's own default (what the reference leaves on its tubelet embedding).
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            fan_in = module.weight[0].numel()
            init.uniform_(module.bias, -(fan_in**-0.5), fan_in**-0.5)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, MarlinSelfAttention) and module.q_bias is not None:
            init.zeros_(module.q_bias)
            init.zeros_(module.v_bias)
        elif isinstance(module, (MarlinEmbeddings, MarlinDecoder)):
            table = get_sinusoid_encoding_table(*module.position_embeddings.shape[1:])
            init.copy_(module.position_embeddings, table.to(module.position_embeddings.device))
            if isinstance(module, MarlinDecoder):
                std = self.config.initializer_range
                init.trunc_normal_(module.mask_token, mean=0.0, std=std, a=-std, b=std)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, also reading the authors' Hub layout (`marlin.encoder.blocks...`)."""
        if "key_mapping" in kwargs:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        kwargs["key_mapping"] = dict(REFERENCE_KEY_MAPPING)
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        # With `output_loading_info=True` this is (model, loading info).
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        # Saving must write our own names, not undo the renaming back to the reference's.
        model._weight_conversions = None
        return loaded


@auto_docstring(custom_intro="The MARLIN encoder: video -> per-token features and a pooled clip feature.")
class MarlinModel(MarlinPreTrainedModel):
    # A pretraining folder also holds the decoder, its projection and the critic, a fine-tuned one its classifier:
    # the encoder leaves them, as meant.
    _keys_to_ignore_on_load_unexpected = [
        *MarlinPreTrainedModel._keys_to_ignore_on_load_unexpected,
        r"^decoder\.",
        r"^encoder_to_decoder\.",
        r"^discriminator\.",
        r"^classifier\.",
    ]

    def __init__(self, config: MarlinConfig):
        super().__init__(config)
        self.config = config
        self.embeddings = MarlinEmbeddings(config)
        self.encoder = MarlinEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> MarlinPatchEmbeddings:
        return self.embeddings.patch_embeddings

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    @auto_docstring
    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        bool_masked_pos: torch.BoolTensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, num_frames, 3, height, width)`):
            RGB frames in [0, 1], not mean/std normalized (as MARLIN was trained).
        bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, num_patches)`, *optional*):
            True where a token is masked (dropped before the encoder). Every video in the batch must mask the same
            number of tokens.
        interpolate_pos_encoding (`bool`, *optional*, defaults to `False`):
            Read clips of another frame count or size (any multiple of the tubelet and of the patch): the fixed
            position table is resampled from the model's (time, height, width) token grid to the clip's
            (`interpolate_position_table`). Clips of the model's own shape are encoded exactly as without it.

        Returns:
            `last_hidden_state` (batch, tokens, hidden): every (visible) token after the final LayerNorm, the
            reference's `extract_features(keep_seq=True)`; `pooler_output` (batch, hidden): the final LayerNorm of
            the token mean, the reference's `keep_seq=False`.
        """
        weight_dtype = self.embeddings.patch_embeddings.projection.weight.dtype
        hidden_states = self.embeddings(
            pixel_values_videos.to(weight_dtype), bool_masked_pos, interpolate_pos_encoding
        )
        hidden_states = self.encoder(hidden_states, **kwargs)
        return BaseModelOutputWithPooling(
            last_hidden_state=self.layernorm(hidden_states),
            pooler_output=self.layernorm(hidden_states.mean(dim=1)),
        )


@auto_docstring(
    custom_intro="MARLIN for pretraining: encoder, bias-free projection, decoder, and the critic of the adversarial "
    "term (`discriminator`)."
)
class MarlinForPreTraining(MarlinPreTrainedModel):
    def __init__(self, config: MarlinConfig):
        super().__init__(config)
        self.config = config
        self.marlin = MarlinModel(config)
        self.encoder_to_decoder = nn.Linear(config.hidden_size, config.decoder_hidden_size, bias=False)
        self.encoder_to_decoder.keeps_default_init = True  # see `_init_weights`
        self.decoder = MarlinDecoder(config)
        self.discriminator = MarlinDiscriminator(config)
        self.post_init()

    def patchify(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """(batch, frames, 3, H, W) -> (batch, tokens, 3 * tubelet * patch**2), the layout of `logits`."""
        return patchify_video(pixel_values_videos, self.config.patch_size, self.config.tubelet_size)

    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        bool_masked_pos: torch.BoolTensor,
        return_loss: bool = True,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MarlinForPreTrainingOutput:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, num_frames, 3, height, width)`):
            RGB frames in [0, 1].
        bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, num_patches)`):
            True where masked; the same number of masked tokens in every video of the batch.
        return_loss (`bool`, *optional*, defaults to `True`):
            Also return the losses: the reconstruction MSE on the raw pixels of the masked tubelets plus, while the
            model holds its critic, the adversarial term (see `MarlinForPreTrainingOutput`), so every parameter, the
            critic's included, gets a gradient from `loss`. The critic trains on its own objective with its own
            optimizer: `examples/pretrain.py` takes it out (`detach_critic`), and its `train_step` scores this
            same prediction with it after the critic's step, as the reference does.
        interpolate_pos_encoding (`bool`, *optional*, defaults to `False`):
            Clips of another frame count or size, as in `MarlinModel`; the decoder's position table is resampled the
            same way.
        """
        if bool_masked_pos is None:
            raise ValueError("MarlinForPreTraining needs `bool_masked_pos` (True where a token is masked).")
        outputs = self.marlin(
            pixel_values_videos,
            bool_masked_pos=bool_masked_pos,
            interpolate_pos_encoding=interpolate_pos_encoding,
            **kwargs,
        )
        grid = self.marlin.embeddings.patch_embeddings.token_grid(pixel_values_videos, interpolate_pos_encoding)
        visible = self.encoder_to_decoder(outputs.last_hidden_state)  # (b, visible, decoder_hidden)
        logits = self.decoder(visible, bool_masked_pos, grid)  # (b, masked, c * pt * ph * pw)

        loss = rec_loss = adv_loss = None
        if return_loss:
            targets = masked_patch_targets(
                pixel_values_videos, bool_masked_pos, self.config.patch_size, self.config.tubelet_size
            )
            loss = rec_loss = reconstruction_loss(logits, targets)
            if self.discriminator is not None and self.config.adv_weight:
                adv_loss = generator_adversarial_loss(self.discriminator(logits), self.config.adv_weight)
                loss = rec_loss + adv_loss
        return MarlinForPreTrainingOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            reconstruction_loss=rec_loss,
            adversarial_loss=adv_loss,
        )


@auto_docstring(
    custom_intro="MARLIN encoder + a linear head on the pooled feature; single-label, multi-label or regression."
)
class MarlinForVideoClassification(MarlinPreTrainedModel):
    def __init__(self, config: MarlinConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.marlin = MarlinModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, num_frames, 3, height, width)`):
            RGB frames in [0, 1].
        labels (`torch.Tensor`, *optional*):
            `(batch_size,)` long class indices (single-label), or `(batch_size, num_labels)` float 0/1 targets
            (multi-label) or values (regression); `config.problem_type` picks the loss as in transformers.
        """
        outputs = self.marlin(pixel_values_videos, **kwargs)
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = ["MarlinForPreTraining", "MarlinForVideoClassification", "MarlinModel", "MarlinPreTrainedModel"]
