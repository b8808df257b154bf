"""The `marlin` command line as a newcomer meets it: --version, help on a bare `marlin`, help for every option."""

import argparse
import gc
import sys

import pytest

from marlin_transformers import __version__
from marlin_transformers.cli import build_parser, main
from marlin_transformers.cli.options import DeprecatedFlag, start_up_outside_gc


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_version_and_bare_marlin(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"marlin-transformers {__version__}"
    assert main([]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: marlin") and all(name in shown for name in subcommands(build_parser()))


@pytest.fixture
def unfrozen():
    """Objects a test froze go back to the collector after it."""
    yield
    gc.unfreeze()


def test_the_marlin_process_starts_up_outside_the_cycle_collector(monkeypatch, capsys, unfrozen):
    frozen = gc.get_freeze_count()
    with start_up_outside_gc():
        assert not gc.isenabled()
        imported = [object() for _ in range(1000)]
        gc.collect()  # what start-up holds is kept, not walked: frozen below
    assert gc.isenabled() and gc.get_freeze_count() >= frozen + len(imported)

    with pytest.raises(SystemExit), start_up_outside_gc():  # an argparse error on the way still turns it back on
        raise SystemExit(2)
    assert gc.isenabled()

    gc.unfreeze()
    assert main([]) == 0  # a caller in its own process: its collector is left alone
    assert gc.isenabled() and gc.get_freeze_count() == 0
    monkeypatch.setattr(sys, "argv", ["marlin"])
    assert main() == 0  # the process is the command: its start-up frozen
    assert gc.isenabled() and gc.get_freeze_count() > 0
    assert capsys.readouterr().out.count("usage: marlin") == 2


def test_every_option_of_every_subcommand_has_help_with_its_default():
    missing = []
    for name, parser in subcommands(build_parser()).items():
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, DeprecatedFlag)):
                continue  # an old spelling is hidden on purpose: test_old_flag_spellings_... checks it
            label = f"marlin {name} {'/'.join(action.option_strings) or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{label}: no help")
            elif action.option_strings and action.default not in (None, False):
                # The default is said in the help: "(default 4)", "(default: ...)" or "... (default) ...".
                if "default" not in action.help or (
                    str(action.default) not in action.help and "(default)" not in action.help
                ):
                    missing.append(f"{label}: help does not give the default {action.default!r}")
    assert missing == []


@pytest.mark.parametrize(
    "argv, old, new, dest, value",
    [
        (["show-mask", "v.mp4"], "--strategy", "--mask-strategy", "mask_strategy", "random"),
        (["prepare-celebvhq", "root", "out"], "--size", "--image-size", "image_size", 112),
    ],
)
def test_old_flag_spellings_still_work_with_one_deprecation_line(argv, old, new, dest, value, capsys):
    parser = build_parser()
    args = parser.parse_args([*argv, old, str(value), old, str(value)])  # given twice: said once
    assert getattr(args, dest) == value
    assert capsys.readouterr().err == f"marlin: {old} is deprecated; use {new}\n"
    assert getattr(parser.parse_args([*argv, new, str(value)]), dest) == value
    assert capsys.readouterr().err == ""
    help_text = subcommands(parser)[argv[0]].format_help()
    assert new in help_text and f"{old} " not in help_text  # hidden from --help


def test_one_flag_name_per_concept_across_commands():
    """No command shows a spelling that another command (or itself) has deprecated, every old spelling sets a shown
    flag of its own command, and the FaRL parser is `--farl-model` wherever faces are parsed."""
    commands = subcommands(build_parser())
    shown = {name: {o for a in p._actions if not isinstance(a, DeprecatedFlag) for o in a.option_strings}
             for name, p in commands.items()}  # fmt: skip
    deprecated = {}
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, DeprecatedFlag):
                assert action.new_flag in shown[name], f"marlin {name}: {action.option_strings} -> {action.new_flag}"
                deprecated.update({old: (name, action.new_flag) for old in action.option_strings})
    clashes = {
        f"marlin {name} {flag}": deprecated[flag] for name, flags in shown.items() for flag in flags & set(deprecated)
    }
    assert clashes == {}
    for name in ("show-mask", "reconstruct", "prepare-ytf", "prepare-faces"):
        assert "--farl-model" in shown[name], f"marlin {name}"
    assert "--mask-strategy" in shown["show-mask"] and "--mask-strategy" in shown["reconstruct"]


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--sample-rate", "0"),
        ("--stride", "0"),
        ("--stride-seconds", "-1"),
        ("--face-margin", "0"),
        ("--face-margin", "-2"),
        ("--face-margin", "1000"),
        ("--batch-size", "0"),
        ("--num-frames", "-8"),
        ("--image-size", "abc"),
    ],
)
def test_extract_ranges_are_checked_up_front(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["extract", "video.mp4", "--model", "m", "--out", str(tmp_path / "out"), flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"marlin extract: error: argument {flag}: ") and value in err[-1]
    assert not (tmp_path / "out").exists()  # nothing read, nothing written


def test_reconstruct_and_app_options_are_there_with_help():
    commands = subcommands(build_parser())
    expected = {
        "reconstruct": {
            "--model",
            "--out",
            "--mask-strategy",
            "--mask-ratio",
            "--crop-face",
            "--seed",
            "--farl-model",
        },
        "app": {"--model", "--port", "--host"},
    }
    for name, options in expected.items():
        helped = {o for a in commands[name]._actions if a.help for o in a.option_strings}
        assert options <= helped, f"marlin {name}: no help for {sorted(options - helped)}"
    strategies = next(a for a in commands["reconstruct"]._actions if "--mask-strategy" in a.option_strings).choices
    assert list(strategies) == ["fasking", "fasking_opp", "random", "tube", "frame"]


@pytest.mark.parametrize("value", ["0", "1", "1.5", "x"])
def test_reconstruct_mask_ratio_is_checked_up_front(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["reconstruct", "video.mp4", "--model", "m", "--mask-ratio", value])
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1].startswith("marlin reconstruct: error: argument --mask-ratio")
    )


