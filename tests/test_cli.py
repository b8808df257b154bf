"""The `marlin` command line as a newcomer meets it: --version, help on a bare `marlin`, help for every option."""

import argparse

import pytest

from marlin_transformers import __version__
from marlin_transformers.cli import build_parser, main


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


def test_every_option_of_every_subcommand_has_help_with_its_default():
    missing = []
    for name, parser in subcommands(build_parser()).items():
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
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
