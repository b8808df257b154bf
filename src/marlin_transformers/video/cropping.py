"""Cut square face crops out of frames, given where the face is.

Each frame is cut to a square of side `max(w, h) * margin` centred on its face box (marlin-pytorch's crop when margin
is 1), zero-padded outside the frame and resized to `crop_size`. Where the boxes come from is not this module's
concern: `face_tracking.FaceTracker` makes them (a `FaceTrack` per window), and `centre_track` stands in for a video
without a face.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..constants import MARLIN_CROP_SIZE, SQUARE_ENOUGH
from ..exceptions import SqueezedVideoWarning

# A window's frames: a (T, H, W, 3) uint8 RGB array, or a sequence of T (H, W, 3) ones (no copy of the whole window).
Frames = np.ndarray | Sequence[np.ndarray]


@dataclass
class FaceTrack:
    """Where the tracked face is in each frame of a window (frame pixels).

    Attributes:
        boxes: (num_frames, 4) float32 smoothed face box (x1, y1, x2, y2).
        landmarks: (num_frames, 5, 2) float32 (x, y) of the left eye, right eye, nose, left and right mouth corners,
            as detected, or interpolated where the face was missed.
        detected: (num_frames,) bool, True where a detection of the tracked face was found on that frame.
        confidence: (num_frames,) float32 MTCNN probability of that detection, 0 where missed.
    """

    boxes: np.ndarray
    landmarks: np.ndarray
    detected: np.ndarray
    confidence: np.ndarray


@dataclass
class FaceCrops:
    """Square face crops of one window and where they came from.

    Attributes:
        crops: (num_frames, crop_size, crop_size, 3) uint8 RGB.
        boxes: (num_frames, 4) float32 smoothed face box (x1, y1, x2, y2), frame pixels.
        crop_boxes: (num_frames, 4) int64 square region cut from the frame (x1, y1, x2, y2), frame pixels; may reach
            outside the frame, where the crop is zero.
        landmarks: (num_frames, 5, 2) float32 five landmarks (see FaceTrack), frame pixels.
        crop_landmarks: (num_frames, 5, 2) float32 the same landmarks in crop pixels.
        detected: (num_frames,) bool, True where the tracked face was detected on that frame (not interpolated).
        confidence: (num_frames,) float32 detection probability, 0 where missed.
    """

    crops: np.ndarray
    boxes: np.ndarray
    crop_boxes: np.ndarray
    landmarks: np.ndarray
    crop_landmarks: np.ndarray
    detected: np.ndarray
    confidence: np.ndarray

    @property
    def detected_fraction(self) -> float:
        """Fraction of the window's frames with a real detection of the tracked face, in [0, 1]."""
        return float(self.detected.mean()) if len(self.detected) else 0.0


def crop_with_padding(frame: np.ndarray, region: Sequence[int]) -> np.ndarray:
    """frame[y1:y2, x1:x2] for an integer region (x1, y1, x2, y2) that may reach outside, zero there.

    marlin-pytorch's `crop_with_padding`; slicing before handing pixels to PIL avoids copying whole frames.

    Args:
        frame: (H, W, ...) any dtype.
        region: (x1, y1, x2, y2) frame pixels.

    Returns:
        (y2 - y1, x2 - x1, ...) of the frame's dtype; a view of the frame when the region lies inside it.
    """
    x1, y1, x2, y2 = (int(v) for v in region)
    height, width = frame.shape[:2]
    if x1 >= 0 and y1 >= 0 and x2 <= width and y2 <= height:
        return frame[y1:y2, x1:x2]
    out = np.zeros((y2 - y1, x2 - x1, *frame.shape[2:]), dtype=frame.dtype)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = frame[sy1:sy2, sx1:sx2]
    return out


def centre_boxes(num_frames: int, height: int, width: int) -> np.ndarray:
    """(num_frames, 4) float32 boxes of the largest centred square, the fallback when a video has no face."""
    side = min(height, width)
    x1, y1 = (width - side) / 2, (height - side) / 2
    return np.tile(np.array([x1, y1, x1 + side, y1 + side], dtype=np.float32), (num_frames, 1))


def centre_track(num_frames: int, height: int, width: int) -> FaceTrack:
    """A track on the largest centred square of (height, width) frames, nothing detected, landmarks NaN."""
    return FaceTrack(
        boxes=centre_boxes(num_frames, height, width),
        landmarks=np.full((num_frames, 5, 2), np.nan, dtype=np.float32),
        detected=np.zeros(num_frames, dtype=bool),
        confidence=np.zeros(num_frames, dtype=np.float32),
    )


