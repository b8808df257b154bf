"""Video processor for MARLIN: frames to `pixel_values_videos` in [0, 1], no mean/std normalization."""

from __future__ import annotations

import os

import numpy as np
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor


class MarlinVideoProcessorKwargs(VideosKwargs, total=False):
    r"""
    sample_rate (`int`, *optional*, defaults to 2):
        For video files: take every `sample_rate`-th decoded frame (see `video.windows.iter_windows`).
    stride (`int`, *optional*, defaults to 16):
        For video files: the next window starts `stride` sampled frames later.
    """

    sample_rate: int
    stride: int


class MarlinVideoProcessor(BaseVideoProcessor):
    r"""Turns clips of RGB frames into MARLIN's input, `pixel_values_videos` of shape
    (batch, num_frames, 3, height, width), float32 in [0, 1].

    MARLIN was trained on raw RGB scaled to [0, 1]: there is no mean/std normalization (`do_normalize=False`). Frames
    are resized to 224x224 (bilinear) without centre-cropping, because MARLIN's inputs are square face crops (see
    `video.face_tracking.FaceTracker`); non-square frames are squashed, so crop them first.

    Accepts, as one clip or a batch of clips:
    - numpy arrays or torch tensors (frames, height, width, 3) or (frames, 3, height, width), uint8 or floats in
      [0, 255], or floats in [0, 1] (taken as already scaled, not divided by 255 again); 5-D arrays are batches.
      Each clip must have `num_frames` frames (a clear error otherwise); cut longer videos with
      `video.windows.plan_windows`.
    - lists of frames (numpy arrays, tensors or PIL images);
    - paths of video files, decoded with PyAV (no torchcodec needed) and cut into MARLIN windows of `num_frames`
      frames every `sample_rate` frames, `stride` sampled frames apart, each window one row of the batch (the whole
      video's windows are held in memory: use `video.windows.iter_windows` directly for long videos).
    """

    resample = PILImageResampling.BILINEAR
    size = {"height": 224, "width": 224}
    default_to_square = True
    do_resize = True
    do_center_crop = False
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = False
    image_mean = None
    image_std = None
    do_convert_rgb = True
    do_sample_frames = False
    num_frames = 16
    sample_rate = 2
    stride = 16
    valid_kwargs = MarlinVideoProcessorKwargs
    model_input_names = ["pixel_values_videos"]

    def __init__(self, **kwargs: Unpack[MarlinVideoProcessorKwargs]):
        super().__init__(**kwargs)

    def preprocess(self, videos, **kwargs: Unpack[MarlinVideoProcessorKwargs]):
        num_frames = kwargs.pop("num_frames", None) or self.num_frames
        sample_rate = kwargs.pop("sample_rate", None) or self.sample_rate
        stride = kwargs.pop("stride", None) or self.stride
        clips = self._to_clips(videos, num_frames, sample_rate, stride)
        if not clips:
            raise ValueError("MarlinVideoProcessor got no video; pass a path, an array or a list of frames.")
        for clip in clips:
            if len(clip) != num_frames:
                raise ValueError(
                    f"a clip has {len(clip)} frames; MARLIN takes clips of {num_frames} frames, (frames, height, "
                    "width, 3) or (frames, 3, height, width): pass a video file, or cut its windows with "
                    "marlin_transformers.video.plan_windows."
                )
        if "do_rescale" not in kwargs:
            scaled = [self._is_unit_float(clip) for clip in clips]
            if all(scaled):
                kwargs["do_rescale"] = False  # floats in [0, 1] are already MARLIN's input range
            elif any(scaled):
                raise ValueError(
                    "some clips are floats in [0, 1] and others are not; pass all as uint8 (or floats in [0, 255]) "
                    "or all as floats in [0, 1]."
                )
        return super().preprocess(clips, **kwargs)

    @staticmethod
    def _is_unit_float(clip) -> bool:
        """True for a floating-point clip with every value in [0, 1] (already scaled), False for uint8 or [0, 255]."""
        import torch

        if isinstance(clip, torch.Tensor):
            return (
                clip.is_floating_point() and bool(clip.numel()) and float(clip.max()) <= 1 and float(clip.min()) >= 0
            )
        clip = np.asarray(clip)
        return np.issubdtype(clip.dtype, np.floating) and clip.size > 0 and clip.max() <= 1 and clip.min() >= 0

    def _to_clips(self, videos, num_frames: int, sample_rate: int, stride: int) -> list:
        """A flat list of clips, each (frames, H, W, C) or (frames, C, H, W); video files become their windows."""
        import torch
        from PIL import Image

        if isinstance(videos, (str, os.PathLike)):
            # Decoding is the package's (PyAV); as Hub remote code without the package, this file takes frames only.
            # (In a try block, so transformers' remote-code import check does not require the package.)
            try:
                from marlin_transformers.video.windows import iter_windows
            except ImportError:
                raise ImportError(
                    f"{videos}: reading video files needs `pip install marlin-transformers` (PyAV decoding); "
                    "or pass decoded frames, (frames, height, width, 3)."
                ) from None
            return [w.frames for w in iter_windows(videos, num_frames, sample_rate, stride)]
        if isinstance(videos, (np.ndarray, torch.Tensor)):
            if videos.ndim == 5:
                return list(videos)
            if videos.ndim == 4:
                return [videos]
            if videos.ndim == 3:  # a single frame
                return [videos[None]]
            raise ValueError(f"a video array must have 3 to 5 dimensions, got shape {tuple(videos.shape)}")
        if isinstance(videos, Image.Image):
            return [np.asarray(videos.convert("RGB"))[None]]
        if isinstance(videos, (list, tuple)):
            frames = [v for v in videos if isinstance(v, Image.Image) or (hasattr(v, "ndim") and v.ndim == 3)]
            if videos and len(frames) == len(videos):  # one clip given as a list of frames
                if isinstance(videos[0], torch.Tensor):
                    return [torch.stack(list(videos))]
                return [np.stack([np.asarray(f.convert("RGB")) if isinstance(f, Image.Image) else f for f in videos])]
            return [clip for video in videos for clip in self._to_clips(video, num_frames, sample_rate, stride)]
        raise TypeError(f"cannot read a video from {type(videos).__name__}; pass a path, an array or a list of frames")


__all__ = ["MarlinVideoProcessor"]
