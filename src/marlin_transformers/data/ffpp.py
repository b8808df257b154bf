"""FaceForensics++ for deepfake detection: the official release layout and split files -> face clips, task `ffpp`.

FaceForensics++ (Rössler et al., ICCV 2019; github.com/ondyari/FaceForensics) holds 1,000 YouTube videos and, for
each of five face manipulation methods, 1,000 fakes made from pairs of them. Release layout read here, as its download
script writes it (`-c raw|c23|c40 -t videos`)::

    ROOT/original_sequences/youtube/<c>/videos/000.mp4 ... 999.mp4                      real
    ROOT/manipulated_sequences/<Method>/<c>/videos/000_003.mp4                           fake: target 000, source 003
        (<Method>: Deepfakes, Face2Face, FaceSwap, NeuralTextures, FaceShifter)
    ROOT/original_sequences/actors/<c>/videos/01__kitchen_pan.mp4                        optional (DFD): real
    ROOT/manipulated_sequences/DeepFakeDetection/<c>/videos/01_02__meeting_serious__YVGY8LOK.mp4   optional: fake

and the official split files (`dataset/splits/{train,val,test}.json` of the FaceForensics repository): lists of id
pairs, `[["953", "974"], ["012", "026"], ...]`, 360 / 70 / 70 pairs = 720 / 140 / 140 original videos. A pair's two
originals and its two fakes of every method (`953_974`, `974_953`) go to the pair's split, so no face is seen both in
training and in testing. The DeepFakeDetection videos (actors the split files do not name) form a held-out split
`dfd`, never trained on.

Prepared layout (`data.task_preparation`): `OUT/clips/<id>.mp4`; `OUT/ffpp/{train,val,test,dfd}.csv`, single-label,
classes `fake` and `real` (sorted: fake = 0, real = 1; AUC takes `fake` as the positive class, by name);
`OUT/videos.csv` (id, split, label, method, target, source, pair, compression); `OUT/preparation.json` (the
protocol below, split sizes, class balance per split and method, failed, unsplit and missing videos).
Ids: `original_000`, `Deepfakes_000_003`, `actors_01__kitchen_pan`, `DeepFakeDetection_01_02__meeting_serious__...`.

**Protocol.** The MARLIN paper reports FF++ AUC 0.8863 / 0.9305 / 0.9377 (ViT-S/B/L) but neither the paper nor its
code says which compression, frame or video level, or linear probe or fine-tuning: ControlNet/MARLIN holds configs
and loaders for CelebV-HQ and YouTube Faces only (`config/celebv_hq/*`, `dataset/celebv_hq.py`,
`dataset/youtube_face.py`), and ControlNet/MARLIN#26 (open since 2024-07-03, asking for the deepfake fine-tuning
scripts and whether anyone reached the paper's AUC) has no answer from the authors. We choose the field's common
protocol, explicitly (`FFPP_PROTOCOL`): c23, the official split, all manipulation methods against the originals,
fine-tuning, video-level AUC with the fake probability averaged over every window of a video.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..constants import MARLIN_CROP_SIZE
from ..exceptions import DatasetError
from .task_preparation import LabelTask, TaskPreparation, TaskVideo, load_task, ordered_splits, prepare_task

METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
COMPRESSIONS = ("c23", "c40", "raw")
SPLIT_FILES = ("train.json", "val.json", "test.json")
DFD_METHOD, DFD_ORIGINALS = "DeepFakeDetection", "actors"
DFD_SPLIT = "dfd"
TASK = LabelTask("ffpp", "single_label_classification", ("fake", "real"))
CLASS_NAMES = tuple(sorted(TASK.label_names))  # the index order of every ffpp table and of `load_ffpp`

FFPP_PROTOCOL = {
    "name": "FaceForensics++ video-level AUC, fine-tuned",
    "compression": "c23 by default (--compression)",
    "split": "the official split files (train/val/test.json: id pairs; 720/140/140 original videos), a pair's "
    "originals and fakes in its split; DeepFakeDetection and actors, when present, a held-out split 'dfd'",
    "classes": "fake (every manipulation method given) and real (the originals); AUC's positive class is 'fake'",
    "training": "fine-tuning (examples/finetune.py --task ffpp)",
    "evaluation": "video level: the fake probability averaged over every window of a video; AUC and accuracy",
    "paper": "AUC 0.8863 / 0.9305 / 0.9377 for ViT-S / ViT-B / ViT-L; compression, level and training are not "
    "stated in the paper code (ControlNet/MARLIN has configs and loaders for CelebV-HQ and YouTube Faces only) "
    "nor answered in ControlNet/MARLIN#26 (open since 2024-07-03): this is the common protocol, chosen",
    "sources": [
        "https://arxiv.org/abs/2211.06627",
        "https://github.com/ControlNet/MARLIN (config/, dataset/)",
        "https://github.com/ControlNet/MARLIN/issues/26",
        "https://github.com/ondyari/FaceForensics (dataset/splits/*.json, download script layout)",
    ],
}

_ORIGINAL = re.compile(r"^(\d{3})$")
_MANIPULATED = re.compile(r"^(\d{3})_(\d{3})$")
_ACTOR = re.compile(r"^(\d{2})__(.+)$")
_DFD = re.compile(r"^(\d{2})_(\d{2})__(.+)$")


def read_split_files(folder: str | os.PathLike) -> dict[str, list[tuple[str, str]]]:
    """The official split files of `folder` (`train.json`, `val.json`, `test.json`): {split: [(id, id), ...]}.

    Raises:
        DatasetError: a file missing or not a list of id pairs, or an id in two pairs or two splits.
    """
    folder = Path(folder)
    splits, seen = {}, {}
    for name in SPLIT_FILES:
        path = folder / name
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DatasetError(
                f"{path}: no FaceForensics++ split file; give --split-files the folder holding train.json, val.json "
                "and test.json (dataset/splits/ of github.com/ondyari/FaceForensics)",
                parameter="split_files",
            ) from None
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path}: not valid JSON ({error})", parameter="split_files") from None
        if not isinstance(raw, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(i, str) and _ORIGINAL.match(i) for i in p)
            for p in raw
        ):
            raise DatasetError(
                f'{path}: expected a list of id pairs like [["953", "974"], ...], as released', parameter="split_files"
            )
        split = name.removesuffix(".json")
        for pair in raw:
            for video in pair:
                if video in seen:
                    raise DatasetError(
                        f"{path}: video {video} is in {seen[video]} already; the split files must not share ids",
                        parameter="split_files",
                    )
                seen[video] = split
        splits[split] = [tuple(pair) for pair in raw]
    return splits


def find_split_files(root: Path, split_files: str | os.PathLike | None) -> Path:
    """`split_files`, else the first of ROOT/splits, ROOT/dataset/splits and ROOT holding train.json."""
    if split_files is not None:
        return Path(split_files)
    for folder in (root / "splits", root / "dataset" / "splits", root):
        if (folder / "train.json").is_file():
            return folder
    raise DatasetError(
        f"{root}: no split files found (ROOT/splits/train.json); give --split-files the folder holding train.json, "
        "val.json and test.json (dataset/splits/ of github.com/ondyari/FaceForensics)",
        parameter="split_files",
    )


def _videos_in(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.mp4")) if folder.is_dir() else []


def originals_folder(root: Path, compression: str) -> Path:
    """`root`'s folder of original videos at `compression`; a `DatasetError` naming it when it is not there."""
    if compression not in COMPRESSIONS:
        raise DatasetError(f"unknown compression {compression!r}: use one of {', '.join(COMPRESSIONS)}")
    originals = root / "original_sequences" / "youtube" / compression / "videos"
    if not originals.is_dir():
        raise DatasetError(
            f"{originals}: no such folder; pass the FaceForensics++ root (holding original_sequences/ and "
            f"manipulated_sequences/) downloaded with -c {compression} -t videos",
            parameter="root",
        )
    return originals


