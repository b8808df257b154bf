"""What every subcommand's options are built from: argparse types, and the library's defaults read where they live.

A default is written once, in the library function or settings dataclass that uses it; `add_option` reads it from
there (`library_defaults`) and says it in the help, so `marlin` and the Python API cannot drift apart.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib
import inspect
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..exceptions import SqueezedVideoWarning


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help, and the function adding its options and handler to its parser."""

    help: str
    add_options: Callable[[argparse.ArgumentParser], None]
    description: str | None = None
    # Library parameter -> the option setting it, where their names differ (for `MarlinError.parameter`).
    parameters: dict[str, str] = dataclasses.field(default_factory=dict)

    def flag(self, parser: argparse.ArgumentParser, parameter: str | None) -> str | None:
        """The flag of this command's `parser` that sets the library's `parameter` (None: no option sets it)."""
        dest = self.parameters.get(parameter, parameter)
        flags = [a.option_strings[0] for a in parser._actions if a.dest == dest and a.option_strings]
        return flags[0] if parameter and flags else None


def command(table: dict[str, Command], name: str, defaults: tuple[str, ...] = (), **parameters: str):
    """Decorate `function(parser, defaults)`, which adds subcommand `name`'s options: it goes in `table`.

    Its docstring's first paragraph is the one-line help, the rest the description. `defaults` names the library
    calls ("module:name", module inside the package) whose defaults it is handed (`library_defaults`), read when its
    options are built; `parameters` as `Command.parameters`.
    """

    def register(function: Callable[[argparse.ArgumentParser, dict[str, Any]], None]):
        summary, _, rest = inspect.cleandoc(function.__doc__).partition("\n\n")

        def add_options(parser: argparse.ArgumentParser) -> None:
            function(parser, library_defaults(*defaults))

        table[name] = Command(" ".join(summary.split()), add_options, " ".join(rest.split()) or None, parameters)
        return function

    return register


def job_exit_status(summary, command: str, out_dir: str) -> int:
    """Say a job's counts and manifest once (in the main process of a multi-process run); 1 if any input failed."""
    if summary.is_main_process:  # one summary for a multi-process run, counting every process
        print(
            f"{command}: {summary.done} done, {summary.skipped} already done, {summary.failed} failed; "
            f"see {Path(out_dir) / 'manifest.jsonl'}",
            file=sys.stderr,
        )
    return 1 if summary.failed else 0


@contextlib.contextmanager
def start_up_outside_gc() -> Iterator[None]:
    """The start-up of a `marlin` process: its imports (torch and transformers: 400,000 objects) made with Python's
    cycle collector off, then moved out of its reach (`gc.freeze`), where no later collection walks them again.

    On 2 cores of an AMD EPYC the collector took 0.67 s of the 4 s these imports take (1,062 collections), and
    interpreter exit another 0.9 s walking them; `marlin extract` on one short video started and exited in
    3.5-3.7 s instead of 4.9-5.1 s (docs/benchmarks.md). The frozen objects are the modules, never freed before exit
    anyway; what the command makes later is collected as usual. Only for a process that is the command (a caller of
    `main` in its own process keeps its collector as it is).
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def quiet_libraries(verbose: bool = False) -> None:
    """Leave a command one progress display, its own: transformers' bars ("Loading weights", "Writing model shards")
    and notices, huggingface_hub's download bars and accelerate's log lines off, errors still said; with `verbose`,
    all left as they are.

    Process-wide, so called where a process starts (`marlin`'s `main`, the example scripts), never by the library.
    """
    if verbose:
        return
    import logging

    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    disable_progress_bars()
    logging.getLogger("accelerate").setLevel(logging.ERROR)


def library_defaults(*sources: str) -> dict[str, Any]:
    """{parameter: default} of the library functions, classes or settings dataclasses named "module:name" (module
    inside the package), where the defaults are written; imported now."""
    found = {}
    for source in sources:
        module, _, name = source.partition(":")
        function = getattr(importlib.import_module(f"..{module}", __package__), name)
        if dataclasses.is_dataclass(function):
            fields = dataclasses.fields(function)
            found |= {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
        else:
            parameters = inspect.signature(function).parameters.values()
            found |= {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return found


def add_option(
    parser: argparse.ArgumentParser,
    flag: str,
    defaults: dict[str, Any],
    help: str,
    parameter: str | None = None,
    **kwargs,
) -> argparse.Action:
    """Add `flag` with the default of `parameter` (default: the flag's own name) in `defaults`.

    `help` may say `{default}`, which becomes that value; a boolean default of False makes a switch.
    """
    name = parameter or flag.lstrip("-").replace("-", "_")
    default = defaults[name]
    if default is False:
        kwargs["action"] = "store_true"
    return parser.add_argument(flag, default=default, help=help.format(default=default), **kwargs)


FARL_MODEL_HELP = (
    "FaRL LaPa TorchScript file (face_parsing.farl.lapa.main_ema_136500_jit191.pt, downloaded by you) for the "
    "paper's parsing; default: the built-in landmark approximation"
)


def add_farl_model(parser: argparse.ArgumentParser) -> argparse.Action:
    """`--farl-model PATH`, the FaRL face parser, one definition for every command that parses faces
    (`examples/pretrain.py`'s field `farl_model` says the same)."""
    return parser.add_argument("--farl-model", metavar="PATH", help=FARL_MODEL_HELP)


class DeprecatedFlag(argparse.Action):
    """An old spelling of a flag, hidden from `--help`: it sets the new flag's value and says once, on stderr, to use
    the new one."""

    def __init__(self, option_strings, dest, new_flag: str, **kwargs):
        self.new_flag = new_flag
        self.said: set[str] = set()  # the old spellings already warned about: once each, however often given
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string not in self.said:
            self.said.add(option_string)
            print(f"marlin: {option_string} is deprecated; use {self.new_flag}", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_deprecated_alias(parser: argparse.ArgumentParser, *old: str, new: str) -> None:
    """Accept the spellings `old` (hidden from `--help`) for `parser`'s option `new`, which it already has; using one
    prints `marlin: OLD is deprecated; use NEW` once per process."""
    target = next(a for a in parser._actions if new in a.option_strings)
    switch = target.nargs == 0  # a store_true/store_const option
    parser.add_argument(
        *old,
        dest=target.dest,
        action=DeprecatedFlag,
        new_flag=new,
        nargs=0 if switch else target.nargs,
        const=target.const if switch else None,
        type=None if switch else target.type,
        choices=None if switch else target.choices,
        metavar=target.metavar,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """While a command runs, the library's `SqueezedVideoWarning` is one line with the flag that helps, once a video
    (`marlin: VIDEO is 1280x720; without --crop-face ...`); other warnings show as Python shows them."""
    said: set[str] = set()
    show = warnings.showwarning

    def show_line(message, category, filename, lineno, file=None, line=None):
        if not isinstance(message, SqueezedVideoWarning):
            return show(message, category, filename, lineno, file, line)
        if message.source not in said:
            said.add(message.source)
            print(
                f"marlin: {message.source} is {message.width}x{message.height}; without --crop-face it is squeezed "
                f"to {message.size}x{message.size}; add --crop-face for in-the-wild video",
                file=sys.stderr,
            )

    with warnings.catch_warnings():
        warnings.simplefilter("always", SqueezedVideoWarning)  # once a video, counted here
        warnings.showwarning = show_line
        yield
