"""Video in: decoding (PyAV), windows of frames, writing, face detection, face tracking and cropping.

Heavy imports (av, facenet_pytorch, PIL) happen inside the functions that use them, so importing this package (and
constructing a `FaceTracker`) stays cheap.
"""

from .cropping import FaceCrops, FaceTrack, centre_boxes, crop_faces
from .decoding import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    count_frames,
    decode_frames,
    find_videos,
    frame_files,
    frame_rate,
    iter_frames,
    probe_video,
    read_video,
    skip_unreadable,
    videos_in_folder,
)
from .face_detection import MtcnnDetector
from .face_tracking import FaceTracker, iter_face_windows
from .windows import VideoWindow, iter_windows, plan_windows
from .writing import write_video

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "FaceCrops",
    "FaceTrack",
    "FaceTracker",
    "MtcnnDetector",
    "VideoWindow",
    "centre_boxes",
    "count_frames",
    "crop_faces",
    "decode_frames",
    "find_videos",
    "frame_files",
    "frame_rate",
    "iter_face_windows",
    "iter_frames",
    "iter_windows",
    "plan_windows",
    "probe_video",
    "read_video",
    "skip_unreadable",
    "videos_in_folder",
    "write_video",
]
