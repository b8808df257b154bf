"""Find faces in batches of frames with MTCNN (facenet-pytorch, weights in its wheel).

Whole frames are searched downscaled to `detect_size` pixels on their longest side; a caller that knows roughly where
the face is (the tracker) may pass a square region of each frame instead, resampled to `region_size` pixels, several
times cheaper. Every candidate of a cascade stage is resampled in one call. Frames go through the cascade a few at a
time: its non-maximum suppression compares every candidate of a batch with every other, so 16 whole frames at once
took 3x longer per frame than 4 at a time. On 2 cores of an AMD EPYC a whole frame costs about 20 ms and a region
about 5 ms.

The detector has no memory of earlier frames: following one face through a video is `face_tracking.FaceTracker`'s.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from .cropping import crop_with_padding

# One frame's detections: boxes (n, 4) float32 (x1, y1, x2, y2), probabilities (n,) float32 and landmarks
# (n, 5, 2) float32 (x, y), all in frame pixels.
Detections = tuple[np.ndarray, np.ndarray, np.ndarray]


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with `num_threads` torch CPU threads, and torch's previous setting again on leaving it.

    torch's thread count is process-wide, so while the block runs other threads' torch calls get it too; nothing is
    left changed once it returns or raises. None (or 0) keeps torch's setting.
    """
    import torch

    previous = torch.get_num_threads()
    if not num_threads or num_threads == previous:
        yield
        return
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _mtcnn_cascade(
    mtcnn, images, min_face_size: float, thresholds: Sequence[float], factor: float, max_per_image: int | None = None
) -> list[Detections]:
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

    num_images = len(images)
    candidates = _pnet_candidates(mtcnn, images, min_face_size, thresholds[0], factor)
    if candidates is None:  # frames smaller than the smallest face looked for: no pyramid level, no face
        nothing = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
        return [nothing] * num_images
    boxes, image_indices = _rnet_candidates(mtcnn, images, *candidates, thresholds[1], max_per_image)
    points = torch.zeros(0, 5, 2, device=images.device)
    if len(boxes):
        boxes, image_indices, points = _onet_faces(mtcnn, images, boxes, image_indices, thresholds[2])
    boxes, points, image_indices = boxes.cpu().numpy(), points.cpu().numpy(), image_indices.cpu().numpy()
    return [
        (boxes[image_indices == i, :4], boxes[image_indices == i, 4], points[image_indices == i])
        for i in range(num_images)
    ]


def _normalise(data):
    """MTCNN's input scaling: [0, 255] -> about [-1, 1]."""
    return (data - 127.5) * 0.0078125


def _candidate_crops(images, boxes, image_indices, size: int):
    """(n, 3, size, size) channels-last crops of candidate `boxes` (n, >= 4) of `images`, normalised, in one call."""
    import torch
    from torchvision.ops import roi_align

    height, width = images.shape[2:]
    # facenet-pytorch's `pad`: integer corners clipped to the image, pixels x - 1 .. ex - 1.
    corners = boxes[:, :4].trunc()
    x1 = corners[:, 0].clamp(min=1) - 1
    y1 = corners[:, 1].clamp(min=1) - 1
    x2 = corners[:, 2].clamp(max=width)
    y2 = corners[:, 3].clamp(max=height)
    rois = torch.stack([image_indices.to(images.dtype), x1, y1, x2, y2], dim=1)  # (n, 5)
    data = roi_align(images, rois, output_size=size, sampling_ratio=2, aligned=True)
    return _normalise(data).contiguous(memory_format=torch.channels_last)


