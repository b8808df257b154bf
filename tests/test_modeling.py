"""Model tests on a tiny config (the whole file runs in seconds on a CPU)."""

import math

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForVideoClassification

from conftest import tiny_config
from marlin_transformers import (
    MarlinConfig,
    MarlinForPreTraining,
    MarlinForVideoClassification,
    MarlinModel,
    paint_predictions,
    patchify_video,
    unpatchify_video,
)
from marlin_transformers.kernels import enable_cpu_fast_path
from marlin_transformers.modeling_marlin import get_sinusoid_encoding_table, interpolate_position_table
from marlin_transformers.pretraining import attach_critic, detach_critic


def random_video(config: MarlinConfig, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    size = config.image_size
    return torch.rand(batch, config.num_frames, 3, size, size, generator=generator)


def random_mask(config: MarlinConfig, batch: int = 2, num_masked: int = 5, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, config.num_patches, dtype=torch.bool)
    for row in range(batch):
        mask[row, torch.randperm(config.num_patches, generator=generator)[:num_masked]] = True
    return mask


def test_model_outputs_shapes_and_pooling():
    config = tiny_config(attn_implementation="eager")  # sdpa returns no attention weights
    model = MarlinModel(config).eval()
    video = random_video(config)
    with torch.no_grad():
        out = model(video, output_hidden_states=True, output_attentions=True)
    assert config.num_patches == 8
    assert out.last_hidden_state.shape == (2, 8, 32)
    assert out.pooler_output.shape == (2, 32)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert out.attentions[0].shape == (2, 2, 8, 8)
    # pooler_output is the final LayerNorm of the mean of the pre-norm tokens (the reference's keep_seq=False)
    pre_norm = out.hidden_states[-1]
    torch.testing.assert_close(out.pooler_output, model.layernorm(pre_norm.mean(1)))
    torch.testing.assert_close(out.last_hidden_state, model.layernorm(pre_norm))
    assert not torch.allclose(out.pooler_output, out.last_hidden_state.mean(1))


def test_mask_keeps_only_visible_tokens():
    config = tiny_config()
    model = MarlinModel(config).eval()
    video, mask = random_video(config), random_mask(config, num_masked=5)
    with torch.no_grad():
        masked = model(video, bool_masked_pos=mask, output_hidden_states=True)
        embeddings = model.embeddings(video)
    assert masked.last_hidden_state.shape == (2, 3, 32)
    torch.testing.assert_close(masked.hidden_states[0], embeddings[~mask].reshape(2, 3, 32))


def test_sdpa_and_eager_agree():
    config = tiny_config()
    torch.manual_seed(0)
    model = MarlinModel(config).eval()
    eager = MarlinModel(tiny_config(attn_implementation="eager")).eval()
    eager.load_state_dict(model.state_dict())
    assert model.config._attn_implementation == "sdpa"
    assert eager.config._attn_implementation == "eager"
    video = random_video(config)
    with torch.no_grad():
        # fp32 reordering between the fused and the plain softmax(QK^T)V: max abs diff 1.49e-6 over 200 random models
        # x 1 and 2 threads (1e-6 failed about one run in eight on unseeded weights).
        torch.testing.assert_close(model(video).last_hidden_state, eager(video).last_hidden_state, atol=5e-6, rtol=0)


def test_gradient_checkpointing_gives_same_gradients():
    config = tiny_config()
    torch.manual_seed(0)
    model = MarlinForPreTraining(config).train()
    video, mask = random_video(config), random_mask(config)

    def grads():
        model.zero_grad()
        model(video, mask).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    assert model.marlin.encoder.layer[0].gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], msg=name)


