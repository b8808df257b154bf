"""Detect, track and crop one face per video, window by window.

MTCNN (facenet-pytorch, weights in its wheel) runs batched on frames downscaled to `detect_size` pixels on their
longest side until a face is found, then only in a small square around the subject (several times cheaper; whole
frames again where it is not found there), with every candidate of a cascade stage resampled in one call. On 2 CPU
cores this costs about 20 ms per sampled frame, a fifth of a ViT-B window in bf16.

A video has one subject: the track starts on the largest confident face and then follows it from frame to frame by
box overlap (or, failing that, a close centre of similar size), so a second face entering the picture never takes
over. Frames where the subject is missed get a box interpolated between the detections around them (or carried
forward/backward), boxes are smoothed over time, and each frame is cut to a square of side `max(w, h) * margin`
centred on the box (marlin-pytorch's crop when margin is 1), zero-padded outside the frame and resized to
`crop_size`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..exceptions import NoFaceError
from .windows import VideoWindow


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


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
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


def _cut(frame: np.ndarray, region: Sequence[int]) -> np.ndarray:
    """frame[y1:y2, x1:x2] for an integer region (x1, y1, x2, y2) that may reach outside, zero there.

    marlin-pytorch's `crop_with_padding`; slicing before handing pixels to PIL avoids copying whole frames.
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


