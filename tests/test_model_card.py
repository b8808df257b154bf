"""The Hub model cards: metadata as huggingface_hub reads it, checked offline; the body's numbers against the model;
the committed cards of the three releases against what the code renders; `marlin convert --push-to-hub` offline."""

import re
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, ModelCardData

from marlin_transformers import MARLIN_VARIANTS, MarlinConfig, MarlinModel
from marlin_transformers.cli import main
from marlin_transformers.model_card import (
    PAPER_RESULTS,
    RANDOM_INIT,
    RELEASE_REPO_ID,
    clip_macs,
    parameter_counts,
    release_model_card,
    render_finetuned_card,
    render_model_card,
    write_release_cards,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "parity"
HEADS = ["--num-attention-heads", "2", "--decoder-num-attention-heads", "2"]
# The Hub's task names (huggingface.js `packages/tasks/src/pipelines.ts`, PIPELINE_DATA): huggingface_hub ships no
# list of them. Kept to what a card might carry by mistake; a tag equal to one is read as the card's task.
HUB_TASKS = {
    "feature-extraction",
    "image-feature-extraction",
    "video-classification",
    "image-classification",
    "text-to-video",
    "video-text-to-text",
    "mask-generation",
    "other",
}


def body_number(card: ModelCard, row: str) -> int:
    """The first number of the body's table row `| row | ... |`, commas removed."""
    match = re.search(rf"^\| {row} \| ([\d,]+)", card.text, re.M)
    assert match, f"no '{row}' row in the card"
    return int(match.group(1).replace(",", ""))


@pytest.fixture(scope="module", params=list(MARLIN_VARIANTS))
def release(request):
    return request.param, ModelCard.load(ROOT / "model_cards" / f"marlin-vit-{request.param}.md")


def test_committed_release_cards_are_what_the_code_renders(tmp_path):
    # model_cards/ is generated (model_cards/README.md says how): an edit of either alone fails here.
    for path in write_release_cards(tmp_path):
        committed = ROOT / "model_cards" / path.name
        assert committed.read_text() == path.read_text(), f"{committed} differs from the code's: regenerate it"


def test_release_card_metadata(release):
    variant, card = release
    data = card.data
    assert data.license == "cc-by-nc-4.0" and data.library_name == "transformers"
    # No task on purpose (the card's "Task" section): none set, and no tag the Hub would read as one.
    assert data.pipeline_tag is None and not HUB_TASKS & set(data.tags)
    assert {"marlin", "video", "face", "masked-autoencoder", "arxiv:2211.06627"} <= set(data.tags)
    assert data.datasets == ["youtube_faces"]
    assert data.base_model == f"ControlNet/marlin_vit_{variant}_ytf"
    assert "## Task" in card.text and "No `pipeline_tag` is set" in card.text


def test_release_card_metadata_round_trips(release):
    # What ModelCard.validate would post to the Hub, checked offline: the YAML is a mapping of known fields that
    # ModelCardData rebuilds to the same YAML.
    _, card = release
    rebuilt = ModelCardData(**card.data.to_dict())
    assert rebuilt.to_yaml() == card.data.to_yaml()
    assert set(card.data.to_dict()) == {"license", "library_name", "tags", "datasets", "base_model"}
    assert str(ModelCard(str(card))) == str(card)


def test_release_card_body_states_the_models_numbers(release):
    variant, card = release
    config = MarlinConfig.from_variant(variant)
    assert (
        body_number(card, "Embedding size")
        == config.hidden_size
        == {"small": 384, "base": 768, "large": 1024}[variant]
    )
    with torch.device("meta"):
        model = MarlinModel(config)
    parameters = sum(p.numel() for p in model.parameters())  # the position table is a buffer: not counted
    assert body_number(card, "Parameters") == parameters
    assert f"{clip_macs(config) / 1e9:.1f} G multiply-adds" in card.text
    assert f"(windows, {config.hidden_size}): one embedding per window" in card.text
    # Usage loads from the repo the card is for; the citation and licence are there.
    repo_id = RELEASE_REPO_ID.format(variant=variant)
    assert f'AutoModel.from_pretrained("{repo_id}")' in card.text and f"--model {repo_id}" in card.text
    assert 'pipeline("video-classification"' in card.text and "cai2023marlin" in card.text
    assert "CC BY-NC 4.0" in card.text and "surveil" in card.text and "consent" in card.text


def test_parameter_count_and_compute_of_vit_b():
    config = MarlinConfig.from_variant("base")
    counts = parameter_counts(config)
    # The model zoo's 87.43 M counts the 1568 x 768 position table, which is a buffer here.
    assert counts["encoder"] + config.num_patches * config.hidden_size == 87_431_424
    assert 175e9 < clip_macs(config) < 185e9  # about 180 G multiply-adds per clip
    assert parameter_counts(config, "MarlinForPreTraining")["total"] > counts["encoder"]


def test_paper_results_are_those_of_docs_downstream(release):
    # The card's table reuses docs/downstream.md's numbers: a number changed in one place only fails here.
    variant, card = release
    docs = (ROOT / "docs" / "downstream.md").read_text()
    section = docs[docs.index("## The paper's downstream results") :]
    for task, dataset, metric, values, _ in PAPER_RESULTS:
        row = next(line for line in section.splitlines() if line.startswith(f"| {task} | {dataset} | {metric} |"))
        cells = [cell.strip() for cell in row.split("|")[4:7]]
        assert cells == [values.get(name, "") for name in MARLIN_VARIANTS], task
        assert f"| {task} | {dataset} | {metric} |" in card.text
    assert f"**ViT-{variant[0].upper()} (this model)**" in card.text


def test_card_of_weights_of_unknown_origin_claims_no_training():
    card = ModelCard(
        render_model_card(
            MarlinConfig(), source="my.encoder.pt", kind="encoder", architecture="MarlinModel", model_id="m"
        )
    )
    assert card.data.datasets is None and card.data.base_model is None and card.data.pipeline_tag is None
    assert "Results from the paper" not in card.text and "Unknown: the converter cannot tell" in card.text
    assert release_model_card("base") != str(card)


def test_convert_writes_the_card_for_the_repo_it_pushes_to_and_pushes_it(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    calls = []

    class FakeApi:  # offline: everything up to the upload call is real
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls.append(("create_repo", repo_id, private, exist_ok))
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(self, folder_path, repo_id, ignore_patterns, commit_message):
            names = sorted(p.name for p in Path(folder_path).iterdir())
            card = ModelCard.load(Path(folder_path) / "README.md")
            calls.append(("upload_folder", Path(folder_path), repo_id, names, card))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "to_push"
    argv = ["convert", str(FIXTURES / "tiny.encoder.pt"), str(out), *HEADS, "--push-to-hub", "me/marlin-tiny"]
    assert main([*argv, "--private", "--token", "hf_test"]) == 0
    assert "pushed to https://huggingface.co/me/marlin-tiny" in capsys.readouterr().out
    assert calls[0] == ("token", "hf_test") and calls[1] == ("create_repo", "me/marlin-tiny", True, True)
    _, folder, repo_id, names, card = calls[2]
    assert folder == out and repo_id == "me/marlin-tiny"
    assert {"README.md", "config.json", "model.safetensors", "video_preprocessor_config.json"} <= set(names)
    assert 'AutoModel.from_pretrained("me/marlin-tiny")' in card.text and card.data.license == "cc-by-nc-4.0"

    # Without --private the repo gets the account's default.
    calls.clear()
    assert main([*argv[:2], str(tmp_path / "public"), *argv[3:]]) == 0
    assert calls[1] == ("create_repo", "me/marlin-tiny", None, True)


def test_convert_push_failure_is_one_line_and_keeps_the_folder(tmp_path, monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub.utils import httpx

    class OfflineApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            raise httpx.ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "HfApi", OfflineApi)
    out = tmp_path / "offline"
    assert main(["convert", str(FIXTURES / "tiny.encoder.pt"), str(out), *HEADS, "--push-to-hub", "me/x"]) == 1
    err = capsys.readouterr().err  # (after transformers' progress bars)
    errors = [line for line in err.splitlines() if line.startswith("marlin convert: error:")]
    assert len(errors) == 1 and "upload to the Hub repo me/x failed (ConnectError" in errors[0]
    assert "Traceback" not in err and (out / "model.safetensors").exists()


def test_private_without_push_is_refused(tmp_path, capsys):
    assert main(["convert", str(FIXTURES / "tiny.encoder.pt"), str(tmp_path / "x"), "--private"]) == 1
    assert "--private and --token go with --push-to-hub" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_fine_tuned_cards_licence_and_provenance_follow_its_base(tmp_path):
    """Official weights: CC BY-NC 4.0 and "derived from the official release"; a `marlin init` folder (known by its
    card's tag): Apache-2.0, randomly initialized, and the tag carried on; a folder that says nothing: unknown."""
    config = MarlinConfig.from_variant("small", id2label={0: "neutral", 1: "smile"})
    random_base, official_base, silent_base = tmp_path / "random", tmp_path / "official", tmp_path / "silent"
    for folder in (random_base, official_base, silent_base):
        folder.mkdir()
    card = render_model_card(config, source="seed 0", kind=RANDOM_INIT, architecture="MarlinModel", model_id="x")
    (random_base / "README.md").write_text(card)
    (official_base / "README.md").write_text(release_model_card("small"))

    def fine_tuned(base) -> ModelCard:
        return ModelCard(render_finetuned_card(config, str(base), "train/", "val/", {"eval_accuracy": 0.5}))

    for base in ("ControlNet/marlin_vit_small_ytf", RELEASE_REPO_ID.format(variant="small"), official_base):
        card = fine_tuned(base)
        assert card.data.license == "cc-by-nc-4.0" and RANDOM_INIT not in card.data.tags
        assert "Weights derived from the official MARLIN release are under CC BY-NC 4.0" in card.text
    card = fine_tuned(random_base)
    assert card.data.license == "apache-2.0" and RANDOM_INIT in card.data.tags
    assert "randomly initialized" in card.text and "derived from the official" not in card.text
    from_random_fine_tune = tmp_path / "fine-tuned"
    from_random_fine_tune.mkdir()
    (from_random_fine_tune / "README.md").write_text(str(card))
    assert fine_tuned(from_random_fine_tune).data.license == "apache-2.0"  # a fine-tune of a fine-tune
    card = fine_tuned(silent_base)
    assert card.data.license == "cc-by-nc-4.0" and "unknown origin" in card.text
    assert "Weights derived from the official MARLIN release" not in card.text
