"""Encode small test videos with PyAV, so tests never depend on files from outside the repository.

Frames made by `indexed_frames` carry their own index as an 8-bit code of black/white blocks along the top, so a test
can recover which decoded frame ended up where after lossy compression (`read_frame_index`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np

# Codec per container, all in PyAV's bundled ffmpeg.
CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}

# The astronaut's face in skimage.data.astronaut() (512x512), as found by MTCNN: box (x1, y1, x2, y2) in pixels.
ASTRONAUT_FACE_BOX = (181.0, 62.0, 268.0, 172.0)
# The patch of that image the face videos paste around: rows 20:220, columns 125:325.
_PATCH_TOP, _PATCH_LEFT, PATCH_SIZE = 20, 125, 200
# Centre of the face box inside the patch, (x, y) pixels.
FACE_CENTRE_IN_PATCH = (
    (ASTRONAUT_FACE_BOX[0] + ASTRONAUT_FACE_BOX[2]) / 2 - _PATCH_LEFT,
    (ASTRONAUT_FACE_BOX[1] + ASTRONAUT_FACE_BOX[3]) / 2 - _PATCH_TOP,
)

_BIT_BLOCK = 8  # side of one bit's block in `indexed_frames`, pixels


def encode_video(
    path: str | os.PathLike,
    frames: Sequence[np.ndarray] | np.ndarray,
    fps: int = 30,
    codec: str | None = None,
    pix_fmt: str = "yuv420p",
    timestamps: Sequence[float] | None = None,
    rotation: int | None = None,
    with_audio: bool = False,
    lossless: bool = True,
) -> str:
    """Write RGB uint8 `frames` ((T, H, W, 3)) to `path`; the codec follows the extension (see CODECS).

    Args:
        timestamps: seconds per frame for a variable frame rate video (time base 1/1000); default regular `fps`.
        rotation: counter-clockwise display rotation written in the stream's display matrix (the frames are stored
            as given; a player shows them turned by `rotation` degrees).
        with_audio: also mux a quiet AAC track, to check that it is ignored.
        lossless: libx264 at qp 0, so frames decode (nearly) as encoded.
    """
    path = os.fspath(path)
    codec = codec or CODECS[os.path.splitext(path)[1]]
    height, width = frames[0].shape[:2]
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264" and lossless:
            stream.options = {"qp": "0", "preset": "ultrafast"}
        elif codec.startswith("libvpx"):
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "4", "b": "0"}
        if timestamps is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio = container.add_stream("aac", rate=16000) if with_audio else None
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if timestamps is not None:
                frame.pts = round(timestamps[index] * 1000)
                frame.time_base = Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if audio is not None:
            _mux_silence(container, audio, seconds=len(frames) / fps)
    return path


def _mux_silence(container, stream, seconds: float) -> None:
    samples = np.zeros((1, int(stream.rate * seconds)), dtype=np.float32)
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
    frame.sample_rate = stream.rate
    container.mux(stream.encode(frame))
    container.mux(stream.encode())


def write_audio_only(path: str | os.PathLike, seconds: float = 1.0) -> str:
    """An .mp4 (or other container) holding one AAC track and no video."""
    path = os.fspath(path)
    with av.open(path, "w") as container:
        _mux_silence(container, container.add_stream("aac", rate=16000), seconds)
    return path


def indexed_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """(num_frames, height, width, 3) uint8 frames whose index (mod 256) is written as 8 blocks along the top."""
    if width < 8 * _BIT_BLOCK or height < _BIT_BLOCK:
        raise ValueError(f"indexed frames need at least {8 * _BIT_BLOCK}x{_BIT_BLOCK} pixels")
    frames = np.full((num_frames, height, width, 3), 64, dtype=np.uint8)
    for index in range(num_frames):
        for bit in range(8):
            if (index >> bit) & 1:
                frames[index, :_BIT_BLOCK, bit * _BIT_BLOCK : (bit + 1) * _BIT_BLOCK] = 255
            else:
                frames[index, :_BIT_BLOCK, bit * _BIT_BLOCK : (bit + 1) * _BIT_BLOCK] = 0
    return frames


def read_frame_index(frame: np.ndarray) -> int:
    """Inverse of `indexed_frames` for one decoded (H, W, 3) frame."""
    index = 0
    for bit in range(8):
        block = frame[1 : _BIT_BLOCK - 1, bit * _BIT_BLOCK + 1 : (bit + 1) * _BIT_BLOCK - 1]
        if block.mean() > 128:
            index |= 1 << bit
    return index


def astronaut_patch(scale: float = 1.0, mirror: bool = False) -> np.ndarray:
    """The astronaut's head and shoulders, (PATCH_SIZE * scale) pixels square, RGB uint8."""
    from skimage import data
    from skimage.transform import resize

    patch = data.astronaut()[_PATCH_TOP : _PATCH_TOP + PATCH_SIZE, _PATCH_LEFT : _PATCH_LEFT + PATCH_SIZE]
    if mirror:
        patch = patch[:, ::-1]
    if scale != 1.0:
        side = round(PATCH_SIZE * scale)
        patch = (resize(patch, (side, side), anti_aliasing=True) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(patch)


def _paste(frame: np.ndarray, patch: np.ndarray, left: int, top: int) -> None:
    """Paste `patch` with its top-left corner at (left, top), clipped to the frame."""
    height, width = frame.shape[:2]
    y1, x1 = max(top, 0), max(left, 0)
    y2, x2 = min(top + patch.shape[0], height), min(left + patch.shape[1], width)
    if y2 > y1 and x2 > x1:
        frame[y1:y2, x1:x2] = patch[y1 - top : y2 - top, x1 - left : x2 - left]


def background(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, face-free colour gradient with a little noise, (height, width, 3) uint8."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([40 + 60 * xs / width, 60 + 40 * ys / height, 90 + 0 * xs], axis=-1)
    return np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)


def moving_face_frames(
    num_frames: int, height: int = 240, width: int = 320, scale: float = 0.6
) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's face moving left to right and down over a background.

    Returns:
        frames: (num_frames, height, width, 3) uint8 RGB.
        centres: (num_frames, 2) true (x, y) centre of the face box in each frame, pixels.
    """
    patch = astronaut_patch(scale)
    side = patch.shape[0]
    frames, centres = [], []
    for index in range(num_frames):
        progress = index / max(num_frames - 1, 1)
        left = round(10 + progress * (width - side - 20))
        top = round(5 + progress * (height - side - 10))
        frame = background(height, width)
        _paste(frame, patch, left, top)
        frames.append(frame)
        centres.append((left + FACE_CENTRE_IN_PATCH[0] * scale, top + FACE_CENTRE_IN_PATCH[1] * scale))
    return np.stack(frames), np.asarray(centres)


def two_faces_frames(
    num_frames: int, height: int = 240, width: int = 400, appear_at: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """A first face, still, on the left; from frame `appear_at` a larger mirrored second face on the right.

    Returns:
        frames: (num_frames, height, width, 3) uint8 RGB.
        first_centre: (2,) (x, y) centre of the first face's box, pixels.
    """
    first, second = astronaut_patch(0.55), astronaut_patch(0.9, mirror=True)
    first_left, first_top = 15, 60
    frames = []
    for index in range(num_frames):
        frame = background(height, width)
        _paste(frame, first, first_left, first_top)
        if index >= appear_at:
            _paste(frame, second, width - second.shape[1] - 10, 20)
        frames.append(frame)
    centre = np.array([first_left + FACE_CENTRE_IN_PATCH[0] * 0.55, first_top + FACE_CENTRE_IN_PATCH[1] * 0.55])
    return np.stack(frames), centre
