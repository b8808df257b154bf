"""Initialization as the paper code: PyTorch's default init for the critic and the projection, and the original
VideoMAE `.pth` release read with its own key names, its decoder head mapped into MARLIN's pixel layout."""

import math

import pytest
import torch

from conftest import tiny_config
from marlin_transformers import MarlinForPreTraining
from marlin_transformers.modeling_marlin import patchify_video
from marlin_transformers.pretraining.model import build_model
from marlin_transformers.pretraining.videomae import load_videomae_release, videomae_head_to_marlin


def test_critic_and_projection_keep_pytorch_default_init():
    torch.manual_seed(0)
    config = tiny_config(hidden_size=64, decoder_hidden_size=16)
    model = MarlinForPreTraining(config)

    def bound_ratio(linear, bound):
        return linear.weight.abs().max().item() / bound

    projection = model.encoder_to_decoder  # 64 -> 16: default bound 1/8, xavier sqrt(6/80) = 0.27
    assert 0.9 < bound_ratio(projection, 1 / math.sqrt(64)) <= 1.0
    for linear in (model.discriminator.fc1, model.discriminator.fc2):
        assert 0.8 < bound_ratio(linear, 1 / math.sqrt(linear.in_features)) <= 1.0
        assert linear.bias.abs().max() > 0  # xavier would leave it at zero
    # the encoder's and decoder's linears keep the reference's xavier with zero bias
    fc1 = model.marlin.encoder.layer[0].mlp.fc1
    assert torch.all(fc1.bias == 0)
    assert fc1.weight.abs().max() > 1 / math.sqrt(fc1.in_features)


def test_mapped_head_predicts_videomae_pixels_in_marlin_layout():
    torch.manual_seed(0)
    channels, tubelet, patch, hidden = 3, 2, 4, 8
    head = torch.nn.Linear(hidden, channels * tubelet * patch * patch)
    features = torch.randn(5, hidden)  # 5 tokens
    videomae = head(features).reshape(5, tubelet, patch, patch, channels)  # VideoMAE's (t, y, x, c) outputs
    weight, bias = videomae_head_to_marlin(head.weight, head.bias, channels, tubelet, patch)
    ours = torch.nn.functional.linear(features, weight, bias)
    torch.testing.assert_close(ours, videomae.permute(0, 4, 1, 2, 3).reshape(5, -1), rtol=0, atol=0)
    # and MARLIN's layout is `patchify_video`'s: one tubelet's pixels (c, t, y, x)
    video = torch.arange(tubelet * channels * patch * patch, dtype=torch.float32)
    video = video.reshape(1, tubelet, channels, patch, patch)  # (batch, frames, channels, height, width)
    assert patchify_video(video, patch, tubelet)[0, 0].tolist() == video[0].permute(1, 0, 2, 3).reshape(-1).tolist()


def fake_videomae_release(config) -> dict[str, torch.Tensor]:
    """The state dict an original VideoMAE pretraining checkpoint holds, with `config`'s sizes (random values)."""
    torch.manual_seed(1)
    h, d, p, t = config.hidden_size, config.decoder_hidden_size, config.patch_size, config.tubelet_size
    sd = {
        "encoder.patch_embed.proj.weight": torch.randn(h, 3, t, p, p),
        "encoder.patch_embed.proj.bias": torch.randn(h),
    }

    def blocks(prefix, width, mlp, count):
        for i in range(count):
            b = f"{prefix}.blocks.{i}."
            sd.update({b + "norm1.weight": torch.randn(width), b + "norm1.bias": torch.randn(width)})
            sd.update({b + "attn.qkv.weight": torch.randn(3 * width, width), b + "attn.q_bias": torch.randn(width)})
            sd.update({b + "attn.v_bias": torch.randn(width), b + "attn.proj.weight": torch.randn(width, width)})
            sd.update({b + "attn.proj.bias": torch.randn(width), b + "norm2.weight": torch.randn(width)})
            sd.update({b + "norm2.bias": torch.randn(width), b + "mlp.fc1.weight": torch.randn(mlp, width)})
            sd.update({b + "mlp.fc1.bias": torch.randn(mlp), b + "mlp.fc2.weight": torch.randn(width, mlp)})
            sd.update({b + "mlp.fc2.bias": torch.randn(width)})

    blocks("encoder", h, config.intermediate_size, config.num_hidden_layers)
    blocks("decoder", d, config.decoder_intermediate_size, config.decoder_num_hidden_layers)
    sd.update({"encoder.norm.weight": torch.randn(h), "encoder.norm.bias": torch.randn(h)})
    sd.update({"decoder.norm.weight": torch.randn(d), "decoder.norm.bias": torch.randn(d)})
    sd.update({"decoder.head.weight": torch.randn(3 * t * p * p, d), "decoder.head.bias": torch.randn(3 * t * p * p)})
    sd.update({"encoder_to_decoder.weight": torch.randn(d, h), "mask_token": torch.randn(1, 1, d)})
    sd["decoder.pos_embed"] = torch.randn(1, 8, d)  # a fixed table some versions save: recomputed here
    return sd


@pytest.mark.parametrize("wrapped", [True, False])
def test_init_from_an_original_videomae_pth(tmp_path, wrapped):
    # heads are width / 64 in every release: widths of 64 and 128 give 1 and 2 heads
    config = tiny_config(hidden_size=128, num_attention_heads=2, decoder_hidden_size=64, decoder_num_attention_heads=1)
    release = fake_videomae_release(config)
    path = tmp_path / "videomae_checkpoint.pth"
    torch.save({"model": release, "epoch": 799} if wrapped else release, path)
    overrides = {"image_size": config.image_size, "num_frames": config.num_frames}
    model = build_model("base", str(path), overrides)
    assert model.config.hidden_size == 128 and model.config.num_attention_heads == 2
    state = model.state_dict()
    torch.testing.assert_close(
        state["marlin.encoder.layer.1.attention.qkv.weight"], release["encoder.blocks.1.attn.qkv.weight"]
    )
    torch.testing.assert_close(state["marlin.encoder.layer.0.mlp.fc2.bias"], release["encoder.blocks.0.mlp.fc2.bias"])
    torch.testing.assert_close(state["encoder_to_decoder.weight"], release["encoder_to_decoder.weight"])
    torch.testing.assert_close(state["decoder.mask_token"], release["mask_token"])
    torch.testing.assert_close(state["marlin.layernorm.weight"], release["encoder.norm.weight"])
    # the head, re-ordered by default; unchanged with --videomae-head reference
    mapped = videomae_head_to_marlin(release["decoder.head.weight"], release["decoder.head.bias"], 3, 2, 5)[0]
    torch.testing.assert_close(state["decoder.head.weight"], mapped)
    assert not torch.equal(mapped, release["decoder.head.weight"])
    reference, kept = load_videomae_release(path, "reference", **overrides)
    torch.testing.assert_close(reference.state_dict()["decoder.head.weight"], release["decoder.head.weight"])
    assert kept and all(name.startswith("discriminator.") for name in kept)
