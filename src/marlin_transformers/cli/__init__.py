"""The `marlin` command line: the only argparse in the package.

One module per command group (`models`, `extraction`, `pretraining`, `datasets`, `apps`), each a table of
`Command`s whose options read their defaults from the library. Building the parser imports no library module but
the one of the command being run: `marlin --help` and `marlin --version` start in well under a second.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from ..exceptions import MarlinError
from . import apps, datasets, extraction, models, pretraining
from .options import quiet_libraries, start_up_outside_gc, warnings_as_lines

# In the order `marlin --help` lists them.
_ORDER = (
    "convert",
    "init",
    "extract",
    "export",
    "show-mask",
    "reconstruct",
    "app",
    "prepare-celebvhq",
    "prepare-ffpp",
    "prepare-ravdess",
    "prepare-mosei",
    "prepare-ytf",
    "prepare-faces",
    "push-dataset",
    "demo",
    "docs",
)
_GROUPS = (models, extraction, pretraining, datasets, apps)
COMMANDS = {name: group.COMMANDS[name] for name in _ORDER for group in _GROUPS if name in group.COMMANDS}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `marlin` parser with every subcommand's options, or with only those of the subcommand `only`.

    Every subcommand is listed either way (for `marlin --help`); building one's options imports the library module
    its defaults are read from.
    """
    from .. import __version__

    parser = argparse.ArgumentParser(prog="marlin", description="MARLIN facial-video features with Transformers.")
    parser.add_argument("--version", action="version", version=f"marlin-transformers {__version__}")
    parser.set_defaults(handler=None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.subcommands = {}
    for name, command in COMMANDS.items():
        subparser = parser.subcommands[name] = commands.add_parser(
            name, help=command.help, description=command.description
        )
        if only is None or name == only:
            command.add_options(subparser)
            subparser.add_argument(
                "--verbose", action="store_true", help="also show transformers' and accelerate's own bars and notices"
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `marlin` command line `argv` (None: this process's own, `sys.argv`); returns the exit status.

    With `argv` None the process is the command: its start-up imports (building the parser imports the library
    module of the command, and with it torch and transformers) run outside the cycle collector
    (`options.start_up_outside_gc`)."""
    own_process = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    with start_up_outside_gc() if own_process else contextlib.nullcontext():
        parser = build_parser(only=next((a for a in argv[:1] if a in COMMANDS), ""))
        args = parser.parse_args(argv)
        if args.handler is None:  # a bare `marlin`
            parser.print_help()
            return 0
        quiet_libraries(args.verbose)
    try:
        with warnings_as_lines():
            return args.handler(args)
    except MarlinError as error:  # the library names the value; the flag that set it goes in front
        flag = COMMANDS[args.command].flag(parser.subcommands[args.command], error.parameter)
        print(f"marlin {args.command}: error: {flag + ' ' if flag else ''}{error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"marlin {args.command}: interrupted", file=sys.stderr)
        return 130
