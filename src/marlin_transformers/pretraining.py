"""MARLIN pretraining pieces: the losses, the paper's learning-rate schedule, a dataset of face clips, VideoMAE init.

The training loop itself lives in `examples/pretrain.py`; everything here is a plain function or class it (and the
tests) can call.

Losses (Cai et al., CVPR 2023, Sec. 3.3; the reference's `g_step` / `d_step`):

- reconstruction: MSE between the decoder's output and the raw [0, 1] pixels of the masked tubelets;
- generator adversarial term: `adv_weight * -mean D(prediction)` (adv_weight 0.01 in the released configs);
- critic (WGAN): `mean D(prediction) - mean D(real tubelets)`, plus `gp_weight * gradient_penalty` (gp_weight 0 in the
  released configs, implemented all the same).

The critic `D` is `MarlinForPreTraining.discriminator`, a per-token MLP on tubelets in `patchify_video`'s layout.

Schedule: AdamW with betas (0.9, 0.95), no weight decay, `lr = 1.5e-4 * total_batch / 256`, linear warm-up from 0
over 40 epochs, then a cosine to `1e-5 * total_batch / 256` at the end of 2000 epochs. The reference computes this
per iteration but only applies one value per epoch (its scheduler steps once an epoch); here it is applied per
optimizer step.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .configuration_marlin import MarlinConfig
from .exceptions import CheckpointError, DatasetError, VideoError
from .masking import generate_mask, seeded_generator
from .modeling_marlin import patchify_video, unpatchify_video
from .video_io import VIDEO_EXTENSIONS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# MARLIN's face crops (and what `marlin extract` and the reference's preprocessing write) are 224x224.
MARLIN_CROP_SIZE = 224


# ---------------------------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------------------------


def masked_patch_targets(
    pixel_values_videos: torch.Tensor, bool_masked_pos: torch.BoolTensor, patch_size: int, tubelet_size: int
) -> torch.Tensor:
    """The raw pixels the decoder must predict.

    Args:
        pixel_values_videos: (batch, frames, channels, height, width) in [0, 1].
        bool_masked_pos: (batch, num_tokens), True where masked; the same count in every clip.

    Returns:
        (batch, num_masked, channels * tubelet_size * patch_size**2), in `patchify_video`'s layout, token order.
    """
    patches = patchify_video(pixel_values_videos, patch_size, tubelet_size)  # (b, n, c * pt * ph * pw)
    return patches[bool_masked_pos].reshape(patches.shape[0], -1, patches.shape[-1])


def reconstruction_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every pixel of every masked tubelet, computed in float32."""
    return F.mse_loss(logits.float(), targets.float())


def generator_adversarial_loss(fake_scores: torch.Tensor, adv_weight: float) -> torch.Tensor:
    """`adv_weight * -mean D(prediction)`: the generator is pushed toward tubelets the critic scores as real."""
    return adv_weight * -fake_scores.float().mean()


def critic_loss(fake_scores: torch.Tensor, real_scores: torch.Tensor) -> torch.Tensor:
    """The WGAN critic loss `mean D(fake) - mean D(real)`: minimized by scoring real tubelets high, predictions low."""
    return fake_scores.float().mean() - real_scores.float().mean()


