"""The `marlin` command line: the only argparse in the package."""

import argparse
import sys
from pathlib import Path

from .constants import FARL_CHANNEL_ORDERS, MARLIN_CROP_SIZE, SAMPLE_RATE, STRIDE
from .exceptions import MarlinError


def _positive(kind: type, maximum: float | None = None):
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


POSITIVE_INT = _positive(int)
POSITIVE_FLOAT = _positive(float)


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
        try:
            config = infer_config(state_dict, **overrides)
        except MarlinError as error:
            raise MarlinError(f"{args.source}: {error}") from None
    out = convert_checkpoint(args.source, args.output_dir, config=config)
    loaded = MarlinConfig.from_pretrained(out)
    print(
        f"wrote {out} ({loaded.architectures[0]}, {loaded.hidden_size} wide, {loaded.num_hidden_layers} layers); "
        f'load it with AutoModel.from_pretrained("{out}")'
    )
    if args.push_to_hub:
        from .convert_marlin import push_folder_to_hub

        message = f"MARLIN converted from {Path(args.source).name}"
        url = push_folder_to_hub(out, args.push_to_hub, commit_message=message)
        print(f"pushed to {url}")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from .extraction import MarlinFeatureExtractor
    from .extraction.extractor import check_device
    from .extraction.job import model_identity, run_extraction

    if args.device:  # before any input is looked at
        check_device(args.device)

    if args.quiet:  # transformers' "Loading weights" bar too: only errors and the summary
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()

    def make_extractor(device: str):
        return MarlinFeatureExtractor(
            args.model,
            device=args.device or device,
            dtype=args.dtype,
            batch_size=args.batch_size,
            crop_face=args.crop_face,
            on_no_face="centre" if args.no_face == "centre" else "error",
            face_margin=args.face_margin,
            sample_rate=args.sample_rate,
            stride=args.stride,
            stride_seconds=args.stride_seconds,
            keep_seq=args.keep_seq,
            num_frames=args.num_frames,
            image_size=args.image_size,
            compile=args.compile,
        )

    metadata = {"model": str(args.model), "dtype": args.dtype, "crop_face": args.crop_face, "keep_seq": args.keep_seq}
    # What makes the features (not --batch-size, --device or --compile, which change only how fast they come).
    settings = {
        "model": model_identity(args.model),
        **{k: getattr(args, k) for k in ("dtype", "crop_face", "no_face", "face_margin", "keep_seq")},
        **{k: getattr(args, k) for k in ("sample_rate", "stride", "stride_seconds", "num_frames", "image_size")},
    }
    summary = run_extraction(
        args.inputs, args.out, make_extractor, metadata, show_progress=not args.quiet, settings=settings
    )
    if not summary.is_main_process:  # one summary for a multi-process run, counting every process
        return 1 if summary.failed else 0
    print(
        f"marlin extract: {summary.done} done, {summary.skipped} already done, {summary.failed} failed; "
        f"see {Path(args.out) / 'manifest.jsonl'}",
        file=sys.stderr,
    )
    return 1 if summary.failed else 0


def _show_mask(args: argparse.Namespace) -> int:
    import numpy as np

    from .configuration_marlin import MarlinConfig
    from .pretraining.face_parsing import FarlFaceParser, LandmarkFaceParser
    from .video.face_tracking import FaceTracker, iter_face_windows
    from .video.windows import iter_windows
    from .visualization import render_fasking_preview

    config = MarlinConfig.from_pretrained(args.model) if args.model else MarlinConfig()
    windows = iter_windows(args.video, num_frames=config.num_frames, sample_rate=args.sample_rate)
    tracked = iter_face_windows(windows, FaceTracker(crop_size=config.image_size), source=args.video)
    window, crops = next(iter(tracked))
    landmarks = crops.crop_landmarks.copy()
    landmarks[~crops.detected] = np.nan  # frames without a detection fall back to random masking
    if args.farl_model:
        parser = FarlFaceParser(args.farl_model, channel_order=args.farl_channel_order)
    else:
        parser = LandmarkFaceParser()
    render_fasking_preview(
        crops.crops,
        landmarks,
        args.out,
        mask_ratio=config.mask_ratio if args.mask_ratio is None else args.mask_ratio,
        patch_size=config.patch_size,
        tubelet_size=config.tubelet_size,
        parser=parser,
        strategy=args.strategy,
        seed=args.seed,
        num_shown=args.frames,
    )
    print(f"wrote {args.out}: frames {window.frame_indices[0]}-{window.frame_indices[-1]} of {args.video}")
    return 0


