"""Face clips for pretraining: crops (and LaPa maps for Fasking) of videos or frame folders, and their sampler.

Every random choice goes through `masking.seeded_generator(seed, epoch, index)`, so samples do not depend on the
number of dataloader workers and a resumed run sees the same clips and masks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..configuration_marlin import MarlinConfig
from ..constants import MARLIN_CROP_SIZE, SAMPLE_RATE
from ..data.youtube_faces import precomputed_label_maps
from ..video.decoding import count_frames, decode_frames, probe_video, resize_frames, skip_unreadable
from ..video.face_tracking import FaceTracker
from ..video.windows import iter_frame_chunks
from .clip_sampling import EpochSeeded, clip_frame_indices, masked_clip
from .face_parsing import LandmarkFaceParser


class FacePreparer:
    """Turns decoded frames into face crops (and LaPa label maps for Fasking), one video at a time.

    Args:
        image_size: side of the crops, pixels.
        crop: "auto" (default) treats videos whose frames are square and `MARLIN_CROP_SIZE` (or `image_size`) pixels
            as already cropped and tracks and crops the face in every other video; "always" / "never" force it.
        parse: also produce label maps (needed by the "fasking" and "fasking_opp" strategies).
        face_parser: a `face_parsing.FaceParser`; default the built-in `LandmarkFaceParser`.
        tracker_kwargs: passed to `video.face_tracking.FaceTracker`.
    """

    def __init__(self, image_size: int, crop: str = "auto", parse: bool = True, face_parser=None, **tracker_kwargs):
        if crop not in ("auto", "always", "never"):
            raise ValueError(f"crop must be 'auto', 'always' or 'never', got {crop!r}")
        self.image_size = image_size
        self.crop = crop
        self.parse = parse
        self.face_parser = face_parser if face_parser is not None else LandmarkFaceParser()
        self.tracker = FaceTracker(crop_size=image_size, **tracker_kwargs)

    def is_cropped(self, height: int, width: int) -> bool:
        if self.crop != "auto":
            return self.crop == "never"
        return height == width and height in (MARLIN_CROP_SIZE, self.image_size)

    def reset(self) -> None:
        """Call before the frames of another video."""
        self.tracker.reset()

    def __call__(
        self, frames: np.ndarray, frame_indices: Sequence[int], label_maps: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Crop (and parse) the next frames of the current video.

        Args:
            frames: (T, H, W, 3) uint8 RGB, in video order after the frames of the previous call.
            frame_indices: (T,) their indices in the video.
            label_maps: (T, H, W) LaPa maps already made for these (already cropped) frames, e.g. by the
                reference's preprocessing (`precomputed_label_maps`): used, resized, instead of parsing.

        Returns:
            crops (T, image_size, image_size, 3) uint8 and label maps (T, image_size, image_size) uint8 (None when
            `parse` is off). Frames where no face is known get all-background maps (random masking there).
        """
        height, width = frames.shape[1:3]
        if self.is_cropped(height, width):
            crops = resize_frames(frames, self.image_size)
            if not self.parse:
                return crops, None
            if label_maps is not None:
                return crops, resize_frames(
                    np.asarray(label_maps, np.uint8)[..., None], self.image_size, nearest=True
                )[..., 0]
            track = self.tracker.locate(frames, frame_indices)
            if track is None:
                landmarks = np.full((len(frames), 5, 2), np.nan, dtype=np.float32)
            else:
                landmarks = track.landmarks * np.array([self.image_size / width, self.image_size / height])
        else:
            face_crops = self.tracker.track(frames, frame_indices)
            crops, landmarks = face_crops.crops, face_crops.crop_landmarks
            if not self.parse:
                return crops, None
        label_maps = self.face_parser(torch.from_numpy(crops), torch.as_tensor(landmarks, dtype=torch.float32))
        return crops, np.asarray(label_maps, dtype=np.uint8)


