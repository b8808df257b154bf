"""A corpus of face videos: each video's id and person, listed from folders, files or lists; person-disjoint splits.

A video's `video_id` names its outputs in a prepared folder (`clips/<video_id>.mp4`); its `person` keeps the
split honest (no person in both splits). For YouTube Faces these are `<person>/<video>` and `<person>`
(`youtube_faces.ytf_videos`); for any other corpus (`list_face_videos`):

- a video found under a folder `F` gets its path relative to `F` without the extension as id (`alice/talk1`), and
  the first folder of that path as person (`alice`); a video directly in `F` is its own person (its stem);
- a video file given by itself, or listed in a `.txt` file, has its stem as id and as person.

**The seeded split** (`person_disjoint_split`), used when no split files are given: the distinct persons are sorted,
shuffled with `numpy.random.default_rng(seed)` and the first `round(validation_fraction * persons)` (at least one
when there are two or more persons) go to validation, every video of theirs with them. The default fraction, 0.2 of
the persons, gives about the paper's proportions on YouTube Faces (633 of 3,226 videos in validation, 19.6%).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..exceptions import DatasetError
from ..video.decoding import LIST_EXTENSIONS, VIDEO_EXTENSIONS, videos_in_folder

SPLITS = ("train", "validation")
DEFAULT_SPLIT_SEED = 0
DEFAULT_VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class FaceVideo:
    """One video of a corpus.

    Attributes:
        video_id: unique in the corpus, a relative POSIX path without extension (`AJ_Cook/0`).
        person: who is in it (the split never puts one person in both splits).
        source: a video file or a folder of frame images.
    """

    video_id: str
    person: str
    source: Path


def list_face_videos(inputs: Iterable[str | os.PathLike]) -> list[FaceVideo]:
    """The videos of folders (recursive, by `VIDEO_EXTENSIONS`), video files and `.txt` lists of paths, in order.

    Raises:
        DatasetError: a path that does not exist, no video at all, or two videos given one id.
    """
    videos: list[FaceVideo] = []
    for item in map(Path, inputs):
        if item.is_dir():
            for path in videos_in_folder(item):
                relative = path.relative_to(item).with_suffix("")
                person = relative.parts[0] if len(relative.parts) > 1 else relative.name
                videos.append(FaceVideo(relative.as_posix(), person, path))
        elif item.is_file() and item.suffix.lower() in LIST_EXTENSIONS:
            for line in item.read_text(errors="replace").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    path = Path(line) if Path(line).is_absolute() else item.parent / line
                    videos.append(FaceVideo(path.stem, path.stem, path))
        elif item.exists():
            videos.append(FaceVideo(item.stem, item.stem, item))
        else:
            raise DatasetError(f"{item}: no such video file, folder or list; check the path.")
    if not videos:
        raise DatasetError(
            f"no video in {', '.join(map(str, inputs))} (folders are searched for {', '.join(VIDEO_EXTENSIONS)})."
        )
    check_unique_ids(videos)
    return videos


def check_unique_ids(videos: Sequence[FaceVideo]) -> None:
    """Raise a one-line DatasetError if two videos share an id (they would share their outputs)."""
    seen: dict[str, Path] = {}
    for video in videos:
        if video.video_id in seen:
            raise DatasetError(
                f"{video.source} and {seen[video.video_id]} both get the id {video.video_id!r}; put them in "
                "folders of their own and pass the parent folder (ids are paths relative to it)."
            )
        seen[video.video_id] = video.source


def person_disjoint_split(
    videos: Sequence[FaceVideo],
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    seed: int = DEFAULT_SPLIT_SEED,
) -> dict[str, list[str]]:
    """{"train": ids, "validation": ids}, no person in both; seeded as described in the module docstring.

    The split depends only on the set of persons and the seed, never on the order the videos were listed in."""
    if not 0 <= validation_fraction < 1:
        raise DatasetError(f"validation fraction {validation_fraction} is not in [0, 1); pass e.g. 0.2.")
    persons = sorted({video.person for video in videos})
    order = np.random.default_rng(seed).permutation(len(persons))
    count = round(validation_fraction * len(persons))
    if validation_fraction > 0 and len(persons) > 1:
        count = min(max(count, 1), len(persons) - 1)
    held_out = {persons[i] for i in order[:count]}
    ids = sorted(video.video_id for video in videos)
    people = {video.video_id: video.person for video in videos}
    return {
        "train": [i for i in ids if people[i] not in held_out],
        "validation": [i for i in ids if people[i] in held_out],
    }