def expected_ids(split_pairs: dict[str, list[tuple[str, str]]], methods: Sequence[str]) -> list[str]:
    """The ids of the videos the split files imply: both originals of every pair and, per method, its two fakes."""
    pairs = [pair for split in split_pairs.values() for pair in split]
    expected = [f"original_{i}" for pair in pairs for i in pair]
    for method in methods:
        expected += [f"{method}_{a}_{b}" for a, b in pairs] + [f"{method}_{b}_{a}" for a, b in pairs]
    return expected


def ffpp_videos(
    root: str | os.PathLike,
    split_pairs: dict[str, list[tuple[str, str]]],
    compression: str = "c23",
    methods: Sequence[str] | None = None,
    dfd: bool = True,
) -> tuple[list[TaskVideo], dict]:
    """The FF++ videos under `root` (release layout in the module docstring), each with its split and labels.

    Args:
        split_pairs: `read_split_files`'s result.
        methods: manipulation methods to take as fakes; None: those of `METHODS` present under `root` (a method
            named here but absent is an error).
        dfd: take DeepFakeDetection and actors videos, when present, as the held-out split "dfd".

    Returns:
        (videos in split order then by id, a report: the methods taken, videos whose ids the split files do not
        name (`unsplit`, left out) and videos the split files imply that are not on disk (`missing`)).
    """
    root = Path(root)
    originals = originals_folder(root, compression)
    manipulated = root / "manipulated_sequences"
    if methods is None:
        methods = [m for m in METHODS if (manipulated / m / compression / "videos").is_dir()]
    else:
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise DatasetError(f"unknown method {unknown[0]!r}: use some of {', '.join(METHODS)}", parameter="methods")
        absent = [m for m in methods if not (manipulated / m / compression / "videos").is_dir()]
        if absent:
            raise DatasetError(
                f"{manipulated / absent[0] / compression / 'videos'}: no such folder; download {absent[0]} at "
                f"{compression}, or leave it out of --methods",
                parameter="methods",
            )
    if not methods:
        raise DatasetError(f"{manipulated}: no manipulation method at {compression}; download some", parameter="root")

    split_of, pair_of = {}, {}
    for split, pairs in split_pairs.items():
        for first, second in pairs:
            for video in (first, second):
                split_of[video], pair_of[video] = split, f"{first}_{second}"
    videos, unsplit = [], []

    def add(video_id: str, path: Path, split: str | None, label: str, method: str, target: str, source: str):
        if split is None:
            unsplit.append(str(path))
            return
        pair = pair_of.get(target, "") if split != DFD_SPLIT else ""
        fields = dict(label=label, method=method, target=target, source=source, pair=pair, compression=compression)
        videos.append(TaskVideo(video_id, path, split, {TASK.name: label}, fields))

    for path in _videos_in(originals):
        match = _ORIGINAL.match(path.stem)
        target = match.group(1) if match else path.stem
        add(f"original_{path.stem}", path, split_of.get(target) if match else None, "real", "original", target, "")
    for method in methods:
        for path in _videos_in(manipulated / method / compression / "videos"):
            match = _MANIPULATED.match(path.stem)
            target, source = match.groups() if match else (path.stem, "")
            split = split_of.get(target) if match and split_of.get(target) == split_of.get(source) else None
            add(f"{method}_{path.stem}", path, split, "fake", method, target, source)
    if dfd:
        for path in _videos_in(root / "original_sequences" / DFD_ORIGINALS / compression / "videos"):
            match = _ACTOR.match(path.stem)
            target = match.group(1) if match else ""
            add(f"{DFD_ORIGINALS}_{path.stem}", path, DFD_SPLIT if match else None, "real", DFD_ORIGINALS, target, "")
        for path in _videos_in(manipulated / DFD_METHOD / compression / "videos"):
            match = _DFD.match(path.stem)
            target, source = match.groups()[:2] if match else ("", "")
            add(f"{DFD_METHOD}_{path.stem}", path, DFD_SPLIT if match else None, "fake", DFD_METHOD, target, source)

    missing = sorted(set(expected_ids(split_pairs, methods)) - {v.video_id for v in videos})
    order = {split: i for i, split in enumerate(ordered_splits(v.split for v in videos))}
    videos.sort(key=lambda v: (order[v.split], v.video_id))
    return videos, {"methods": list(methods), "unsplit": unsplit, "missing": missing}


