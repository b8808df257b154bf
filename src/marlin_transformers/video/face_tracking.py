"""Follow one face through the windows of a video: identity, misses, smoothing; then crop around it.

A video has one subject: the track starts on the largest confident face and then follows it from frame to frame by
box overlap (or, failing that, a close centre of similar size), so a second face entering the picture never takes
over. Frames where the subject is missed get a box interpolated between the detections around them (or carried
forward/backward), and boxes are smoothed over time. Detection is `face_detection.MtcnnDetector`'s (searched only
around the subject once it is known), cutting the crops `cropping.crop_faces`'.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from ..constants import MARLIN_CROP_SIZE
from ..exceptions import NoFaceError
from ..jobs import timed
from .cropping import FaceCrops, FaceTrack, Frames, centre_track, crop_track
from .face_detection import Detections, MtcnnDetector
from .windows import VideoWindow


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box with (n, 4) boxes."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-6)


def _gaussian_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth (T, ...) values along T with a Gaussian of `sigma` steps, repeating the edges."""
    if sigma <= 0 or len(values) < 2:
        return values
    radius = max(1, round(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([values[:1].repeat(radius, 0), values, values[-1:].repeat(radius, 0)])
    flat = padded.reshape(len(padded), -1)
    smoothed = np.stack([np.convolve(flat[:, j], kernel, mode="valid") for j in range(flat.shape[1])], axis=1)
    return smoothed.reshape(values.shape).astype(values.dtype)


def interpolate_track(
    frame_indices: Sequence[int],
    known: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray,
    confidence: np.ndarray,
    smoothing: float,
) -> FaceTrack:
    """A face's `FaceTrack` over one window from its detections elsewhere in the video.

    Args:
        frame_indices: (T,) the window's frame indices.
        known: (K,) sorted frame indices where the face was detected; `boxes` (K, 4), `landmarks` (K, 5, 2) and
            `confidence` (K,) are its detections there.
        smoothing: standard deviation, in the window's frames, of the Gaussian that smooths the boxes (0: none).

    Boxes and landmarks are interpolated between the detections (np.interp carries the nearest one beyond them), then
    centre and size are smoothed, rather than corners, so smoothing never shrinks or shifts a steady box.
    """
    positions = np.asarray(frame_indices, dtype=np.float64)
    known = np.asarray(known, dtype=np.float64)
    flat_landmarks = landmarks.reshape(len(known), 10)
    window_boxes = np.stack([np.interp(positions, known, boxes[:, j]) for j in range(4)], axis=1)
    window_landmarks = np.stack([np.interp(positions, known, flat_landmarks[:, j]) for j in range(10)], axis=1)
    centres = (window_boxes[:, :2] + window_boxes[:, 2:]) / 2
    sizes = window_boxes[:, 2:] - window_boxes[:, :2]
    smooth = _gaussian_smooth(np.concatenate([centres, sizes], axis=1), smoothing)
    window_boxes = np.concatenate([smooth[:, :2] - smooth[:, 2:] / 2, smooth[:, :2] + smooth[:, 2:] / 2], axis=1)
    where = {int(index): k for k, index in enumerate(known)}
    return FaceTrack(
        boxes=window_boxes.astype(np.float32),
        landmarks=window_landmarks.reshape(-1, 5, 2).astype(np.float32),
        detected=np.array([int(i) in where for i in frame_indices]),
        confidence=np.array(
            [confidence[where[int(i)]] if int(i) in where else 0.0 for i in frame_indices], np.float32
        ),
    )


class BaseFaceTracker:
    """What every tracker holds: the detector, and how a tracked box becomes a crop.

    Args:
        detector: finds the faces; anything with MtcnnDetector's `detect(frames, regions=None, region_scale=None)`.
            By default an `MtcnnDetector(**detector_options)`.
        margin: crop side as a multiple of max(box width, box height); 1.0 is marlin-pytorch's crop.
        crop_size: side of the output crops, pixels.
        smoothing: standard deviation, in sampled frames, of the Gaussian that smooths boxes over time; 0 disables.
        min_iou: least overlap (IoU) of a detection with the box it would continue.
        detector_options: without `detector`, MtcnnDetector's arguments: min_confidence, detect_size, min_face_size,
            region_size, thresholds, pyramid_factor, device, num_threads.
    """

    def __init__(
        self,
        detector: MtcnnDetector | None = None,
        *,
        margin: float = 1.0,
        crop_size: int = MARLIN_CROP_SIZE,
        smoothing: float = 1.0,
        min_iou: float = 0.3,
        **detector_options,
    ):
        if detector is not None and detector_options:
            raise TypeError(f"pass either a detector or its options, not both (got {sorted(detector_options)})")
        self.detector = detector if detector is not None else MtcnnDetector(**detector_options)
        self.margin = margin
        self.crop_size = crop_size
        self.smoothing = smoothing
        self.min_iou = min_iou


class FaceTracker(BaseFaceTracker):
    """Finds and follows one face through the windows of one video; call `reset()` before the next video.

    The tracker keeps the subject's recent detections by frame index, so windows may come in any order and overlap
    (the tail window revisits earlier frames): each frame is matched against, and searched around, the subject's
    detection nearest in time. It also keeps every detection by frame index, so overlapping windows and padding do
    not detect a frame twice; that cache is the video's, like the frame indices it is keyed by, and goes with
    `reset()` (the detector sees frames, not videos, and may serve several trackers).

    Constructing one is cheap: the default detector loads MTCNN on its first detection.

    Args:
        detector, margin, crop_size, smoothing, detector_options: as `BaseFaceTracker`'s.
        min_iou: least overlap with the subject's nearest box for a detection to continue the track.
        reacquire_after: frames (decoded) after which a subject not seen may be picked up again anywhere, at the
            detection nearest to where it was last seen.
        region_scale: once a face is tracked, search only a square this many times its size around it, several times
            cheaper than the whole frame (frames where nothing turns up there are searched whole); 0 disables.

    Attributes:
        timings: None (the default), or a dict where the tracker adds its seconds by stage: `detection` (the
            detector's calls), `tracking` (the rest of `locate`) and `crop`.
    """

    _MEMORY = 512  # frames of detections and of the subject's boxes kept, bounding memory on long videos

    def __init__(
        self, detector: MtcnnDetector | None = None, *, reacquire_after: int = 64, region_scale: float = 2.5, **options
    ):
        super().__init__(detector, **options)
        self.reacquire_after = reacquire_after
        self.region_scale = region_scale
        self.timings: dict[str, float] | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the subject and the cached detections (start of a new video)."""
        # The subject's detections: frame index -> (box (4,), landmarks (5, 2), probability).
        self._subject: OrderedDict[int, tuple[np.ndarray, np.ndarray, float]] = OrderedDict()
        # All detections by frame index, so overlapping windows do not detect twice.
        self._cache: OrderedDict[int, Detections] = OrderedDict()
        self._next_index = 0

    @property
    def has_face(self) -> bool:
        """Whether a subject has been found in this video so far."""
        return bool(self._subject)

    def _nearest(self, index: int) -> tuple[int, np.ndarray] | None:
        """(distance in frames, box) of the subject's detection nearest to frame `index`, or None."""
        if not self._subject:
            return None
        known = np.fromiter(self._subject.keys(), dtype=np.int64)
        nearest = int(known[np.argmin(np.abs(known - index))])
        return abs(nearest - index), self._subject[nearest][0]

    def _region(self, box: np.ndarray) -> tuple[int, int, int, int]:
        """The square searched for a face last seen at `box`: `region_scale` times its size, around its centre."""
        side = round(max(box[2] - box[0], box[3] - box[1]) * self.region_scale)
        corner = np.round((box[:2] + box[2:]) / 2 - side / 2).astype(np.int64)
        return (*corner, *(corner + side))

    def _detect(self, frames: Frames, regions=None, region_scale: float | None = None) -> list[Detections]:
        with timed(self.timings, "detection"):
            if regions is None:  # a detector may know whole frames only
                return self.detector.detect(frames)
            return self.detector.detect(frames, regions, region_scale=region_scale)

    def _first_detections(self, frames: Frames, todo: dict[int, int]) -> dict[int, Detections]:
        """Detections in the frames before the subject is known, in order, found cheaply; misses are left out.

        Whole frames are searched one at a time until a face turns up; then the next frames, a detector batch at a
        time, only around the face followed so far (its largest, the one `_match` starts the track on), so a face
        that moves stays inside the squares searched. A whole frame costs about 4 regions.
        """
        found, pending, anchor = {}, list(todo), None
        while pending and anchor is None:
            index = pending.pop(0)
            found[index] = result = self._detect([frames[todo[index]]])[0]
            chosen = self._match(index, result[0])  # no subject yet: the largest face
            if chosen is not None:
                anchor = result[0][chosen]
        step = getattr(self.detector, "batch_size", 4)
        while pending:
            chunk, pending = pending[:step], pending[step:]
            searched = self._detect(
                [frames[todo[index]] for index in chunk], [self._region(anchor)] * len(chunk), self.region_scale
            )
            for index, result in zip(chunk, searched):
                if len(result[0]):
                    found[index] = result
                    overlaps = box_iou(anchor, result[0])
                    if overlaps.max() >= self.min_iou:
                        anchor = result[0][int(np.argmax(overlaps))]
        return found

    def _detections(self, frames: Frames, frame_indices: Sequence[int]) -> dict[int, Detections]:
        """Detections for each distinct frame index, reusing cached ones, searching around the subject if known."""
        todo = {}  # frame index -> position in frames
        for position, index in enumerate(frame_indices):
            if index not in self._cache and index not in todo:
                todo[index] = position
        found = self._first_detections(frames, todo) if self.region_scale and not self._subject else {}
        regions = {}
        for index in todo:
            if index in found or not self.region_scale:
                continue
            nearest = self._nearest(index)
            if nearest is not None and nearest[0] <= self.reacquire_after:
                regions[index] = self._region(nearest[1])
        if regions:
            positions = [todo[index] for index in regions]
            searched = self._detect(
                [frames[position] for position in positions], list(regions.values()), region_scale=self.region_scale
            )
            for index, result in zip(regions, searched):
                if len(result[0]):
                    found[index] = result
        rest = [index for index in todo if index not in found]
        if rest:
            found.update(zip(rest, self._detect([frames[todo[index]] for index in rest])))
        for index in todo:
            self._cache[index] = found[index]
        while len(self._cache) > self._MEMORY:
            self._cache.popitem(last=False)
        return {index: self._cache[index] for index in frame_indices}

    def _match(self, index: int, boxes: np.ndarray) -> int | None:
        """Which of frame `index`'s detections is the subject, or None."""
        if len(boxes) == 0:
            return None
        nearest = self._nearest(index)
        if nearest is None:
            return int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))  # largest face
        gap, reference = nearest
        overlaps = box_iou(reference, boxes)
        if overlaps.max() >= self.min_iou:
            return int(np.argmax(overlaps))
        size = max(reference[2] - reference[0], reference[3] - reference[1])
        sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        distances = np.linalg.norm((boxes[:, :2] + boxes[:, 2:]) / 2 - (reference[:2] + reference[2:]) / 2, axis=1)
        if gap > self.reacquire_after:
            return int(np.argmin(distances))
        # A fast move between two sampled frames: close centre and similar size.
        close = (distances < 0.75 * size) & (sizes > 0.6 * size) & (sizes < 1.6 * size)
        return int(np.argmin(np.where(close, distances, np.inf))) if close.any() else None

    def locate(self, frames: Frames, frame_indices: Sequence[int] | None = None) -> FaceTrack | None:
        """Detect and follow the subject through one window; None while no face has been seen in this video.

        Args:
            frames: one window of the video, (T, H, W, 3) uint8 RGB or T (H, W, 3) frames (`cropping.Frames`).
            frame_indices: (T,) index of each frame in the video (repeats allowed, for padding); by default the
                frames follow those of the previous call.
        """
        if self.timings is None:
            return self._locate(frames, frame_indices)
        detection = self.timings.get("detection", 0.0)
        with timed(self.timings, "tracking"):
            track = self._locate(frames, frame_indices)
        # The detector's share is counted apart.
        self.timings["tracking"] -= self.timings.get("detection", 0.0) - detection
        return track

    def _locate(self, frames: Frames, frame_indices: Sequence[int] | None) -> FaceTrack | None:
        if frame_indices is None:
            frame_indices = range(self._next_index, self._next_index + len(frames))
        frame_indices = [int(i) for i in frame_indices]
        self._next_index = max(frame_indices) + 1
        detections = self._detections(frames, frame_indices)

        for index in sorted(set(frame_indices) - set(self._subject)):
            boxes, probs, landmarks = detections[index]
            chosen = self._match(index, boxes)
            if chosen is not None:
                self._subject[index] = (boxes[chosen], landmarks[chosen], float(probs[chosen]))
        if not self._subject:
            return None
        self._subject = OrderedDict(sorted(self._subject.items()))
        while len(self._subject) > self._MEMORY:
            self._subject.popitem(last=False)

        known = np.fromiter(self._subject.keys(), dtype=np.int64)
        return interpolate_track(
            frame_indices,
            known,
            np.stack([box for box, _, _ in self._subject.values()]),
            np.stack([points for _, points, _ in self._subject.values()]),
            np.array([probability for _, _, probability in self._subject.values()]),
            self.smoothing,
        )

    def crop(self, frames: Frames, track: FaceTrack) -> FaceCrops:
        """Cut a window's frames (`cropping.Frames`) around its track (see `cropping.crop_faces`)."""
        with timed(self.timings, "crop"):
            return crop_track(frames, track, self.margin, self.crop_size)

    def centre_crop(self, frames: Frames) -> FaceCrops:
        """The fallback without a face: the largest centred square of each frame, nothing detected."""
        height, width = frames[0].shape[:2]
        return self.crop(frames, centre_track(len(frames), height, width))

    def track(self, frames: Frames, frame_indices: Sequence[int] | None = None) -> FaceCrops:
        """`locate` then `crop` one window; a centre crop (nothing detected) while no face has been seen yet."""
        track = self.locate(frames, frame_indices)
        return self.centre_crop(frames) if track is None else self.crop(frames, track)


