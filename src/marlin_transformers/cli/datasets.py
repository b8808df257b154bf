"""Data set commands: `marlin prepare-celebvhq`, `prepare-ffpp`, `prepare-ravdess`, `prepare-mosei`, `prepare-ytf`,
`prepare-faces` and `push-dataset`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..exceptions import MarlinError
from .numbers import FRACTION, POSITIVE_FLOAT, POSITIVE_INT
from .options import Command, add_deprecated_alias, add_farl_model, add_option, command, job_exit_status

COMMANDS: dict[str, Command] = {}
# The library calls whose defaults prepare-ytf and prepare-faces show.
PREPARATION = ("pretraining.preparation:PreparationSettings", "pretraining.preparation:prepare_corpus")
PREPARATION += ("data.face_videos:person_disjoint_split",)


@command(COMMANDS, "prepare-celebvhq", defaults=("data.celebv_hq:prepare_celebvhq",), size="image_size")
def _celebvhq_options(celebvhq: argparse.ArgumentParser, defaults: dict) -> None:
    """split CelebV-HQ (sorted, seeded 80/10/10), crop its clips to squares and write labels CSVs"""
    celebvhq.add_argument("root", help="the CelebV-HQ folder (celebvhq_info.json, downloaded/)")
    celebvhq.add_argument("out", help="where the prepared layout goes")
    add_option(
        celebvhq,
        "--crop",
        defaults,
        "bbox: the release's box crop of full frames (default); resize: clips already cropped by the "
        "release script; face: MTCNN tracking, square around the face; reference: as the paper code, a detector box "
        "per frame (MTCNN for its RetinaFace), no smoothing, square of side 2*int(max(w,h)/2); none: label CSVs only",
        choices=["bbox", "resize", "face", "reference", "none"],
    )
    add_option(
        celebvhq, "--image-size", defaults, "side of the square crops (default {default})", "size", type=POSITIVE_INT
    )
    add_deprecated_alias(celebvhq, "--size", new="--image-size")
    add_option(celebvhq, "--seed", defaults, "seed of the 80/10/10 split (default {default})", type=int)
    add_option(
        celebvhq, "--num-workers", defaults, "videos cropped in parallel (default {default})", type=POSITIVE_INT
    )
    celebvhq.set_defaults(handler=_prepare_celebvhq)


def _prepare_celebvhq(args: argparse.Namespace) -> int:
    from ..data.celebv_hq import prepare_celebvhq

    crop = None if args.crop == "none" else args.crop
    split = prepare_celebvhq(
        args.root, args.out, crop=crop, size=args.image_size, seed=args.seed, num_workers=args.num_workers
    )
    counts = ", ".join(f"{name} {len(ids)}" for name, ids in split.items())
    print(f"prepared CelebV-HQ in {args.out}: {counts} clips; labels CSVs per task and split, see split.json")
    return 0


@command(COMMANDS, "prepare-ffpp", defaults=("data.ffpp:prepare_ffpp",), size="image_size")
def _ffpp_options(ffpp: argparse.ArgumentParser, defaults: dict) -> None:
    """FaceForensics++ (official layout and split files) -> face clips and the ffpp labels tables

    Tracks and crops the face of every original and manipulated video with MTCNN, writes OUT/clips/,
    OUT/ffpp/{train,val,test}.csv (fake/real; DeepFakeDetection and actors, when present, as a held-out dfd.csv),
    OUT/videos.csv and OUT/preparation.json (protocol, class balance); re-running resumes. See docs/tasks.md.
    """
    from ..data.ffpp import COMPRESSIONS, METHODS

    ffpp.add_argument("root", help="the FaceForensics++ folder (original_sequences/, manipulated_sequences/)")
    ffpp.add_argument("out", help="the prepared folder to write (re-running it resumes)")
    add_option(ffpp, "--compression", defaults, "which release to read (default {default})", choices=COMPRESSIONS)
    ffpp.add_argument(
        "--methods",
        type=lambda text: [m.strip() for m in text.split(",") if m.strip()],
        help=f"manipulation methods taken as fakes, comma-separated, of {','.join(METHODS)} "
        "(default: every one present)",
    )
    ffpp.add_argument(
        "--split-files",
        metavar="DIR",
        help="the folder holding the official train.json, val.json, test.json (default: ROOT/splits, "
        "ROOT/dataset/splits or ROOT)",
    )
    _task_options(ffpp, defaults)
    ffpp.set_defaults(handler=_prepare_ffpp)


def _prepare_ffpp(args: argparse.Namespace) -> int:
    from ..data.ffpp import describe_balance, prepare_ffpp

    result = prepare_ffpp(
        args.root,
        args.out,
        compression=args.compression,
        methods=args.methods,
        split_files=args.split_files,
        **_task_settings(args),
    )
    if result.summary.is_main_process:
        print(f"prepared FaceForensics++ in {args.out} (task ffpp); videos per split, class balance:")
        for line in describe_balance(result.balance["ffpp"]):
            print(f"  {line}")
    return job_exit_status(result.summary, "marlin prepare-ffpp", args.out)


def _task_options(parser: argparse.ArgumentParser, defaults: dict) -> None:
    """The face-clip options the task preparers share (`data.task_preparation`)."""
    add_option(
        parser,
        "--crop",
        defaults,
        "face: MTCNN tracking, square of side max(w, h) around the smoothed face (default {default}); reference: as "
        "the paper code, a detector box per frame, no smoothing",
        choices=["face", "reference"],
    )
    add_option(
        parser, "--image-size", defaults, "side of the square clips (default {default})", "size", type=POSITIVE_INT
    )
    add_option(
        parser,
        "--num-workers",
        defaults,
        "videos cropped at once, in threads, each with its own MTCNN (default {default})",
        type=POSITIVE_INT,
    )
    parser.add_argument("--device", default=None, help="torch device MTCNN runs on, e.g. cuda (default: cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _task_settings(args: argparse.Namespace) -> dict:
    """The library's arguments for the options of `_task_options`."""
    return dict(
        crop=args.crop,
        size=args.image_size,
        num_workers=args.num_workers,
        device=args.device,
        progress=not args.quiet,
    )


