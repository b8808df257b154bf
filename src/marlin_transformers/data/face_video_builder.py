"""Prepared face-video folders as Hugging Face datasets: `datasets.GeneratorBasedBuilder`s in the library.

`datasets` runs no loading scripts, so the builders live here and are instantiated directly (or through
`load_prepared_faces` / `load_youtube_faces`), over a folder `marlin prepare-ytf` / `prepare-faces` wrote
(`data.prepared_faces`). Each gives a `DatasetDict` with the splits of `split.json` (`train`, `validation`) and one
row per prepared video:

| column | feature | what |
|---|---|---|
| `video_id` | `Value("string")` | `<person>/<video>` for YouTube Faces |
| `person` | `ClassLabel` | the persons of both splits, sorted |
| `num_frames` | `Value("int32")` | frames of the clip |
| `fps` | `Value("float32")` | its frame rate (frame folders: the rate given to the preparation) |
| `clip` | `Value("binary")` | the mp4's bytes: 224x224 face crops of every frame (PyAV: `decode_clip`) |
| `landmarks` | `Array3D((None, 5, 2), "float32")` | MTCNN's five points per frame, crop pixels (x, y) |
| `frame_indices` | `List(Value("int64"))` | each clip frame's index in its source (frame folder: in its frame order) |
| `detected` | `List(Value("bool"))` | whether the face was detected on that frame (else interpolated) |
| `parsing_maps` | `Value("binary")` | `savez_compressed` of (T, 224, 224) uint8 LaPa labels (`decode_parsing_maps`) |

`datasets` (the `train` extra) is imported by this module only, which `import marlin_transformers` does not load.
Clips and maps stay compressed bytes (an mp4 of 224x224 H.264, a few kB a frame; maps compress 20-50x): a row
is small and streams, and no torchcodec is needed (the `Video` feature's decoder).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import datasets
import numpy as np

from ..constants import CITATION
from ..exceptions import DatasetError
from .prepared_faces import INFO_FILE, MANIFEST, SPLIT_FILE, PreparedVideo, read_annotations, read_prepared

YTF_CITATION = """@inproceedings{wolf2011face,
  title     = {Face Recognition in Unconstrained Videos with Matched Background Similarity},
  author    = {Wolf, Lior and Hassner, Tal and Maoz, Itay},
  booktitle = {Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2011},
}"""
YTF_HOMEPAGE = "https://www.cs.tau.ac.il/~wolf/ytfaces/"
YTF_LICENSE = (
    "YouTube Faces is provided by its authors for non-commercial research use only and may not be redistributed "
    "publicly; request it from its homepage. Derived data (these crops, landmarks and maps) is bound by the same "
    "terms."
)


def face_video_features(persons: list[str]):
    """The `datasets.Features` of a prepared face-video dataset whose persons are `persons` (sorted)."""
    return datasets.Features(
        {
            "video_id": datasets.Value("string"),
            "person": datasets.ClassLabel(names=persons),
            "num_frames": datasets.Value("int32"),
            "fps": datasets.Value("float32"),
            "clip": datasets.Value("binary"),
            "landmarks": datasets.Array3D(shape=(None, 5, 2), dtype="float32"),
            "frame_indices": datasets.List(datasets.Value("int64")),
            "detected": datasets.List(datasets.Value("bool")),
            "parsing_maps": datasets.Value("binary"),
        }
    )


def example_of(video: PreparedVideo) -> dict:
    """One row of a prepared video (see the module docstring)."""
    arrays = read_annotations(video.annotations)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, parsing=arrays["parsing"])
    return {
        "video_id": video.video_id,
        "person": video.person,
        "num_frames": video.num_frames,
        "fps": video.fps,
        "clip": video.clip.read_bytes(),
        "landmarks": arrays["landmarks"],
        "frame_indices": arrays["frame_indices"].tolist(),
        "detected": arrays["detected"].tolist(),
        "parsing_maps": buffer.getvalue(),
    }


def decode_parsing_maps(data: bytes) -> np.ndarray:
    """(T, 224, 224) uint8 LaPa labels of a row's `parsing_maps` bytes."""
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return arrays["parsing"]