def test_position_table_is_fixed_buffer_after_from_pretrained(tmp_path):
    config = tiny_config()
    MarlinForPreTraining(config).save_pretrained(tmp_path)
    model = AutoModelForPreTraining.from_pretrained(tmp_path)
    for module in (model.marlin.embeddings, model.decoder):
        table = module.position_embeddings
        assert not isinstance(table, torch.nn.Parameter) and not table.requires_grad
        assert table.device.type == "cpu"
        torch.testing.assert_close(table, get_sinusoid_encoding_table(*table.shape[1:]), atol=0, rtol=0)
    assert not any("position_embeddings" in name for name, _ in model.named_parameters())


def test_save_and_reload_gives_same_outputs(tmp_path):
    config = tiny_config()
    model = MarlinForPreTraining(config).eval()
    model.save_pretrained(tmp_path)
    reloaded = MarlinForPreTraining.from_pretrained(tmp_path).eval()
    video, mask = random_video(config), random_mask(config)
    with torch.no_grad():
        torch.testing.assert_close(model(video, mask).logits, reloaded(video, mask).logits, atol=0, rtol=0)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is MarlinModel
    with torch.no_grad():
        torch.testing.assert_close(encoder(video).pooler_output, model.marlin(video).pooler_output, atol=0, rtol=0)


def test_pretraining_loss_is_mse_on_masked_raw_pixels():
    config = tiny_config()
    model = MarlinForPreTraining(config).eval()
    video, mask = random_video(config), random_mask(config, num_masked=6)
    with torch.no_grad():
        out = model(video, mask)
    patch_dim = 3 * config.tubelet_size * config.patch_size**2
    assert out.logits.shape == (2, 6, patch_dim)
    target = patchify_video(video, config.patch_size, config.tubelet_size)[mask].reshape(2, 6, patch_dim)
    torch.testing.assert_close(out.reconstruction_loss, ((out.logits - target) ** 2).mean())
    assert model(video, mask, return_loss=False).loss is None


def test_pretraining_loss_is_the_generator_objective_and_trains_every_parameter():
    config = tiny_config()
    torch.manual_seed(0)
    model = MarlinForPreTraining(config).train()
    video, mask = random_video(config), random_mask(config, num_masked=6)
    out = model(video, mask)
    adversarial = config.adv_weight * -model.discriminator(out.logits).mean()
    torch.testing.assert_close(out.adversarial_loss, adversarial)
    torch.testing.assert_close(out.loss, out.reconstruction_loss + adversarial)
    out.loss.backward()
    no_gradient = [name for name, param in model.named_parameters() if param.grad is None or not param.grad.any()]
    assert no_gradient == []

    # Without its critic (as the training loop holds it) or without the term, the loss is the reconstruction alone.
    model.zero_grad()
    detached, critic = detach_critic(model)
    out = detached(video, mask)
    assert out.adversarial_loss is None and out.loss is out.reconstruction_loss
    attach_critic(detached, critic)
    model.config.adv_weight = 0.0
    out = model(video, mask)
    assert out.adversarial_loss is None and out.loss is out.reconstruction_loss


def test_patchify_layout_matches_reference_and_round_trips():
    video = torch.rand(1, 4, 3, 10, 10)
    patches = patchify_video(video, patch_size=5, tubelet_size=2)
    assert patches.shape == (1, 8, 3 * 2 * 5 * 5)
    # token 3 = (t=0, row=1, col=1); element (c=2, frame=1, y=4, x=0) sits at c*50 + frame*25 + y*5 + x
    assert patches[0, 3, 2 * 50 + 1 * 25 + 4 * 5 + 0] == video[0, 1, 2, 5 + 4, 5 + 0]
    torch.testing.assert_close(unpatchify_video(patches, 5, 2, 4, 10), video, atol=0, rtol=0)


def test_paint_predictions_replaces_only_masked_tubelets():
    video = torch.rand(1, 4, 3, 10, 10)
    mask = torch.zeros(1, 8, dtype=torch.bool)
    mask[0, [1, 6]] = True
    logits = torch.full((1, 2, 150), 0.25)
    painted = paint_predictions(video, logits, mask, patch_size=5, tubelet_size=2)
    patches = patchify_video(painted, 5, 2)
    assert torch.all(patches[0, [1, 6]] == 0.25)
    torch.testing.assert_close(patches[0, ~mask[0]], patchify_video(video, 5, 2)[0, ~mask[0]])