def _prepare_celebvhq(args: argparse.Namespace) -> int:
    from .data.celebv_hq import prepare_celebvhq

    crop = None if args.crop == "none" else args.crop
    split = prepare_celebvhq(
        args.root, args.out, crop=crop, size=args.size, seed=args.seed, num_workers=args.num_workers
    )
    counts = ", ".join(f"{name} {len(ids)}" for name, ids in split.items())
    print(f"prepared CelebV-HQ in {args.out}: {counts} clips; labels CSVs per task and split, see split.json")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.out, dtype=args.dtype)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="marlin", description="MARLIN facial-video features with Transformers.")
    parser.add_argument("--version", action="version", version=f"marlin-transformers {__version__}")
    parser.set_defaults(handler=None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    convert = commands.add_parser(
        "convert",
        help="convert an official checkpoint (.encoder.pt, .full.pt, Lightning .ckpt, Hub folder or id)",
    )
    convert.add_argument("source", help="checkpoint file, the authors' Hub folder, or a Hub id")
    convert.add_argument("output_dir", help="folder to write (must not exist or be empty)")
    convert.add_argument("--num-attention-heads", type=int, help="encoder heads (default: width / 64, as released)")
    convert.add_argument("--decoder-num-attention-heads", type=int, help="decoder heads (default: width / 64)")
    convert.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        help="then upload the folder to this Hub repo (made if missing; token: HF_TOKEN or `hf auth login`)",
    )
    convert.set_defaults(handler=_convert)

    extract = commands.add_parser(
        "extract",
        help="features of every 16-frame window of videos (files, folders, or text files listing paths)",
        description="Writes OUT/<name>.npy per video and one JSON line per video to OUT/manifest.jsonl; re-running "
        "skips videos already done. Under `accelerate launch` the inputs are shared between the processes.",
    )
    extract.add_argument("inputs", nargs="+", metavar="INPUT", help="video file, folder (recursive) or .txt list")
    extract.add_argument(
        "--model",
        required=True,
        help="converted folder, Hub id (marlin_vit_base_ytf = ControlNet/marlin_vit_base_ytf) or official "
        ".pt/.ckpt file (converted on the fly)",
    )
    extract.add_argument("--out", required=True, help="output folder")
    extract.add_argument("--crop-face", action="store_true", help="track the face and crop around it")
    extract.add_argument(
        "--no-face",
        choices=["error", "centre"],
        default="error",
        help="with --crop-face, a video without any face is an error (default) or gets a centre crop",
    )
    extract.add_argument(
        "--face-margin",
        type=_positive(float, 4.0),
        default=1.0,
        help="crop side / face box side, above 0 and at most 4 (default 1.0)",
    )
    extract.add_argument(
        "--sample-rate", type=POSITIVE_INT, default=SAMPLE_RATE, help=f"take every n-th frame (default {SAMPLE_RATE})"
    )
    extract.add_argument(
        "--stride",
        type=POSITIVE_INT,
        default=STRIDE,
        help=f"next window after this many sampled frames (default {STRIDE})",
    )
    extract.add_argument(
        "--stride-seconds", type=POSITIVE_FLOAT, default=None, help="window spacing in seconds instead"
    )
    extract.add_argument("--keep-seq", action="store_true", help="save every token (windows x 1568 x hidden)")
    extract.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="encoder precision (default float32; bfloat16 is faster on CPUs with AVX-512 BF16 or AMX and on GPUs)",
    )
    extract.add_argument("--device", default=None, help="torch device (default: this process's accelerator or cpu)")
    extract.add_argument("--batch-size", type=POSITIVE_INT, default=4, help="windows per forward pass (default 4)")
    extract.add_argument(
        "--num-frames",
        type=POSITIVE_INT,
        default=None,
        help="frames per window, a multiple of 2 (default: the model's, 16; others resample its position table)",
    )
    extract.add_argument(
        "--image-size",
        type=POSITIVE_INT,
        default=None,
        help="frame side in pixels, a multiple of 16 (default: the model's, 224; others resample its position table)",
    )
    extract.add_argument(
        "--compile",
        action="store_true",
        help="run the encoder through torch.compile (faster per clip after a one-off compile of each batch shape)",
    )
    extract.add_argument("--quiet", action="store_true", help="no progress bars")
    extract.set_defaults(handler=_extract)

    show_mask = commands.add_parser(
        "show-mask", help="picture of a clip's face parsing and its Fasking mask (first window of a video)"
    )
    show_mask.add_argument("video", help="a face video; its first window is shown")
    show_mask.add_argument("--out", default="mask.png", help="PNG to write (default: mask.png)")
    show_mask.add_argument(
        "--farl-model",
        help="FaRL LaPa TorchScript file (face_parsing.farl.lapa.main_ema_136500_jit191.pt) for the paper's "
        "parsing; default: the built-in landmark approximation",
    )
    show_mask.add_argument(
        "--farl-channel-order",
        default=FARL_CHANNEL_ORDERS[0],
        choices=FARL_CHANNEL_ORDERS,
        help="channels fed to --farl-model: rgb (default, FaRL's own: right maps) or bgr (the paper code's: the maps "
        "the released models were pretrained with)",
    )
    show_mask.add_argument(
        "--strategy",
        default="fasking",
        choices=["fasking", "fasking_opp", "random", "tube", "frame"],
        help="masking strategy (default fasking: facial parts first, as the paper)",
    )
    show_mask.add_argument(
        "--model", help="converted folder or Hub id whose config sets clip length, crop size, tubelets and mask ratio"
    )
    show_mask.add_argument(
        "--mask-ratio", type=float, default=None, help="fraction of tokens masked (default: the config's, 0.9)"
    )
    show_mask.add_argument(
        "--sample-rate", type=POSITIVE_INT, default=SAMPLE_RATE, help=f"take every n-th frame (default {SAMPLE_RATE})"
    )
    show_mask.add_argument("--frames", type=POSITIVE_INT, default=4, help="frames shown (default 4)")
    show_mask.add_argument("--seed", type=int, default=0, help="seed of the mask's random draws (default 0)")
    show_mask.set_defaults(handler=_show_mask)

    celebvhq = commands.add_parser(
        "prepare-celebvhq",
        help=f"split CelebV-HQ (sorted, seeded 80/10/10), crop its clips to {MARLIN_CROP_SIZE} and write labels CSVs",
    )
    celebvhq.add_argument("root", help="the CelebV-HQ folder (celebvhq_info.json, downloaded/)")
    celebvhq.add_argument("out", help="where the prepared layout goes")
    celebvhq.add_argument(
        "--crop",
        choices=["bbox", "resize", "face", "reference", "none"],
        default="bbox",
        help="bbox: the release's box crop of full frames (default); resize: clips already cropped by the release "
        "script; face: MTCNN tracking, square around the face; reference: as the paper code, a detector box per "
        "frame (MTCNN for its RetinaFace), no smoothing, square of side 2*int(max(w,h)/2); none: label CSVs only",
    )
    celebvhq.add_argument(
        "--size",
        type=POSITIVE_INT,
        default=MARLIN_CROP_SIZE,
        help=f"side of the square crops (default {MARLIN_CROP_SIZE})",
    )
    celebvhq.add_argument("--seed", type=int, default=0, help="seed of the 80/10/10 split (default 0)")
    celebvhq.add_argument("--num-workers", type=POSITIVE_INT, default=1, help="videos cropped in parallel (default 1)")
    celebvhq.set_defaults(handler=_prepare_celebvhq)

    demo = commands.add_parser(
        "demo", help="the whole pipeline on a face clip it renders itself (works offline, with random weights)"
    )
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default="float32", help="encoder precision (default float32)"
    )
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.handler is None:  # a bare `marlin`
        parser.print_help()
        return 0
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
