"""The CPU fast path (`kernels.enable_cpu_fast_path`) computes what the plain model computes, and only for MARLIN."""

import json

import pytest
import torch

from conftest import tiny_config
from marlin_transformers import MarlinError, MarlinForPreTraining, MarlinModel
from marlin_transformers.kernels import ATTENTION_IMPLEMENTATION, enable_cpu_fast_path


def random_video(config, batch: int = 2) -> torch.Tensor:
    size = config.image_size
    return torch.rand(batch, config.num_frames, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_fast_path_gives_the_plain_models_outputs(mode):
    torch.manual_seed(0)
    plain = MarlinForPreTraining(tiny_config()).train(mode == "train")
    fast = MarlinForPreTraining(tiny_config())
    fast.load_state_dict(plain.state_dict())
    enable_cpu_fast_path(fast.train(mode == "train"))
    video = random_video(plain.config)
    mask = torch.zeros(2, plain.config.num_patches, dtype=torch.bool)
    mask[:, ::2] = True
    outputs = []
    for model in (plain, fast):
        torch.manual_seed(1)  # the same dropout draws in train mode
        with torch.no_grad():
            outputs.append(model(video, mask, output_hidden_states=True))
    # fp32 reordering of the fused bias and residual adds; the same bound as sdpa against eager.
    torch.testing.assert_close(outputs[1].logits, outputs[0].logits, atol=5e-6, rtol=0)
    for fast_states, plain_states in zip(outputs[1].hidden_states, outputs[0].hidden_states, strict=True):
        torch.testing.assert_close(fast_states, plain_states, atol=5e-6, rtol=0)


def test_sdpa_becomes_the_registered_cpu_attention_and_eager_stays():
    model = enable_cpu_fast_path(MarlinForPreTraining(tiny_config()).eval())
    assert model.config._attn_implementation == ATTENTION_IMPLEMENTATION
    assert model.marlin.config._attn_implementation == ATTENTION_IMPLEMENTATION
    eager = MarlinModel(tiny_config())
    eager.set_attn_implementation("eager")
    assert enable_cpu_fast_path(eager).config._attn_implementation == "eager"
    with torch.no_grad():  # eager attention still returns its weights
        assert len(eager(random_video(eager.config), output_attentions=True).attentions) == 2


def test_a_saved_model_keeps_no_trace_of_the_fast_path(tmp_path):
    model = enable_cpu_fast_path(MarlinModel(tiny_config()).eval())
    model.save_pretrained(tmp_path)
    assert ATTENTION_IMPLEMENTATION not in (tmp_path / "config.json").read_text()
    assert "attn_implementation" not in json.loads((tmp_path / "config.json").read_text())
    reloaded = MarlinModel.from_pretrained(tmp_path)
    assert reloaded.config._attn_implementation == "sdpa"
    assert "forward" not in vars(reloaded.encoder.layer[0])


def test_a_model_without_marlin_layers_is_refused():
    with pytest.raises(MarlinError, match="Linear: not a MARLIN model"):
        enable_cpu_fast_path(torch.nn.Linear(2, 2))
