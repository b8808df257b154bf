"""Cut a decoded video into MARLIN windows, streaming.

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
from pathlib import Path

import numpy as np

from ..constants import NUM_FRAMES, SAMPLE_RATE, STRIDE
from .decoding import frame_files, frame_to_rgb, iter_frames, read_images


@dataclass
class VideoWindow:
    """One window of a video, ready for face cropping or the video processor.

    Attributes:
        frames: (num_frames, height, width, 3) uint8 RGB, rotation metadata already applied; from
            `iter_windows(..., stack=False)`, a list of num_frames (height, width, 3) arrays instead.
        frame_indices: (num_frames,) index of each frame among the decoded frames of the video; padding repeats the
            last real index.
        timestamps: (num_frames,) presentation time of each frame in seconds, counted from the first frame.
        start_time: time of the first frame, seconds.
        end_time: time at which the last real frame stops being shown (its timestamp plus its duration), seconds.
        num_padded: how many frames at the end repeat the last real frame (0 unless the video is shorter than a
            window).
        index: position of the window in the video's sequence of windows, from 0.
    """

    frames: np.ndarray | list[np.ndarray]
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
    num_frames: int = NUM_FRAMES,
    sample_rate: int = SAMPLE_RATE,
    stride: int = STRIDE,
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


def iter_windows(
    path: str | os.PathLike,
    num_frames: int = NUM_FRAMES,
    sample_rate: int = SAMPLE_RATE,
    stride: int = STRIDE,
    stride_seconds: float | None = None,
    strict: bool = True,
    stack: bool = True,
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
        stack: give each window's frames as one (num_frames, H, W, 3) array. False gives the list of decoded frames
            instead, sparing a copy of the whole window to a caller that takes them one at a time (face tracking and
            cropping: on a 1280 x 720 video the copy is 44 MB a window).

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
                entry[4] = frame_to_rgb(entry[3])
        last = entries[-1]
        window = VideoWindow(
            frames=np.stack([entry[4] for entry in entries]) if stack else [entry[4] for entry in entries],
            frame_indices=indices,
            timestamps=[entry[1] for entry in entries],
            start_time=entries[0][1],
            end_time=last[1] + last[2],
            num_padded=num_padded,
            index=window_count,
        )
        window_count += 1
        return window

    for index, time, duration, frame in iter_frames(path, strict):
        recent.append([index, time, duration, frame, None])
        for indices in planner.push(index, time):
            yield make_window(indices, 0)
    tail = planner.finish()
    if tail is not None:
        yield make_window(*tail)


def iter_frame_chunks(
    source: str | os.PathLike,
    chunk_frames: int,
    frame_order: str = "numeric",
    folder_fps: float = 25.0,
    strict: bool = True,
) -> Iterator[VideoWindow]:
    """Every frame of a video file or a folder of frames once, in order, in consecutive chunks of `chunk_frames` (the
    last one shorter): `VideoWindow`s without padding, for work done on every frame (face tracking and parsing).

    Args:
        source: a video file, or a folder of frame images (`decoding.frame_files` in `frame_order`, shown at
            `folder_fps` frames per second).
        chunk_frames: frames per chunk (bounds memory).
        strict: for a video file, as `iter_windows`.

    Raises:
        VideoError: (while iterating) an unreadable video or image.
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
    if Path(source).is_dir():
        files = frame_files(source, frame_order)
        for index, start in enumerate(range(0, len(files), chunk_frames)):
            indices = list(range(start, min(start + chunk_frames, len(files))))
            times = [i / folder_fps for i in indices]
            frames = read_images([files[i] for i in indices])
            yield VideoWindow(frames, indices, times, times[0], times[-1] + 1 / folder_fps, 0, index)
        return
    frames, indices, times, count = [], [], [], 0
    for index, time, duration, frame in iter_frames(source, strict):
        frames.append(frame_to_rgb(frame))
        indices.append(index)
        times.append(time)
        if len(frames) == chunk_frames:
            yield VideoWindow(np.stack(frames), indices, times, times[0], time + duration, 0, count)
            frames, indices, times, count = [], [], [], count + 1
    if frames:
        yield VideoWindow(np.stack(frames), indices, times, times[0], time + duration, 0, count)
