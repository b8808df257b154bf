"""Build marlin-pytorch (0.3.4) reference models with every learnable tensor random.

Used by the fixture script, the full-size parity test and the benchmarks. Importing this needs marlin-pytorch
installed (`pip install --no-deps marlin-pytorch==0.3.4 opencv-python-headless ffmpeg-python pyyaml einops`).
"""

import torch

REFERENCE_VIT_BASE = dict(
    img_size=224,
    patch_size=16,
    n_frames=16,
    encoder_embed_dim=768,
    encoder_depth=12,
    encoder_num_heads=12,
    decoder_embed_dim=384,
    decoder_depth=4,
    decoder_num_heads=6,
    mlp_ratio=4.0,
    qkv_bias=True,
    qk_scale=None,
    drop_rate=0.0,
    attn_drop_rate=0.0,
    norm_layer="LayerNorm",
    init_values=0.0,
    tubelet_size=2,
)

# The fixed fields of the authors' Hub configs (`ControlNet/marlin_vit_*_ytf/config.json`), beside the sizes
# (`img_size`, `encoder_embed_dim`...) that tell the variants apart.
AUTHORS_HUB_CONFIG = {
    "architectures": ["MarlinModel"],
    "model_type": "marlin",
    "auto_map": {"AutoConfig": "config.MarlinConfig", "AutoModel": "marlin.MarlinModel"},
    "mlp_ratio": 4.0,
    "qkv_bias": True,
    "qk_scale": None,
    "drop_rate": 0.0,
    "attn_drop_rate": 0.0,
    "norm_layer": "LayerNorm",
    "init_values": 0.0,
    "as_feature_extractor": True,
}


def build_reference_model(seed: int, as_feature_extractor: bool = False, **fields):
    """marlin-pytorch's `Marlin` with the given fields (ViT-B by default), every learnable tensor randomized.

    Weights keep the reference's xavier scale and get noise on top; biases, LayerNorm weights and biases, the q/v
    biases and the mask token are drawn too (zeros or ones would hide key-mapping bugs). The sin-cos position
    tables stay as they are: they are fixed buffers, not parameters a checkpoint can change.
    """
    from marlin_pytorch import Marlin

    config = {**REFERENCE_VIT_BASE, **fields}
    torch.manual_seed(seed)
    model = Marlin(**config, as_feature_extractor=as_feature_extractor)
    randomize_(model, seed)
    return model.eval()


def build_reference_discriminator(
    seed: int, patch_size: int, tubelet_size: int, decoder_embed_dim: int, mlp_ratio=4.0
):
    """The Lightning module's critic: `MLP([3 * pt * ph * pw, decoder_dim * mlp_ratio, 1], LeakyReLU)`."""
    from marlin_pytorch.model.modules import MLP
    from torch.nn import LeakyReLU

    torch.manual_seed(seed)
    critic = MLP([patch_size * patch_size * 3 * tubelet_size, int(decoder_embed_dim * mlp_ratio), 1], LeakyReLU)
    randomize_(critic, seed + 1)
    return critic.eval()


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for name, param in module.named_parameters():
        if name.endswith("pos_embedding.emb"):
            continue
        noise = torch.randn(param.shape, generator=generator)
        if name.endswith("weight") and param.ndim == 1:  # LayerNorm gains around 1
            param.copy_(1.0 + 0.2 * noise)
        elif param.ndim >= 2 and not name.endswith("mask_token"):  # matrices: keep the xavier scale
            param.add_(0.5 * param.std() * noise)
        else:  # biases, q/v biases, mask token
            param.copy_(0.05 * noise)
