"""Read videos and folders of frames with PyAV: the one decoding API every stage uses.

Errors (missing, empty, not a video, audio only, truncated, corrupt) are `VideoError`s with one line naming the file,
frames are RGB uint8 turned upright according to their display matrix, and times are seconds from the first frame,
whichever stage decodes: extraction, pretraining, CelebV-HQ preparation or the examples.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..exceptions import VideoError

# File extensions taken for videos when a folder is searched (any container ffmpeg reads decodes when named directly).
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
# Images taken as the frames of a clip in a folder of frames (YouTube Faces' layout).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# Text files listing video paths, one a line, where a video is expected (`marlin extract`, `prepare-faces`).
LIST_EXTENSIONS = (".txt", ".lst", ".list")

T = TypeVar("T")


def open_video(path: str | os.PathLike):
    """Open `path` with PyAV and return (container, video stream), or raise a one-line VideoError."""
    import av

    name = os.fspath(path)
    if not os.path.exists(name):
        raise VideoError(f"{name}: file not found; check the path.")
    if os.path.isdir(name):
        raise VideoError(f"{name}: is a folder, not a video file; pass a video file.")
    if not os.path.isfile(name):  # a FIFO or a device: reading it could block forever
        raise VideoError(f"{name}: not a regular file (a pipe or a device); save the video to a file and pass that.")
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


def frame_rate(path: str | os.PathLike) -> Fraction:
    """Frames per second of a video's first video stream, as its container states it (25 when it states none)."""
    container, stream = open_video(path)
    with container:
        return Fraction(stream.guessed_rate or stream.average_rate or 25)


def frame_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) in pixels of a video's frames, as its first video stream states them."""
    container, stream = open_video(path)
    with container:
        return stream.codec_context.width, stream.codec_context.height


@functools.cache
def one_thread_reformat() -> dict:
    """`VideoFrame.reformat`'s options for a conversion on the calling thread alone: PyAV 17 and later convert on a
    pool of swscale threads by default (`threads=0`, automatic), started anew for every frame; earlier releases had
    neither the pool nor the argument."""
    import av

    return {"threads": 1} if int(av.__version__.split(".")[0]) >= 17 else {}


def frame_to_rgb(frame) -> np.ndarray:
    """(height, width, 3) uint8 RGB of an av.VideoFrame, turned upright according to its display matrix.

    Converted on the calling thread alone (`one_thread_reformat`): with PyAV's own default, decoding the six sample
    videos (1,198 frames, 224 x 224 to 1280 x 720) to RGB took 1.02-1.07 s, and 0.50-0.61 s on one thread, three fresh
    processes each on an AMD EPYC core (PyAV 18.1); the pixels are the same to the bit (tests/test_video_decoding.py).
    No converter is kept between frames: one kept with its threads hung a forked data loader worker that inherited
    it."""
    rgb = frame.reformat(format="rgb24", **one_thread_reformat()).to_ndarray()
    # `rotation` is the counter-clockwise angle the display matrix applies; np.rot90 also turns counter-clockwise.
    quarter_turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
    if quarter_turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=quarter_turns))
    return rgb


def iter_frames(path: str | os.PathLike, strict: bool = True) -> Iterator[tuple[int, float, float, object]]:
    """Yield (index, time, duration, av.VideoFrame) for every decoded frame; times in seconds from the first frame.

    With `strict`, a video whose decoded frames stop well before the duration its container declares raises
    VideoError (a truncated file) after its last frame.
    """
    import av

    name = os.fspath(path)
    container, stream = open_video(name)
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


