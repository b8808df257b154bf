"""RAVDESS for emotion recognition: file names decoded, actor-disjoint folds, face clips, labels tables.

The Ryerson Audio-Visual Database of Emotional Speech and Song (Livingstone and Russo, PLoS ONE 2018; Zenodo record
1188976) has 24 actors (odd numbers male, even female) saying two statements in 8 emotions. Every file is named
`MM-VV-EE-II-SS-RR-AA.<ext>`:

    MM modality        01 full-AV, 02 video-only (the same recording without its sound), 03 audio-only (.wav)
    VV vocal channel   01 speech, 02 song
    EE emotion         01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised
    II intensity       01 normal, 02 strong (neutral has no strong intensity)
    SS statement       01 "Kids are talking by the door", 02 "Dogs are sitting by the door"
    RR repetition      01, 02
    AA actor           01 to 24

Release layout read here (the zips `Video_Speech_Actor_XX.zip` / `Video_Song_Actor_XX.zip` unpacked side by side)::

    ROOT/Actor_01/01-01-01-01-01-01-01.mp4
    ROOT/Actor_01/02-01-01-01-01-01-01.mp4
    ...
    ROOT/Actor_24/...

Audio-only files (`03-...`, `.wav`) have no face: they are skipped and counted. MARLIN sees only the frames, and a
full-AV file and its video-only twin hold the same frames, so by default only the video-only files are prepared
(`modalities=("video-only",)`); give both to keep every file as some protocols did.

**Protocols** (`PROTOCOLS`): every fold is actor-disjoint (train, val and test share no actor); `fold` picks one.

- `chumachenko5` (default, fold 0 is the fixed default split: test actors 1-4, val 5-8, train 9-24): Chumachenko,
  Iosifidis and Gabbouj, "Self-attention fusion for audiovisual emotion recognition with incomplete data", ICPR 2022
  (arXiv 2201.11095); the five folds of 4 test and 4 val actors are the list in their code's
  `ravdess_preprocessing/create_annotations.py` (katerynaCh/multimodal-emotion-recognition), which runs fold 0 only.
  Two defects of that list are not reproduced: its third fold lists actor 9 (a test actor) for 19 among the training
  actors, and the script matches the actor lists against the position of each folder in `os.listdir` (0-based,
  arbitrary order), not the actor number. Here fold k has test actors 4k+1..4k+4 and val 4k+5..4k+8 as the list
  intends. Their code took speech files of both modalities.
- `luna5`: Luna-Jimenez et al., "A Proposal for Multimodal Emotion Recognition Using Aural Transformers and Action
  Units on RAVDESS Dataset", Applied Sciences 12(1):327, 2022; the test actors of each fold are `actors_per_fold` of
  their `main_FineTuneWav2Vec_CV.py` (cristinalunaj/MMEmotionRecognition, also in its README): (2, 5, 14, 15, 16),
  (3, 6, 7, 13, 18), (10, 11, 12, 19, 20), (8, 17, 21, 23, 24), (1, 4, 9, 22). They had no validation split (they
  selected checkpoints on the test fold); here the next fold's actors are the validation split (our choice).
- `six-fold`: six folds of 4 consecutive actors (fold k tests actors 4k+1..4k+4), the subject-independent 6-fold
  protocol of HiCMAE (Sun et al., Information Fusion 2024; its `saved/data/ravdess/audio_visual/split01..06`:
  video-only speech files, split01 tests actors 1-4, split06 actors 21-24). They had train/test only; here the
  next fold's actors are the validation split (our choice).

Prepared layout (`prepare_ravdess`): the shared format of `data.task_preparation`: `OUT/clips/<id>.mp4`,
`OUT/ravdess/{train,val,test}.csv` (single-label, the 8 emotion names), `OUT/videos.csv` (every decoded field),
`OUT/preparation.json` (protocol, its source, split sizes, class balance, skipped and failed files).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..constants import MARLIN_CROP_SIZE
from ..exceptions import DatasetError
from .task_preparation import SPLIT_ORDER, LabelTask, TaskVideo, load_task, prepare_task

TASK = "ravdess"
EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
MODALITIES = {1: "full-av", 2: "video-only", 3: "audio-only"}
VOCAL_CHANNELS = {1: "speech", 2: "song"}
INTENSITIES = {1: "normal", 2: "strong"}
STATEMENTS = {1: "Kids are talking by the door", 2: "Dogs are sitting by the door"}
NUM_ACTORS = 24
VIDEO_MODALITIES = ("full-av", "video-only")
DEFAULT_MODALITIES = ("video-only",)
CHANNEL_CHOICES = ("speech", "song", "both")
DEFAULT_CHANNEL = "speech"

_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_ACTOR_FOLDER = re.compile(r"^Actor_(\d{2})$")


@dataclass(frozen=True)
class RavdessFile:
    """One RAVDESS file, its name decoded.

    Attributes:
        id: the file name without extension, e.g. "02-01-06-01-02-01-12".
        modality: "full-av", "video-only" or "audio-only".
        vocal_channel: "speech" or "song".
        emotion: one of `EMOTIONS`.
        intensity: "normal" or "strong".
        statement: 1 ("Kids are talking by the door") or 2 ("Dogs are sitting by the door").
        repetition: 1 or 2.
        actor: 1 to 24.
    """

    id: str
    modality: str
    vocal_channel: str
    emotion: str
    intensity: str
    statement: int
    repetition: int
    actor: int

    @property
    def sex(self) -> str:
        """ "male" for odd actor numbers, "female" for even ones (the release's coding)."""
        return "male" if self.actor % 2 else "female"

    @property
    def recording(self) -> str:
        """The id without its modality: a full-AV file and its video-only twin share it."""
        return self.id[3:]

    def fields(self) -> dict:
        """Every decoded field, as `videos.csv` holds them."""
        return {
            "modality": self.modality,
            "vocal_channel": self.vocal_channel,
            "emotion": self.emotion,
            "intensity": self.intensity,
            "statement": self.statement,
            "repetition": self.repetition,
            "actor": self.actor,
            "sex": self.sex,
        }


def parse_ravdess_name(name: str | os.PathLike) -> RavdessFile:
    """Decode a RAVDESS file name (`MM-VV-EE-II-SS-RR-AA`, with or without folder and extension).

    Raises:
        DatasetError: the name is not of that form or a code is out of range (naming the file and the code).
    """
    stem = Path(name).name.split(".")[0]
    match = _NAME.match(stem)
    if match is None:
        raise DatasetError(
            f"{name}: not a RAVDESS file name (expected MM-VV-EE-II-SS-RR-AA, e.g. 02-01-06-01-02-01-12)"
        )
    modality, channel, emotion, intensity, statement, repetition, actor = (int(code) for code in match.groups())

    def check(value: int, valid, what: str) -> None:
        if value not in valid:
            raise DatasetError(f"{name}: {what} code {value:02d} is not one RAVDESS uses")

    check(modality, MODALITIES, "modality")
    check(channel, VOCAL_CHANNELS, "vocal channel")
    check(emotion, range(1, len(EMOTIONS) + 1), "emotion")
    check(intensity, INTENSITIES, "intensity")
    check(statement, STATEMENTS, "statement")
    check(repetition, (1, 2), "repetition")
    check(actor, range(1, NUM_ACTORS + 1), "actor")
    if emotion == 1 and intensity == 2:
        raise DatasetError(f"{name}: neutral (emotion 01) has no strong intensity (02) in RAVDESS")
    return RavdessFile(
        id=stem,
        modality=MODALITIES[modality],
        vocal_channel=VOCAL_CHANNELS[channel],
        emotion=EMOTIONS[emotion - 1],
        intensity=INTENSITIES[intensity],
        statement=statement,
        repetition=repetition,
        actor=actor,
    )


@dataclass(frozen=True)
class RavdessListing:
    """The files of a RAVDESS tree that a preparation uses, and those it leaves out.

    Attributes:
        files: the chosen video files, sorted by id.
        paths: {id: path} of `files`.
        skipped: {relative path: why} of the files left out (audio-only, other modality or channel, stray names).
    """

    files: list[RavdessFile]
    paths: dict[str, Path]
    skipped: dict[str, str]


def list_ravdess(
    root: str | os.PathLike,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    channel: str = DEFAULT_CHANNEL,
) -> RavdessListing:
    """The video files under `root/Actor_XX/` of the chosen modalities and vocal channel.

    Args:
        modalities: any of "full-av", "video-only".
        channel: "speech", "song" or "both".

    Raises:
        DatasetError: no Actor_XX folder, a file whose actor differs from its folder's, a video-only modality asked for
            that is not one, or nothing left to prepare.
    """
    root = Path(root)
    for modality in modalities:
        if modality not in VIDEO_MODALITIES:
            raise DatasetError(
                f"modality {modality!r}: use {' or '.join(VIDEO_MODALITIES)} (audio-only files have no face)",
                parameter="modalities",
            )
    if channel not in CHANNEL_CHOICES:
        raise DatasetError(f"vocal channel {channel!r}: use one of {', '.join(CHANNEL_CHOICES)}", parameter="channel")
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder; pass the folder holding Actor_01 ... Actor_24", parameter="root")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _ACTOR_FOLDER.match(p.name))
    if not folders:
        raise DatasetError(f"{root}: no Actor_XX folders; unpack the RAVDESS zips here (Actor_01/01-01-...-01.mp4)")
    files, paths, skipped = [], {}, {}
    for folder in folders:
        folder_actor = int(_ACTOR_FOLDER.match(folder.name).group(1))
        for path in sorted(folder.iterdir()):
            relative = f"{folder.name}/{path.name}"
            if path.name.startswith(".") or not path.is_file():
                continue
            if path.suffix.lower() not in (".mp4", ".wav"):
                skipped[relative] = "not a RAVDESS video"
                continue
            try:
                file = parse_ravdess_name(path.name)
            except DatasetError as error:
                skipped[relative] = str(error)
                continue
            if file.actor != folder_actor:
                raise DatasetError(f"{path}: actor {file.actor:02d} in the name, but the folder is {folder.name}")
            if file.modality == "audio-only" or path.suffix.lower() == ".wav":
                skipped[relative] = "audio-only: no face to crop"
            elif file.modality not in modalities:
                skipped[relative] = f"{file.modality} (preparing {', '.join(modalities)})"
            elif channel != "both" and file.vocal_channel != channel:
                skipped[relative] = f"{file.vocal_channel} (preparing {channel})"
            elif file.id in paths:
                raise DatasetError(f"{path}: {file.id} found twice ({paths[file.id]}); keep one copy")
            else:
                files.append(file)
                paths[file.id] = path
    if not files:
        raise DatasetError(
            f"{root}: no {' or '.join(modalities)} {channel} videos among {len(skipped)} files; "
            "check --modality and --channel"
        )
    files.sort(key=lambda f: f.id)
    return RavdessListing(files, paths, skipped)


@dataclass(frozen=True)
class RavdessProtocol:
    """A named actor-disjoint protocol.

    Attributes:
        name: as given to `--protocol`.
        folds: per fold, (test actors, val actors); train is every other actor.
        source: where the folds come from (paper and code).
        note: what differs from the source, if anything.
    """

    name: str
    folds: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    source: str
    note: str = ""

    def split(self, fold: int) -> dict[str, tuple[int, ...]]:
        """{split: actor numbers} of `fold` (0-based)."""
        if not 0 <= fold < len(self.folds):
            raise DatasetError(
                f"fold {fold}: protocol {self.name} has folds 0 to {len(self.folds) - 1}", parameter="fold"
            )
        test, val = self.folds[fold]
        train = tuple(a for a in range(1, NUM_ACTORS + 1) if a not in test and a not in val)
        return {"train": train, "val": tuple(val), "test": tuple(test)}


def _consecutive(num_folds: int, size: int, val_offset: int) -> tuple:
    """Fold k tests actors size*k+1 .. size*k+size; its val actors are those of fold (k + val_offset) % num_folds."""
    groups = [tuple(range(size * k + 1, size * k + size + 1)) for k in range(num_folds)]
    return tuple((groups[k], groups[(k + val_offset) % num_folds]) for k in range(num_folds))


_LUNA_TEST = ((2, 5, 14, 15, 16), (3, 6, 7, 13, 18), (10, 11, 12, 19, 20), (8, 17, 21, 23, 24), (1, 4, 9, 22))

PROTOCOLS = {
    protocol.name: protocol
    for protocol in (
        RavdessProtocol(
            "chumachenko5",
            tuple((tuple(range(4 * k + 1, 4 * k + 5)), tuple(range(4 * k + 5, 4 * k + 9))) for k in range(5)),
            "Chumachenko, Iosifidis, Gabbouj, 'Self-attention fusion for audiovisual emotion recognition with "
            "incomplete data', ICPR 2022 (arXiv 2201.11095); folds from katerynaCh/multimodal-emotion-recognition "
            "ravdess_preprocessing/create_annotations.py",
            "fold k: test actors 4k+1..4k+4, val 4k+5..4k+8 as the list intends (its third fold lists actor 9 for 19; "
            "its script indexes folders by listing order, not actor number)",
        ),
        RavdessProtocol(
            "luna5",
            tuple((_LUNA_TEST[k], _LUNA_TEST[(k + 1) % 5]) for k in range(5)),
            "Luna-Jimenez et al., 'A Proposal for Multimodal Emotion Recognition Using Aural Transformers and "
            "Action Units on RAVDESS Dataset', Applied Sciences 12(1):327, 2022; test actors per fold from "
            "cristinalunaj/MMEmotionRecognition main_FineTuneWav2Vec_CV.py (actors_per_fold)",
            "the source has no validation split; here the next fold's actors are val",
        ),
        RavdessProtocol(
            "six-fold",
            _consecutive(6, 4, 1),
            "subject-independent 6-fold protocol of HiCMAE (Sun et al., Information Fusion 2024), "
            "sunlicai/HiCMAE saved/data/ravdess/audio_visual/split01..06 (fold k tests actors 4k+1..4k+4)",
            "the source has train/test only; here the next fold's actors are val",
        ),
    )
}
DEFAULT_PROTOCOL = "chumachenko5"


def ravdess_protocol(name: str) -> RavdessProtocol:
    """The protocol called `name` (`PROTOCOLS`)."""
    if name not in PROTOCOLS:
        raise DatasetError(
            f"unknown RAVDESS protocol {name!r}: use one of {', '.join(PROTOCOLS)}", parameter="protocol"
        )
    return PROTOCOLS[name]


def split_ravdess(
    files: Iterable[RavdessFile], protocol: str = DEFAULT_PROTOCOL, fold: int = 0
) -> dict[str, list[str]]:
    """{split: file ids, sorted} of `protocol`'s `fold`: each file goes where its actor goes."""
    actors = ravdess_protocol(protocol).split(fold)
    split_of = {actor: name for name, group in actors.items() for actor in group}
    split = {name: [] for name in SPLIT_ORDER}
    for file in files:
        split[split_of[file.actor]].append(file.id)
    return {name: sorted(ids) for name, ids in split.items()}


def ravdess_task():
    """The `data.task_preparation.LabelTask` of `ravdess`: single-label, the 8 emotions by name."""
    return LabelTask(TASK, "single_label_classification", EMOTIONS)


def ravdess_videos(listing: RavdessListing, split: dict[str, list[str]]) -> list:
    """The listed files as `data.task_preparation.TaskVideo`s: label the emotion, fields every decoded one."""
    split_of = {video_id: name for name, ids in split.items() for video_id in ids}
    return [
        TaskVideo(
            file.id,
            listing.paths[file.id],
            split_of[file.id],
            {TASK: file.emotion},
            {"label": file.emotion, **file.fields(), "recording": file.recording},
        )
        for file in listing.files
    ]


def skipped_summary(skipped: dict[str, str]) -> dict:
    """What `preparation.json` says of the files left out: a count per reason; stray names listed."""
    by_reason: dict[str, int] = {}
    stray = []
    for relative, reason in skipped.items():
        if reason.startswith(relative.split("/")[-1]):  # the name did not parse
            stray.append(relative)
            reason = "a name RAVDESS does not use"
        by_reason[reason] = by_reason.get(reason, 0) + 1
    return {"count": len(skipped), "by_reason": by_reason, "stray_names": stray}


def prepare_ravdess(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    protocol: str = DEFAULT_PROTOCOL,
    fold: int = 0,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    channel: str = DEFAULT_CHANNEL,
    crop: str = "face",
    size: int = MARLIN_CROP_SIZE,
    num_workers: int = 1,
    device: str | None = None,
    progress: bool = True,
):
    """List a RAVDESS tree, split it by actor and prepare face clips and the `ravdess` tables (the shared format of
    `data.task_preparation`, see the module docstring).

    Args:
        root: the folder holding Actor_01 ... Actor_24.
        out_dir: the prepared folder (re-running it resumes; a folder made with other crop settings is refused).
        protocol, fold: which actor-disjoint split (`PROTOCOLS`); fold 0 of `chumachenko5` is the default split.
        modalities: "video-only" (default), "full-av" or both.
        channel: "speech" (default), "song" or "both".
        crop: "face" (MTCNN tracking) or "reference" (a detector box per frame, as the paper code).
        num_workers: videos cropped at once, in threads, each with its own detector.
        device: where MTCNN runs ("cuda"); default the CPU.

    Returns:
        `data.task_preparation.TaskPreparation`: {split: ids}, failed videos, class balance, the job's counts.
    """
    chosen = ravdess_protocol(protocol)
    actors = chosen.split(fold)
    listing = list_ravdess(root, modalities, channel)
    split = split_ravdess(listing.files, protocol, fold)
    record = {
        "name": protocol,
        "fold": fold,
        "num_folds": len(chosen.folds),
        "source": chosen.source,
        "note": chosen.note,
        "actors": {name: list(group) for name, group in actors.items()},
        "modalities": list(modalities),
        "vocal_channel": channel,
        "skipped": skipped_summary(listing.skipped),
    }
    return prepare_task(
        ravdess_videos(listing, split),
        out_dir,
        [ravdess_task()],
        record,
        "marlin prepare-ravdess",
        crop=crop,
        size=size,
        num_workers=num_workers,
        device=device,
        progress=progress,
    )


def load_ravdess(prepared_dir: str | os.PathLike, task: str = TASK):
    """The prepared `ravdess` task as a `datasets.DatasetDict` (train, val, test): `path` (absolute clip path),
    `labels` (one `ClassLabel` over the 8 emotions, sorted as the tables index them, in every split: a split
    holding fewer emotions indexes them as the others do)."""
    if task != TASK:
        raise DatasetError(f"unknown RAVDESS task {task!r}: use {TASK!r}", parameter="task")
    return load_task(prepared_dir, task, "single_label_classification", sorted(EMOTIONS))
