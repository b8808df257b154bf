"""Write RGB frames to a video file with PyAV: H.264 (MPEG-4 part 2 where libx264 is missing), yuv420p or lossless
RGB, atomic."""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float | Fraction,
    crf: int | None = 18,
    preset: str | None = None,
    lossless: bool = False,
) -> int:
    """Encode `frames` into `path`, which appears only once complete (written beside it, then renamed).

    Frames are streamed: memory holds one frame, not the video.

    Args:
        path: the video to write; its extension picks the container (.mp4, .mkv, ...).
        frames: (height, width, 3) uint8 RGB arrays, all of one size (even sides for yuv420p).
        fps: frames per second; a float is turned into a fraction (29.97 -> 30000/1001).
        crf: H.264 quality (lower is better, 18 is visually lossless); None leaves the encoder's default.
        preset: x264 speed preset ("fast", "medium", ...); None leaves the encoder's default.
        lossless: RGB H.264 at qp 0 (libx264rgb, rgb24: every pixel decodes as given, about 5-10x larger; no
            chroma subsampling, so any side works), instead of yuv420p at `crf`.

    Returns:
        The number of frames written (0 writes nothing and leaves no file).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    rate = Fraction(fps).limit_denominator(1001)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    if lossless:
        if "libx264rgb" not in av.codecs_available:
            raise RuntimeError("lossless writing needs PyAV built with libx264rgb (PyPI's av wheels are)")
        codec = "libx264rgb"
    num_frames = 0
    try:
        with av.open(str(partial), mode="w") as container:
            stream = None
            for frame in frames:
                if stream is None:
                    stream = container.add_stream(codec, rate=rate)
                    stream.height, stream.width = frame.shape[:2]
                    stream.pix_fmt = "rgb24" if lossless else "yuv420p"
                    if lossless:
                        stream.options = {"qp": "0", "preset": preset or "veryfast"}
                    elif codec == "libx264":
                        options = {"crf": None if crf is None else str(crf), "preset": preset}
                        stream.options = {k: v for k, v in options.items() if v is not None}
                video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.uint8), format="rgb24")
                container.mux(stream.encode(video_frame))
                num_frames += 1
            if stream is not None:
                container.mux(stream.encode(None))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if num_frames == 0:
        partial.unlink(missing_ok=True)
        return 0
    os.replace(partial, path)
    return num_frames