def read_video(path: str | os.PathLike, strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Decode a whole (short) video into memory.

    Returns:
        frames: (num_decoded_frames, height, width, 3) uint8 RGB, rotation applied.
        timestamps: (num_decoded_frames,) float64 seconds from the first frame.

    Raises:
        VideoError: as `iter_windows`. Use `iter_windows` for long videos: this holds every frame.
    """
    frames, times = [], []
    for _, time, _, frame in iter_frames(path, strict):
        frames.append(frame_to_rgb(frame))
        times.append(time)
    return np.stack(frames), np.asarray(times, dtype=np.float64)


def videos_in_folder(folder: str | os.PathLike) -> list[Path]:
    """The video files under `folder`, searched recursively by `VIDEO_EXTENSIONS` (any case), sorted by path."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def find_videos(
    paths: Iterable[str | os.PathLike], keep_missing: bool = False, empty_folders: list[Path] | None = None
) -> list[Path]:
    """The videos among `paths`: files as given, folders searched with `videos_in_folder`, text files listing paths
    (`LIST_EXTENSIONS`: one a line, relative to the list's folder, `#` comments) expanded. The one input discovery of
    the package: `marlin extract`, the preparers and training take their inputs from it.

    Paths are made absolute and normalized (`sub/../sub/a.mp4` is `sub/a.mp4`); two spellings of one file (a
    symbolic link, say) count once, the first kept. Folders holding no video are appended to `empty_folders` when it
    is given.

    Args:
        keep_missing: keep paths that do not exist (they get their own error later) instead of refusing them.

    Raises:
        VideoError: a path that does not exist (unless `keep_missing`), or no video at all.
    """
    paths = [os.fspath(path) for path in paths]
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            videos = videos_in_folder(path)
            found.extend(videos)
            if not videos and empty_folders is not None:
                empty_folders.append(path)
        elif path.suffix.lower() in LIST_EXTENSIONS and path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    listed = Path(line)
                    found.append(listed if listed.is_absolute() else path.parent / listed)
        elif path.exists() or keep_missing:
            found.append(path)
        else:
            raise VideoError(f"{path}: no such video file or folder; check the path.")
    unique: dict[Path, Path] = {}
    for path in found:
        path = Path(os.path.normpath(path.absolute()))
        unique.setdefault(path.resolve() if path.exists() else path, path)
    if not unique:
        raise VideoError(
            f"{' '.join(paths)}: no video found (no video files {', '.join(VIDEO_EXTENSIONS)} in these folders or "
            "lists)."
        )
    return list(unique.values())


# How frame files are ordered (`frame_files`), the default first; `marlin prepare-ytf --frame-order` offers these.
FRAME_ORDERS = ("numeric", "reference")