def square_crop_boxes(boxes: np.ndarray, margin: float = 1.0) -> np.ndarray:
    """(T, 4) int64 squares (x1, y1, x2, y2) of side `round(max(w, h) * margin)` (at least 2) centred on each box."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sides = np.maximum(np.round((boxes[:, 2:] - boxes[:, :2]).max(axis=1) * margin), 2).astype(np.int64)
    corners = np.round(centres - sides[:, None] / 2).astype(np.int64)
    return np.concatenate([corners, corners + sides[:, None]], axis=1)


def reference_crop_boxes(boxes: np.ndarray) -> np.ndarray:
    """(T, 4) int64 squares as the MARLIN reference's preprocessing cuts them: side `2 * int(max(w, h) / 2)` around
    the integer centre `int(x1 + w / 2), int(y1 + h / 2)` of each detector box (at least 2 pixels)."""
    sizes = boxes[:, 2:] - boxes[:, :2]
    halves = np.maximum((sizes.max(axis=1) / 2).astype(np.int64), 1)
    centres = (boxes[:, :2] + sizes / 2).astype(np.int64)
    return np.concatenate([centres - halves[:, None], centres + halves[:, None]], axis=1)


def crop_regions(
    frames: Frames,
    crop_boxes: np.ndarray,
    landmarks: np.ndarray | None = None,
    crop_size: int = MARLIN_CROP_SIZE,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Cut each frame's square `crop_boxes[t]` (zero-padded outside the frame) and resize it to `crop_size`.

    Args:
        frames: (T, H, W, 3) uint8 RGB, or T (H, W, 3) frames (`Frames`).
        crop_boxes: (T, 4) int64 squares (x1, y1, x2, y2), frame pixels.
        landmarks: optional (T, K, 2) frame pixels, mapped into crop pixels.

    Returns:
        crops (T, crop_size, crop_size, 3) uint8 and crop_landmarks (T, K, 2) float32 (None without landmarks).
    """
    from PIL import Image

    crops = np.empty((len(frames), crop_size, crop_size, 3), dtype=np.uint8)
    for t, (frame, region) in enumerate(zip(frames, crop_boxes)):
        crop = Image.fromarray(np.ascontiguousarray(crop_with_padding(frame, region)))
        crops[t] = np.asarray(crop.resize((crop_size, crop_size), Image.BILINEAR))
    crop_landmarks = None
    if landmarks is not None:
        sides = (crop_boxes[:, 2] - crop_boxes[:, 0]).astype(np.float64)
        scale = (crop_size / sides)[:, None, None]
        crop_landmarks = ((landmarks - crop_boxes[:, None, :2]) * scale).astype(np.float32)
    return crops, crop_landmarks


def crop_faces(
    frames: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray | None = None,
    margin: float = 1.0,
    crop_size: int = MARLIN_CROP_SIZE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Cut a square of side `max(w, h) * margin` centred on each box, zero-padded outside, resized to `crop_size`.

    Args:
        frames: (T, H, W, 3) uint8 RGB.
        boxes: (T, 4) (x1, y1, x2, y2) frame pixels.
        landmarks: optional (T, K, 2) frame pixels, mapped into crop pixels.

    Returns:
        crops (T, crop_size, crop_size, 3) uint8, crop_boxes (T, 4) int64 in frame pixels, crop_landmarks
        (T, K, 2) float32 in crop pixels (None without landmarks).
    """
    crop_boxes = square_crop_boxes(boxes, margin)
    crops, crop_landmarks = crop_regions(frames, crop_boxes, landmarks, crop_size)
    return crops, crop_boxes, crop_landmarks


def crop_track(
    frames: Frames,
    track: FaceTrack,
    margin: float = 1.0,
    crop_size: int = MARLIN_CROP_SIZE,
    crop_boxes: np.ndarray | None = None,
) -> FaceCrops:
    """Cut a window's frames (`Frames`) around its track (see `crop_faces`), or, given `crop_boxes` (T, 4) in frame
    pixels (e.g. `reference_crop_boxes`), exactly those regions."""
    if crop_boxes is None:
        crop_boxes = square_crop_boxes(track.boxes, margin)
    crops, crop_landmarks = crop_regions(frames, crop_boxes, track.landmarks, crop_size)
    return FaceCrops(
        crops=crops,
        boxes=track.boxes,
        crop_boxes=crop_boxes,
        landmarks=track.landmarks,
        crop_landmarks=crop_landmarks,
        detected=track.detected,
        confidence=track.confidence,
    )


def reference_square(box: Sequence[float]) -> tuple[int, int, int, int]:
    """The MARLIN paper code's CelebV-HQ crop around a face box: a square of side 2 * int(max(w, h) / 2) centred on
    the box (FaceX-Zoo's cropper), as an integer region (x1, y1, x2, y2) that may reach outside the frame.

    Args:
        box: (x1, y1, x2, y2) frame pixels.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    half = int(max(x2 - x1, y2 - y1) / 2)
    centre_x, centre_y = int((x1 + x2) / 2), int((y1 + y2) / 2)
    return centre_x - half, centre_y - half, centre_x + half, centre_y + half


def warn_if_squeezed(source: str | os.PathLike, width: int, height: int, size: int) -> bool:
    """Warn (`SqueezedVideoWarning`) when frames of `width` x `height` pixels, read whole, are far from square
    (width / height outside `constants.SQUARE_ENOUGH`), so resizing them to `size` x `size` squeezes the face;
    returns whether it warned."""
    low, high = SQUARE_ENOUGH
    if low <= width / height <= high:
        return False
    warnings.warn(SqueezedVideoWarning(os.fspath(source), width, height, size), stacklevel=2)
    return True