def penalty_interpolates(
    real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Points where WGAN-GP evaluates the critic's gradient: `alpha * real + (1 - alpha) * fake`.

    As in the reference, one `alpha ~ U[0, 1)` is drawn per call and shared by every token of the batch.

    Args:
        real, fake: (batch, tokens, dim); both are detached here.
        generator: CPU generator `alpha` is drawn from, for reproducible runs.

    Returns:
        (batch, tokens, dim), a leaf that requires grad: score it with the critic, then call `gradient_penalty`.
    """
    alpha = torch.rand((), generator=generator).to(device=real.device, dtype=real.dtype)
    return (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)


def gradient_penalty(scores: torch.Tensor, interpolates: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: `mean over tokens of (||d D(x) / d x||_2 - 1)^2`, the norm taken per token over its pixels.

    Args:
        scores: (batch, tokens, 1) critic scores of `interpolates`.
        interpolates: (batch, tokens, dim) from `penalty_interpolates`.

    Returns:
        A scalar with a graph back to the critic's parameters (`create_graph=True`), so the critic trains on it.
    """
    (gradients,) = torch.autograd.grad(scores.sum(), interpolates, create_graph=True)  # (b, tokens, dim)
    return ((gradients.float().flatten(0, 1).norm(2, dim=1) - 1) ** 2).mean()


# ---------------------------------------------------------------------------------------------------------------------
# Learning-rate schedule
# ---------------------------------------------------------------------------------------------------------------------


def scaled_learning_rates(
    total_batch_size: int, base_learning_rate: float = 1.5e-4, base_min_learning_rate: float = 1e-5
) -> tuple[float, float]:
    """The paper's linear scaling rule: (peak lr, final lr) = base * total_batch_size / 256.

    `total_batch_size` counts clips per optimizer step over every process and accumulation step.
    """
    return base_learning_rate * total_batch_size / 256, base_min_learning_rate * total_batch_size / 256


def learning_rate_at(
    step: int, learning_rate: float, min_learning_rate: float, warmup_steps: int, total_steps: int
) -> float:
    """Learning rate for optimizer step `step` (from 0): the reference's per-iteration schedule.

    Steps `0 .. warmup_steps - 1` rise linearly from 0 to `learning_rate` (NumPy's `linspace(0, lr, warmup_steps)`);
    the remaining `total_steps - warmup_steps` follow `min + (lr - min) * (1 + cos(pi * i / remaining)) / 2`; steps
    past `total_steps` stay at `min_learning_rate`.
    """
    if step < warmup_steps:
        return learning_rate * step / (warmup_steps - 1) if warmup_steps > 1 else learning_rate
    remaining = total_steps - warmup_steps
    if remaining <= 0 or step >= total_steps:
        return min_learning_rate
    progress = (step - warmup_steps) / remaining
    return min_learning_rate + 0.5 * (learning_rate - min_learning_rate) * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------------------------------
# Generator / critic split
# ---------------------------------------------------------------------------------------------------------------------


def detach_critic(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Take the critic out of a `MarlinForPreTraining`, so generator and critic are two models with disjoint weights.

    Distributed wrappers (DDP, FSDP) and the two optimizers then each see one of them; `MarlinForPreTraining.forward`
    never calls the critic. Put it back with `attach_critic` before saving the full model.

    Returns:
        (model without its critic, the critic).
    """
    critic = model.discriminator
    model.discriminator = None
    return model, critic


def attach_critic(model, critic: torch.nn.Module):
    """Undo `detach_critic`: `model.discriminator = critic`; returns the model."""
    model.discriminator = critic
    return model


# ---------------------------------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------------------------------


def reconstruction_grid(
    pixel_values_videos: torch.Tensor,
    logits: torch.Tensor,
    bool_masked_pos: torch.BoolTensor,
    patch_size: int,
    tubelet_size: int,
    num_shown: int = 4,
    max_clips: int = 2,
) -> np.ndarray:
    """A picture of reconstructions: per clip, rows original / masked input (masked tubelets grey) / reconstruction.

    Args:
        pixel_values_videos: (batch, frames, 3, height, width) in [0, 1].
        logits: (batch, num_masked, 3 * tubelet_size * patch_size**2) predictions.
        bool_masked_pos: (batch, num_tokens), True where masked.
        num_shown: frames per clip, spread over the clip (first frame of evenly spaced tubelets).
        max_clips: clips shown, from the start of the batch.

    Returns:
        (rows * height, num_shown * width, 3) uint8 RGB.
    """
    clips = pixel_values_videos[:max_clips].detach().float().cpu()
    logits = logits[: len(clips)].detach().float().cpu()
    masked = bool_masked_pos[: len(clips)].cpu()
    _, num_frames, channels, image_size, _ = clips.shape
    patches = patchify_video(clips, patch_size, tubelet_size)  # (b, n, c * pt * ph * pw)
    greyed, painted = patches.clone(), patches.clone()
    greyed[masked] = 0.5
    painted[masked] = logits.reshape(-1, patches.shape[-1])
    rows = []
    frames = torch.linspace(0, num_frames // tubelet_size - 1, min(num_shown, num_frames // tubelet_size))
    frames = (frames.round().long() * tubelet_size).tolist()
    for clip in range(len(clips)):
        for video in (
            clips[clip : clip + 1],
            unpatchify_video(greyed[clip : clip + 1], patch_size, tubelet_size, num_frames, image_size, channels),
            unpatchify_video(painted[clip : clip + 1], patch_size, tubelet_size, num_frames, image_size, channels),
        ):
            row = video[0, frames].clamp(0, 1).permute(2, 0, 3, 1)  # (h, shown, w, c)
            rows.append(row.reshape(image_size, -1, channels))
    return (torch.cat(rows, dim=0) * 255).round().to(torch.uint8).numpy()


# ---------------------------------------------------------------------------------------------------------------------
# Face clips
# ---------------------------------------------------------------------------------------------------------------------


def find_videos(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Video files among `paths`: files as given, folders searched recursively for `VIDEO_EXTENSIONS`, sorted.

    Raises:
        VideoError: a path that does not exist, or no video at all.
    """
    videos = []
    for path in map(Path, paths):
        if path.is_dir():
            videos.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS))
        elif path.is_file():
            videos.append(path)
        else:
            raise VideoError(f"{path}: no such video file or folder; check the path.")
    if not videos:
        raise VideoError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) in {', '.join(map(str, paths))}.")
    return videos


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """The images of a folder of frames (`IMAGE_EXTENSIONS`), sorted by name: one clip source, like a video."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def youtube_faces_clips(root: str | os.PathLike, split: str) -> list[Path]:
    """The frame folders of a YouTube Faces split, laid out as the MARLIN reference prepares it.

    `root/{split}_set.csv` lists the clips (columns `path,len`, e.g. `AJ_Cook/0,79`); the face crops of clip `path`
    are `root/crop_images_DB/<path>/*.jpg`. Face parsing maps, if the reference's preprocessing made them, are read
    from `root/face_parsing_images_DB/<path>/<frame>.npy` (see `precomputed_label_maps`).

    Raises:
        DatasetError: missing split file or clip folder.
    """
    import csv

    root = Path(root)
    split_file = root / f"{split}_set.csv"
    if not split_file.is_file():
        raise DatasetError(f"{split_file}: no such split file; a YouTube Faces root holds train_set.csv, val_set.csv.")
    with open(split_file, newline="") as f:
        clips = [root / "crop_images_DB" / row["path"] for row in csv.DictReader(f)]
    missing = [str(c) for c in clips if not c.is_dir()]
    if missing:
        raise DatasetError(f"{missing[0]}: clip listed in {split_file} has no frame folder ({len(missing)} missing).")
    return clips


def precomputed_label_maps(source: str | os.PathLike, frame_indices: Sequence[int]) -> np.ndarray | None:
    """The reference's saved LaPa maps of a YouTube Faces frame folder, (T, 224, 224) uint8, or None if it has none.

    For `.../crop_images_DB/<clip>/<frame>.jpg` the map is `.../face_parsing_images_DB/<clip>/<frame>.npy`, a
    (1, 224, 224) array, or an empty one where no face was parsed (an all-background map here: random masking).
    """
    source = Path(source)
    if not source.is_dir() or "crop_images_DB" not in source.parts:
        return None
    parts = list(source.parts)
    parts[len(parts) - 1 - parts[::-1].index("crop_images_DB")] = "face_parsing_images_DB"
    parsing_folder = Path(*parts)
    if not parsing_folder.is_dir():
        return None
    files = frame_files(source)
    maps = []
    for index in frame_indices:
        saved = np.load(parsing_folder / f"{files[index].stem}.npy")
        maps.append(saved[0] if saved.shape[0] > 0 else np.zeros(saved.shape[1:] or (224, 224), np.uint8))
    return np.stack(maps).astype(np.uint8)


def count_frames(path: str | os.PathLike) -> int:
    """Frames in a video (counted from its packets, no decoding) or in a folder of frames."""
    from .video_io import _open_video

    if Path(path).is_dir():
        count = len(frame_files(path))
        if count == 0:
            raise VideoError(f"{os.fspath(path)}: folder without frame images ({', '.join(IMAGE_EXTENSIONS)}).")
        return count

    container, stream = _open_video(path)
    with container:
        count = sum(1 for packet in container.demux(stream) if packet.size)
    if count == 0:
        raise VideoError(f"{os.fspath(path)}: no video frames; re-export the video.")
    return count


def decode_frames(path: str | os.PathLike, frame_indices: Sequence[int]) -> np.ndarray:
    """(len(frame_indices), height, width, 3) uint8 RGB of the given decoded-frame indices (repeats allowed).

    Decoding stops after the last wanted frame. An index past the end of the video repeats its last frame. `path`
    may also be a folder of frames (`frame_files`).
    """
    from .video_io import _iter_frames, _to_rgb

    if Path(path).is_dir():
        from PIL import Image

        files = frame_files(path)
        return np.stack(
            [np.asarray(Image.open(files[min(int(i), len(files) - 1)]).convert("RGB")) for i in frame_indices]
        )
    wanted = sorted(set(int(i) for i in frame_indices))
    found: dict[int, np.ndarray] = {}
    last = None
    for index, _, _, frame in _iter_frames(path, strict=False):
        if index in wanted:
            found[index] = _to_rgb(frame)
        last = (index, frame)
        if index >= wanted[-1]:
            break
    for index in wanted:
        if index not in found:  # past the end
            found[index] = found[last[0]] if last[0] in found else _to_rgb(last[1])
    return np.stack([found[int(i)] for i in frame_indices])


def _resize_frames(frames: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """(T, H, W, C) uint8 -> (T, size, size, C), bilinear (nearest for label maps)."""
    from PIL import Image

    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    resample = Image.NEAREST if nearest else Image.BILINEAR
    squeeze = frames.shape[-1] == 1
    images = [Image.fromarray(f[..., 0] if squeeze else f) for f in frames]
    resized = np.stack([np.asarray(image.resize((size, size), resample)) for image in images])
    return resized[..., None] if squeeze else resized


class FacePreparer:
    """Turns decoded frames into face crops (and LaPa label maps for Fasking), one video at a time.

    Args:
        image_size: side of the crops, pixels.
        crop: "auto" (default) treats videos whose frames are square and `MARLIN_CROP_SIZE` (or `image_size`) pixels
            as already cropped and tracks and crops the face in every other video; "always" / "never" force it.
        parse: also produce label maps (needed by the "fasking" and "fasking_opp" strategies).
        face_parser: a `face_parsing.FaceParser`; default the built-in `LandmarkFaceParser`.
        tracker_kwargs: passed to `face_detection.FaceTracker`.
    """

    def __init__(self, image_size: int, crop: str = "auto", parse: bool = True, face_parser=None, **tracker_kwargs):
        if crop not in ("auto", "always", "never"):
            raise ValueError(f"crop must be 'auto', 'always' or 'never', got {crop!r}")
        self.image_size = image_size
        self.crop = crop
        self.parse = parse
        self.face_parser = face_parser
        self.tracker_kwargs = tracker_kwargs
        self._tracker = None

    def is_cropped(self, height: int, width: int) -> bool:
        if self.crop != "auto":
            return self.crop == "never"
        return height == width and height in (MARLIN_CROP_SIZE, self.image_size)

    def tracker(self):
        if self._tracker is None:
            from .face_detection import FaceTracker

            self._tracker = FaceTracker(crop_size=self.image_size, **self.tracker_kwargs)
        return self._tracker

    def reset(self) -> None:
        """Call before the frames of another video."""
        if self._tracker is not None:
            self._tracker.reset()

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
            crops = _resize_frames(frames, self.image_size)
            if not self.parse:
                return crops, None
            if label_maps is not None:
                return crops, _resize_frames(
                    np.asarray(label_maps, np.uint8)[..., None], self.image_size, nearest=True
                )[..., 0]
            track = self.tracker().locate(frames, frame_indices)
            if track is None:
                landmarks = np.full((len(frames), 5, 2), np.nan, dtype=np.float32)
            else:
                landmarks = track.landmarks * np.array([self.image_size / width, self.image_size / height])
        else:
            face_crops = self.tracker().track(frames, frame_indices)
            crops, landmarks = face_crops.crops, face_crops.crop_landmarks
            if not self.parse:
                return crops, None
        from .face_parsing import LandmarkFaceParser

        parser = self.face_parser or LandmarkFaceParser()
        label_maps = parser(torch.from_numpy(crops), torch.as_tensor(landmarks, dtype=torch.float32))
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
    parser_name = type(preparer.face_parser).__name__ if preparer.face_parser else "LandmarkFaceParser"
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
    for chunk, indices in _iter_chunks(path, chunk_size, num_frames):
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


def _iter_chunks(path: Path, chunk_size: int, num_frames: int):
    """Every frame of a video or frame folder once, in order, as ((T, H, W, 3) frames, (T,) indices) chunks."""
    if path.is_dir():
        for start in range(0, num_frames, chunk_size):
            indices = np.arange(start, min(start + chunk_size, num_frames))
            yield decode_frames(path, indices.tolist()), indices
        return
    from .video_io import iter_windows

    written = 0
    # Consecutive windows; the tail window overlaps the previous one, so keep only frames not given yet.
    for window in iter_windows(path, num_frames=chunk_size, sample_rate=1, stride=chunk_size, strict=False):
        indices = np.asarray(window.frame_indices)
        new = (indices >= written) & (indices < num_frames)
        if new.any():
            yield window.frames[new], indices[new]
            written = int(indices[new].max()) + 1


class FaceClipDataset(torch.utils.data.Dataset):
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
        num_frames, sample_rate: clip length and frame step (16 and 2 in the paper).
        image_size, patch_size, tubelet_size, mask_ratio, mask_strategy: as in `MarlinConfig` (see `from_config`).
        seed: base seed.
        clips_per_video: items per video per epoch.
        cache_dir: if given, every video is cropped and parsed once into this folder (`prepare_video_cache`) and
            clips are read from memory-mapped arrays; otherwise each item decodes, tracks and parses its frames.
        crop, face_parser: see `FacePreparer`.
        frame_range: the part of each video clips come from, as fractions of its frames: (0, 0.7) and (0.7, 1)
            give disjoint training and held-out clips of the same videos.
    """

    def __init__(
        self,
        videos: Sequence[str | os.PathLike],
        num_frames: int = 16,
        sample_rate: int = 2,
        image_size: int = 224,
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
        self.epoch = 0
        self.preparer = FacePreparer(image_size, crop, mask_strategy.startswith("fasking"), face_parser)
        self.cache_entries = None
        if cache_dir is not None:
            self.cache_entries = [prepare_video_cache(v, cache_dir, self.preparer) for v in self.videos]
            self.frame_counts = [len(np.load(e / "crops.npy", mmap_mode="r")) for e in self.cache_entries]
        else:
            self.frame_counts = [count_frames(v) for v in self.videos]

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

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.videos) * self.clips_per_video

    def frame_indices(self, index: int, generator: torch.Generator) -> list[int]:
        """The clip's frame indices: `num_frames` every `sample_rate` frames from a random start in `frame_range`
        (the last frame of the range repeats when the range is shorter than a clip)."""
        total = self.frame_counts[index // self.clips_per_video]
        first, end = math.floor(self.frame_range[0] * total), math.ceil(self.frame_range[1] * total)
        span = (self.num_frames - 1) * self.sample_rate + 1
        start = first + int(torch.randint(0, max(end - first - span, 0) + 1, (), generator=generator))
        return [min(start + i * self.sample_rate, end - 1) for i in range(self.num_frames)]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """`pixel_values_videos` (num_frames, 3, image_size, image_size) float32 in [0, 1] and `bool_masked_pos`
        (num_tokens,) bool, True where masked."""
        generator = seeded_generator(self.seed, self.epoch, index)
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
        pixel_values_videos = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255
        bool_masked_pos = generate_mask(
            self.mask_strategy,
            self.num_frames,
            self.image_size,
            self.patch_size,
            self.tubelet_size,
            self.mask_ratio,
            generator,
            label_maps=None if labels is None else torch.from_numpy(np.ascontiguousarray(labels)),
        )
        return {"pixel_values_videos": pixel_values_videos, "bool_masked_pos": bool_masked_pos}


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A permutation of `range(num_items)` drawn from `seeded_generator(seed, epoch)`: the same order on every process
    and after a resume. `set_epoch` picks the epoch (Accelerate's prepared dataloaders call it)."""

    def __init__(self, num_items: int, seed: int = 0):
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self):
        return iter(torch.randperm(self.num_items, generator=seeded_generator(self.seed, self.epoch)).tolist())


# ---------------------------------------------------------------------------------------------------------------------
# Initialization from VideoMAE
# ---------------------------------------------------------------------------------------------------------------------

# Transformers' VideoMAE names -> ours, applied in order after the "videomae." prefix is handled. The attention's
# separate query/key/value matrices are fused into `qkv` by `videomae_to_marlin_state_dict`.
VIDEOMAE_KEY_MAPPING = [
    (r"^embeddings\.patch_embeddings\.", "marlin.embeddings.patch_embeddings."),
    (r"^encoder\.layer\.", "marlin.encoder.layer."),
    (r"^layernorm\.", "marlin.layernorm."),
    (r"^mask_token$", "decoder.mask_token"),
    (r"^decoder\.decoder_layers\.", "decoder.layer."),
    (r"^decoder\.norm\.", "decoder.layernorm."),
    (r"\.attention\.output\.dense\.", ".attention.proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]
# Fixed sin-cos tables and heads a VideoMAE checkpoint may carry that MARLIN does not have.
_VIDEOMAE_IGNORED = re.compile(r"(position_embeddings|^fc_norm\.|^classifier\.)")
_VIDEOMAE_ATTENTION = re.compile(r"^(.*)\.attention\.attention\.(query|key|value|q_bias|v_bias)(?:\.(weight|bias))?$")


def videomae_to_marlin_state_dict(
    state_dict: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a Transformers VideoMAE state dict (`VideoMAEForPreTraining`, or `VideoMAEModel`) to
    `MarlinForPreTraining`'s names.

    Each layer's `query.weight`, `key.weight`, `value.weight` (hidden, hidden) are stacked into our fused
    `qkv.weight` (3 * hidden, hidden); `query.bias` / `value.bias` (or the older `q_bias` / `v_bias`) become our
    `q_bias` / `v_bias` (the key has no bias in either model).

    Returns:
        (renamed state dict, names of the VideoMAE keys left out: position tables, classifier heads).
    """
    renamed: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    attention: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        name = key[len("videomae.") :] if key.startswith("videomae.") else key
        if _VIDEOMAE_IGNORED.search(name):
            skipped.append(key)
            continue
        match = _VIDEOMAE_ATTENTION.match(name)
        if match:
            prefix, part, kind = match.groups()
            slot = {"q_bias": "query.bias", "v_bias": "value.bias"}.get(part, f"{part}.{kind}")
            attention.setdefault(prefix, {})[slot] = tensor
            continue
        for pattern, replacement in VIDEOMAE_KEY_MAPPING:
            name = re.sub(pattern, replacement, name)
        renamed[name] = tensor
    for prefix, parts in attention.items():
        for pattern, replacement in VIDEOMAE_KEY_MAPPING:
            prefix = re.sub(pattern, replacement, prefix)
        try:
            weights = [parts[f"{part}.weight"] for part in ("query", "key", "value")]
        except KeyError as missing:
            raise CheckpointError(f"VideoMAE checkpoint: attention of {prefix} lacks {missing.args[0]}.") from None
        renamed[f"{prefix}.attention.qkv.weight"] = torch.cat(weights, dim=0)  # (3 * hidden, hidden)
        for part, ours in (("query", "q_bias"), ("value", "v_bias")):
            if f"{part}.bias" in parts:
                renamed[f"{prefix}.attention.{ours}"] = parts[f"{part}.bias"]
    return renamed, skipped


def marlin_config_from_videomae(videomae_config: dict, **overrides) -> MarlinConfig:
    """A `MarlinConfig` with the sizes of a VideoMAE `config.json` (MARLIN's own defaults for everything else:
    LayerNorm eps 1e-5, raw [0, 1] inputs, no normalized-pixel loss)."""
    fields = {
        name: videomae_config[name]
        for name in (
            "image_size",
            "patch_size",
            "num_channels",
            "num_frames",
            "tubelet_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "decoder_hidden_size",
            "decoder_num_hidden_layers",
            "decoder_num_attention_heads",
            "decoder_intermediate_size",
        )
        if name in videomae_config
    }
    fields["qkv_bias"] = videomae_config.get("qv_bias", videomae_config.get("qkv_bias", True))
    return MarlinConfig(**{**fields, **overrides})


def _read_checkpoint_folder(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if files:
        from safetensors.torch import load_file

        state_dict = {}
        for file in files:
            state_dict.update(load_file(str(file)))
        return state_dict
    bins = sorted(folder.glob("*.bin"))
    if not bins:
        raise CheckpointError(f"{folder}: no *.safetensors or *.bin weights in this folder.")
    state_dict = {}
    for file in bins:
        state_dict.update(torch.load(file, map_location="cpu", weights_only=True))
    return state_dict


def resolve_checkpoint_folder(source: str | os.PathLike) -> Path:
    """A local folder, or a Hub id downloaded (or found in the local cache) with `huggingface_hub`."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)):
        raise CheckpointError(f"{source}: not a checkpoint folder or Hub id (e.g. MCG-NJU/videomae-base).")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(source), allow_patterns=["config.json", "*.safetensors", "*.bin"]))
    except Exception as error:  # offline, unknown repo, gated...
        raise CheckpointError(
            f"{source}: cannot download from the Hub ({type(error).__name__}); download it first and pass its folder."
        ) from None


def load_videomae_weights(model, source: str | os.PathLike) -> list[str]:
    """Initialize a `MarlinForPreTraining` (or the model without its critic) from a Transformers VideoMAE checkpoint.

    Args:
        model: the MARLIN model; its config must have the checkpoint's sizes (see `marlin_config_from_videomae`).
        source: a folder saved by `save_pretrained` or a Hub id such as "MCG-NJU/videomae-base".

    Returns:
        Our parameter names the checkpoint did not provide, which keep their initialization (the critic always; the
        encoder's final LayerNorm when the VideoMAE model pools by mean and so has none).

    Raises:
        CheckpointError: unreadable checkpoint, a key we cannot place, or a shape that does not match the model.
    """
    renamed, _ = videomae_to_marlin_state_dict(_read_checkpoint_folder(resolve_checkpoint_folder(source)))
    expected = model.state_dict()
    unexpected = sorted(set(renamed) - set(expected))
    if unexpected:
        raise CheckpointError(f"{source}: VideoMAE keys with no MARLIN counterpart: {unexpected[:6]}.")
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in renamed.items()]
    mismatched = [m for m, (k, v) in zip(mismatched, renamed.items()) if v.shape != expected[k].shape]
    if mismatched:
        raise CheckpointError(
            f"{source}: shapes differ from this MARLIN config ({mismatched[0]}); build the config with "
            "marlin_config_from_videomae."
        )
    model.load_state_dict(renamed, strict=False)
    return sorted(set(expected) - set(renamed))


__all__ = [
    "VIDEOMAE_KEY_MAPPING",
    "attach_critic",
    "count_frames",
    "critic_loss",
    "decode_frames",
    "detach_critic",
    "EpochShuffleSampler",
    "FaceClipDataset",
    "FacePreparer",
    "find_videos",
    "frame_files",
    "generator_adversarial_loss",
    "gradient_penalty",
    "learning_rate_at",
    "load_videomae_weights",
    "marlin_config_from_videomae",
    "masked_patch_targets",
    "penalty_interpolates",
    "precomputed_label_maps",
    "prepare_video_cache",
    "reconstruction_grid",
    "reconstruction_loss",
    "scaled_learning_rates",
    "videomae_to_marlin_state_dict",
    "youtube_faces_clips",
]