@pytest.fixture(scope="module")
def init_folder(tmp_path_factory):
    """`marlin init` of ViT-S with its decoder: the real sizes and seeded random weights (seconds, about 120 MB)."""
    folder = tmp_path_factory.mktemp("init") / "marlin-vit-small-random"
    assert main(["init", str(folder), "--variant", "small", "--pretraining"]) == 0
    return folder


def test_init_writes_a_folder_every_loader_reads(init_folder):
    from huggingface_hub import ModelCard
    from transformers import AutoModel, AutoModelForPreTraining, AutoVideoProcessor

    from marlin_transformers.loading import load_marlin
    from marlin_transformers.model_card import RANDOM_INIT

    names = {path.name for path in init_folder.iterdir()}
    assert {"model.safetensors", "config.json", "video_preprocessor_config.json", "README.md"} <= names
    assert {"configuration_marlin.py", "modeling_marlin.py", "video_processing_marlin.py"} <= names  # remote code
    assert type(AutoModel.from_pretrained(init_folder)).__name__ == "MarlinModel"
    assert type(AutoModelForPreTraining.from_pretrained(init_folder)).__name__ == "MarlinForPreTraining"
    processor = AutoVideoProcessor.from_pretrained(init_folder)
    assert type(processor).__name__ == "MarlinVideoProcessor" and processor.num_frames == 16
    assert dict(processor.size) == {"height": 224, "width": 224}
    assert load_marlin(init_folder).config.hidden_size == 384
    assert type(load_marlin(init_folder, kind="pretraining")).__name__ == "MarlinForPreTraining"
    classifier = load_marlin(init_folder, kind="classification", id2label={0: "a", 1: "b"})
    assert classifier.config.num_labels == 2
    card = ModelCard.load(init_folder / "README.md")
    assert card.data.license == "apache-2.0" and RANDOM_INIT in card.data.tags and card.data.base_model is None
    assert "randomly initialized" in card.text and "CC BY-NC 4.0 does not apply" in card.text
    assert "YouTube Faces (Wolf" not in card.text and "The converter is tested" not in card.text
    assert "The features are random" in card.text and "the results above are the paper's" not in card.text


def test_init_refuses_a_non_empty_folder_and_convert_answers_its_folders(init_folder, tmp_path, capsys):
    before = sorted(path.name for path in init_folder.iterdir())
    assert main(["init", str(init_folder), "--variant", "base"]) == 1
    assert capsys.readouterr().err == (
        f"marlin init: error: {init_folder}: output folder exists and is not empty; choose another or remove it.\n"
    )
    assert sorted(path.name for path in init_folder.iterdir()) == before
    assert main(["convert", str(init_folder), str(tmp_path / "out")]) == 1
    (error,) = capsys.readouterr().err.splitlines()
    assert "already a marlin-transformers folder" in error and "nothing to convert" in error
    assert not (tmp_path / "out").exists()


def test_reconstruct_says_when_frames_far_from_square_are_squeezed(tiny_pretraining_dir, tmp_path, capsys):
    from video_factory import encode_video, indexed_frames

    wide = tmp_path / "wide.mp4"
    encode_video(wide, indexed_frames(20, 48, 96))
    run = ["reconstruct", str(wide), "--model", str(tiny_pretraining_dir), "--mask-strategy", "random"]
    assert main([*run, "--out", str(tmp_path / "rec.mp4")]) == 0
    line = (
        f"marlin: {wide} is 96x48; without --crop-face it is squeezed to 32x32; add --crop-face for in-the-wild video"
    )
    assert capsys.readouterr().err.splitlines().count(line) == 1
    # With --crop-face nothing is squeezed: no such line (this clip has no face, so its one error line instead).
    assert main([*run, "--out", str(tmp_path / "rec2.mp4"), "--crop-face"]) == 1
    err = capsys.readouterr().err
    assert "squeezed" not in err and "marlin reconstruct: error: " in err