def crop_faces(
    frames: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray | None = None,
    margin: float = 1.0,
    crop_size: int = 224,
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
    from PIL import Image

    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sides = np.maximum(np.round((boxes[:, 2:] - boxes[:, :2]).max(axis=1) * margin), 2).astype(np.int64)
    corners = np.round(centres - sides[:, None] / 2).astype(np.int64)
    crop_boxes = np.concatenate([corners, corners + sides[:, None]], axis=1)
    crops = np.empty((len(frames), crop_size, crop_size, 3), dtype=np.uint8)
    for t, (frame, region) in enumerate(zip(frames, crop_boxes)):
        crop = Image.fromarray(np.ascontiguousarray(_cut(frame, region)))
        crops[t] = np.asarray(crop.resize((crop_size, crop_size), Image.BILINEAR))
    crop_landmarks = None
    if landmarks is not None:
        scale = (crop_size / sides)[:, None, None]
        crop_landmarks = ((landmarks - corners[:, None, :]) * scale).astype(np.float32)
    return crops, crop_boxes, crop_landmarks


def _mtcnn_cascade(
    mtcnn, images, min_face_size: float, thresholds: Sequence[float], factor: float, max_per_image: int | None = None
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """facenet-pytorch's MTCNN cascade on a batch, with every candidate of a stage cropped in one `roi_align` call.

    facenet-pytorch (`detect_face`) crops and resizes each candidate box on its own, a few hundred small
    interpolations per frame that cost more than the three networks on a CPU. This follows its steps (same networks,
    thresholds, NMS and box regression; candidate regions clipped to the image as it does), resampling all candidates
    of a stage at once.

    Args:
        mtcnn: a `facenet_pytorch.MTCNN` (its `pnet`, `rnet` and `onet` are used).
        images: (N, 3, H, W) float32 RGB in [0, 255].
        max_per_image: keep at most this many R-Net candidates per image (best scores first) for O-Net, the most
            expensive stage; None keeps all.

    Returns:
        per image: boxes (n, 4), probabilities (n,) and landmarks (n, 5, 2), float32 pixels.
    """
    import torch
    import torch.nn.functional as F
    from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg, generateBoundingBox, rerec
    from torchvision.ops import batched_nms, roi_align

    num_images, _, height, width = images.shape

    def normalise(data):
        return (data - 127.5) * 0.0078125

    def crops(boxes, image_indices, size):
        # facenet-pytorch's `pad`: integer corners clipped to the image, pixels x - 1 .. ex - 1.
        corners = boxes[:, :4].trunc()
        x1 = corners[:, 0].clamp(min=1) - 1
        y1 = corners[:, 1].clamp(min=1) - 1
        x2 = corners[:, 2].clamp(max=width)
        y2 = corners[:, 3].clamp(max=height)
        rois = torch.stack([image_indices.to(images.dtype), x1, y1, x2, y2], dim=1)
        data = roi_align(images, rois, output_size=size, sampling_ratio=2, aligned=True)
        return normalise(data).contiguous(memory_format=torch.channels_last)

    # Stage 1: P-Net over an image pyramid.
    scale = 12.0 / min_face_size
    shortest = min(height, width) * scale
    candidates, candidate_images = [], []
    while shortest >= 12:
        data = F.interpolate(images, size=(int(height * scale + 1), int(width * scale + 1)), mode="area")
        regression, probs = mtcnn.pnet(normalise(data).contiguous(memory_format=torch.channels_last))
        boxes, image_indices = generateBoundingBox(regression, probs[:, 1], scale, thresholds[0])
        keep = batched_nms(boxes[:, :4], boxes[:, 4], image_indices, 0.5)
        candidates.append(boxes[keep])
        candidate_images.append(image_indices[keep])
        scale *= factor
        shortest *= factor
    boxes, image_indices = torch.cat(candidates), torch.cat(candidate_images)
    keep = batched_nms(boxes[:, :4], boxes[:, 4], image_indices, 0.7)
    boxes, image_indices = boxes[keep], image_indices[keep]
    sizes = (boxes[:, 2:4] - boxes[:, 0:2]).repeat(1, 2)
    boxes = rerec(torch.cat([boxes[:, :4] + boxes[:, 5:9] * sizes, boxes[:, 4:5]], dim=1))

    # Stage 2: R-Net on 24x24 crops.
    if len(boxes):
        valid = (boxes[:, 2].trunc().clamp(max=width) > boxes[:, 0].trunc().clamp(min=1) - 1) & (
            boxes[:, 3].trunc().clamp(max=height) > boxes[:, 1].trunc().clamp(min=1) - 1
        )
        boxes, image_indices = boxes[valid], image_indices[valid]
    if len(boxes):
        regression, probs = mtcnn.rnet(crops(boxes, image_indices, 24))
        passed = probs[:, 1] > thresholds[1]
        boxes = torch.cat([boxes[passed, :4], probs[passed, 1:2]], dim=1)
        image_indices, regression = image_indices[passed], regression[passed]
        keep = batched_nms(boxes[:, :4], boxes[:, 4], image_indices, 0.7)
        boxes = rerec(bbreg(boxes[keep], regression[keep]))
        image_indices = image_indices[keep]
        if max_per_image is not None and len(boxes):
            # batched_nms returns candidates by decreasing score: keep the first few of each image.
            rank = torch.zeros_like(image_indices)
            for i in image_indices.unique():
                mine = image_indices == i
                rank[mine] = torch.arange(int(mine.sum()), device=rank.device)
            boxes, image_indices = boxes[rank < max_per_image], image_indices[rank < max_per_image]

    # Stage 3: O-Net on 48x48 crops, with landmarks.
    points = torch.zeros(0, 5, 2, device=images.device)
    if len(boxes):
        regression, landmarks, probs = mtcnn.onet(crops(boxes, image_indices, 48))
        passed = probs[:, 1] > thresholds[2]
        boxes = torch.cat([boxes[passed, :4], probs[passed, 1:2]], dim=1)
        image_indices, regression, landmarks = image_indices[passed], regression[passed], landmarks[passed]
        box_w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        box_h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        points_x = box_w * landmarks[:, :5] + boxes[:, 0:1] - 1
        points_y = box_h * landmarks[:, 5:10] + boxes[:, 1:2] - 1
        points = torch.stack([points_x, points_y], dim=2)  # (n, 5, 2)
        boxes = bbreg(boxes, regression)
        keep = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_indices, 0.7, "Min")
        boxes, image_indices, points = boxes[keep], image_indices[keep], points[keep]

    boxes, points, image_indices = boxes.cpu().numpy(), points.cpu().numpy(), image_indices.cpu().numpy()
    return [
        (boxes[image_indices == i, :4], boxes[image_indices == i, 4], points[image_indices == i])
        for i in range(num_images)
    ]


class FaceTracker:
    """Finds and follows one face through the windows of one video; call `reset()` before the next video.

    The tracker keeps the subject's recent detections by frame index, so windows may come in any order and overlap
    (the tail window revisits earlier frames): each frame is matched against, and searched around, the subject's
    detection nearest in time.

    Args:
        min_confidence: MTCNN probability a detection needs to count, in [0, 1].
        detect_size: whole frames are downscaled so their longest side is at most this many pixels for detection.
        min_face_size: smallest face MTCNN looks for, in pixels of the image it searches.
        margin: crop side as a multiple of max(box width, box height); 1.0 is marlin-pytorch's crop.
        crop_size: side of the output crops, pixels.
        smoothing: standard deviation, in sampled frames, of the Gaussian that smooths boxes over time; 0 disables.
        min_iou: least overlap with the subject's nearest box for a detection to continue the track.
        reacquire_after: frames (decoded) after which a subject not seen may be picked up again anywhere, at the
            detection nearest to where it was last seen.
        region_scale: once a face is tracked, search only a square this many times its size around it, several times
            cheaper than the whole frame (frames where nothing turns up there are searched whole); 0 disables.
        region_size: side, in pixels, that square is resampled to for detection.
        thresholds: MTCNN's P-Net, R-Net and O-Net score thresholds (facenet-pytorch's defaults).
        pyramid_factor: ratio between the scales of MTCNN's image pyramid (facenet-pytorch's default).
        device: torch device MTCNN runs on.
        num_threads: torch CPU threads while detecting, restored after; MTCNN's many small operations gain little
            from more threads and lose much when the cores are busy. None keeps torch's setting.
    """

    def __init__(
        self,
        min_confidence: float = 0.9,
        detect_size: int = 320,
        min_face_size: int = 20,
        margin: float = 1.0,
        crop_size: int = 224,
        smoothing: float = 1.0,
        min_iou: float = 0.3,
        reacquire_after: int = 64,
        region_scale: float = 2.5,
        region_size: int = 128,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        pyramid_factor: float = 0.709,
        device: str = "cpu",
        num_threads: int | None = 1,
    ):
        self.min_confidence = min_confidence
        self.detect_size = detect_size
        self.min_face_size = min_face_size
        self.margin = margin
        self.crop_size = crop_size
        self.smoothing = smoothing
        self.min_iou = min_iou
        self.reacquire_after = reacquire_after
        self.region_scale = region_scale
        self.region_size = region_size
        self.thresholds = tuple(thresholds)
        self.pyramid_factor = pyramid_factor
        self.device = device
        self.num_threads = num_threads
        self._mtcnn = None
        self.reset()

    _MEMORY = 512  # frames of detections and of the subject's boxes kept, bounding memory on long videos

    def reset(self) -> None:
        """Forget the subject and the cached detections (start of a new video)."""
        # The subject's detections: frame index -> (box (4,), landmarks (5, 2), probability).
        self._subject: OrderedDict[int, tuple[np.ndarray, np.ndarray, float]] = OrderedDict()
        # All detections by frame index, so overlapping windows do not detect twice.
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self._next_index = 0

    @property
    def has_face(self) -> bool:
        """Whether a subject has been found in this video so far."""
        return bool(self._subject)

    def _load(self):
        if self._mtcnn is None:
            import torch
            from facenet_pytorch import MTCNN

            # Channels-last makes MTCNN's max-pooling several times faster on CPUs.
            self._mtcnn = MTCNN(device=self.device).eval().to(memory_format=torch.channels_last)
        return self._mtcnn

    def detect(
        self, frames: np.ndarray, regions: Sequence[Sequence[int]] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Detect faces in a batch of frames, downscaled to `detect_size`, or in one square region of each.

        Args:
            frames: (T, H, W, 3) uint8 RGB, all the same size.
            regions: optional (T, 4) squares (x1, y1, x2, y2) in frame pixels, which may reach outside the frame
                (zero-padded): search only there, resampled to `region_size` pixels.

        Returns:
            per frame: boxes (n, 4) float32 (x1, y1, x2, y2), probabilities (n,) float32 and landmarks (n, 5, 2)
            float32, all in frame pixels, keeping only detections with probability >= min_confidence.
        """
        import torch
        from PIL import Image

        mtcnn = self._load()
        num_frames, height, width = frames.shape[:3]
        offsets = np.zeros((num_frames, 1, 2), dtype=np.float32)
        if regions is not None:
            regions = np.asarray(regions, dtype=np.int64).reshape(num_frames, 4)
            size = (self.region_size, self.region_size)
            small = np.stack(
                [
                    np.asarray(Image.fromarray(np.ascontiguousarray(_cut(f, r))).resize(size, reducing_gap=2.0))
                    for f, r in zip(frames, regions)
                ]
            )
            factors = ((regions[:, 2] - regions[:, 0]) / self.region_size).astype(np.float32)[:, None, None]
            offsets = regions[:, None, :2].astype(np.float32)
        elif max(height, width) > self.detect_size:
            scale = self.detect_size / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = np.stack([np.asarray(Image.fromarray(f).resize(size, reducing_gap=2.0)) for f in frames])
            # Map boxes back with the exact per-axis factors of the rounded size.
            factors = np.tile(np.array([width / size[0], height / size[1]], dtype=np.float32), (num_frames, 1, 1))
        else:
            small, factors = frames, np.ones((num_frames, 1, 2), dtype=np.float32)
        # (T, 3, h, w), stored channels-last: the (T, h, w, 3) array as it is
        images = torch.from_numpy(small).to(self.device).permute(0, 3, 1, 2).float()
        min_face_size = self.min_face_size
        if regions is not None:
            # The subject fills about 1 / region_scale of the region: skip the pyramid levels for much smaller faces
            # (a face that shrank that much is searched again in the whole frame).
            min_face_size = max(min_face_size, 0.6 * self.region_size / self.region_scale)
        threads = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        try:
            with torch.inference_mode():
                found = _mtcnn_cascade(
                    mtcnn,
                    images,
                    min_face_size,
                    self.thresholds,
                    self.pyramid_factor,
                    4 if regions is not None else None,
                )
        finally:
            torch.set_num_threads(threads)
        results = []
        for (boxes, probs, landmarks), factor, offset in zip(found, factors, offsets):
            keep = probs >= self.min_confidence
            boxes = (boxes[keep].reshape(-1, 2, 2) * factor + offset).reshape(-1, 4).astype(np.float32)
            landmarks = (landmarks[keep] * factor + offset).astype(np.float32)
            results.append((boxes, probs[keep].astype(np.float32), landmarks))
        return results

    def _nearest(self, index: int) -> tuple[int, np.ndarray] | None:
        """(distance in frames, box) of the subject's detection nearest to frame `index`, or None."""
        if not self._subject:
            return None
        known = np.fromiter(self._subject.keys(), dtype=np.int64)
        nearest = int(known[np.argmin(np.abs(known - index))])
        return abs(nearest - index), self._subject[nearest][0]

    def _detections(self, frames: np.ndarray, frame_indices: Sequence[int]) -> dict[int, tuple]:
        """Detections for each distinct frame index, reusing cached ones, searching around the subject if known."""
        todo = {}  # frame index -> position in frames
        for position, index in enumerate(frame_indices):
            if index not in self._cache and index not in todo:
                todo[index] = position
        found = {}
        regions = {}
        for index in todo:
            nearest = self._nearest(index)
            if self.region_scale and nearest is not None and nearest[0] <= self.reacquire_after:
                box = nearest[1]
                side = round(max(box[2] - box[0], box[3] - box[1]) * self.region_scale)
                corner = np.round((box[:2] + box[2:]) / 2 - side / 2).astype(np.int64)
                regions[index] = (*corner, *(corner + side))
        if regions:
            positions = [todo[index] for index in regions]
            for index, result in zip(regions, self.detect(frames[positions], list(regions.values()))):
                if len(result[0]):
                    found[index] = result
        rest = [index for index in todo if index not in found]
        if rest:
            found.update(zip(rest, self.detect(frames[[todo[index] for index in rest]])))
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
        overlaps = _iou(reference, boxes)
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

    def locate(self, frames: np.ndarray, frame_indices: Sequence[int] | None = None) -> FaceTrack | None:
        """Detect and follow the subject through one window; None while no face has been seen in this video.

        Args:
            frames: (T, H, W, 3) uint8 RGB, one window of the video.
            frame_indices: (T,) index of each frame in the video (repeats allowed, for padding); by default the
                frames follow those of the previous call.
        """
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

        # Interpolate between the subject's detections; np.interp carries the nearest one beyond them.
        known = np.fromiter(self._subject.keys(), dtype=np.float64)
        box_table = np.stack([box for box, _, _ in self._subject.values()])  # (K, 4)
        landmark_table = np.stack([points for _, points, _ in self._subject.values()]).reshape(len(known), 10)
        positions = np.asarray(frame_indices, dtype=np.float64)
        boxes = np.stack([np.interp(positions, known, box_table[:, j]) for j in range(4)], axis=1)
        landmarks = np.stack([np.interp(positions, known, landmark_table[:, j]) for j in range(10)], axis=1)

        # Smooth centre and size rather than corners, so smoothing never shrinks or shifts a steady box.
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        sizes = boxes[:, 2:] - boxes[:, :2]
        smooth = _gaussian_smooth(np.concatenate([centres, sizes], axis=1), self.smoothing)
        boxes = np.concatenate([smooth[:, :2] - smooth[:, 2:] / 2, smooth[:, :2] + smooth[:, 2:] / 2], axis=1)

        detected = np.array([i in self._subject for i in frame_indices])
        confidence = np.array([self._subject[i][2] if i in self._subject else 0.0 for i in frame_indices])
        return FaceTrack(
            boxes=boxes.astype(np.float32),
            landmarks=landmarks.reshape(-1, 5, 2).astype(np.float32),
            detected=detected,
            confidence=confidence.astype(np.float32),
        )

    def crop(self, frames: np.ndarray, track: FaceTrack) -> FaceCrops:
        """Cut the frames of a window around its track (see `crop_faces`)."""
        crops, crop_boxes, crop_landmarks = crop_faces(
            frames, track.boxes, track.landmarks, self.margin, self.crop_size
        )
        return FaceCrops(
            crops=crops,
            boxes=track.boxes,
            crop_boxes=crop_boxes,
            landmarks=track.landmarks,
            crop_landmarks=crop_landmarks,
            detected=track.detected,
            confidence=track.confidence,
        )

    def centre_crop(self, frames: np.ndarray) -> FaceCrops:
        """The fallback without a face: the largest centred square of each frame, nothing detected."""
        num_frames, height, width = frames.shape[:3]
        track = FaceTrack(
            boxes=centre_boxes(num_frames, height, width),
            landmarks=np.full((num_frames, 5, 2), np.nan, dtype=np.float32),
            detected=np.zeros(num_frames, dtype=bool),
            confidence=np.zeros(num_frames, dtype=np.float32),
        )
        return self.crop(frames, track)

    def track(self, frames: np.ndarray, frame_indices: Sequence[int] | None = None) -> FaceCrops:
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
        windows: the windows of one video (e.g. `video_io.iter_windows(path)`).
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
            first = FaceTrack(track.boxes[:1], track.landmarks[:1], np.zeros(1, bool), np.zeros(1, np.float32))
            for held in pending:
                num = len(held.frames)
                carried = FaceTrack(
                    boxes=first.boxes.repeat(num, 0),
                    landmarks=first.landmarks.repeat(num, 0),
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
                "for it (on_no_face='centre', `--no-face centre`)."
            )
        for held in pending:
            yield held, tracker.centre_crop(held.frames)
