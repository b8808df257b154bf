"""`marlin extract`: features of every window of videos, over a resumable job folder."""

from __future__ import annotations

import argparse
import sys
import time

from ..exceptions import MarlinError
from .numbers import POSITIVE_FLOAT, POSITIVE_INT, non_negative_int, positive
from .options import Command, add_option, command, job_exit_status

COMMANDS: dict[str, Command] = {}


def _extract(args: argparse.Namespace) -> int:
    from ..extraction.extractor import check_device
    from ..extraction.job import extract_corpus
    from ..extraction.pipeline import default_num_workers

    if args.device:  # before any input is looked at
        check_device(args.device)

    if args.all_faces and not args.crop_face:
        raise MarlinError("--all-faces follows faces: use it with --crop-face.")
    started = time.perf_counter()
    try:
        summary = extract_corpus(
            args.inputs,
            args.out,
            args.model,
            device=args.device,
            batch_size=args.batch_size,
            compile=args.compile,
            num_workers=default_num_workers(args.device) if args.num_workers is None else args.num_workers,
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
    if args.timings and summary.is_main_process:
        say_timings(summary.timings, time.perf_counter() - started)
    return job_exit_status(summary, "marlin extract", args.out)


def say_timings(timings: dict[str, float], job_seconds: float) -> None:
    """`--timings`: one line of seconds by stage (`JobSummary.timings`) and of the whole job (model load included,
    start-up not: a caller timing the command gets start-up as its wall time less `job`)."""
    stages = ", ".join(f"{stage} {seconds:.3f}" for stage, seconds in timings.items())
    print(f"marlin extract: seconds: {stages}, job {job_seconds:.3f}", file=sys.stderr)


def _encoding_options(extract: argparse.ArgumentParser, defaults: dict) -> None:
    """The options of how clips are encoded: precision, device, batches, workers, clip shape."""
    from ..extraction.extractor import DTYPES

    defaults["dtype"] = next(name for name, dtype in DTYPES.items() if dtype == defaults["dtype"])
    add_option(
        extract,
        "--dtype",
        defaults,
        "encoder precision (default {default}; bfloat16 is faster on CPUs with AVX-512 BF16 or AMX and on GPUs)",
        choices=list(DTYPES),
    )
    extract.add_argument("--device", default=None, help="torch device (default: this process's accelerator or cpu)")
    add_option(
        extract,
        "--batch-size",
        defaults,
        "windows encoded together (default {default}); a CPU encoder takes them 2 at a time, cheaper per clip there",
        type=POSITIVE_INT,
    )
    extract.add_argument(
        "--num-workers",
        type=non_negative_int,
        default=None,
        help="processes decoding and cropping videos while the model encodes full batches packed from several "
        "videos; 0 does one video at a time (default: on a CPU min(4, cores - 1), 0 on one or two cores; with a "
        "GPU enough to feed it, at most cores - 1, their faces detected together in one more process on the GPU; "
        "not with --all-faces or under ulimit -f)",
    )
    add_option(
        extract,
        "--num-frames",
        defaults,
        "frames per window, a multiple of 2 (default: the model's, 16; others resample its position table)",
        type=POSITIVE_INT,
    )
    add_option(
        extract,
        "--image-size",
        defaults,
        "frame side in pixels, a multiple of 16 (default: the model's, 224; others resample its position table)",
        type=POSITIVE_INT,
    )
    add_option(
        extract,
        "--compile",
        defaults,
        "run the encoder through torch.compile (faster per clip after a one-off compile of each batch shape)",
    )
    extract.add_argument("--quiet", action="store_true", help="no progress bars")
    extract.add_argument(
        "--timings",
        action="store_true",
        help="say where the time went after the summary: seconds of model load, decode, detection, tracking, crop, "
        "process, encode and write (with --num-workers, the workers' seconds beside the encoder), and the whole job",
    )


@command(
    COMMANDS, "extract", defaults=("extraction.extractor:MarlinFeatureExtractor",), out_dir="out", on_no_face="no_face"
)
def _extract_options(extract: argparse.ArgumentParser, defaults: dict) -> None:
    """features of every 16-frame window of videos (files, folders, or text files listing paths)

    Writes OUT/<name>.npy per video and one JSON line per video to OUT/manifest.jsonl; re-running skips videos
    already done. Under `accelerate launch` the inputs are shared between the processes.
    """
    extract.add_argument("inputs", nargs="+", metavar="INPUT", help="video file, folder (recursive) or .txt list")
    extract.add_argument(
        "--model",
        required=True,
        help="converted folder, Hub id (marlin_vit_base_ytf = ControlNet/marlin_vit_base_ytf) or official "
        ".pt/.ckpt file (converted on the fly)",
    )
    extract.add_argument("--out", required=True, help="output folder")
    add_option(extract, "--crop-face", defaults, "track the face and crop around it")
    add_option(
        extract,
        "--no-face",
        defaults,
        "with --crop-face, a video without any face is an error (default) or gets a centre crop",
        parameter="on_no_face",
        choices=["error", "centre"],
    )
    add_option(
        extract,
        "--face-margin",
        defaults,
        "crop side / face box side, above 0 and at most 4 (default {default})",
        type=positive(float, 4.0),
    )
    add_option(extract, "--sample-rate", defaults, "take every n-th frame (default {default})", type=POSITIVE_INT)
    add_option(
        extract,
        "--stride",
        defaults,
        "next window after this many sampled frames (default {default})",
        type=POSITIVE_INT,
    )
    add_option(extract, "--stride-seconds", defaults, "window spacing in seconds instead", type=POSITIVE_FLOAT)
    add_option(extract, "--keep-seq", defaults, "save every token (windows x 1568 x hidden)")
    add_option(
        extract,
        "--all-faces",
        defaults,
        "with --crop-face, every face seen in at least 16 sampled frames is its own subject: OUT/<name>.npz "
        "holds features_<id>, boxes_<id>, frame_indices_<id>; the manifest lists each subject's windows and span "
        "(default: one subject per video, OUT/<name>.npy)",
    )
    _encoding_options(extract, defaults)
    extract.set_defaults(handler=_extract)
