"""Face parsing into LaPa label maps, for Fasking (the labels' names and colours are in `constants`).

A face parser takes face crops and their five landmarks and returns one LaPa label map per crop:

    0 background, 1 skin, 2 right brow, 3 left brow, 4 right eye, 5 left eye, 6 nose, 7 upper lip, 8 inner mouth,
    9 lower lip, 10 hair

(facer names labels 2-5 "rb", "lb", "re", "le"; "right" is read here as the subject's right, on the left of the
image for a face looking at the camera. Fasking groups each brow with the eye on its side, so only that pairing
matters.) Two parsers share the `FaceParser` call signature:

- `LandmarkFaceParser`: built in, offline and fast (about 0.1 s for 16 crops on one CPU core); draws ellipses around
  MTCNN's five landmarks. An approximation, good enough for Fasking, which only needs to know which 16x16 patches
  hold eyes, nose and mouth.
- `FarlFaceParser`: the FaRL LaPa TorchScript model the MARLIN paper used (`face_parsing.farl.lapa.main_ema_136500_
  jit191.pt`, downloaded by the user), with the reference's pre- and post-processing.

Landmarks are MTCNN's order, in crop pixels (x, y): the eye on the left of the image, the eye on the right, the nose
tip, the mouth corner on the left, the mouth corner on the right. A crop without a face has NaN landmarks and gets an
all-background map, which `masking.generate_mask` treats as "no face" (random masking for that tubelet).
"""

import warnings
from pathlib import Path
from typing import Protocol

import torch
from torch.nn import functional as F

from ..constants import FARL_CHANNEL_ORDERS
from ..exceptions import CheckpointError

FARL_LAPA_FILENAME = "face_parsing.farl.lapa.main_ema_136500_jit191.pt"
FARL_LAPA_URL = f"https://github.com/FacePerceiver/facer/releases/download/models-v1/{FARL_LAPA_FILENAME}"


