"""The `marlin` command line: the only argparse in the package."""

import argparse
import sys

from .exceptions import MarlinError


def _convert(args: argparse.Namespace) -> int:
    from .configuration_marlin import MarlinConfig
    from .convert_marlin import convert_checkpoint, infer_config, load_reference_state_dict

    config = None
    if args.num_attention_heads or args.decoder_num_attention_heads:
        state_dict, _ = load_reference_state_dict(args.source)
        overrides = {
            k: v
            for k, v in (
                ("num_attention_heads", args.num_attention_heads),
                ("decoder_num_attention_heads", args.decoder_num_attention_heads),
            )
            if v
        }
        config = infer_config(state_dict, **overrides)
    out = convert_checkpoint(args.source, args.output_dir, config=config)
    loaded = MarlinConfig.from_pretrained(out)
    print(
        f"wrote {out} ({loaded.architectures[0]}, {loaded.hidden_size} wide, {loaded.num_hidden_layers} layers); "
        f'load it with AutoModel.from_pretrained("{out}")'
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marlin", description="MARLIN facial-video features with Transformers.")
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser(
        "convert",
        help="convert an official checkpoint (.encoder.pt, .full.pt, Lightning .ckpt, Hub folder or id)",
    )
    convert.add_argument("source", help="checkpoint file, the authors' Hub folder, or a Hub id")
    convert.add_argument("output_dir", help="folder to write (must not exist or be empty)")
    convert.add_argument("--num-attention-heads", type=int, help="encoder heads (default: width / 64, as released)")
    convert.add_argument("--decoder-num-attention-heads", type=int, help="decoder heads (default: width / 64)")
    convert.set_defaults(handler=_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except MarlinError as error:
        print(f"marlin {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"marlin {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