def prepare_ffpp(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    compression: str = "c23",
    methods: Sequence[str] | None = None,
    split_files: str | os.PathLike | None = None,
    dfd: bool = True,
    crop: str = "face",
    size: int = MARLIN_CROP_SIZE,
    num_workers: int = 1,
    device: str | None = None,
    progress: bool = True,
) -> TaskPreparation:
    """Prepare FaceForensics++ for task `ffpp` (layouts and protocol in the module docstring).

    A `data.task_preparation.prepare_task` job: resumes after a kill, one error line per video that cannot be
    decoded (left out of the tables, listed in `preparation.json` under "failed").

    Args:
        root: the FaceForensics++ folder (original_sequences/, manipulated_sequences/).
        out_dir: the prepared folder (re-running it resumes).
        compression: "c23" (the protocol's), "c40" or "raw".
        methods: the manipulation methods taken as fakes; None: every one of `METHODS` present.
        split_files: the folder holding train.json, val.json and test.json; None: ROOT/splits, ROOT/dataset/splits
            or ROOT.
        dfd: DeepFakeDetection and actors videos, when present, as the held-out split "dfd".
        crop: "face" (MTCNN tracking, square of side max(w, h)) or "reference" (the paper code's square per frame).
        num_workers: videos cropped at once, in threads, each with its own MTCNN.
        device: where MTCNN runs ("cuda"); default the CPU.

    Returns:
        `TaskPreparation`; its `balance["ffpp"]` is {split: {"fake": n, "real": n}}.
    """
    root = Path(root)
    originals_folder(root, compression)  # the layout first: a wrong ROOT is said as such, not as missing split files
    pairs = read_split_files(find_split_files(root, split_files))
    videos, found = ffpp_videos(root, pairs, compression, methods, dfd)
    if not videos:
        raise DatasetError(f"{root}: no video of the split files found at {compression}", parameter="root")
    protocol = {
        **FFPP_PROTOCOL,
        "compression": compression,
        "methods": found["methods"],
        "split_files": {s: len(p) for s, p in pairs.items()},
        "unsplit": found["unsplit"],
        "missing": found["missing"],
    }
    return prepare_task(
        videos,
        out_dir,
        [TASK],
        protocol,
        "marlin prepare-ffpp",
        crop=crop,
        size=size,
        num_workers=num_workers,
        device=device,
        balance_by=("method",),
        progress=progress,
    )


def describe_balance(balance: dict) -> list[str]:
    """One line per split of `TaskPreparation.balance["ffpp"]`: "train: 720 real, 2880 fake (1 : 4.0)"."""
    lines = []
    for split, counts in balance.items():
        real, fake = counts.get("real", 0), counts.get("fake", 0)
        ratio = f" (1 : {fake / real:.1f})" if real else ""
        lines.append(f"{split}: {real} real, {fake} fake{ratio}")
    return lines


def load_ffpp(prepared_dir: str | os.PathLike):
    """The prepared FF++ folder as a `datasets.DatasetDict`: train, val, test (and dfd when prepared).

    Rows: `path` (absolute clip path), `labels` (`ClassLabel(names=["fake", "real"])` in every split, so `fake` is 0
    even in a split of reals only).
    """
    return load_task(prepared_dir, TASK.name, TASK.problem_type, CLASS_NAMES)