def iter_face_windows(
    windows: Iterable[VideoWindow],
    tracker: FaceTracker,
    source: str | os.PathLike = "video",
    on_no_face: str = "error",
    max_pending: int = 4,
) -> Iterator[tuple[VideoWindow, FaceCrops]]:
    """Track and crop the face through the windows of one video, in order.

    Windows before the first face is found are held back (at most `max_pending` of them, to bound memory) and cut
    around the first box found, so a face that appears a little late still gives face crops from the start. Windows
    held longer, or of a video without any face under `on_no_face="centre"`, get a centre crop with nothing detected.

    Args:
        windows: the windows of one video (e.g. `windows.iter_windows(path)`).
        tracker: reset here, so one tracker serves many videos in turn.
        source: the video's name for error messages.
        on_no_face: "error" raises NoFaceError, after the last window, when no face was found in the whole video;
            "centre" keeps the centre crops.

    Raises:
        NoFaceError: no face in the video and `on_no_face="error"`.
    """
    if on_no_face not in ("error", "centre"):
        raise ValueError(f"on_no_face must be 'error' or 'centre', got {on_no_face!r}")
    tracker.reset()
    pending: list[VideoWindow] = []
    for window in windows:
        track = tracker.locate(window.frames, window.frame_indices)
        if track is None:
            pending.append(window)
            if len(pending) > max_pending:
                held = pending.pop(0)
                yield held, tracker.centre_crop(held.frames)
            continue
        if pending:
            # Back-fill the held windows with the first box found, carried backward.
            for held in pending:
                num = len(held.frames)
                carried = FaceTrack(
                    boxes=track.boxes[:1].repeat(num, 0),
                    landmarks=track.landmarks[:1].repeat(num, 0),
                    detected=np.zeros(num, dtype=bool),
                    confidence=np.zeros(num, dtype=np.float32),
                )
                yield held, tracker.crop(held.frames, carried)
            pending = []
        yield window, tracker.crop(window.frames, track)
    if not tracker.has_face:
        if on_no_face == "error":
            raise NoFaceError(
                f"{os.fspath(source)}: no face found in any frame; check that it shows a face, or allow a centre crop "
                "for it (on_no_face='centre')."
            )
        for held in pending:
            yield held, tracker.centre_crop(held.frames)