# --modality choices -> the library's modalities.
RAVDESS_MODALITIES = {"video-only": ("video-only",), "full-av": ("full-av",), "both": ("full-av", "video-only")}


@command(COMMANDS, "prepare-ravdess", defaults=("data.ravdess:prepare_ravdess",), size="image_size")
def _ravdess_options(ravdess: argparse.ArgumentParser, defaults: dict) -> None:
    """RAVDESS Actor_XX/*.mp4 -> face clips and the 8-emotion tables of an actor-disjoint split

    Decodes every official file name (modality, channel, emotion, intensity, statement, repetition, actor, sex into
    OUT/videos.csv); audio-only files are skipped. Re-running resumes. See docs/tasks.md.
    """
    from ..data.ravdess import CHANNEL_CHOICES, DEFAULT_MODALITIES, PROTOCOLS

    ravdess.add_argument("root", help="the RAVDESS folder holding Actor_01 ... Actor_24")
    ravdess.add_argument("out", help="the prepared folder to write (re-running it resumes)")
    add_option(
        ravdess,
        "--protocol",
        defaults,
        "actor-disjoint folds: chumachenko5 (Chumachenko et al. ICPR 2022, 4 test / 4 val actors a fold; default "
        "{default}), luna5 (Luna-Jimenez et al. 2022), six-fold (HiCMAE); sources in preparation.json",
        choices=list(PROTOCOLS),
    )
    add_option(ravdess, "--fold", defaults, "the fold, from 0 (default {default}: test actors 1-4)", type=int)
    ravdess.add_argument(
        "--modality",
        choices=list(RAVDESS_MODALITIES),
        default=next(name for name, chosen in RAVDESS_MODALITIES.items() if chosen == tuple(DEFAULT_MODALITIES)),
        help="video-only, full-av or both (default %(default)s): the two hold the same frames, full-AV with its sound",
    )
    add_option(ravdess, "--channel", defaults, "speech, song or both (default {default})", choices=CHANNEL_CHOICES)
    _task_options(ravdess, defaults)
    ravdess.set_defaults(handler=_prepare_ravdess)


