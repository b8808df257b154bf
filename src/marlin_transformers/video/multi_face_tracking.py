"""Every face in a video as its own subject: detect in every sampled frame, link the detections into tracks.

`face_tracking.FaceTracker` follows one subject; interviews, meetings and debates hold several. Here every distinct
frame of the windows is searched whole, and detections are linked frame by frame: first by box overlap with each
track's last box (IoU at least `min_iou`, best pairs first), then, for a fast move between two sampled frames, by a
close centre of similar size. Two tracks never take the same detection, so two faces never swap while each is seen.

A face unseen for more than `max_gap` decoded frames ends its track; when a face comes back later it starts a new
track with a new id. There is no face recognition here: a face that returns cannot be told from a new person, so
giving it the old id would be a guess. Within `max_gap` frames (64, about 2.5 s at 25 fps) a face that reappears
about where it was keeps its id (a blink of the detector, a head turn). A track counts as a subject when the face
was detected in at least `min_detections` sampled frames (default 16, one window's worth: about a second of video at
MARLIN's sampling); shorter ones (passers-by, false detections) are dropped. Subjects are numbered 0, 1, ... in the
order they first appear (ties: left to right).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .cropping import FaceCrops, crop_track
from .face_detection import Detections, MtcnnDetector
from .face_tracking import BaseFaceTracker, box_iou, interpolate_track
from .windows import VideoWindow


@dataclass
class SubjectTrack:
    """One face followed through a video.

    Attributes:
        id: the subject's number in the video, from 0 in order of first appearance.
        frame_indices: (K,) int64 sorted decoded-frame indices where it was detected.
        boxes: (K, 4) float32 its detected boxes (x1, y1, x2, y2), frame pixels.
        landmarks: (K, 5, 2) float32 its five landmarks, frame pixels.
        confidence: (K,) float32 detection probabilities.
        start_time, end_time: times of its first and last detection, seconds from the video's first frame.
    """

    id: int
    frame_indices: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    confidence: np.ndarray
    start_time: float = 0.0
    end_time: float = 0.0

    @property
    def first_frame(self) -> int:
        return int(self.frame_indices[0])

    @property
    def last_frame(self) -> int:
        return int(self.frame_indices[-1])

    def overlaps(self, frame_indices: Sequence[int]) -> bool:
        """Whether a window with these frames falls, at least in part, between its first and last detection."""
        return min(frame_indices) <= self.last_frame and max(frame_indices) >= self.first_frame


class MultiFaceTracker(BaseFaceTracker):
    """Finds every face of a video that stays long enough (`find_subjects`) and crops a window around each.

    Args:
        detector, margin, crop_size, smoothing, detector_options: as `face_tracking.BaseFaceTracker`'s.
        min_iou: least overlap with a track's last box for a detection to continue it.
        max_gap: decoded frames a track may go unseen and still continue.
        min_detections: sampled frames a face must be detected in to count as a subject.
    """

    def __init__(
        self, detector: MtcnnDetector | None = None, *, max_gap: int = 64, min_detections: int = 16, **options
    ):
        super().__init__(detector, **options)
        self.max_gap = max_gap
        self.min_detections = min_detections

    def detect_all(self, windows: Iterable[VideoWindow]) -> tuple[dict[int, Detections], dict[int, float]]:
        """Detections of every distinct frame of the windows (each frame searched once), and each frame's time in
        seconds, by frame index."""
        found: dict[int, Detections] = {}
        times: dict[int, float] = {}
        for window in windows:
            todo = {}
            for position, index in enumerate(window.frame_indices):
                if index not in found and index not in todo:
                    todo[index] = position
                    times[index] = float(window.timestamps[position])
            if todo:
                found.update(zip(todo, self.detector.detect([window.frames[p] for p in todo.values()])))
        return found, times

    def link(self, detections: dict[int, Detections], times: dict[int, float] | None = None) -> list[SubjectTrack]:
        """Link per-frame detections into tracks (see the module docstring); the subjects, numbered from 0. `times`
        (seconds by frame index) sets their start and end times."""
        tracks: list[list[tuple[int, np.ndarray, np.ndarray, float]]] = []  # per track: (frame, box, points, prob)
        for index in sorted(detections):
            boxes, probs, landmarks = detections[index]
            active = [t for t, track in enumerate(tracks) if index - track[-1][0] <= self.max_gap]
            taken_tracks, taken_boxes = set(), set()
            pairs = []
            for t in active:
                last = tracks[t][-1][1]
                if len(boxes):
                    for b, overlap in enumerate(box_iou(last, boxes)):
                        if overlap >= self.min_iou:
                            pairs.append((-overlap, t, b))
            # A fast move: close centre and similar size, nearest first, for what overlap left unmatched.
            close = []
            for t in active:
                last = tracks[t][-1][1]
                size = max(last[2] - last[0], last[3] - last[1])
                for b, box in enumerate(boxes):
                    distance = float(np.linalg.norm((box[:2] + box[2:]) / 2 - (last[:2] + last[2:]) / 2))
                    other = max(box[2] - box[0], box[3] - box[1])
                    if distance < 0.75 * size and 0.6 * size < other < 1.6 * size:
                        close.append((distance, t, b))
            for _, t, b in [*sorted(pairs), *sorted(close)]:
                if t not in taken_tracks and b not in taken_boxes:
                    tracks[t].append((index, boxes[b], landmarks[b], float(probs[b])))
                    taken_tracks.add(t)
                    taken_boxes.add(b)
            for b in range(len(boxes)):
                if b not in taken_boxes:
                    tracks.append([(index, boxes[b], landmarks[b], float(probs[b]))])
        kept = [track for track in tracks if len(track) >= self.min_detections]
        kept.sort(key=lambda track: (track[0][0], float(track[0][1][0])))
        return [
            SubjectTrack(
                id=number,
                frame_indices=np.array([d[0] for d in track], dtype=np.int64),
                boxes=np.stack([d[1] for d in track]).astype(np.float32),
                landmarks=np.stack([d[2] for d in track]).astype(np.float32),
                confidence=np.array([d[3] for d in track], dtype=np.float32),
                start_time=(times or {}).get(track[0][0], 0.0),
                end_time=(times or {}).get(track[-1][0], 0.0),
            )
            for number, track in enumerate(kept)
        ]

    def find_subjects(self, windows: Iterable[VideoWindow]) -> list[SubjectTrack]:
        """Every subject of a video, from one pass over its windows (only detections are kept, not frames)."""
        return self.link(*self.detect_all(windows))

    def crop(self, window: VideoWindow, subject: SubjectTrack) -> FaceCrops:
        """Cut one window around one subject: its boxes interpolated between its detections and smoothed."""
        track = interpolate_track(
            window.frame_indices,
            subject.frame_indices,
            subject.boxes,
            subject.landmarks,
            subject.confidence,
            self.smoothing,
        )
        return crop_track(window.frames, track, self.margin, self.crop_size)
