"""Adapters and hooks on MARLIN's projections take effect: the CPU fast path never skips a replaced module."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from conftest import tiny_config
from marlin_transformers import MarlinModel
from marlin_transformers.kernels import enable_cpu_fast_path

TARGETS = ["qkv", "proj", "fc1", "fc2"]


def lora_model(seed: int = 0):
    torch.manual_seed(seed)
    base = enable_cpu_fast_path(MarlinModel(tiny_config()).eval())
    video = torch.rand(2, 4, 3, 10, 10, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        reference = base(video).last_hidden_state
    # init_lora_weights=False draws both LoRA matrices, so the adapter changes the output from the start.
    model = get_peft_model(base, LoraConfig(target_modules=TARGETS, r=4, lora_alpha=8, init_lora_weights=False))
    return model, video, reference


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_lora_changes_the_outputs(mode):
    model, video, reference = lora_model()
    model.train(mode == "train")
    with torch.no_grad():
        adapted = model(video).last_hidden_state
    # Measured: max abs change 1.9-3.7 over seeds 0-4 (it was exactly 0.0 while the fast path read `.weight`).
    assert (adapted - reference).abs().max() > 0.1


def test_lora_trains_only_the_adapter_and_its_gradients_flow():
    model, video, _ = lora_model()
    model.train()
    model(video).last_hidden_state.square().mean().backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.values())


def test_merged_adapter_reproduces_the_unmerged_output():
    model, video, _ = lora_model()
    with torch.no_grad():
        adapted = model(video).last_hidden_state
        merged = model.merge_and_unload().eval()  # plain nn.Linear again, so the fused path is back
        assert type(merged.encoder.layer[0].attention.qkv) is torch.nn.Linear
        reproduced = merged(video).last_hidden_state
    # Measured over seeds 0-4 at 1 and 2 threads: max abs diff <= 1.5e-6 (fp32 reordering of W + BA vs W and BA).
    torch.testing.assert_close(reproduced, adapted, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_forward_hook_on_qkv_fires_and_can_change_the_output(mode):
    torch.manual_seed(0)
    model = enable_cpu_fast_path(MarlinModel(tiny_config())).train(mode == "train")
    video = torch.rand(1, 4, 3, 10, 10)
    with torch.no_grad():
        reference = model(video).last_hidden_state
    calls = []

    def hook(module, inputs, output):
        calls.append(output.shape)
        return output * 0  # queries, keys and values all zero: attention becomes a plain mean

    handle = model.encoder.layer[0].attention.qkv.register_forward_hook(hook)
    with torch.no_grad():
        hooked = model(video).last_hidden_state
    handle.remove()
    assert calls == [torch.Size([1, 8, 3 * model.config.hidden_size])]
    assert (hooked - reference).abs().max() > 1e-3