def _prepare_ravdess(args: argparse.Namespace) -> int:
    from ..data.ravdess import prepare_ravdess

    result = prepare_ravdess(
        args.root,
        args.out,
        protocol=args.protocol,
        fold=args.fold,
        modalities=RAVDESS_MODALITIES[args.modality],
        channel=args.channel,
        **_task_settings(args),
    )
    return _task_prepared("prepare-ravdess", "RAVDESS", args.out, result)


def _task_prepared(command: str, name: str, out: str, result) -> int:
    if result.summary.is_main_process:
        counts = ", ".join(f"{split} {len(ids)}" for split, ids in result.splits.items())
        print(f"prepared {name} in {out}: {counts} clips; tables per task and split, see preparation.json")
    return job_exit_status(result.summary, f"marlin {command}", out)


@command(COMMANDS, "prepare-mosei", defaults=("data.mosei:prepare_mosei",), size="image_size")
def _mosei_options(mosei: argparse.ArgumentParser, defaults: dict) -> None:
    """CMU-MOSEI videos and CMU_MOSEI_Labels.csd -> face clips, sentiment and emotion tables of the standard folds

    Reads the labels .csd with h5py (no SDK needed); one clip per labelled segment (<video>_<index>). Re-running
    resumes. See docs/tasks.md.
    """
    from ..data.mosei import SOURCES

    mosei.add_argument("root", help="the CMU-MOSEI folder (videos at any depth, e.g. Videos/Full/Combined/)")
    mosei.add_argument("out", help="the prepared folder to write (re-running it resumes)")
    mosei.add_argument("--labels", metavar="FILE.csd", help="CMU_MOSEI_Labels.csd (default: the one found under ROOT)")
    mosei.add_argument(
        "--folds",
        metavar="FILE",
        help="train/valid/test video ids: JSON or the SDK's cmu_mosei_std_folds.py (default: its standard folds)",
    )
    add_option(
        mosei,
        "--source",
        defaults,
        "full: full videos cut by the labels' intervals (default {default}); segmented: <video>_<index>.mp4 clips "
        "used as they are",
        choices=SOURCES,
    )
    _task_options(mosei, defaults)
    mosei.set_defaults(handler=_prepare_mosei)


def _prepare_mosei(args: argparse.Namespace) -> int:
    from ..data.mosei import prepare_mosei

    result = prepare_mosei(
        args.root,
        args.out,
        labels=args.labels,
        folds=args.folds,
        source=args.source,
        **_task_settings(args),
    )
    return _task_prepared("prepare-mosei", "CMU-MOSEI", args.out, result)


def _split(args: argparse.Namespace, videos) -> tuple[dict, dict]:
    from ..data.face_videos import person_disjoint_split
    from ..data.youtube_faces import read_split_files

    if args.split_files:
        info = {"method": "files", "files": [str(Path(f).resolve()) for f in args.split_files]}
        return read_split_files(*args.split_files), info
    info = {"method": "person-disjoint", "seed": args.seed, "validation_fraction": args.validation_fraction}
    return person_disjoint_split(videos, args.validation_fraction, args.seed), info


def _prepare(args: argparse.Namespace) -> int:
    from ..data.face_videos import list_face_videos
    from ..data.youtube_faces import ytf_videos
    from ..pretraining.preparation import PreparationSettings, prepare_corpus

    command = f"marlin {args.command}"
    names = ("crop_style", "frame_order", "lossless", "crf", "frame_folder_fps", "farl_model")
    settings = PreparationSettings(
        **{name: getattr(args, name) for name in names}
    )  # checked before any video is listed
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
    return job_exit_status(summary, command, args.out)


