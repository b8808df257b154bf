"""What a pretrained MARLIN sees: mask each window of a video and let the decoder fill it in.

This is the pretraining task itself (a `MarlinForPreTraining`, masks of `masking`, parsing of `face_parsing`) run on
the windows of one video, so it lives with pretraining; drawing the result is `visualization`'s, and `marlin
reconstruct` and the app only wire the two together.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..constants import SAMPLE_RATE, STRIDE
from ..modeling_marlin import MarlinForPreTraining
from ..visualization import paint_predictions
from .masking import generate_mask, seeded_generator


@dataclass
class WindowReconstruction:
    """One window: what the model read, what it was shown and what it made of it.

    Attributes:
        window: the video window (`video.windows.VideoWindow`: frame indices, times in seconds, index); its
            `frames`, the source frames (num_frames, height, width, 3) uint8, are kept only when asked for, else None.
        face: the window's face crops and boxes (`video.cropping.FaceCrops`, frame pixels), or None where no face
            was tracked (random/tube/frame masking without `crop_face`).
        original: (num_frames, 3, image_size, image_size) float32 in [0, 1], the model's input.
        masked: the same with every masked tubelet grey (0.5): what the encoder is shown.
        reconstruction: the same with every masked tubelet replaced by the decoder's prediction, clamped to [0, 1].
        bool_masked_pos: (num_tokens,) bool, True where masked, tokens in (time, row, column) order.
        logits: (num_masked, 3 * tubelet_size * patch_size**2) float32, the decoder's raw prediction.
        label_maps: (num_frames, image_size, image_size) uint8 LaPa labels 0..10 (all 0 where no face was parsed).
        features: (hidden_size,) float32 pooled encoder feature of the unmasked clip when asked for, else None.
    """

    window: object
    face: object | None
    original: torch.Tensor
    masked: torch.Tensor
    reconstruction: torch.Tensor
    bool_masked_pos: torch.Tensor
    logits: torch.Tensor
    label_maps: torch.Tensor
    features: torch.Tensor | None = None


def reconstruct_video(
    path: str | os.PathLike,
    model: MarlinForPreTraining,
    strategy: str = "fasking",
    mask_ratio: float | None = None,
    crop_face: bool = False,
    seed: int = 0,
    parser=None,
    sample_rate: int = SAMPLE_RATE,
    stride: int = STRIDE,
    max_windows: int | None = None,
    with_features: bool = False,
    keep_source_frames: bool = False,
    tracker=None,
) -> Iterator[WindowReconstruction]:
    """Mask every window of a video and reconstruct it, window by window (streaming).

    The face is tracked whenever the crops or the masks need it: with `crop_face` the model reads square face crops
    (a video without a face is a `NoFaceError` line); otherwise it reads whole frames resized to its square input,
    and the Fasking strategies parse the face where it was found (where it was not, they fall back to random
    masking, as in pretraining).

    Args:
        path: the video.
        model: a `MarlinForPreTraining` (`loading.load_marlin(source, "pretraining")`); its config sets frames,
            size and tubelets.
        strategy: "fasking" (the paper's), "fasking_opp", "random", "tube" or "frame".
        mask_ratio: fraction of tokens masked, in [0, 1) (default: the config's, 0.9).
        seed: window `k`'s mask draws come from `seeded_generator(seed, k)`: the same masks on every run.
        parser: a `face_parsing.FaceParser` (default `LandmarkFaceParser()`; `FarlFaceParser(path)` for the paper's).
        sample_rate: take every `sample_rate`-th decoded frame (see `video.windows.iter_windows`).
        stride: the next window starts `stride` sampled frames later.
        max_windows: stop after this many windows (None: all).
        with_features: also give each window's pooled feature of the unmasked clip (one more encoder pass).
        keep_source_frames: keep each window's decoded frames in `window.frames` (to draw on them).
        tracker: a `video.face_tracking.FaceTracker` to use (default: a fresh one cropping at the model's size).

    Yields:
        One `WindowReconstruction` per window, in order.
    """
    from ..video_processing_marlin import MarlinVideoProcessor
    from .face_parsing import LandmarkFaceParser

    config = model.config
    mask_ratio = config.mask_ratio if mask_ratio is None else mask_ratio
    size, num_frames = config.image_size, config.num_frames
    processor = MarlinVideoProcessor(size={"height": size, "width": size}, num_frames=num_frames)
    parser = LandmarkFaceParser() if parser is None else parser
    needs_face = crop_face or strategy.startswith("fasking")
    paired = _windows_and_faces(path, config, sample_rate, stride, needs_face, crop_face, tracker)
    for count, (window, face) in enumerate(paired):
        if max_windows is not None and count >= max_windows:
            break
        frames = face.crops if crop_face else window.frames
        original = processor([frames], return_tensors="pt")["pixel_values_videos"][0].float()  # (t, 3, size, size)
        label_maps = torch.zeros(num_frames, size, size, dtype=torch.uint8)
        if face is not None:  # parsed for the parts picture even where the mask does not use it
            label_maps = parser(_as_uint8(original), _landmarks_in_input(face, window, crop_face, size))
        bool_masked_pos = generate_mask(
            strategy,
            num_frames,
            size,
            config.patch_size,
            config.tubelet_size,
            mask_ratio,
            seeded_generator(seed, window.index),
            label_maps=label_maps,
        )
        yield _reconstruct_window(
            model,
            window if keep_source_frames else dataclasses.replace(window, frames=None),
            face,
            original,
            bool_masked_pos,
            torch.as_tensor(label_maps).to(torch.uint8),
            with_features,
        )


def _windows_and_faces(path, config, sample_rate: int, stride: int, needs_face: bool, crop_face: bool, tracker):
    """The video's windows (`video.windows.iter_windows`), each with its tracked face (`FaceCrops`) where the crops or
    the masks need one, else None."""
    from ..video.face_tracking import FaceTracker, iter_face_windows
    from ..video.windows import iter_windows

    windows = iter_windows(path, num_frames=config.num_frames, sample_rate=sample_rate, stride=stride)
    if not needs_face:
        return ((window, None) for window in windows)
    tracker = tracker or FaceTracker(crop_size=config.image_size)
    # Without crop_face the face only guides the mask, so a video without one still has something to show.
    return iter_face_windows(windows, tracker, source=path, on_no_face="error" if crop_face else "centre")


def _reconstruct_window(
    model: MarlinForPreTraining,
    window,
    face,
    original: torch.Tensor,
    bool_masked_pos: torch.Tensor,
    label_maps: torch.Tensor,
    with_features: bool,
) -> WindowReconstruction:
    """The decoder's prediction of the masked tubelets of one clip `original` (t, 3, size, size), painted in."""
    patch_size, tubelet_size = model.config.patch_size, model.config.tubelet_size
    device = next(model.parameters()).device
    with torch.inference_mode():
        clip, mask = original[None].to(device), bool_masked_pos[None].to(device)
        logits = model(clip, mask, return_loss=False).logits.float().cpu()  # (1, masked, 3 * pt * p * p)
        features = model.marlin(clip).pooler_output[0].float().cpu() if with_features else None
    grey = torch.full_like(logits, 0.5)
    return WindowReconstruction(
        window=window,
        face=face,
        original=original,
        masked=paint_predictions(original[None], grey, bool_masked_pos[None], patch_size, tubelet_size)[0],
        reconstruction=paint_predictions(original[None], logits, bool_masked_pos[None], patch_size, tubelet_size)[0],
        bool_masked_pos=bool_masked_pos,
        logits=logits[0],
        label_maps=label_maps,
        features=features,
    )


def _as_uint8(pixel_values: torch.Tensor) -> torch.Tensor:
    """(t, 3, h, w) in [0, 1] -> (t, h, w, 3) uint8, what the face parsers read."""
    return (pixel_values.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def _landmarks_in_input(face, window, crop_face: bool, size: int) -> torch.Tensor:
    """(t, 5, 2) landmarks in the model input's pixels, NaN on frames without a detection (random masking there)."""
    if crop_face:
        landmarks = face.crop_landmarks.copy()
    else:  # whole frames squeezed to size x size: scale x and y apart
        height, width = window.frames.shape[1:3]
        landmarks = face.landmarks * np.array([size / width, size / height], dtype=np.float32)
    landmarks[~face.detected] = np.nan
    return torch.from_numpy(np.ascontiguousarray(landmarks, dtype=np.float32))