@pytest.mark.parametrize(
    "problem_type, labels",
    [
        ("single_label_classification", torch.tensor([0, 2])),
        ("multi_label_classification", torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])),
        ("regression", torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, 0.0]])),
    ],
)
def test_classification_problem_types(problem_type, labels):
    config = tiny_config(num_labels=3, problem_type=problem_type)
    model = MarlinForVideoClassification(config).eval()
    video = random_video(config)
    out = model(video, labels=labels)
    assert out.logits.shape == (2, 3)
    logits = out.logits.detach()
    if problem_type == "single_label_classification":
        expected = torch.nn.functional.cross_entropy(logits, labels)
    elif problem_type == "multi_label_classification":
        expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    else:
        expected = torch.nn.functional.mse_loss(logits, labels)
    torch.testing.assert_close(out.loss.detach(), expected)
    with torch.no_grad():
        torch.testing.assert_close(out.logits, model.classifier(model.marlin(video).pooler_output))


def test_auto_classes_resolve_to_marlin():
    fields = {k: v for k, v in tiny_config().to_diff_dict().items() if k != "model_type"}
    config = AutoConfig.for_model("marlin", **fields)
    assert isinstance(config, MarlinConfig)
    assert type(AutoModel.from_config(config)) is MarlinModel
    assert type(AutoModelForPreTraining.from_config(config)) is MarlinForPreTraining
    assert type(AutoModelForVideoClassification.from_config(config)) is MarlinForVideoClassification


def test_init_follows_reference_scheme():
    model = MarlinForPreTraining(tiny_config())
    qkv = model.marlin.encoder.layer[0].attention.qkv.weight
    bound = math.sqrt(6 / (qkv.shape[0] + qkv.shape[1]))  # xavier-uniform
    assert qkv.abs().max() <= bound and qkv.abs().max() > 0.8 * bound
    assert torch.all(model.marlin.encoder.layer[0].attention.q_bias == 0)
    assert torch.all(model.marlin.encoder.layer[0].mlp.fc1.bias == 0)
    assert torch.all(model.marlin.layernorm.weight == 1)
    assert model.decoder.mask_token.abs().max() <= 0.02 and model.decoder.mask_token.std() > 0


def test_bfloat16_inference_on_cpu_runs_and_follows_float32():
    """bf16 takes the fused oneDNN path only where the CPU has bf16 matrix products (AVX-512 BF16 or AMX); on other
    CPUs (AMD Zen 3) that call raised, so the plain ops must be used there."""
    torch.manual_seed(0)
    model = enable_cpu_fast_path(MarlinModel(tiny_config()).eval())
    video = random_video(model.config)
    with torch.no_grad():
        reference = model(video).pooler_output
        features = model.to(torch.bfloat16)(video.bfloat16()).pooler_output.float()
    # Measured over seeds 0-4 on a Zen 3 CPU: cosine >= 0.99998, max abs diff <= 0.012 (bf16 keeps 8 bits).
    assert torch.nn.functional.cosine_similarity(reference, features).min() > 0.9995