def prepare_video_cache(
    path: str | os.PathLike, cache_dir: str | os.PathLike, preparer: FacePreparer, chunk_size: int = 32
) -> Path:
    """Crop (and parse) every frame of a video once, into `cache_dir/<name>-<key>/` as `crops.npy` and `labels.npy`.

    The key hashes the video's path, size and modification time with the preparer's settings, so a changed video or
    setting gets a fresh entry; a finished entry is reused. Frames are processed `chunk_size` at a time, so memory
    stays bounded for long videos (the cache itself is uncompressed: frames * image_size**2 * 4 bytes).

    Returns:
        The entry's folder.
    """
    path = Path(path)
    stat = path.stat()
    parser_name = getattr(preparer.face_parser, "cache_name", type(preparer.face_parser).__name__)
    settings = [str(path.resolve()), stat.st_size, stat.st_mtime_ns, preparer.image_size, preparer.crop, parser_name]
    settings.append(preparer.parse)
    key = hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:12]
    entry = Path(cache_dir) / f"{path.stem}-{key}"
    if (entry / "done").exists():
        return entry
    entry.mkdir(parents=True, exist_ok=True)
    num_frames = count_frames(path)
    size = preparer.image_size
    crops = np.lib.format.open_memmap(entry / "crops.npy", "w+", np.uint8, (num_frames, size, size, 3))
    labels = None
    if preparer.parse:
        labels = np.lib.format.open_memmap(entry / "labels.npy", "w+", np.uint8, (num_frames, size, size))
    preparer.reset()
    written = 0
    for window in iter_frame_chunks(path, chunk_size, strict=False):
        indices = np.asarray(window.frame_indices)
        keep = indices < num_frames  # the frames counted, if decoding gives more
        if not keep.any():
            break
        chunk, indices = window.frames[keep], indices[keep]
        saved_maps = precomputed_label_maps(path, indices.tolist()) if preparer.parse else None
        chunk_crops, chunk_labels = preparer(chunk, indices.tolist(), saved_maps)
        crops[indices] = chunk_crops
        if labels is not None:
            labels[indices] = chunk_labels
        written = int(indices.max()) + 1
    if written < num_frames:  # fewer decodable frames than packets: repeat the last one
        crops[written:] = crops[written - 1]
        if labels is not None:
            labels[written:] = labels[written - 1]
    crops.flush()
    if labels is not None:
        labels.flush()
    (entry / "done").write_text(json.dumps({"video": str(path), "num_frames": num_frames}) + "\n")
    return entry


def _probed_frame_count(video: Path) -> int:
    """`count_frames` of a video whose first frame decodes (`probe_video`): counting demuxes packets only, so a file
    whose packets do not decode would pass it."""
    probe_video(video)
    return count_frames(video)