def _pnet_candidates(mtcnn, images, min_face_size: float, threshold: float, factor: float):
    """Stage 1, P-Net over an image pyramid: squared candidate boxes (n, 5) (x1, y1, x2, y2, score) and their images'
    indices (n,), or None where the images are smaller than the smallest face looked for."""
    import torch
    import torch.nn.functional as F
    from facenet_pytorch.models.utils.detect_face import generateBoundingBox, rerec
    from torchvision.ops import batched_nms

    height, width = images.shape[2:]
    scale = 12.0 / min_face_size
    shortest = min(height, width) * scale
    candidates, candidate_images = [], []
    while shortest >= 12:
        data = F.interpolate(images, size=(int(height * scale + 1), int(width * scale + 1)), mode="area")
        regression, probs = mtcnn.pnet(_normalise(data).contiguous(memory_format=torch.channels_last))
        boxes, image_indices = generateBoundingBox(regression, probs[:, 1], scale, threshold)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], image_indices, 0.5)
        candidates.append(boxes[keep])
        candidate_images.append(image_indices[keep])
        scale *= factor
        shortest *= factor
    if not candidates:
        return None
    boxes, image_indices = torch.cat(candidates), torch.cat(candidate_images)
    keep = batched_nms(boxes[:, :4], boxes[:, 4], image_indices, 0.7)
    boxes, image_indices = boxes[keep], image_indices[keep]
    sizes = (boxes[:, 2:4] - boxes[:, 0:2]).repeat(1, 2)  # (n, 4): width, height, width, height
    boxes = rerec(torch.cat([boxes[:, :4] + boxes[:, 5:9] * sizes, boxes[:, 4:5]], dim=1))
    return boxes, image_indices


def _rnet_candidates(mtcnn, images, boxes, image_indices, threshold: float, max_per_image: int | None):
    """Stage 2, R-Net on 24x24 crops of the P-Net candidates: the boxes (n, 5) that pass, refined and squared, and
    their images' indices (n,); at most `max_per_image` per image (best first) where given."""
    import torch
    from facenet_pytorch.models.utils.detect_face import bbreg, rerec
    from torchvision.ops import batched_nms

    height, width = images.shape[2:]
    if len(boxes):
        valid = (boxes[:, 2].trunc().clamp(max=width) > boxes[:, 0].trunc().clamp(min=1) - 1) & (
            boxes[:, 3].trunc().clamp(max=height) > boxes[:, 1].trunc().clamp(min=1) - 1
        )
        boxes, image_indices = boxes[valid], image_indices[valid]
    if not len(boxes):
        return boxes, image_indices
    regression, probs = mtcnn.rnet(_candidate_crops(images, boxes, image_indices, 24))
    passed = probs[:, 1] > threshold
    boxes = torch.cat([boxes[passed, :4], probs[passed, 1:2]], dim=1)
    image_indices, regression = image_indices[passed], regression[passed]
    keep = batched_nms(boxes[:, :4], boxes[:, 4], image_indices, 0.7)
    boxes = rerec(bbreg(boxes[keep], regression[keep]))
    image_indices = image_indices[keep]
    if max_per_image is not None and len(boxes):
        # batched_nms returns candidates by decreasing score: keep the first few of each image.
        rank = rank_within_images(image_indices)
        boxes, image_indices = boxes[rank < max_per_image], image_indices[rank < max_per_image]
    return boxes, image_indices


def rank_within_images(image_indices):
    """(n,) each candidate's place among its image's candidates, in the order given (0 for an image's first).

    With no loop over the images and no copy to the host: on a GPU, a batch of 64 images costs what one does.
    """
    import torch

    order = torch.argsort(image_indices, stable=True)  # by image, each image's candidates in the order given
    by_image = image_indices[order]
    first = torch.searchsorted(by_image, by_image)  # where each candidate's image starts in `by_image`
    rank = torch.empty_like(image_indices)
    rank[order] = torch.arange(len(order), device=image_indices.device) - first
    return rank


def _onet_faces(mtcnn, images, boxes, image_indices, threshold: float):
    """Stage 3, O-Net on 48x48 crops of the R-Net candidates: the faces' boxes (n, 5), image indices (n,) and
    landmarks (n, 5, 2) in image pixels."""
    import torch
    from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg

    regression, landmarks, probs = mtcnn.onet(_candidate_crops(images, boxes, image_indices, 48))
    passed = probs[:, 1] > threshold
    boxes = torch.cat([boxes[passed, :4], probs[passed, 1:2]], dim=1)
    image_indices, regression, landmarks = image_indices[passed], regression[passed], landmarks[passed]
    box_w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]  # (n, 1)
    box_h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    points_x = box_w * landmarks[:, :5] + boxes[:, 0:1] - 1  # (n, 5)
    points_y = box_h * landmarks[:, 5:10] + boxes[:, 1:2] - 1
    points = torch.stack([points_x, points_y], dim=2)  # (n, 5, 2)
    boxes = bbreg(boxes, regression)
    keep = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_indices, 0.7, "Min")
    return boxes[keep], image_indices[keep], points[keep]


