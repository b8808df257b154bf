"""Parity with the reference release (marlin-pytorch 0.3.4).

The small fixtures in tests/fixtures/parity/ were written by tests/fixtures/make_parity_fixtures.py from
marlin-pytorch with every learnable tensor random, in each released checkpoint format. The full-size ViT-B test
builds the reference itself (CI installs it with --no-deps) and is marked slow.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import require_reference
from marlin_transformers.convert_marlin import convert_state_dict, infer_config, load_reference_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
FORMATS = ["tiny.encoder.pt", "tiny.full.pt", "tiny.ckpt", "tiny_hub"]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def reference_io():
    return torch.load(FIXTURES / "io.pt", weights_only=True)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("checkpoint", FORMATS)
def test_every_format_matches_reference(checkpoint, attn_implementation, reference_io):
    state_dict, kind = load_reference_state_dict(FIXTURES / checkpoint)
    heads = json.loads((FIXTURES / "heads.json").read_text())
    config = infer_config(state_dict, **heads, attn_implementation=attn_implementation)
    model = convert_state_dict(state_dict, config)
    encoder = getattr(model, "marlin", model)
    assert encoder.config._attn_implementation == attn_implementation
    video = reference_io["pixel_values_videos"]
    with torch.no_grad():
        out = encoder(video)
        assert max_diff(out.last_hidden_state, reference_io["last_hidden_state"]) <= TOLERANCE
        assert max_diff(out.pooler_output, reference_io["pooler_output"]) <= TOLERANCE
        if kind in ("full", "lightning"):
            logits = model(video, reference_io["bool_masked_pos"]).logits
            assert max_diff(logits, reference_io["logits"]) <= TOLERANCE
        if kind == "lightning":  # the critic is kept for resuming pretraining
            scores = model.discriminator(reference_io["critic_input"])
            assert max_diff(scores, reference_io["critic_scores"]) <= TOLERANCE
    assert kind == {"tiny.encoder.pt": "encoder", "tiny.full.pt": "full", "tiny.ckpt": "lightning"}.get(
        checkpoint, "hub"
    )


def test_authors_hub_folder_loads_with_from_pretrained(reference_io):
    """Their config.json uses our model_type with their field names; their keys carry a `marlin.` prefix."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(FIXTURES / "tiny_hub").eval()
    assert model.config.hidden_size == 64 and model.config.num_attention_heads == 2
    assert model.config.image_size == 32 and model.config.num_frames == 16
    with torch.no_grad():
        out = model(reference_io["pixel_values_videos"])
    assert max_diff(out.last_hidden_state, reference_io["last_hidden_state"]) <= TOLERANCE


@pytest.mark.slow
def test_full_size_vit_base_matches_marlin_pytorch():
    require_reference()
    sys.path.insert(0, str(Path(__file__).parent))
    from reference_utils import build_reference_model

    reference = build_reference_model(seed=7)
    model = convert_state_dict(reference.state_dict()).eval()
    assert model.config.hidden_size == 768 and model.config.num_hidden_layers == 12
    generator = torch.Generator().manual_seed(0)
    video = torch.rand(1, 3, 16, 224, 224, generator=generator)  # reference layout
    visible = torch.zeros(1, 1568, dtype=torch.bool)
    visible[0, torch.randperm(1568, generator=generator)[:156]] = True
    ours_video = video.transpose(1, 2)
    with torch.no_grad():
        out = model.marlin(ours_video)
        assert max_diff(out.last_hidden_state, reference.extract_features(video, keep_seq=True)) <= TOLERANCE
        assert max_diff(out.pooler_output, reference.extract_features(video, keep_seq=False)) <= TOLERANCE
        logits = model(ours_video, ~visible).logits
        assert max_diff(logits, reference(video, visible)) <= TOLERANCE
