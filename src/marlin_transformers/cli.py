"""The `marlin` command line: the only argparse in the package."""

import argparse
import sys
from pathlib import Path

from .constants import FARL_CHANNEL_ORDERS, MARLIN_CROP_SIZE, SAMPLE_RATE, STRIDE
from .exceptions import MarlinError

DOCS_CONFIG = Path(__file__).resolve().parents[2] / "mkdocs.yml"  # the checkout's root, beside src/


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


def _non_negative_int(text: str) -> int:
    """An argparse type: an integer of 0 or more, else argparse's one-line error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is out of range: give 0 or more")
    return value


def _convert(args: argparse.Namespace) -> int:
    from .configuration_marlin import MarlinConfig
    from .convert_marlin import convert_checkpoint

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
        from .hub_folders import push_folder_to_hub

        message = f"MARLIN converted from {Path(args.source).name}"
        private = True if args.private else None
        url = push_folder_to_hub(out, args.push_to_hub, token=args.token, commit_message=message, private=private)
        print(f"pushed to {url}")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from .extraction.extractor import check_device
    from .extraction.job import extract_corpus
    from .extraction.pipeline import default_num_workers

    if args.device:  # before any input is looked at
        check_device(args.device)

    if args.quiet:  # transformers' "Loading weights" bar too: only errors and the summary
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()

    if args.all_faces and not args.crop_face:
        raise MarlinError("--all-faces follows faces: use it with --crop-face.")
    try:
        summary = extract_corpus(
            args.inputs,
            args.out,
            args.model,
            device=args.device,
            batch_size=args.batch_size,
            compile=args.compile,
            num_workers=default_num_workers() if args.num_workers is None else args.num_workers,
            show_progress=not args.quiet,
            on_no_face=args.no_face,
            **{k: getattr(args, k) for k in ("dtype", "crop_face", "face_margin", "keep_seq", "all_faces")},
            **{k: getattr(args, k) for k in ("sample_rate", "stride", "stride_seconds", "num_frames", "image_size")},
        )
    finally:
        # Under torchrun / accelerate launch: close the gloo group before exiting. Left to interpreter shutdown, its
        # threads once aborted a finished run ("terminate called without an active exception", CI, 1 run in many).
        from accelerate import PartialState

        PartialState().destroy_process_group()
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
    from .pretraining.mask_preview import render_fasking_preview
    from .video.face_tracking import FaceTracker, iter_face_windows
    from .video.windows import iter_windows

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


def _reconstruct(args: argparse.Namespace) -> int:
    from .loading import load_marlin
    from .pretraining.face_parsing import FarlFaceParser
    from .pretraining.reconstruction import reconstruct_video
    from .video.decoding import frame_rate
    from .visualization import write_reconstruction_video

    model = load_marlin(args.model, "pretraining")  # checked before any video is read
    parser = FarlFaceParser(args.farl_model) if args.farl_model else None
    fps = frame_rate(args.video) / args.sample_rate  # the sampled frames at their real speed
    windows = reconstruct_video(
        args.video,
        model,
        strategy=args.mask_strategy,
        mask_ratio=args.mask_ratio,
        crop_face=args.crop_face,
        seed=args.seed,
        parser=parser,
        sample_rate=args.sample_rate,
    )
    config = model.config
    done = write_reconstruction_video(windows, args.out, fps, config.patch_size, config.tubelet_size)
    losses = [float(((w.reconstruction - w.original) ** 2).mean()) for w in done]
    print(
        f"wrote {args.out} ({len(done)} windows, panels: frames | masked input | reconstruction | face parts) and "
        f"{Path(args.out).with_suffix('.png')}; mean squared error per window: "
        + ", ".join(f"{loss:.4f}" for loss in losses)
    )
    return 0


def _app(args: argparse.Namespace) -> int:
    from .app import launch_app

    launch_app(model=args.model, host=args.host, port=args.port)
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


def _preparation_settings(args: argparse.Namespace):
    from .pretraining.preparation import PreparationSettings

    return PreparationSettings(
        crop_style=args.crop_style,
        frame_order=getattr(args, "frame_order", "numeric"),
        lossless=args.lossless,
        crf=args.crf,
        frame_folder_fps=getattr(args, "fps", None) or PreparationSettings.frame_folder_fps,
        farl_model=args.farl_model,
    )


def _split(args: argparse.Namespace, videos) -> tuple[dict, dict]:
    from .data.face_videos import person_disjoint_split
    from .data.youtube_faces import read_split_files

    if args.split_files:
        info = {"method": "files", "files": [str(Path(f).resolve()) for f in args.split_files]}
        return read_split_files(*args.split_files), info
    info = {"method": "person-disjoint", "seed": args.seed, "validation_fraction": args.validation_fraction}
    return person_disjoint_split(videos, args.validation_fraction, args.seed), info


def _prepare(args: argparse.Namespace) -> int:
    from .data.face_videos import list_face_videos
    from .data.youtube_faces import ytf_videos
    from .pretraining.preparation import prepare_corpus

    command = f"marlin {args.command}"
    settings = _preparation_settings(args)  # checked before any video is listed
    ytf = args.command == "prepare-ytf"
    videos = ytf_videos(args.root) if ytf else list_face_videos(args.inputs)
    split, split_info = _split(args, videos)
    summary = prepare_corpus(
        videos,
        args.out,
        settings,
        split,
        split_info,
        name="youtube_faces" if ytf else "face_videos",
        num_workers=args.num_workers,
        show_progress=not args.quiet,
        command=command,
    )
    if not summary.is_main_process:
        return 1 if summary.failed else 0
    print(
        f"{command}: {summary.done} done, {summary.skipped} already done, {summary.failed} failed; see "
        f"{Path(args.out) / 'manifest.jsonl'}",
        file=sys.stderr,
    )
    return 1 if summary.failed else 0


def _add_preparation_options(parser: argparse.ArgumentParser) -> None:
    from .data.face_videos import DEFAULT_SPLIT_SEED, DEFAULT_VALIDATION_FRACTION

    parser.add_argument("out", help="the prepared folder to write (re-running it resumes)")
    parser.add_argument(
        "--crop-style",
        choices=["tracker", "reference"],
        default="tracker",
        help="tracker: square of side max(w, h) around the tracked, smoothed face (default); reference: the paper "
        "code's square of side 2*int(max(w, h)/2) around each detector box",
    )
    parser.add_argument(
        "--split-files",
        nargs=2,
        metavar=("TRAIN_CSV", "VAL_CSV"),
        help="the paper's train_set.csv and val_set.csv (path,len rows); default: a seeded person-disjoint split",
    )
    parser.add_argument(
        "--validation-fraction",
        type=_positive(float, 0.99),
        default=DEFAULT_VALIDATION_FRACTION,
        help=f"without --split-files, fraction of the persons held out (default {DEFAULT_VALIDATION_FRACTION})",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SPLIT_SEED, help=f"seed of that split (default {DEFAULT_SPLIT_SEED})"
    )
    parser.add_argument("--lossless", action="store_true", help="lossless RGB H.264 clips (about 5-10x larger)")
    parser.add_argument("--crf", type=int, default=18, help="H.264 quality of the clips, lower is better (default 18)")
    parser.add_argument(
        "--farl-model",
        help="FaRL LaPa TorchScript file for the paper's parsing maps; default: the built-in landmark approximation",
    )
    parser.add_argument(
        "--num-workers", type=POSITIVE_INT, default=1, help="videos prepared at once, in processes (default 1)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_prepare)


def _push_dataset(args: argparse.Namespace) -> int:
    from .data.dataset_hub import export_for_hub, push_dataset

    if args.export_only:
        folder = export_for_hub(args.prepared, args.folder or Path(args.prepared) / "hub")
        print(f"wrote {folder}: Parquet shards and README.md; load it with datasets.load_dataset({str(folder)!r})")
        return 0
    if not args.repo_id:
        raise MarlinError("give the Hub REPO_ID to push to (or --export-only).")
    url = push_dataset(args.prepared, args.repo_id, folder=args.folder, private=not args.public)
    print(f"pushed to {url} ({'public' if args.public else 'private'})")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .extraction.onnx_export import export_onnx

    diff = export_onnx(args.model, args.output, dynamic_batch=not args.static_batch, opset=args.opset)
    checked = f"; onnxruntime matches PyTorch to {diff:.1e} (max abs diff, fp32)" if diff is not None else ""
    print(f"wrote {args.output} (ONNX, {'batch 2' if args.static_batch else 'any batch'}){checked}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.out, dtype=args.dtype)


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
        help="then upload the folder, model card included, to this Hub repo (made if missing); the card's examples "
        "load from it",
    )
    convert.add_argument("--private", action="store_true", help="with --push-to-hub: make the repo private")
    convert.add_argument("--token", help="with --push-to-hub: Hub token (default: HF_TOKEN or `hf auth login`)")
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
        "--all-faces",
        action="store_true",
        help="with --crop-face, every face seen in at least 16 sampled frames is its own subject: OUT/<name>.npz "
        "holds features_<id>, boxes_<id>, frame_indices_<id>; the manifest lists each subject's windows and span "
        "(default: one subject per video, OUT/<name>.npy)",
    )
    extract.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="encoder precision (default float32; bfloat16 is faster on CPUs with AVX-512 BF16 or AMX and on GPUs)",
    )
    extract.add_argument("--device", default=None, help="torch device (default: this process's accelerator or cpu)")
    extract.add_argument(
        "--batch-size",
        type=POSITIVE_INT,
        default=4,
        help="windows encoded together (default 4); a CPU encoder takes them 2 at a time, cheaper per clip there",
    )
    extract.add_argument(
        "--num-workers",
        type=_non_negative_int,
        default=None,
        help="processes decoding and cropping videos while the model encodes full batches packed from several "
        "videos; 0 does one video at a time (default: min(4, cores - 1), 0 on one or two cores; not with "
        "--all-faces or under ulimit -f)",
    )
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

    export = commands.add_parser(
        "export", help="the encoder as an ONNX file for onnxruntime and other runtimes (checked against PyTorch)"
    )
    export.add_argument("model", help="converted folder, Hub id or official .pt/.ckpt file")
    export.add_argument("output", help="the .onnx file to write")
    export.add_argument("--format", choices=["onnx"], default="onnx", help="output format (default onnx)")
    export.add_argument(
        "--static-batch", action="store_true", help="fix the batch at 2 (default: any batch size, a dynamic axis)"
    )
    export.add_argument("--opset", type=POSITIVE_INT, default=None, help="ONNX opset (default: the exporter's)")
    export.set_defaults(handler=_export)

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

    reconstruct = commands.add_parser(
        "reconstruct",
        help="what a pretrained MARLIN sees: mask each window, reconstruct it, write a side-by-side video and a PNG",
        description="Writes OUT (frames | masked input | reconstruction | face parts, window after window) and "
        "OUT with .png (a grid of frames, masked inputs and reconstructions). Needs the decoder: a .full.pt, a "
        "Lightning .ckpt or a folder converted from one.",
    )
    reconstruct.add_argument("video", help="a face video")
    reconstruct.add_argument(
        "--model", required=True, help="a .full.pt or .ckpt file, or a converted pretraining folder (with decoder)"
    )
    reconstruct.add_argument(
        "--out", default="reconstruction.mp4", help="video to write (default: reconstruction.mp4)"
    )
    reconstruct.add_argument(
        "--mask-strategy",
        default="fasking",
        choices=["fasking", "fasking_opp", "random", "tube", "frame"],
        help="masking strategy (default fasking: facial parts first, as the paper)",
    )
    reconstruct.add_argument(
        "--mask-ratio",
        type=_positive(float, 0.99),
        default=None,
        help="fraction of tokens masked, above 0 and at most 0.99 (default: the model config's, 0.9)",
    )
    reconstruct.add_argument("--crop-face", action="store_true", help="track the face and crop around it")
    reconstruct.add_argument(
        "--farl-model",
        help="FaRL LaPa TorchScript file for the paper's parsing; default: the built-in landmark approximation",
    )
    reconstruct.add_argument(
        "--sample-rate", type=POSITIVE_INT, default=SAMPLE_RATE, help=f"take every n-th frame (default {SAMPLE_RATE})"
    )
    reconstruct.add_argument("--seed", type=int, default=0, help="seed of the masks' random draws (default 0)")
    reconstruct.set_defaults(handler=_reconstruct)

    app = commands.add_parser(
        "app", help="a web app (Gradio): tracked faces, crops, Fasking mask, reconstruction and features of a video"
    )
    app.add_argument(
        "--model",
        help="a .full.pt/.ckpt file or a converted pretraining folder; default: randomly initialized ViT-B weights "
        "(labelled as such: the pictures then show the pipeline, not what MARLIN learnt)",
    )
    app.add_argument("--port", type=POSITIVE_INT, default=7860, help="port to serve on (default 7860)")
    app.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1; 0.0.0.0 for all)")
    app.set_defaults(handler=_app)

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

    ytf = commands.add_parser(
        "prepare-ytf",
        help="YouTube Faces frame folders -> face clips, landmarks and parsing maps, split train/validation",
        description="Tracks and crops the face of every frame_images_DB/<person>/<video>, writes OUT/clips/ and "
        "OUT/annotations/ (see docs/datasets.md); re-running skips the videos done.",
    )
    ytf.add_argument("root", help="the YouTube Faces folder (holding frame_images_DB/) or frame_images_DB itself")
    _add_preparation_options(ytf)
    ytf.add_argument(
        "--frame-order",
        choices=["numeric", "reference"],
        default="numeric",
        help="numeric: frame files by their numbers, 0.555.jpg before 0.1000.jpg (default); reference: sorted as "
        "strings, as the paper code did",
    )
    ytf.add_argument(
        "--fps", type=POSITIVE_FLOAT, default=None, help="frame rate stored for the frame folders (default 25)"
    )

    faces = commands.add_parser(
        "prepare-faces",
        help="any face videos -> face clips, landmarks and parsing maps, split train/validation",
        description="Videos under a folder get their path relative to it as id and its first folder as person.",
    )
    faces.add_argument("inputs", nargs="+", metavar="VIDEOS", help="video files, folders (recursive) or .txt lists")
    _add_preparation_options(faces)

    push = commands.add_parser(
        "push-dataset",
        help="a prepared folder -> Parquet shards and a dataset card, uploaded to a Hub dataset repo (private)",
    )
    push.add_argument("prepared", metavar="OUT", help="a folder prepare-ytf or prepare-faces wrote")
    push.add_argument("repo_id", metavar="REPO_ID", nargs="?", help="the Hub dataset repo (made if missing)")
    privacy = push.add_mutually_exclusive_group()
    privacy.add_argument("--private", action="store_true", help="a private repo (the default)")
    privacy.add_argument("--public", action="store_true", help="a public repo (refused for YouTube Faces)")
    push.add_argument("--folder", help="where the shards and card are written first (default: OUT/hub)")
    push.add_argument("--export-only", action="store_true", help="write the shards and card, upload nothing")
    push.set_defaults(handler=_push_dataset)

    demo = commands.add_parser(
        "demo", help="the whole pipeline on a face clip it renders itself (works offline, with random weights)"
    )
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default="float32", help="encoder precision (default float32)"
    )
    demo.set_defaults(handler=_demo)

    docs = commands.add_parser(
        "docs", help="serve this documentation site locally (mkdocs), or build a static copy with --build DIR"
    )
    docs.add_argument("--build", metavar="DIR", help="write the static site to DIR instead of serving it")
    docs.add_argument("--port", type=POSITIVE_INT, default=8000, help="port to serve on (default 8000)")
    docs.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    docs.set_defaults(handler=_docs)
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
