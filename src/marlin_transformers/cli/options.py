"""What every subcommand's options are built from: argparse types, and the library's defaults read where they live.

A default is written once, in the library function or settings dataclass that uses it; `add_option` reads it from
there (`library_defaults`) and says it in the help, so `marlin` and the Python API cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