def test_from_pretrained_with_loading_info(tmp_path):
    torch.manual_seed(0)
    MarlinForPreTraining(tiny_config()).save_pretrained(tmp_path)
    model, info = MarlinForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(model, MarlinForPreTraining)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    encoder, info = MarlinModel.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(encoder, MarlinModel) and not info["missing_keys"]
    assert not info["unexpected_keys"]  # the decoder and critic of a pretraining folder are expected there
    encoder.save_pretrained(tmp_path / "encoder")  # saving after such a load writes our names, loadable again
    assert isinstance(MarlinModel.from_pretrained(tmp_path / "encoder"), MarlinModel)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_output_attentions_under_every_implementation(implementation):
    torch.manual_seed(0)
    model = MarlinModel(tiny_config()).eval()
    model.set_attn_implementation(implementation)
    video = random_video(model.config, batch=1)
    with torch.no_grad():
        attentions = model(video, output_attentions=True).attentions
    num_tokens = model.config.num_patches  # 8 for the tiny config
    assert len(attentions) == model.config.num_hidden_layers  # sdpa gave () here before: it forms no matrix
    for maps in attentions:
        assert maps.shape == (1, model.config.num_attention_heads, num_tokens, num_tokens)
        torch.testing.assert_close(maps.sum(-1), torch.ones_like(maps.sum(-1)))  # rows of softmax weights


# 16 frames of 224 pixels in 2x16x16 tubelets, as released, with a narrow single-layer ViT: the shapes are the
# released model's, the cost is not.
NARROW_FULL_SHAPE = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


