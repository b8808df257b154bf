"""`marlin convert` and the conversion functions, on locally generated checkpoints in the official formats."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForPreTraining

from marlin_transformers import CheckpointError, MarlinForPreTraining, MarlinModel
from marlin_transformers.cli import main
from marlin_transformers.convert_marlin import convert_state_dict, load_reference_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
HEADS = ["--num-attention-heads", "2", "--decoder-num-attention-heads", "2"]


@pytest.fixture(scope="module")
def reference_io():
    return torch.load(FIXTURES / "io.pt", weights_only=True)


def test_cli_convert_encoder_then_auto_model(tmp_path, reference_io, capsys):
    out = tmp_path / "marlin-vit-tiny"
    assert main(["convert", str(FIXTURES / "tiny.encoder.pt"), str(out), *HEADS]) == 0
    assert "AutoModel.from_pretrained" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "README.md", "modeling_marlin.py", "configuration_marlin.py"} <= names
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "marlin" and config["architectures"] == ["MarlinModel"]
    assert config["auto_map"]["AutoModel"] == "modeling_marlin.MarlinModel"
    assert "CC BY-NC 4.0" in (out / "README.md").read_text()
    from transformers import AutoVideoProcessor

    processor = AutoVideoProcessor.from_pretrained(out)
    assert (processor.size.height, processor.size.width) == (32, 32) and not processor.do_normalize
    model = AutoModel.from_pretrained(out).eval()
    with torch.no_grad():
        out_hidden = model(reference_io["pixel_values_videos"]).last_hidden_state
    assert (out_hidden - reference_io["last_hidden_state"]).abs().max() <= 1e-5


def test_cli_convert_lightning_keeps_critic(tmp_path, reference_io):
    out = tmp_path / "full"
    assert main(["convert", str(FIXTURES / "tiny.ckpt"), str(out), *HEADS]) == 0
    model = AutoModelForPreTraining.from_pretrained(out).eval()
    assert type(model) is MarlinForPreTraining
    with torch.no_grad():
        scores = model.discriminator(reference_io["critic_input"])
        logits = model(reference_io["pixel_values_videos"], reference_io["bool_masked_pos"]).logits
    assert (scores - reference_io["critic_scores"]).abs().max() <= 1e-5
    assert (logits - reference_io["logits"]).abs().max() <= 1e-5
    # AutoModel on a pretraining folder gives the encoder
    assert type(AutoModel.from_pretrained(out)) is MarlinModel


def test_convert_refuses_nonempty_output_and_leaves_no_partial_folder(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    assert main(["convert", str(FIXTURES / "tiny.encoder.pt"), str(out), *HEADS]) == 1
    err = capsys.readouterr().err
    assert "not empty" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "user data"
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_mismatched_checkpoint_names_keys(tmp_path):
    state_dict, _ = load_reference_state_dict(FIXTURES / "tiny.encoder.pt")
    del state_dict["encoder.blocks.1.attn.proj.weight"]
    state_dict["encoder.blocks.0.attn.extra"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as error:
        convert_state_dict(state_dict)
    message = str(error.value)
    assert "encoder.layer.1.attention.proj.weight" in message and "encoder.layer.0.attention.extra" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "payload, expected",
    [(b"not a checkpoint", "not a readable PyTorch checkpoint"), (None, "no such checkpoint")],
)
def test_unreadable_checkpoint_errors(tmp_path, payload, expected, capsys):
    path = tmp_path / "model.pt"
    if payload is not None:
        path.write_bytes(payload)
    assert main(["convert", str(path), str(tmp_path / "out")]) == 1
    assert expected in capsys.readouterr().err


def test_unknown_state_dict_is_rejected(tmp_path):
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a MARLIN checkpoint"):
        convert_state_dict(load_reference_state_dict(tmp_path / "other.pt")[0])


@pytest.mark.parametrize("folder", ["tiny_model_dir", "tiny_pretraining_dir"])
def test_convert_answers_a_folder_of_its_own_in_one_line(folder, request, tmp_path, capsys):
    source = request.getfixturevalue(folder)
    capsys.readouterr()  # the fixture's save
    assert main(["convert", str(source), str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == (
        f"marlin convert: error: {source}: already a marlin-transformers folder (made by `marlin convert` or "
        "`marlin init`), nothing to convert; load it as it is (AutoModel.from_pretrained, load_marlin) or copy the "
        "folder.\n"
    )
    assert not (tmp_path / "out").exists()


def test_saved_folder_loads_as_remote_code_without_the_package(tmp_path, reference_io):
    out = tmp_path / "remote"
    assert main(["convert", str(FIXTURES / "tiny.full.pt"), str(out), *HEADS]) == 0
    torch.save(reference_io["pixel_values_videos"], tmp_path / "video.pt")
    script = f"""
