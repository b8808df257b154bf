"""Decode a video with PyAV and cut it into MARLIN windows, streaming.

A window is `num_frames` frames taken every `sample_rate` decoded frames. Window `k` starts `k * stride` sampled
frames (`k * stride * sample_rate` decoded frames) after the first, so with the defaults the first windows are
marlin-pytorch's: frames 0, 2, ..., 30, then 32, ..., 62, and so on. Windows that would run past the end are dropped
and replaced by one window aligned to the last frame, so the tail of the video is always covered. A video shorter
than one window gives a single window padded by repeating its last frame.

Frame counts come from decoding, never from the container. Memory stays bounded by about one window span of decoded
frames whatever the length of the video, and only the frames a window uses are converted to RGB.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .exceptions import VideoError

# File extensions taken for videos when a folder is searched (any container ffmpeg reads decodes when named directly).
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")


@dataclass
class VideoWindow:
    """One window of a video, ready for face cropping or the video processor.

    Attributes:
        frames: (num_frames, height, width, 3) uint8 RGB, rotation metadata already applied.
        frame_indices: (num_frames,) index of each frame among the decoded frames of the video; padding repeats the
            last real index.
        timestamps: (num_frames,) presentation time of each frame in seconds, counted from the first frame.
        start_time: time of the first frame, seconds.
        end_time: time at which the last real frame stops being shown (its timestamp plus its duration), seconds.
        num_padded: how many frames at the end repeat the last real frame (0 unless the video is shorter than a
            window).
        index: position of the window in the video's sequence of windows, from 0.
    """

    frames: np.ndarray
    frame_indices: list[int]
    timestamps: list[float]
    start_time: float
    end_time: float
    num_padded: int
    index: int


class _WindowPlanner:
    """Decides which frame indices form windows, from frame times fed one at a time.

    Shared by the streaming decoder and `plan_windows`, so that both always agree.
    """

    def __init__(self, num_frames: int, sample_rate: int, stride: int, stride_seconds: float | None):
        if num_frames < 1 or sample_rate < 1 or stride < 1:
            raise ValueError(
                f"num_frames, sample_rate and stride must be >= 1, got {num_frames}, {sample_rate}, {stride}"
            )
        if stride_seconds is not None and stride_seconds <= 0:
            raise ValueError(f"stride_seconds must be > 0, got {stride_seconds}")
        self.num_frames = num_frames
        self.sample_rate = sample_rate
        self.stride = stride
        self.stride_seconds = stride_seconds
        self.span = (num_frames - 1) * sample_rate + 1  # decoded frames from a window's first to its last frame
        self.active_starts: list[int] = []
        self.next_start_time = 0.0
        self.last_window_end: int | None = None
        self.num_seen = 0

    def push(self, index: int, time: float) -> list[list[int]]:
        """Feed frame `index` (shown at `time` seconds); return the windows that end on it, as index lists."""
        self.num_seen = index + 1
        if self.stride_seconds is None:
            if index % (self.stride * self.sample_rate) == 0:
                self.active_starts.append(index)
        elif time >= self.next_start_time - 1e-9:
            # Several nominal starts can fall on one frame when stride_seconds is shorter than a frame: keep one.
            self.active_starts.append(index)
            self.next_start_time = (np.floor(time / self.stride_seconds + 1e-9) + 1) * self.stride_seconds
        completed = []
        for start in [s for s in self.active_starts if index - s == self.span - 1]:
            self.active_starts.remove(start)
            completed.append(list(range(start, index + 1, self.sample_rate)))
            self.last_window_end = index
        return completed

    def finish(self) -> tuple[list[int], int] | None:
        """After the last frame: the tail window (indices, number of padded frames), or None if already covered."""
        total = self.num_seen
        if total == 0:
            return None
        if total < self.span:
            real = list(range(0, total, self.sample_rate))
            num_padded = self.num_frames - len(real)
            return real + [real[-1]] * num_padded, num_padded
        if self.last_window_end == total - 1:
            return None
        return list(range(total - self.span, total, self.sample_rate)), 0


def plan_windows(
    timestamps: Sequence[float],
    num_frames: int = 16,
    sample_rate: int = 2,
    stride: int = 16,
    stride_seconds: float | None = None,
) -> list[tuple[list[int], int]]:
    """Windows of a video whose frame times are known, as (frame_indices, num_padded) pairs.

    Args:
        timestamps: (num_decoded_frames,) time of each frame in seconds; only used with `stride_seconds`.
        num_frames: frames per window.
        sample_rate: take every `sample_rate`-th decoded frame.
        stride: the next window starts `stride` sampled frames later.
        stride_seconds: if given, window `k` starts at the first frame shown at or after `k * stride_seconds`
            seconds, instead of using `stride`.
    """
    planner = _WindowPlanner(num_frames, sample_rate, stride, stride_seconds)
    windows = []
    for index, time in enumerate(timestamps):
        windows.extend((indices, 0) for indices in planner.push(index, time))
    tail = planner.finish()
    if tail is not None:
        windows.append(tail)
    return windows


def _open_video(path: str | os.PathLike):
    """Open `path` with PyAV and return (container, video stream), or raise a one-line VideoError."""
    import av

    name = os.fspath(path)
    if not os.path.exists(name):
        raise VideoError(f"{name}: file not found; check the path.")
    if os.path.isdir(name):
        raise VideoError(f"{name}: is a folder, not a video file; pass a video file.")
    if os.path.getsize(name) == 0:
        raise VideoError(f"{name}: file is empty (0 bytes); re-export or re-download the video.")
    try:
        container = av.open(name)
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise VideoError(
            f"{name}: cannot be opened as a video ({reason}); it is not a video file, or it is truncated or corrupt."
        ) from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{name}: has no video stream (audio only?); pass a file with a video track.")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame threading: about 1.5x faster decoding on 2 cores
    return container, stream


def _to_rgb(frame) -> np.ndarray:
    """(height, width, 3) uint8 RGB of an av.VideoFrame, turned upright according to its display matrix."""
    rgb = frame.to_ndarray(format="rgb24")
    # `rotation` is the counter-clockwise angle the display matrix applies; np.rot90 also turns counter-clockwise.
    quarter_turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
    if quarter_turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=quarter_turns))
    return rgb


def _iter_frames(path: str | os.PathLike, strict: bool = True) -> Iterator[tuple[int, float, float, object]]:
    """Yield (index, time, duration, av.VideoFrame) for every decoded frame; times in seconds from the first frame.

    With `strict`, a video whose decoded frames stop well before the duration its container declares raises
    VideoError (a truncated file) after its last frame.
    """
    import av

    name = os.fspath(path)
    container, stream = _open_video(name)
    rate = stream.guessed_rate or stream.average_rate
    nominal_duration = 1 / float(rate) if rate else 0.04
    first_time = None
    index = -1
    try:
        with container:
            for frame in container.decode(stream):
                index += 1
                if frame.time is None:
                    time = index * nominal_duration
                else:
                    if first_time is None:
                        first_time = frame.time
                    time = frame.time - first_time
                duration = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
                yield index, time, duration or nominal_duration, frame
    except av.error.FFmpegError as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise VideoError(
            f"{name}: decoding failed after {index + 1} frames ({reason}); the file is truncated or corrupt, "
            "re-export it."
        ) from None
    if index < 0:
        raise VideoError(f"{name}: no frame could be decoded; the video is truncated or corrupt, re-export it.")
    declared = _declared_duration(stream)
    decoded = time + duration
    # ffmpeg stops quietly at the end of a truncated Matroska/WebM file; its header still knows the full length.
    if strict and declared is not None and declared - decoded > max(0.5, 0.1 * declared):
        raise VideoError(
            f"{name}: decoding stopped after {index + 1} frames ({decoded:.2f} s) but the file declares "
            f"{declared:.2f} s; it is truncated or corrupt, re-export it."
        )


def _declared_duration(stream) -> float | None:
    """Duration of the video stream according to the container, in seconds, or None if it does not say."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION")  # Matroska/WebM keep it as a tag, "HH:MM:SS.nnnnnnnnn"
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            return None
    return None