def _preparation_options(parser: argparse.ArgumentParser, defaults: dict) -> None:
    """The options prepare-ytf and prepare-faces share."""
    from ..pretraining.preparation import CROP_STYLES

    parser.add_argument("out", help="the prepared folder to write (re-running it resumes)")
    add_option(
        parser,
        "--crop-style",
        defaults,
        "tracker: square of side max(w, h) around the tracked, smoothed face (default); reference: the "
        "paper code's square of side 2*int(max(w, h)/2) around each detector box",
        choices=CROP_STYLES,
    )
    parser.add_argument(
        "--split-files",
        nargs=2,
        metavar=("TRAIN_CSV", "VAL_CSV"),
        help="the paper's train_set.csv and val_set.csv (path,len rows); default: a seeded person-disjoint split",
    )
    held_out = "without --split-files, fraction of the persons held out (default {default})"
    add_option(parser, "--validation-fraction", defaults, held_out, type=FRACTION)
    add_option(parser, "--seed", defaults, "seed of that split (default {default})", type=int)
    add_option(parser, "--lossless", defaults, "lossless RGB H.264 clips (about 5-10x larger)")
    add_option(parser, "--crf", defaults, "H.264 quality of the clips, lower is better (default {default})", type=int)
    add_farl_model(parser)
    add_option(
        parser,
        "--num-workers",
        defaults,
        "videos prepared at once, in processes (default {default})",
        type=POSITIVE_INT,
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_prepare, frame_order=defaults["frame_order"])
    parser.set_defaults(frame_folder_fps=defaults["frame_folder_fps"])


@command(COMMANDS, "prepare-ytf", defaults=PREPARATION)
def _ytf_options(ytf: argparse.ArgumentParser, defaults: dict) -> None:
    """YouTube Faces frame folders -> face clips, landmarks and parsing maps, split train/validation

    Tracks and crops the face of every frame_images_DB/<person>/<video>, writes OUT/clips/ and OUT/annotations/ (see
    docs/datasets.md); re-running skips the videos done.
    """
    from ..video.decoding import FRAME_ORDERS

    ytf.add_argument("root", help="the YouTube Faces folder (holding frame_images_DB/) or frame_images_DB itself")
    _preparation_options(ytf, defaults)
    add_option(
        ytf,
        "--frame-order",
        defaults,
        "numeric: frame files by their numbers, 0.555.jpg before 0.1000.jpg (default); reference: sorted "
        "as strings, as the paper code did",
        choices=list(FRAME_ORDERS),
    )
    add_option(
        ytf,
        "--fps",
        defaults,
        "frame rate stored for the frame folders (default {default})",
        parameter="frame_folder_fps",
        dest="frame_folder_fps",
        type=POSITIVE_FLOAT,
    )


@command(COMMANDS, "prepare-faces", defaults=PREPARATION)
def _faces_options(faces: argparse.ArgumentParser, defaults: dict) -> None:
    """any face videos -> face clips, landmarks and parsing maps, split train/validation

    Videos under a folder get their path relative to it as id and its first folder as person.
    """
    faces.add_argument("inputs", nargs="+", metavar="VIDEOS", help="video files, folders (recursive) or .txt lists")
    _preparation_options(faces, defaults)


def _push_dataset(args: argparse.Namespace) -> int:
    from ..data.dataset_hub import export_for_hub, push_dataset

    if args.export_only:
        folder = export_for_hub(args.prepared, args.folder or Path(args.prepared) / "hub")
        print(f"wrote {folder}: Parquet shards and README.md; load it with datasets.load_dataset({str(folder)!r})")
        return 0
    if not args.repo_id:
        raise MarlinError("give the Hub REPO_ID to push to (or --export-only).")
    url = push_dataset(args.prepared, args.repo_id, folder=args.folder, private=not args.public)
    print(f"pushed to {url} ({'public' if args.public else 'private'})")
    return 0


@command(COMMANDS, "push-dataset")
def _push_options(push: argparse.ArgumentParser, defaults: dict) -> None:
    """a prepared folder -> Parquet shards and a dataset card, uploaded to a Hub dataset repo (private)"""
    push.add_argument("prepared", metavar="OUT", help="a folder prepare-ytf or prepare-faces wrote")
    push.add_argument("repo_id", metavar="REPO_ID", nargs="?", help="the Hub dataset repo (made if missing)")
    privacy = push.add_mutually_exclusive_group()
    privacy.add_argument("--private", action="store_true", help="a private repo (the default)")
    privacy.add_argument("--public", action="store_true", help="a public repo (refused for YouTube Faces)")
    push.add_argument("--folder", help="where the shards and card are written first (default: OUT/hub)")
    push.add_argument("--export-only", action="store_true", help="write the shards and card, upload nothing")
    push.set_defaults(handler=_push_dataset)
