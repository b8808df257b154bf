"""`loading.load_marlin`: every source and kind through one checked loader; the reference's names are read, not
written."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel

from marlin_transformers import (
    CheckpointError,
    MarlinForPreTraining,
    MarlinForVideoClassification,
    MarlinModel,
)
from marlin_transformers.loading import load_marlin

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
HEADS = json.loads((FIXTURES / "heads.json").read_text())


@pytest.fixture(scope="module")
def reference_io():
    return torch.load(FIXTURES / "io.pt", weights_only=True)


@pytest.mark.parametrize("checkpoint", ["tiny.full.pt", "tiny.ckpt"])
def test_a_released_file_loads_as_every_kind(checkpoint, reference_io):
    path = FIXTURES / checkpoint
    encoder = load_marlin(path, **HEADS)
    pretraining = load_marlin(path, "pretraining", **HEADS)
    classifier = load_marlin(path, "classification", id2label={0: "a", 1: "b", 2: "c"})
    assert type(encoder) is MarlinModel and type(pretraining) is MarlinForPreTraining
    assert type(classifier) is MarlinForVideoClassification and classifier.config.num_labels == 3
    assert not encoder.training and encoder.dtype == torch.float32
    with torch.no_grad():
        video, expected = reference_io["pixel_values_videos"], reference_io["last_hidden_state"]
        assert (encoder(video).last_hidden_state - expected).abs().max() <= 1e-5
        assert (pretraining.marlin(video).last_hidden_state - expected).abs().max() <= 1e-5


def test_kinds_from_folders_and_models(tiny_model_dir, tiny_pretraining_dir, tmp_path):
    pretraining = load_marlin(tiny_pretraining_dir, "pretraining")
    assert type(pretraining) is MarlinForPreTraining
    assert load_marlin(pretraining) is pretraining.marlin  # already float32 on the CPU: not copied
    assert load_marlin(pretraining, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert pretraining.dtype == torch.float32  # the caller's model is left as it was
    encoder = load_marlin(tiny_model_dir)
    assert type(encoder) is MarlinModel
    with pytest.raises(CheckpointError, match="an encoder-only model"):
        load_marlin(tiny_model_dir, "pretraining")
    classifier = load_marlin(encoder, "classification", id2label={0: "x"}, problem_type="regression")
    assert torch.equal(classifier.marlin.layernorm.weight, encoder.layernorm.weight)
    classifier.save_pretrained(tmp_path / "classifier")
    again = load_marlin(tmp_path / "classifier", "classification")  # a fine-tuned folder keeps its head
    assert torch.equal(again.classifier.weight, classifier.classifier.weight)
    assert again.config.problem_type == "regression"


def test_a_missing_source_is_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="no such model folder or checkpoint file") as error:
        load_marlin(tmp_path / "missing")
    assert "\n" not in str(error.value) and str(tmp_path / "missing") in str(error.value)
    with pytest.raises(Exception, match="not a kind of MARLIN model"):
        load_marlin(tmp_path, "decoder")


def test_the_authors_layout_is_read_and_saved_in_this_models_names(tmp_path):
    model = AutoModel.from_pretrained(FIXTURES / "tiny_hub")
    model.save_pretrained(tmp_path / "ours")
    with safe_open(str(tmp_path / "ours" / "model.safetensors"), "pt") as saved:
        keys = set(saved.keys())
    assert keys == set(MarlinModel(model.config).state_dict()) - {"embeddings.position_embeddings"}
    reloaded = load_marlin(tmp_path / "ours")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
