"""Commands that show the whole pipeline: `marlin app` (Gradio page), `marlin demo` and `marlin docs`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..exceptions import MarlinError
from .numbers import POSITIVE_INT
from .options import Command, add_option, command

DOCS_CONFIG = Path(__file__).resolve().parents[3] / "mkdocs.yml"  # the checkout's root, beside src/

COMMANDS: dict[str, Command] = {}


def _app(args: argparse.Namespace) -> int:
    from ..app import launch_app

    launch_app(model=args.model, host=args.host, port=args.port)
    return 0


@command(COMMANDS, "app", defaults=("app:launch_app",))
def _app_options(app: argparse.ArgumentParser, defaults: dict) -> None:
    """a web app (Gradio): tracked faces, crops, Fasking mask, reconstruction and features of a video"""
    app.add_argument(
        "--model",
        help="a .full.pt/.ckpt file or a converted pretraining folder; default: randomly initialized ViT-B weights "
        "(labelled as such: the pictures then show the pipeline, not what MARLIN learnt)",
    )
    add_option(app, "--port", defaults, "port to serve on (default {default})", type=POSITIVE_INT)
    add_option(app, "--host", defaults, "address to serve on (default {default}; 0.0.0.0 for all)")
    app.set_defaults(handler=_app)


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(args.out, dtype=args.dtype)


@command(COMMANDS, "demo", defaults=("demo:run_demo",))
def _demo_options(demo: argparse.ArgumentParser, defaults: dict) -> None:
    """the whole pipeline on a face clip it renders itself (works offline, with random weights)"""
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    add_option(demo, "--dtype", defaults, "encoder precision (default {default})", choices=["float32", "bfloat16"])
    demo.set_defaults(handler=_demo)


def _docs(args: argparse.Namespace) -> int:
    import subprocess

    config = DOCS_CONFIG
    if not config.is_file():
        raise MarlinError(
            f"no mkdocs.yml at {config}: the documentation is built from a source checkout (git clone the "
            'repository, then pip install -e ".[docs]")'
        )
    packages = {
        "mkdocs": "mkdocs",
        "material": "mkdocs-material",
        "mkdocstrings_handlers.python": "mkdocstrings[python]",
    }
    missing = [package for module, package in packages.items() if not _has_module(module)]
    if missing:
        raise MarlinError(f'{", ".join(missing)} not installed: pip install -e ".[docs]"')
    command = [sys.executable, "-m", "mkdocs"]
    if args.build:
        command += ["build", "--config-file", str(config), "--site-dir", str(Path(args.build).resolve())]
    else:
        command += ["serve", "--config-file", str(config), "--dev-addr", f"{args.host}:{args.port}"]
    return subprocess.call(command)


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


@command(COMMANDS, "docs")
def _docs_options(docs: argparse.ArgumentParser, defaults: dict) -> None:
    """serve this documentation site locally (mkdocs), or build a static copy with --build DIR"""
    docs.add_argument("--build", metavar="DIR", help="write the static site to DIR instead of serving it")
    docs.add_argument("--port", type=POSITIVE_INT, default=8000, help="port to serve on (default 8000)")
    docs.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    docs.set_defaults(handler=_docs)
