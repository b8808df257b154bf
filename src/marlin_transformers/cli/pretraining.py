"""What pretraining sees: `marlin show-mask` (a clip's face parsing and Fasking mask) and `marlin reconstruct`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .numbers import FRACTION, POSITIVE_INT
from .options import Command, add_deprecated_alias, add_farl_model, add_option, command

COMMANDS: dict[str, Command] = {}
# The library calls whose defaults show-mask shows: the picture, the windows, the FaRL parser.
SHOW_MASK = ("pretraining.mask_preview:render_fasking_preview", "video.windows:iter_windows")
SHOW_MASK += ("pretraining.face_parsing:FarlFaceParser",)


def _show_mask(args: argparse.Namespace) -> int:
    import numpy as np

    from ..configuration_marlin import MarlinConfig
    from ..pretraining.face_parsing import FarlFaceParser, LandmarkFaceParser
    from ..pretraining.mask_preview import render_fasking_preview
    from ..video.face_tracking import FaceTracker, iter_face_windows
    from ..video.windows import iter_windows

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
        strategy=args.mask_strategy,
        seed=args.seed,
        num_shown=args.frames,
        frame_indices=list(window.frame_indices),
    )
    print(f"wrote {args.out}: frames {window.frame_indices[0]}-{window.frame_indices[-1]} of {args.video}")
    return 0


@command(COMMANDS, "show-mask", defaults=SHOW_MASK, strategy="mask_strategy")
def _show_mask_options(show_mask: argparse.ArgumentParser, defaults: dict) -> None:
    """picture of a clip's face parsing and its Fasking mask (first window of a video)"""
    from ..configuration_marlin import MASKING_STRATEGIES
    from ..constants import FARL_CHANNEL_ORDERS

    show_mask.add_argument("video", help="a face video; its first window is shown")
    show_mask.add_argument("--out", default="mask.png", help="PNG to write (default: mask.png)")
    add_farl_model(show_mask)
    add_option(
        show_mask,
        "--farl-channel-order",
        defaults,
        "channels fed to --farl-model: rgb (default, FaRL's own: right maps) or bgr (the paper code's: the "
        "maps the released models were pretrained with)",
        parameter="channel_order",
        choices=FARL_CHANNEL_ORDERS,
    )
    add_option(
        show_mask,
        "--mask-strategy",
        defaults,
        "masking strategy (default {default}: facial parts first, as the paper)",
        parameter="strategy",
        choices=MASKING_STRATEGIES,
    )
    add_deprecated_alias(show_mask, "--strategy", new="--mask-strategy")
    show_mask.add_argument(
        "--model", help="converted folder or Hub id whose config sets clip length, crop size, tubelets and mask ratio"
    )
    show_mask.add_argument(
        "--mask-ratio", type=float, default=None, help="fraction of tokens masked (default: the config's, 0.9)"
    )
    add_option(show_mask, "--sample-rate", defaults, "take every n-th frame (default {default})", type=POSITIVE_INT)
    add_option(
        show_mask, "--frames", defaults, "frames shown (default {default})", parameter="num_shown", type=POSITIVE_INT
    )
    add_option(show_mask, "--seed", defaults, "seed of the mask's random draws (default {default})", type=int)
    show_mask.set_defaults(handler=_show_mask)


def _reconstruct(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..loading import load_marlin
    from ..pretraining.face_parsing import FarlFaceParser
    from ..pretraining.reconstruction import reconstruct_video
    from ..video.cropping import warn_if_squeezed
    from ..video.decoding import frame_rate, frame_size
    from ..visualization import write_reconstruction_video

    model = load_marlin(args.model, "pretraining")  # checked before any video is read
    if not args.crop_face:
        warn_if_squeezed(args.video, *frame_size(args.video), model.config.image_size)
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
    windows = tqdm(windows, desc="reconstructing", unit="window")  # as `marlin extract` counts them
    done = write_reconstruction_video(windows, args.out, fps, config.patch_size, config.tubelet_size)
    losses = [float(((w.reconstruction - w.original) ** 2).mean()) for w in done]
    print(
        f"wrote {args.out} ({len(done)} windows, panels: input | masked | reconstruction | face parts) and "
        f"{Path(args.out).with_suffix('.png')}; mean squared error per window: "
        + ", ".join(f"{loss:.4f}" for loss in losses)
    )
    return 0


@command(COMMANDS, "reconstruct", defaults=("pretraining.reconstruction:reconstruct_video",), strategy="mask_strategy")
def _reconstruct_options(reconstruct: argparse.ArgumentParser, defaults: dict) -> None:
    """what a pretrained MARLIN sees: mask each window, reconstruct it, write a side-by-side video and a PNG

    Writes OUT (input | masked | reconstruction | face parts, titled, window after window, each frame captioned with
    its window, frame index and time) and OUT with .png (per window: input, masked and reconstruction rows of a few
    frames, labelled). Needs the decoder: a .full.pt, a Lightning .ckpt or a folder
    converted from one.
    """
    from ..configuration_marlin import MASKING_STRATEGIES

    reconstruct.add_argument("video", help="a face video")
    reconstruct.add_argument(
        "--model", required=True, help="a .full.pt or .ckpt file, or a converted pretraining folder (with decoder)"
    )
    reconstruct.add_argument(
        "--out", default="reconstruction.mp4", help="video to write (default: reconstruction.mp4)"
    )
    add_option(
        reconstruct,
        "--mask-strategy",
        defaults,
        "masking strategy (default {default}: facial parts first, as the paper)",
        parameter="strategy",
        choices=MASKING_STRATEGIES,
    )
    add_option(
        reconstruct,
        "--mask-ratio",
        defaults,
        "fraction of tokens masked, above 0 and at most 0.99 (default: the model config's, 0.9)",
        type=FRACTION,
    )
    add_option(reconstruct, "--crop-face", defaults, "track the face and crop around it")
    add_farl_model(reconstruct)
    add_option(reconstruct, "--sample-rate", defaults, "take every n-th frame (default {default})", type=POSITIVE_INT)
    add_option(reconstruct, "--seed", defaults, "seed of the masks' random draws (default {default})", type=int)
    reconstruct.set_defaults(handler=_reconstruct)