import sys
sys.modules["marlin_transformers"] = None  # not installed, as far as this process knows
import torch
from transformers import AutoModel
model = AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    hidden = model(torch.load({str(tmp_path / "video.pt")!r})).last_hidden_state
torch.save(hidden, {str(tmp_path / "hidden.pt")!r})
print(type(model).__name__)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MarlinModel" in result.stdout
    hidden = torch.load(tmp_path / "hidden.pt")
    assert (hidden - reference_io["last_hidden_state"]).abs().max() <= 1e-5


def test_saved_folder_processor_loads_as_remote_code_without_the_package(tmp_path):
    out = tmp_path / "remote"
    assert main(["convert", str(FIXTURES / "tiny.full.pt"), str(out), *HEADS]) == 0
    assert json.loads((out / "video_preprocessor_config.json").read_text())["auto_map"] == {
        "AutoVideoProcessor": "video_processing_marlin.MarlinVideoProcessor"
    }
    script = f"""
import sys
sys.modules["marlin_transformers"] = None  # not installed, as far as this process knows
import numpy as np
from transformers import AutoVideoProcessor
processor = AutoVideoProcessor.from_pretrained({str(out)!r}, trust_remote_code=True)
assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
clip = np.random.default_rng(0).integers(0, 256, (16, 40, 40, 3), dtype=np.uint8)
pixels = processor(clip, return_tensors="pt")["pixel_values_videos"]
print(type(processor).__name__, tuple(pixels.shape), float(pixels.max()) <= 1.0)
try:
    processor("clip.mp4")
except ImportError as error:
    print("ERROR", error)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    size = json.loads((out / "config.json").read_text())["image_size"]
    assert f"MarlinVideoProcessor (1, 16, 3, {size}, {size}) True" in result.stdout
    assert "ERROR clip.mp4: reading video files needs `pip install marlin-transformers`" in result.stdout


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_converted_folder_honours_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        out = tmp_path / "shared_model"
        assert main(["convert", str(FIXTURES / "tiny.full.pt"), str(out), *HEADS]) == 0
    finally:
        os.umask(previous)
    # safetensors writes 0600 and the staging folder is a mkdtemp (0700): both would hide the model from colleagues.
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in out.iterdir()}
    assert {"model.safetensors", "config.json", "modeling_marlin.py"} <= set(modes)
    assert set(modes.values()) == {0o666 & ~umask}


def test_model_card_says_only_what_the_converter_knows(tmp_path):
    import shutil

    from huggingface_hub import ModelCard

    unknown = tmp_path / "unknown"
    assert main(["convert", str(FIXTURES / "tiny.encoder.pt"), str(unknown), *HEADS]) == 0
    card = ModelCard.load(unknown / "README.md")  # the metadata block parses as the Hub reads it
    assert card.data.license == "cc-by-nc-4.0" and card.data.datasets is None
    assert "random or unknown origin" in card.text and "pretrained on YouTube Faces);" not in card.text

    # A file named as a release: said as a name, with whether its shapes fit that variant (the tiny ones do not).
    named = tmp_path / "marlin_vit_small_ytf.encoder.pt"
    shutil.copyfile(FIXTURES / "tiny.encoder.pt", named)
    assert main(["convert", str(named), str(tmp_path / "named"), *HEADS]) == 0
    card = ModelCard.load(tmp_path / "named" / "README.md")
    assert card.data.datasets == ["youtube_faces"]
    assert "named as the authors' release `marlin_vit_small_ytf`" in card.text
    assert "its shapes are not those of that variant" in card.text and "not checksummed" in card.text
    assert "random or unknown origin" not in card.text


@pytest.mark.parametrize(
    "source, release",
    [
        ("ControlNet/marlin_vit_base_ytf", "marlin_vit_base_ytf"),
        ("/models/marlin_vit_large_ytf.full.pt", "marlin_vit_large_ytf"),
        ("marlin_vit_small_ytf.ckpt", "marlin_vit_small_ytf"),
        ("hub/marlin_vit_base_ytf/", "marlin_vit_base_ytf"),
        ("my_marlin_vit_base_ytf.pt", None),
        ("marlin_vit_base_ytf_finetuned.encoder.pt", None),
        ("tiny.encoder.pt", None),
    ],
)
def test_official_release_is_recognised_by_its_name_only(source, release):
    from marlin_transformers.model_card import official_release

    assert official_release(source) == release


def test_cli_convert_push_to_hub_uploads_the_folder(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    calls = []

    class FakeApi:  # offline: everything up to the upload call is real
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls.append(("create_repo", repo_id, exist_ok))
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(self, folder_path, repo_id, ignore_patterns, commit_message):
            calls.append(("upload_folder", sorted(p.name for p in Path(folder_path).iterdir()), repo_id))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "to_push"
    assert main(["convert", str(FIXTURES / "tiny.encoder.pt"), str(out), *HEADS, "--push-to-hub", "me/marlin"]) == 0
    assert "pushed to https://huggingface.co/me/marlin" in capsys.readouterr().out
    assert calls[1] == ("create_repo", "me/marlin", True)
    assert calls[2][0] == "upload_folder" and calls[2][2] == "me/marlin"
    assert {"model.safetensors", "config.json", "README.md"} <= set(calls[2][1])