class MtcnnDetector:
    """MTCNN on batches of frames, whole (downscaled) or in one square region of each; cheap to construct.

    facenet-pytorch and the weights load on the first detection, so building a detector (or a tracker around one)
    costs nothing until it is used, in the process (e.g. the data loader worker) that uses it.

    Args:
        min_confidence: MTCNN probability a detection needs to count, in [0, 1].
        detect_size: whole frames are downscaled so their longest side is at most this many pixels for detection.
        min_face_size: smallest face MTCNN looks for, in pixels of the image it searches.
        region_size: side, in pixels, that a region searched on its own is resampled to.
        thresholds: MTCNN's P-Net, R-Net and O-Net score thresholds (facenet-pytorch's defaults).
        pyramid_factor: ratio between the scales of MTCNN's image pyramid (facenet-pytorch's default).
        device: torch device MTCNN runs on.
        num_threads: CPU threads detecting (torch's setting is restored after each call). With more than one,
            batches of frames are searched side by side, each on its own thread with one torch thread: on 2 cores of
            an AMD EPYC, 16 regions took 4.7-4.8 ms a frame on one thread, 3.6-4.2 ms with two torch threads and
            2.9-3.4 ms on two threads of one torch thread each. The default, 1, suits a process beside others that
            fill the cores (a data loader worker); None uses as many as torch does (`torch.get_num_threads()`).
        batch_size: frames per pass through the cascade (a larger batch costs more per frame, see the module).
    """

    def __init__(
        self,
        min_confidence: float = 0.9,
        detect_size: int = 320,
        min_face_size: int = 20,
        region_size: int = 128,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        pyramid_factor: float = 0.709,
        device: str = "cpu",
        num_threads: int | None = 1,
        batch_size: int = 4,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.min_confidence = min_confidence
        self.detect_size = detect_size
        self.min_face_size = min_face_size
        self.region_size = region_size
        self.thresholds = tuple(thresholds)
        self.pyramid_factor = pyramid_factor
        self.device = device
        self.num_threads = num_threads
        self._mtcnn = None

    def load(self):
        """facenet-pytorch's MTCNN on `device`, loaded on the first call (`detect` calls it)."""
        if self._mtcnn is None:
            import torch
            from facenet_pytorch import MTCNN

            # Channels-last makes MTCNN's max-pooling several times faster on CPUs.
            self._mtcnn = MTCNN(device=self.device).eval().to(memory_format=torch.channels_last)
        return self._mtcnn

    def detect(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        regions: Sequence[Sequence[int]] | None = None,
        region_scale: float | None = None,
    ) -> list[Detections]:
        """Detect faces in a batch of frames, downscaled to `detect_size`, or in one square region of each.

        Args:
            frames: (T, H, W, 3) uint8 RGB, or a sequence of T (H, W, 3) frames of one size (views of a window's
                frames are not copied).
            regions: optional (T, 4) squares (x1, y1, x2, y2) in frame pixels, which may reach outside the frame
                (zero-padded): search only there, resampled to `region_size` pixels.
            region_scale: with `regions`, how many times the expected face's size each region's side is: faces much
                smaller than that (under 0.6 of it) are not looked for. None looks for any down to `min_face_size`.

        Returns:
            per frame: boxes (n, 4) float32 (x1, y1, x2, y2), probabilities (n,) float32 and landmarks (n, 5, 2)
            float32, all in frame pixels, keeping only detections with probability >= min_confidence.
        """
        self.load()  # here, not in each thread `_search` may start: one MTCNN
        num_frames = len(frames)
        if regions is not None:
            regions = np.asarray(regions, dtype=np.int64).reshape(num_frames, 4)
        size, factors, offsets = self._search_geometry(frames, regions)
        min_face_size = self.min_face_size
        if regions is not None and region_scale:
            # The subject fills about 1 / region_scale of the region: skip the pyramid levels for much smaller faces
            # (a face that shrank that much is searched again in the whole frame).
            min_face_size = max(min_face_size, 0.6 * self.region_size / region_scale)

        def searched(batch: range) -> np.ndarray:  # (n, h, w, 3) uint8: the frames (or regions) as searched
            return np.stack([_searched_image(frames[index], regions, index, size) for index in batch])

        found = self._search(searched, num_frames, min_face_size, 4 if regions is not None else None)
        results = []
        for (boxes, probs, landmarks), factor, offset in zip(found, factors, offsets):
            keep = probs >= self.min_confidence
            boxes = (boxes[keep].reshape(-1, 2, 2) * factor + offset).reshape(-1, 4).astype(np.float32)  # (n, 4)
            landmarks = (landmarks[keep] * factor + offset).astype(np.float32)  # (n, 5, 2)
            results.append((boxes, probs[keep].astype(np.float32), landmarks))
        return results

    def _search_geometry(self, frames, regions: np.ndarray | None):
        """How each frame is searched and its detections mapped back to frame pixels.

        Returns:
            size: (width, height) each frame (or region) is resized to for the cascade; None: searched as it is.
            factors: (T, 1, 2) float32 per-axis pixels of the frame per pixel searched.
            offsets: (T, 1, 2) float32 frame pixel of the searched image's corner.
        """
        num_frames = len(frames)
        height, width = frames[0].shape[:2] if num_frames else (0, 0)
        offsets = np.zeros((num_frames, 1, 2), dtype=np.float32)
        if regions is not None:
            size = (self.region_size, self.region_size)
            factors = ((regions[:, 2] - regions[:, 0]) / self.region_size).astype(np.float32)[:, None, None]
            return size, factors, regions[:, None, :2].astype(np.float32)
        if max(height, width) > self.detect_size:
            scale = self.detect_size / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            # Map boxes back with the exact per-axis factors of the rounded size.
            factors = np.tile(np.array([width / size[0], height / size[1]], dtype=np.float32), (num_frames, 1, 1))
            return size, factors, offsets
        return None, np.ones((num_frames, 1, 2), dtype=np.float32), offsets

    @property
    def options(self) -> dict:
        """The constructor's arguments this detector was made with (another process builds the same one from them)."""
        names = list(inspect.signature(MtcnnDetector.__init__).parameters)[1:]  # after self; each kept as an attribute
        return {name: getattr(self, name) for name in names}

    def cascade(self, images: np.ndarray, min_face_size: float, max_per_image: int | None) -> list[Detections]:
        """MTCNN's cascade (all three stages) on searched images (n, h, w, 3) uint8 RGB, in one pass.

        Returns:
            per image: boxes (n, 4), probabilities (n,) and landmarks (n, 5, 2) float32 in the image's pixels, all
            that pass the cascade's thresholds (`min_confidence` is applied later, by `detect`).
        """
        import torch

        # (n, 3, h, w), stored channels-last: the (n, h, w, 3) array as it is
        data = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float()
        with torch.inference_mode():  # thread-local: entered in each thread
            return _mtcnn_cascade(
                self.load(), data, min_face_size, self.thresholds, self.pyramid_factor, max_per_image
            )

    def _search(self, searched, num_frames: int, min_face_size: float, max_per_image: int | None):
        """The cascade on `searched(batch)` for the batches of `batch_size` frames, side by side on `num_threads`
        threads on a CPU: per frame, its `Detections` in searched pixels."""
        import torch

        def cascade(start: int) -> list[Detections]:
            batch = range(start, min(start + self.batch_size, num_frames))
            return self.cascade(searched(batch), min_face_size, max_per_image)

        starts = range(0, num_frames, self.batch_size)
        threads = min(self.num_threads or torch.get_num_threads(), len(starts))
        if torch.device(self.device).type != "cpu" or threads <= 1:
            with torch_threads(self.num_threads):
                return [result for start in starts for result in cascade(start)]
        # Batches side by side, each on its own thread with one torch thread: MTCNN's small operations gain
        # more that way than from torch's threads inside each one (see the class).
        with torch_threads(1), ThreadPoolExecutor(threads) as pool:
            return [result for part in pool.map(cascade, starts) for result in part]


def _searched_image(frame: np.ndarray, regions: np.ndarray | None, index: int, size) -> np.ndarray:
    """Frame `index` as the cascade searches it: its region (zero-padded), or the whole frame, resized to `size`."""
    from PIL import Image

    if regions is not None:
        frame = np.ascontiguousarray(crop_with_padding(frame, regions[index]))
    return frame if size is None else np.asarray(Image.fromarray(frame).resize(size, reducing_gap=2.0))