def iter_windows(
    path: str | os.PathLike,
    num_frames: int = 16,
    sample_rate: int = 2,
    stride: int = 16,
    stride_seconds: float | None = None,
    strict: bool = True,
) -> Iterator[VideoWindow]:
    """Decode `path` and yield its windows in order, streaming.

    Holds at most the last `(num_frames - 1) * sample_rate + 1` decoded frames (as YUV `av.VideoFrame`s, plus the
    RGB arrays of those a window used), so memory does not grow with the length of the video. Windows that overlap
    (`stride < num_frames`) share their RGB conversions.

    Args:
        path: any file ffmpeg reads (mp4, mkv, webm, avi, mov, ...).
        num_frames: frames per window (MARLIN: 16).
        sample_rate: take every `sample_rate`-th decoded frame.
        stride: the next window starts `stride` sampled frames later.
        stride_seconds: if given, window `k` starts at the first frame shown at or after `k * stride_seconds`
            seconds, so the windows' spacing does not depend on the frame rate.
        strict: raise VideoError, after the last window, when the decoded frames stop more than
            max(0.5 s, 10%) before the duration the container declares (a truncated file). False keeps what decodes.

    Raises:
        VideoError: missing, empty, not a video, audio only, truncated or corrupt file.
    """
    planner = _WindowPlanner(num_frames, sample_rate, stride, stride_seconds)
    # Each entry: [index, time, duration, av.VideoFrame, RGB array or None], oldest first.
    recent: deque[list] = deque(maxlen=planner.span)
    window_count = 0

    def make_window(indices: list[int], num_padded: int) -> VideoWindow:
        nonlocal window_count
        first_index = recent[0][0]
        entries = [recent[i - first_index] for i in indices]
        for entry in entries:
            if entry[4] is None:
                entry[4] = _to_rgb(entry[3])
        last = entries[-1]
        window = VideoWindow(
            frames=np.stack([entry[4] for entry in entries]),
            frame_indices=indices,
            timestamps=[entry[1] for entry in entries],
            start_time=entries[0][1],
            end_time=last[1] + last[2],
            num_padded=num_padded,
            index=window_count,
        )
        window_count += 1
        return window

    for index, time, duration, frame in _iter_frames(path, strict):
        recent.append([index, time, duration, frame, None])
        for indices in planner.push(index, time):
            yield make_window(indices, 0)
    tail = planner.finish()
    if tail is not None:
        yield make_window(*tail)


def read_video(path: str | os.PathLike, strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Decode a whole (short) video into memory.

    Returns:
        frames: (num_decoded_frames, height, width, 3) uint8 RGB, rotation applied.
        timestamps: (num_decoded_frames,) float64 seconds from the first frame.

    Raises:
        VideoError: as `iter_windows`. Use `iter_windows` for long videos: this holds every frame.
    """
    frames, times = [], []
    for _, time, _, frame in _iter_frames(path, strict):
        frames.append(_to_rgb(frame))
        times.append(time)
    return np.stack(frames), np.asarray(times, dtype=np.float64)