def numeric_frame_key(path: Path) -> tuple:
    """Sort key of a frame file by the numbers in its name: YouTube Faces' `0.555.jpg` before `0.1000.jpg`.

    The name's stem is cut at dots and other non-digits; runs of digits compare as integers, the rest as text."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.stem) if part
    )


def frame_files(folder: str | os.PathLike, order: str = "numeric") -> list[Path]:
    """The images of a folder of frames (`IMAGE_EXTENSIONS`): one clip source, like a video.

    Args:
        order: "numeric" (the default, every reader of frame folders: YouTube Faces, the reference's prepared
            `crop_images_DB`, pretraining's clips) sorts by the numbers in the names (`numeric_frame_key`: `0.555.jpg`
            before `0.1000.jpg`, time order); "reference" sorts the names as strings, as the MARLIN reference does
            (`0.1000.jpg` before `0.555.jpg`: its clips jump in time where the digit count changes).
    """
    if order not in FRAME_ORDERS:
        raise ValueError(f"order must be one of {FRAME_ORDERS}, got {order!r}")
    files = [p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=numeric_frame_key) if order == "numeric" else sorted(files)


def read_images(files: Sequence[str | os.PathLike]) -> np.ndarray:
    """(len(files), height, width, 3) uint8 RGB of image files of one size, e.g. a clip's `frame_files`.

    Raises:
        VideoError: an image that cannot be read, or images of different sizes (one line naming the file).
    """
    from PIL import Image

    frames = []
    for file in files:
        try:
            with Image.open(file) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except OSError as error:
            raise VideoError(
                f"{os.fspath(file)}: cannot be read as an image ({error}); re-export the frames."
            ) from None
        if frames[-1].shape != frames[0].shape:
            raise VideoError(
                f"{os.fspath(file)}: {frames[-1].shape[1]}x{frames[-1].shape[0]} pixels, but the clip's first is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}; a clip's frames must share one size."
            )
    return np.stack(frames)


def count_frames(path: str | os.PathLike) -> int:
    """Frames in a video (counted from its packets, no decoding) or in a folder of frames."""
    if Path(path).is_dir():
        count = len(frame_files(path))
        if count == 0:
            raise VideoError(f"{os.fspath(path)}: folder without frame images ({', '.join(IMAGE_EXTENSIONS)}).")
        return count

    container, stream = open_video(path)
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
    if Path(path).is_dir():
        from PIL import Image

        files = frame_files(path)
        return np.stack(
            [np.asarray(Image.open(files[min(int(i), len(files) - 1)]).convert("RGB")) for i in frame_indices]
        )
    wanted = sorted(set(int(i) for i in frame_indices))
    found: dict[int, np.ndarray] = {}
    last = None
    for index, _, _, frame in iter_frames(path, strict=False):
        if index in wanted:
            found[index] = frame_to_rgb(frame)
        last = (index, frame)
        if index >= wanted[-1]:
            break
    for index in wanted:
        if index not in found:  # past the end
            found[index] = found[last[0]] if last[0] in found else frame_to_rgb(last[1])
    return np.stack([found[int(i)] for i in frame_indices])


def resize_frames(frames: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """(T, H, W, C) uint8 -> (T, size, size, C), bilinear (nearest for label maps)."""
    from PIL import Image

    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    resample = Image.NEAREST if nearest else Image.BILINEAR
    squeeze = frames.shape[-1] == 1
    images = [Image.fromarray(f[..., 0] if squeeze else f) for f in frames]
    resized = np.stack([np.asarray(image.resize((size, size), resample)) for image in images])
    return resized[..., None] if squeeze else resized


def probe_video(path: str | os.PathLike) -> None:
    """Raise a one-line VideoError unless `path` opens and its first frame decodes (a folder of frames: unless its
    first image reads). Costs one frame's decoding: a check before a long run relies on the file, not a proof that
    every frame decodes."""
    if Path(path).is_dir():
        from PIL import Image

        files = frame_files(path)
        if not files:
            raise VideoError(f"{os.fspath(path)}: folder without frame images ({', '.join(IMAGE_EXTENSIONS)}).")
        try:
            with Image.open(files[0]) as image:
                image.load()
        except OSError as error:
            raise VideoError(f"{files[0]}: cannot be read as an image ({error}); re-export the frames.") from None
        return
    for _ in iter_frames(path, strict=False):
        return  # closing the generator closes the container


def skip_unreadable(
    paths: Sequence[str | os.PathLike], read: Callable[[Path], T] = probe_video, what: str = "videos"
) -> dict[int, T]:
    """`read(path)` of every path, leaving out those it raises VideoError for, so one corrupt file does not stop a
    run over many. Each one left out gets a line on stderr (`skipping <its error>`), then a count (`skipped 2 of 40
    videos: unreadable; see the lines above`).

    Args:
        read: reads or checks one video (default `probe_video`: opens it and decodes its first frame).
        what: names the paths in the count, e.g. "videos of train.csv".

    Returns:
        {index in `paths`: what `read` returned}, in order, for the readable paths.

    Raises:
        VideoError: none of the paths is readable (one line: the count and the first path's error).
    """
    results, errors = {}, []
    for index, path in enumerate(paths):
        try:
            results[index] = read(Path(path))
        except VideoError as error:
            errors.append(error)
            print(f"skipping {error}", file=sys.stderr)
    if errors and not results:
        raise VideoError(f"none of the {len(paths)} {what} is readable (the first: {errors[0]})")
    if errors:
        print(f"skipped {len(errors)} of {len(paths)} {what}: unreadable; see the lines above", file=sys.stderr)
    return results