class FaceParser(Protocol):
    def __call__(
        self, face_crops: torch.Tensor, landmarks: torch.Tensor, boxes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """LaPa label maps of face crops.

        Args:
            face_crops: `(batch, height, width, 3)` uint8 RGB.
            landmarks: `(batch, 5, 2)` MTCNN landmarks in crop pixels (x, y); NaN where no face was found.
            boxes: optional `(batch, 4)` face boxes (x0, y0, x1, y1) in crop pixels.

        Returns:
            `(batch, height, width)` uint8 labels in 0..10.
        """
        ...


class LandmarkFaceParser:
    """An approximate LaPa parsing drawn from the five landmarks (and the face box, if given); no model, no download.

    Shapes, in a frame aligned with the line through the eyes and scaled by the eye distance `d`:
    - skin (1): the ellipse inscribed in the face box, or without one an oval reaching from about one eye-to-mouth
      distance above the eyes to below the chin, `2 d` wide;
    - hair (10): a band around the top of that oval, above the brows;
    - brows (2, 3): thin ellipses `0.3 d` above each eye; eyes (4, 5): ellipses on the eye landmarks;
    - nose (6): from between the eyes down to the nose tip, with the nostril wings around the tip;
    - lips (7, 9) and inner mouth (8): an ellipse around the mouth corners, split by a thin inner-mouth band along the
      line through the corners (a closed mouth).
    Real faces differ (open mouths, glasses, profile views, hair styles), so use `FarlFaceParser` to reproduce the
    paper's maps; this one is meant for running Fasking without the FaRL model.
    """

    def __call__(
        self, face_crops: torch.Tensor, landmarks: torch.Tensor, boxes: torch.Tensor | None = None
    ) -> torch.Tensor:
        face_crops = torch.as_tensor(face_crops)
        batch_size, height, width = face_crops.shape[:3]
        landmarks = torch.as_tensor(landmarks, dtype=torch.float32).reshape(batch_size, 5, 2)
        xs = torch.arange(width, dtype=torch.float32)[None, None, :]  # (1, 1, w)
        ys = torch.arange(height, dtype=torch.float32)[None, :, None]  # (1, h, 1)

        left_eye, right_eye, nose, left_mouth, right_mouth = landmarks.unbind(dim=1)  # each (b, 2)
        eye_center = (left_eye + right_eye) / 2
        mouth_center = (left_mouth + right_mouth) / 2
        eye_distance = (right_eye - left_eye).norm(dim=-1).clamp(min=1.0)  # (b,)
        u = (right_eye - left_eye) / eye_distance[:, None]  # across the face, toward the image right
        v = torch.stack([-u[:, 1], u[:, 0]], dim=-1)  # down the face
        eye_to_mouth = ((mouth_center - eye_center) * v).sum(-1).clamp(min=0.5 * eye_distance)  # (b,)
        mouth_width = (right_mouth - left_mouth).norm(dim=-1).clamp(min=1.0)

        def project(center, axis):
            """(b, h, w): each pixel's signed distance from `center` along the unit vector `axis`."""
            offset = (center * axis).sum(-1)[:, None, None]
            return xs * axis[:, 0, None, None] + ys * axis[:, 1, None, None] - offset

        def ellipse(center, axis_u, half_u, half_v):
            """(b, h, w) bool: pixels inside the ellipse with semi-axes `half_u` along `axis_u`, `half_v` across."""
            axis_v = torch.stack([-axis_u[:, 1], axis_u[:, 0]], dim=-1)
            along, across = project(center, axis_u), project(center, axis_v)
            return (along / half_u[:, None, None]) ** 2 + (across / half_v[:, None, None]) ** 2 <= 1

        d = eye_distance
        oval_center = eye_center + 0.4 * eye_to_mouth[:, None] * v
        oval_axis, oval_half_u, oval_half_v = u, 1.0 * d, 1.45 * eye_to_mouth
        if boxes is not None:
            boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(batch_size, 4)
            has_box = ~boxes.isnan().any(dim=1)
            box = torch.where(has_box[:, None], boxes, 0.0)
            box_axis = torch.tensor([[1.0, 0.0]]).expand(batch_size, 2)
            oval_center = torch.where(has_box[:, None], (box[:, :2] + box[:, 2:]) / 2, oval_center)
            oval_axis = torch.where(has_box[:, None], box_axis, oval_axis)
            oval_half_u = torch.where(has_box, (box[:, 2] - box[:, 0]) / 2, oval_half_u).clamp(min=1.0)
            oval_half_v = torch.where(has_box, (box[:, 3] - box[:, 1]) / 2, oval_half_v).clamp(min=1.0)
        skin = ellipse(oval_center, oval_axis, oval_half_u, oval_half_v)
        above_brows = project(eye_center, v) < -0.45 * d[:, None, None]
        hair = ellipse(oval_center, oval_axis, 1.2 * oval_half_u, 1.15 * oval_half_v) & ~skin & above_brows

        brow_offset = -0.3 * d[:, None] * v
        nose_vector = nose - eye_center
        nose_length = nose_vector.norm(dim=-1).clamp(min=1.0)
        nose_axis = torch.stack([nose_vector[:, 1], -nose_vector[:, 0]], dim=-1) / nose_length[:, None]
        nose_region = ellipse(eye_center + 0.6 * nose_vector, nose_axis, 0.16 * d, 0.55 * nose_length) | ellipse(
            nose + 0.03 * d[:, None] * v, u, 0.22 * d, 0.1 * d
        )

        mouth = ellipse(mouth_center, u, 0.55 * mouth_width, 0.22 * mouth_width)
        across_mouth = project(mouth_center, v)
        lip_gap = 0.04 * mouth_width[:, None, None]

        labels = torch.zeros(batch_size, height, width, dtype=torch.uint8)
        # Later shapes paint over earlier ones: parts over skin, lips over the nose.
        for label, region in (
            (10, hair),
            (1, skin),
            (2, ellipse(left_eye + brow_offset, u, 0.28 * d, 0.07 * d)),
            (3, ellipse(right_eye + brow_offset, u, 0.28 * d, 0.07 * d)),
            (4, ellipse(left_eye, u, 0.22 * d, 0.1 * d)),
            (5, ellipse(right_eye, u, 0.22 * d, 0.1 * d)),
            (6, nose_region),
            (7, mouth & (across_mouth < -lip_gap)),
            (8, mouth & (across_mouth.abs() <= lip_gap)),
            (9, mouth & (across_mouth > lip_gap)),
        ):
            labels = torch.where(region, label, labels)
        no_face = landmarks.isnan().any(dim=2).any(dim=1)
        return torch.where(no_face[:, None, None], 0, labels).to(torch.uint8)


class FarlFaceParser:
    """The FaRL LaPa face parser the MARLIN paper used, from its TorchScript file.

    The preprocessing follows the reference (facer's `FaRLFaceParser` with the "lapa/448" setting): the crop, scaled
    to [0, 1], is warped to 448x448 by the similarity transform that puts the five landmarks on FaRL's template,
    followed by a tanh warp (factor 0.8) that squeezes the surroundings into the border; the model's logits
    `(batch, 11, 448, 448)` are warped back to the crop by the inverse transform and the arg-max is the label.
    The reference took its five points from a 106-point landmark model (pupils, nose tip, mouth corners); MTCNN's
    five points are the same landmarks, give or take a few pixels.

    Args:
        model_path: the TorchScript file (`FARL_LAPA_FILENAME`, from `FARL_LAPA_URL`).
        device: where the model runs.
        batch_size: crops per model call.
        channel_order: the order the crops' channels are fed to the model in. "rgb" (default): FaRL was trained on
            RGB images, so its maps are right. "bgr": the MARLIN paper code read its frames with OpenCV and fed them
            to FaRL in BGR order; the maps the released MARLIN models were pretrained with came out that way, and
            "bgr" reproduces them (see docs/fidelity.md).
    """

    image_size = 448
    warp_factor = 0.8
    # FaRL's five-point template (x, y) on a 512-pixel face, mapped to [-1, 1].
    template = torch.tensor([[196.0, 226.0], [316.0, 226.0], [256.0, 286.0], [220.0, 360.4], [292.0, 360.4]]) / 256 - 1

    def __init__(
        self,
        model_path: str | Path,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        channel_order: str = FARL_CHANNEL_ORDERS[0],
    ):
        if channel_order not in FARL_CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {', '.join(FARL_CHANNEL_ORDERS)}, got {channel_order!r}")
        model_path = Path(model_path)
        if not model_path.is_file():
            raise CheckpointError(
                f"FaRL face-parsing model not found at {model_path}; download {FARL_LAPA_URL} and pass its path."
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; FaRL ships as TorchScript
                self.model = torch.jit.load(str(model_path), map_location=device).eval()
        except (RuntimeError, ValueError) as error:
            raise CheckpointError(
                f"{model_path} is not a TorchScript face-parsing model ({error}); download {FARL_LAPA_URL}."
            ) from error
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.channel_order = channel_order
        # Parsing caches (`clips.prepare_cached`) are keyed by this: maps of one order never serve the other.
        self.cache_name = type(self).__name__ + ("-bgr" if channel_order == "bgr" else "")

    @torch.no_grad()
    def __call__(
        self, face_crops: torch.Tensor, landmarks: torch.Tensor, boxes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """See `FaceParser`; `boxes` is unused (FaRL aligns on the landmarks)."""
        face_crops = torch.as_tensor(face_crops)
        landmarks = torch.as_tensor(landmarks, dtype=torch.float32).reshape(-1, 5, 2)
        has_face = ~landmarks.isnan().any(dim=2).any(dim=1)
        labels = torch.zeros(face_crops.shape[:3], dtype=torch.uint8)
        indices = has_face.nonzero().flatten()
        for chunk in indices.split(self.batch_size):
            labels[chunk] = self.parse(face_crops[chunk], landmarks[chunk]).cpu()
        return labels

    def parse(self, face_crops: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """`(batch, height, width)` labels of crops that all have a face (no batching, no NaN handling)."""
        images, inverse_grid = self.align(face_crops, landmarks)
        outputs = self.model(images)
        logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs  # (b, 11, 448, 448)
        logits = F.grid_sample(logits.float(), inverse_grid, mode="bilinear", align_corners=False)  # (b, 11, h, w)
        return logits.argmax(dim=1).to(torch.uint8)

    def align(self, face_crops: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's input and the grid that samples its output back onto the crops.

        Args:
            face_crops: `(batch, height, width, 3)` uint8 RGB.
            landmarks: `(batch, 5, 2)` in crop pixels.

        Returns:
            `(batch, 3, 448, 448)` float images in [0, 1], and the `(batch, height, width, 2)` inverse grid for
            `grid_sample`.
        """
        images = face_crops.to(self.device).permute(0, 3, 1, 2).float() / 255  # (b, 3, h, w)
        if self.channel_order == "bgr":
            images = images.flip(1)  # (b, 3, h, w) with channels B, G, R
        height, width = images.shape[2:]
        size = self.image_size
        landmarks = landmarks.to(self.device, torch.float32)
        target = (self.template.to(self.device) + 1) * (size - 1) / 2  # (5, 2) in aligned pixels
        matrix = _similarity_transform(landmarks, target.expand_as(landmarks))  # crop pixels -> aligned pixels

        # Coordinates are pixel indices normalized by the full size (index / size * 2 - 1), the reference's
        # convention (half a pixel off grid_sample's own); kept so the maps match the paper's.
        aligned_pixels = _pixel_grid(size, size, self.device)  # (s * s, 2)
        unwarped = _inverse_tanh_warp(aligned_pixels / size * 2 - 1, self.warp_factor)
        crop_points = _apply_affine(torch.linalg.inv(matrix), (unwarped + 1) / 2 * size)  # (b, s * s, 2)
        crop_size = torch.tensor([width, height], device=self.device, dtype=torch.float32)
        grid = (crop_points / crop_size * 2 - 1).reshape(-1, size, size, 2)
        images = F.grid_sample(images, grid, mode="bilinear", align_corners=False)

        aligned_points = _apply_affine(matrix, _pixel_grid(height, width, self.device))  # (b, h * w, 2)
        inverse_grid = _tanh_warp(aligned_points / size * 2 - 1, self.warp_factor).reshape(-1, height, width, 2)
        return images, inverse_grid


def _pixel_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """`(height * width, 2)` pixel coordinates (x, y), row-major."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device),
        torch.arange(width, dtype=torch.float32, device=device),
        indexing="ij",
    )
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2)


def _similarity_transform(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`(batch, 3, 3)` least-squares similarity (rotation, uniform scale, shift) mapping `source` onto `target`.

    Both are `(batch, points, 2)`. The map is x' = a x + b y + tx, y' = -b x + a y + ty.
    """
    source_mean, target_mean = source.mean(dim=1, keepdim=True), target.mean(dim=1, keepdim=True)
    s, t = source - source_mean, target - target_mean  # (b, n, 2)
    norm = s.square().sum(dim=(1, 2))
    a = (s * t).sum(dim=(1, 2)) / norm
    b = (t[..., 0] * s[..., 1] - t[..., 1] * s[..., 0]).sum(dim=1) / norm
    tx = target_mean[:, 0, 0] - a * source_mean[:, 0, 0] - b * source_mean[:, 0, 1]
    ty = target_mean[:, 0, 1] + b * source_mean[:, 0, 0] - a * source_mean[:, 0, 1]
    zeros, ones = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, tx, -b, a, ty, zeros, zeros, ones], dim=-1).reshape(-1, 3, 3)


def _apply_affine(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """`(batch, n, 2)`: `points` (`(n, 2)` or `(batch, n, 2)`) mapped by `(batch, 3, 3)` affine matrices."""
    return points @ matrix[:, :2, :2].transpose(1, 2) + matrix[:, None, :2, 2]


def _tanh_warp(coords: torch.Tensor, factor: float) -> torch.Tensor:
    """Squeeze normalized coordinates beyond `1 - factor` from the centre with a tanh, mapping R into (-1, 1)."""
    inner = 1.0 - factor
    outer = coords.abs() > inner
    warped = coords.sign() * (torch.tanh((coords.abs() - inner) / factor) * factor + inner)
    return torch.where(outer, warped, coords)


def _inverse_tanh_warp(coords: torch.Tensor, factor: float, eps: float = 1e-3) -> torch.Tensor:
    """The inverse of `_tanh_warp` (arctanh clamped to 1 - eps, as the reference does)."""
    inner = 1.0 - factor
    outer = coords.abs() > inner
    ratio = ((coords.abs() - inner) / factor).clamp(max=1 - eps)
    unwarped = coords.sign() * (torch.atanh(ratio) * factor + inner)
    return torch.where(outer, unwarped, coords)