@pytest.mark.parametrize("num_frames, size", [(8, 224), (32, 224), (16, 160), (16, 288), (32, 288)])
def test_interpolate_pos_encoding_reads_other_frame_counts_and_sizes(num_frames, size):
    model = MarlinModel(MarlinConfig(**NARROW_FULL_SHAPE)).eval()
    video = torch.rand(1, num_frames, 3, size, size, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="interpolate_pos_encoding=True"):
        model(video)
    with torch.no_grad():
        outputs = model(video, interpolate_pos_encoding=True)
    num_tokens = (num_frames // 2) * (size // 16) ** 2
    assert outputs.last_hidden_state.shape == (1, num_tokens, 32)
    assert torch.isfinite(outputs.pooler_output).all()


def test_interpolate_pos_encoding_is_the_identity_at_the_native_shape():
    config = MarlinConfig(**NARROW_FULL_SHAPE)
    model = MarlinModel(config).eval()
    video = random_video(config, batch=1)
    with torch.no_grad():
        plain = model(video).last_hidden_state
        interpolated = model(video, interpolate_pos_encoding=True).last_hidden_state
    assert torch.equal(plain, interpolated)
    table = model.embeddings.position_embeddings
    assert interpolate_position_table(table, (8, 14, 14), (8, 14, 14)) is table


def test_interpolated_table_is_resampled_on_the_time_height_width_grid():
    table = get_sinusoid_encoding_table(8 * 14 * 14, 32)
    grid = table.reshape(8, 14, 14, 32)
    # Halving time with align_corners=False samples each new step midway between two old ones: their mean.
    halved = interpolate_position_table(table, (8, 14, 14), (4, 14, 14)).reshape(4, 14, 14, 32)
    torch.testing.assert_close(halved, (grid[0::2] + grid[1::2]) / 2, atol=1e-6, rtol=0)
    # Halving height and width alike averages 2x2 neighbourhoods of each frame.
    shrunk = interpolate_position_table(table, (8, 14, 14), (8, 7, 7)).reshape(8, 7, 7, 32)
    expected = (grid[:, 0::2, 0::2] + grid[:, 0::2, 1::2] + grid[:, 1::2, 0::2] + grid[:, 1::2, 1::2]) / 4
    torch.testing.assert_close(shrunk, expected, atol=1e-6, rtol=0)


def test_interpolate_pos_encoding_in_pretraining_and_classification():
    config = tiny_config(num_labels=3)
    video = torch.rand(2, 8, 3, 15, 15)  # 4 x 3 x 3 = 36 tokens instead of 8
    mask = torch.zeros(2, 36, dtype=torch.bool)
    mask[:, ::4] = True
    pretraining = MarlinForPreTraining(config).eval()
    with torch.no_grad():
        out = pretraining(video, mask, interpolate_pos_encoding=True)
    assert out.logits.shape == (2, 9, 3 * 2 * 5 * 5) and torch.isfinite(out.loss)
    classifier = MarlinForVideoClassification(config).eval()
    with torch.no_grad():
        assert classifier(video, interpolate_pos_encoding=True).logits.shape == (2, 3)
    with pytest.raises(ValueError, match="multiples of 5"):
        classifier(torch.rand(1, 8, 3, 12, 12), interpolate_pos_encoding=True)


def test_torch_export_and_compile_match_eager():
    config = tiny_config()
    torch.manual_seed(0)
    model = enable_cpu_fast_path(MarlinModel(config).eval())
    video = random_video(config)
    with torch.no_grad():
        eager = model(video)
        exported = torch.export.export(model, (video,))
        # The exported graph holds plain aten ops only (the eager CPU fusion steps aside while tracing).
        targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
        assert not [target for target in targets if "mkldnn" in target]
        from_export = exported.module()(video)
        compiled = torch.compile(model)(video)
    # Inductor fuses and reorders fp32 arithmetic: max abs diff over 5 random models 0 (export) and 1.07e-6
    # (compile); 5e-6 as for sdpa vs eager, whose measured spread is of the same size.
    for outputs in (from_export, compiled):
        torch.testing.assert_close(outputs.last_hidden_state, eager.last_hidden_state, atol=5e-6, rtol=0)
        torch.testing.assert_close(outputs.pooler_output, eager.pooler_output, atol=5e-6, rtol=0)


@pytest.mark.parametrize("seq_len", [50, 1024])  # all 6 (batch, head) pairs in one product; 2 at a time
def test_headwise_attention_equals_eager_attention(seq_len):
    """The bf16 CPU fast path's attention is the same computation as eager attention, a few heads at a time."""
    from marlin_transformers.kernels.cpu import headwise_attention_forward
    from marlin_transformers.modeling_marlin import eager_attention_forward

    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 3, seq_len, 8, generator=generator) for _ in range(3))
    module = torch.nn.Module().eval()
    expected, _ = eager_attention_forward(module, query, key, value, None, scaling=8**-0.5)
    output, weights = headwise_attention_forward(module, query, key, value, None, scaling=8**-0.5)
    assert output.shape == expected.shape == (2, seq_len, 3, 8) and weights is None
    # fp32; measured max abs diff 0 over seeds 0-4 at both lengths (the same products, batched apart).
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cpu_without_amx", [True, False])
def test_bfloat16_attention_takes_the_headwise_path_only_where_it_is_faster(monkeypatch, cpu_without_amx):
    """bf16 inference on a CPU with AVX-512 BF16 and no AMX uses `headwise_attention_forward`; elsewhere, with
    autograd on, or in fp32, PyTorch's sdpa. Both follow fp32."""
    import marlin_transformers.kernels.cpu as kernels

    calls = []

    def counted(*args, **kwargs):
        calls.append(args[1].dtype)
        return headwise(*args, **kwargs)

    headwise = kernels.headwise_attention_forward
    monkeypatch.setattr(kernels, "CPU_BF16_WITHOUT_AMX", cpu_without_amx)
    monkeypatch.setattr(kernels, "headwise_attention_forward", counted)
    torch.manual_seed(0)
    model = enable_cpu_fast_path(MarlinModel(tiny_config()).eval())
    video = random_video(model.config)
    with torch.no_grad():
        reference = model(video).pooler_output
        assert calls == []  # fp32 keeps sdpa: its figures stay the reference's
        features = model.to(torch.bfloat16)(video.bfloat16()).pooler_output.float()
    assert calls == ([torch.bfloat16] * model.config.num_hidden_layers if cpu_without_amx else [])
    model(video.bfloat16()).pooler_output.sum().backward()  # autograd on: sdpa, which has a backward
    assert len(calls) == (model.config.num_hidden_layers if cpu_without_amx else 0)
    assert torch.nn.functional.cosine_similarity(reference, features).min() > 0.9995
