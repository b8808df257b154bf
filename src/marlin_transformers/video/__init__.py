"""Video in: decoding (PyAV), windows of frames, writing, face detection, face tracking and cropping.

Heavy imports (av, facenet_pytorch, PIL) happen inside the functions that use them.
"""

from .decoding import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    count_frames,
    decode_frames,
    find_videos,
    frame_files,
    frame_rate,
    iter_frames,
    read_video,
    videos_in_folder,
)
from .windows import VideoWindow, iter_windows, plan_windows
from .writing import write_video

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "VideoWindow",
    "count_frames",
    "decode_frames",
    "find_videos",
    "frame_files",
    "frame_rate",
    "iter_frames",
    "iter_windows",
    "plan_windows",
    "read_video",
    "videos_in_folder",
    "write_video",
]