def decode_clip(data: bytes, frame_indices: list[int] | None = None) -> np.ndarray:
    """(T, 224, 224, 3) uint8 RGB frames of a row's `clip` bytes, decoded with PyAV: all, or those of
    `frame_indices` (clip frame positions, repeats allowed), decoding only up to the last one wanted."""
    import av

    from ..video.decoding import frame_to_rgb

    wanted = None if frame_indices is None else sorted(set(int(i) for i in frame_indices))
    found: dict[int, np.ndarray] = {}
    with av.open(io.BytesIO(data)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if wanted is None or index in wanted:
                found[index] = frame_to_rgb(frame)
            if wanted is not None and index >= wanted[-1]:
                break
    if not found:
        raise DatasetError("a clip of the dataset decodes to no frame; prepare or download it again.")
    if wanted is None:
        return np.stack([found[i] for i in sorted(found)])
    last = max(found)
    return np.stack([found[min(int(i), last)] for i in frame_indices])


class PreparedFaceVideos(datasets.GeneratorBasedBuilder):
    """A folder `marlin prepare-faces` (or `prepare-ytf`) wrote, as a `DatasetDict` (pass it as `data_dir`)."""

    DEFAULT_WRITER_BATCH_SIZE = 16  # rows hold whole clips: keep Arrow's write batches small
    expected_name: str | None = None

    def _prepared(self):
        if not self.config.data_dir:
            raise DatasetError(f"{type(self).__name__} reads a prepared folder: pass data_dir=<folder>.")
        info, videos = read_prepared(self.config.data_dir)
        if self.expected_name and info.get("name") != self.expected_name:
            raise DatasetError(
                f"{self.config.data_dir}: prepared as {info.get('name')!r}, not {self.expected_name!r}; load it with "
                "load_prepared_faces."
            )
        return info, videos

    def _description(self, info: dict) -> str:
        return f"Face videos prepared by marlin-transformers for MARLIN pretraining; settings: {info.get('settings')}."

    def _info(self):
        info, videos = self._prepared()
        persons = sorted({video.person for split in videos.values() for video in split})
        return datasets.DatasetInfo(
            description=self._description(info), features=face_video_features(persons), citation=CITATION
        )

    def _split_generators(self, dl_manager):
        _, videos = self._prepared()
        return [
            datasets.SplitGenerator(name=name, gen_kwargs={"videos": split}) for name, split in videos.items() if split
        ]

    def _generate_examples(self, videos: list[PreparedVideo]):
        for video in videos:
            yield video.video_id, example_of(video)


class YoutubeFaces(PreparedFaceVideos):
    """YouTube Faces as `marlin prepare-ytf` prepared it (pass the folder as `data_dir`)."""

    expected_name = "youtube_faces"

    def _info(self):
        info = super()._info()
        info.citation = f"{YTF_CITATION}\n\n{CITATION}"
        info.homepage = YTF_HOMEPAGE
        info.license = YTF_LICENSE
        return info

    def _description(self, info: dict) -> str:
        return (
            "YouTube Faces (Wolf et al., CVPR 2011) prepared for MARLIN pretraining: 224x224 face crops of every "
            f"frame, five landmarks and LaPa parsing maps per frame; settings: {info.get('settings')}."
        )


def prepared_fingerprint(folder: str | os.PathLike) -> str:
    """A hash of a prepared folder's state (its manifest, split and description files: sizes and mtimes), so a
    builder's cache is rebuilt when more videos are prepared or the split changes."""
    folder = Path(folder).resolve()
    state = [str(folder)]
    for name in (INFO_FILE, SPLIT_FILE, MANIFEST):
        path = folder / name
        stat = path.stat() if path.exists() else None
        state.append(None if stat is None else [stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()[:16]


def load_prepared_faces(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
    """The `DatasetDict` of a prepared folder, with `YoutubeFaces` or `PreparedFaceVideos` as its dataset.json says.

    Args:
        cache_dir: where `datasets` writes its Arrow files (default: its own cache, `HF_DATASETS_CACHE`).
    """
    info, _ = read_prepared(path)
    builder_class = YoutubeFaces if info.get("name") == "youtube_faces" else PreparedFaceVideos
    builder = builder_class(
        data_dir=str(Path(path).resolve()),
        cache_dir=None if cache_dir is None else str(cache_dir),
        hash=prepared_fingerprint(path),
    )
    builder.download_and_prepare()
    return builder.as_dataset()


def load_youtube_faces(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
    """The `DatasetDict` (train, validation) of a folder `marlin prepare-ytf` wrote (`YoutubeFaces`)."""
    builder = YoutubeFaces(
        data_dir=str(Path(path).resolve()),
        cache_dir=None if cache_dir is None else str(cache_dir),
        hash=prepared_fingerprint(path),
    )
    builder.download_and_prepare()
    return builder.as_dataset()
