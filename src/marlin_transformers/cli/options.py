"""What every subcommand's options are built from: argparse types, and the library's defaults read where they live.

A default is written once, in the library function or settings dataclass that uses it; `add_option` reads it from
there (`library_defaults`) and says it in the help, so `marlin` and the Python API cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from collections.abc import Callable
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


def library_defaults(function: Callable) -> dict[str, Any]:
    """{parameter: default} of a library function, class or dataclass: where the default is written."""
    if dataclasses.is_dataclass(function):
        return {f.name: f.default for f in dataclasses.fields(function) if f.default is not dataclasses.MISSING}
    parameters = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


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


def positive(kind: type, maximum: float | None = None):
    """An argparse type: a number of `kind` above 0 (and at most `maximum`), else argparse's one-line error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not value > 0 or (maximum is not None and value > maximum):
            bound = f" and at most {maximum:g}" if maximum is not None else ""
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a value above 0{bound}")
        return value

    return parse


POSITIVE_INT = positive(int)
POSITIVE_FLOAT = positive(float)


def non_negative_int(text: str) -> int:
    """An argparse type: an integer of 0 or more, else argparse's one-line error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is out of range: give 0 or more")
    return value