class FaceClipDataset(EpochSeeded, torch.utils.data.Dataset):
    """Random clips of face videos with their pretraining masks, as MARLIN samples YouTube Faces.

    Item `i` is a clip of video `i // clips_per_video`: `num_frames` frames taken every `sample_rate` frames from a
    random start (a video too short for one clip repeats its last frame), its face crops
    in [0, 1], and a mask drawn with `masking.generate_mask` (from the crops' LaPa parsing for Fasking).

    Every random choice of item `i` comes from `seeded_generator(seed, epoch, i)`, so a sample does not depend on
    the number of dataloader workers, on which worker loads it, or on what was loaded before: runs are reproducible
    and a resumed run sees the same clips and masks. Call `set_epoch` to draw new clips each epoch (Accelerate's
    prepared dataloaders forward their `set_epoch` to the dataset).

    Args:
        videos: video files (see `find_videos`) or folders of frames (e.g. `youtube_faces_clips`).
        num_frames: clip length (16 in the paper).
        sample_rate: frame step (2 in the paper).
        image_size: as in `MarlinConfig` (see `from_config`).
        patch_size: as in `MarlinConfig`.
        tubelet_size: as in `MarlinConfig`.
        mask_ratio: as in `MarlinConfig`.
        mask_strategy: as in `MarlinConfig`.
        seed: base seed.
        clips_per_video: items per video per epoch.
        cache_dir: if given, every video is cropped and parsed once into this folder (`prepare_video_cache`) and
            clips are read from memory-mapped arrays; otherwise each item decodes, tracks and parses its frames.
        crop, face_parser: see `FacePreparer`.
        frame_range: the part of each video clips come from, as fractions of its frames: (0, 0.7) and (0.7, 1)
            give disjoint training and held-out clips of the same videos.

    A video that cannot be read (it does not open or decode its first frame, or, with `cache_dir`, fails to decode
    while cached) is left out with a line on stderr and a count (`video.decoding.skip_unreadable`): `videos` lists
    the videos kept. None readable is a VideoError.
    """

    def __init__(
        self,
        videos: Sequence[str | os.PathLike],
        num_frames: int = 16,
        sample_rate: int = SAMPLE_RATE,
        image_size: int = MARLIN_CROP_SIZE,
        patch_size: int = 16,
        tubelet_size: int = 2,
        mask_ratio: float = 0.9,
        mask_strategy: str = "fasking",
        seed: int = 0,
        clips_per_video: int = 1,
        cache_dir: str | os.PathLike | None = None,
        crop: str = "auto",
        face_parser=None,
        frame_range: tuple[float, float] = (0.0, 1.0),
    ):
        if not 0 <= frame_range[0] < frame_range[1] <= 1:
            raise ValueError(f"frame_range must be fractions 0 <= start < end <= 1, got {frame_range}")
        self.frame_range = frame_range
        self.videos = [Path(v) for v in videos]
        self.num_frames = num_frames
        self.sample_rate = sample_rate
        self.image_size = image_size
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.mask_ratio = mask_ratio
        self.mask_strategy = mask_strategy
        self.seed = seed
        self.clips_per_video = clips_per_video
        self.preparer = FacePreparer(image_size, crop, mask_strategy.startswith("fasking"), face_parser)
        self.cache_entries = None
        # One corrupt video among thousands would otherwise abort the run: it is left out, with a line on stderr.
        if cache_dir is not None:
            kept = skip_unreadable(self.videos, lambda video: prepare_video_cache(video, cache_dir, self.preparer))
            self.cache_entries = list(kept.values())
            self.frame_counts = [len(np.load(e / "crops.npy", mmap_mode="r")) for e in self.cache_entries]
        else:
            kept = skip_unreadable(self.videos, _probed_frame_count)
            self.frame_counts = list(kept.values())
        self.videos = [self.videos[i] for i in kept]

    @classmethod
    def from_config(cls, config: MarlinConfig, videos: Sequence[str | os.PathLike], **kwargs) -> FaceClipDataset:
        """A dataset whose clip size and masking follow `config` (frames, image size, tubelets, mask ratio and
        strategy)."""
        fields = dict(
            num_frames=config.num_frames,
            image_size=config.image_size,
            patch_size=config.patch_size,
            tubelet_size=config.tubelet_size,
            mask_ratio=config.mask_ratio,
            mask_strategy=config.mask_strategy,
        )
        return cls(videos, **{**fields, **kwargs})

    def __len__(self) -> int:
        return len(self.videos) * self.clips_per_video

    def frame_indices(self, index: int, generator: torch.Generator) -> list[int]:
        """The clip's frame indices: `num_frames` every `sample_rate` frames from a random start in `frame_range`
        (`clip_sampling.clip_frame_indices`)."""
        total = self.frame_counts[index // self.clips_per_video]
        return clip_frame_indices(total, self.num_frames, self.sample_rate, generator, self.frame_range)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """`pixel_values_videos` (num_frames, 3, image_size, image_size) float32 in [0, 1] and `bool_masked_pos`
        (num_tokens,) bool, True where masked."""
        generator = self.generator(index)
        video = index // self.clips_per_video
        indices = self.frame_indices(index, generator)
        if self.cache_entries is not None:
            entry = self.cache_entries[video]
            crops = np.load(entry / "crops.npy", mmap_mode="r")[indices]
            labels = np.load(entry / "labels.npy", mmap_mode="r")[indices] if self.preparer.parse else None
        else:
            self.preparer.reset()
            saved_maps = precomputed_label_maps(self.videos[video], indices) if self.preparer.parse else None
            crops, labels = self.preparer(decode_frames(self.videos[video], indices), indices, saved_maps)
        return masked_clip(
            crops,
            labels,
            self.image_size,
            self.patch_size,
            self.tubelet_size,
            self.mask_ratio,
            self.mask_strategy,
            generator,
        )


class EpochShuffleSampler(EpochSeeded, torch.utils.data.Sampler):
    """A permutation of `range(num_items)` drawn from `seeded_generator(seed, epoch)`: the same order on every process
    and after a resume. `set_epoch` picks the epoch (Accelerate's prepared dataloaders call it)."""

    def __init__(self, num_items: int, seed: int = 0):
        self.num_items = num_items
        self.seed = seed

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self):
        return iter(torch.randperm(self.num_items, generator=self.generator()).tolist())
