"""Model commands: `marlin convert` (released checkpoints -> Transformers folders), `marlin init` (a randomly
initialized folder, offline) and `marlin export` (ONNX)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..exceptions import MarlinError
from .numbers import POSITIVE_INT
from .options import Command, add_option, command

COMMANDS: dict[str, Command] = {}


def _convert(args: argparse.Namespace) -> int:
    from ..configuration_marlin import MarlinConfig
    from ..convert_marlin import convert_checkpoint

    if (args.private or args.token) and not args.push_to_hub:
        raise MarlinError("--private and --token go with --push-to-hub REPO_ID; add it, or leave them out.")
    heads = dict(
        num_attention_heads=args.num_attention_heads, decoder_num_attention_heads=args.decoder_num_attention_heads
    )
    out = convert_checkpoint(args.source, args.output_dir, model_id=args.push_to_hub, **heads)
    loaded = MarlinConfig.from_pretrained(out)
    print(
        f"wrote {out} ({loaded.architectures[0]}, {loaded.hidden_size} wide, {loaded.num_hidden_layers} layers); "
        f'load it with AutoModel.from_pretrained("{out}")'
    )
    if args.push_to_hub:
        from ..hub_folders import push_folder_to_hub

        message = f"MARLIN converted from {Path(args.source).name}"
        private = True if args.private else None
        url = push_folder_to_hub(out, args.push_to_hub, token=args.token, commit_message=message, private=private)
        print(f"pushed to {url}")
    return 0


@command(COMMANDS, "convert")
def _convert_options(convert: argparse.ArgumentParser, defaults: dict) -> None:
    """convert an official checkpoint (.encoder.pt, .full.pt, Lightning .ckpt, Hub folder or id)"""
    convert.add_argument("source", help="checkpoint file, the authors' Hub folder, or a Hub id")
    convert.add_argument("output_dir", help="folder to write (must not exist or be empty)")
    convert.add_argument("--num-attention-heads", type=int, help="encoder heads (default: width / 64, as released)")
    convert.add_argument("--decoder-num-attention-heads", type=int, help="decoder heads (default: width / 64)")
    convert.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        help="then upload the folder, model card included, to this Hub repo (made if missing); the card's examples "
        "load from it",
    )
    convert.add_argument("--private", action="store_true", help="with --push-to-hub: make the repo private")
    convert.add_argument("--token", help="with --push-to-hub: Hub token (default: HF_TOKEN or `hf auth login`)")
    convert.set_defaults(handler=_convert)


def _init(args: argparse.Namespace) -> int:
    from ..convert_marlin import init_marlin_folder

    out = init_marlin_folder(args.output_dir, args.variant, pretraining=args.pretraining, seed=args.seed)
    architecture = "MarlinForPreTraining" if args.pretraining else "MarlinModel"
    print(
        f"wrote {out} (ViT-{args.variant[0].upper()}, {architecture}, randomly initialized, seed {args.seed}); load "
        f'it with AutoModel.from_pretrained("{out}")'
    )
    return 0


@command(COMMANDS, "init", defaults=("convert_marlin:init_marlin_folder",))
def _init_options(init: argparse.ArgumentParser, defaults: dict) -> None:
    """write a randomly initialized MARLIN folder (no download): weights, config, processor, code, card

    For trying the code offline or where the official weights cannot be had: its features mean nothing until it is
    pretrained or fine-tuned.
    """
    from ..configuration_marlin import MARLIN_VARIANTS

    init.add_argument("output_dir", help="folder to write (must not exist or be empty)")
    init.add_argument("--variant", required=True, choices=list(MARLIN_VARIANTS), help="the released variant's sizes")
    add_option(
        init,
        "--pretraining",
        defaults,
        "with the decoder and critic (MarlinForPreTraining), for pretraining and "
        "reconstruction (default: the encoder only)",
    )
    add_option(init, "--seed", defaults, "the weights' seed (default {default})", type=int)
    init.set_defaults(handler=_init)


def _export(args: argparse.Namespace) -> int:
    from ..extraction.onnx_export import export_onnx

    diff = export_onnx(args.model, args.output, dynamic_batch=not args.static_batch, opset=args.opset)
    checked = f"; onnxruntime matches PyTorch to {diff:.1e} (max abs diff, fp32)" if diff is not None else ""
    print(f"wrote {args.output} (ONNX, {'batch 2' if args.static_batch else 'any batch'}){checked}")
    return 0


@command(COMMANDS, "export", defaults=("extraction.onnx_export:export_onnx",))
def _export_options(export: argparse.ArgumentParser, defaults: dict) -> None:
    """the encoder as an ONNX file for onnxruntime and other runtimes (checked against PyTorch)"""
    export.add_argument("model", help="converted folder, Hub id or official .pt/.ckpt file")
    export.add_argument("output", help="the .onnx file to write")
    export.add_argument("--format", choices=["onnx"], default="onnx", help="output format (default onnx)")
    export.add_argument(
        "--static-batch", action="store_true", help="fix the batch at 2 (default: any batch size, a dynamic axis)"
    )
    add_option(export, "--opset", defaults, "ONNX opset (default: the exporter's)", type=POSITIVE_INT)
    export.set_defaults(handler=_export)
