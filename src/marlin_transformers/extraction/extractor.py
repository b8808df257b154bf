"""From a video path to MARLIN features: decoding, face cropping, the processor and the model, in one place.

`MarlinFeatureExtractor` runs the pipeline on one video at a time and batches its windows through the model;
`extract_video` and `extract_features` are thin marlin-pytorch-compatible calls for people migrating.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..constants import MARLIN_CROP_SIZE, SAMPLE_RATE, STRIDE
from ..exceptions import MarlinError
from ..jobs import timed, timed_iter
from ..kernels import enable_cpu_fast_path
from ..loading import load_marlin
from ..modeling_marlin import MarlinForPreTraining, MarlinPreTrainedModel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# On a CPU the encoder runs a batch this many clips at a time: larger products and activations spill out of the cache
# and cost more per clip. On 2 cores of an AMD EPYC, seconds per ViT-B clip at 8 / 4 / 2 / 1 clips a call: bf16
# 0.58-0.64 / 0.55-0.56 / 0.51-0.53 / 0.53-0.57, fp32 1.30-1.38 / 1.25-1.34 / 1.17-1.19 / 1.15-1.21; ViT-S bf16
# 0.21-0.34 / 0.21-0.29 / 0.21-0.28 / 0.21-0.30 (tests/benchmarks/bench_encoder.py --clips-per-call, and the same
# loop on its own). A clip's features do not depend on the clips beside it, so this changes no output.
CPU_CLIPS_PER_CALL = 2


def check_device(device: str | torch.device) -> torch.device:
    """`device` as a `torch.device`, once a tensor has been placed there; else one `MarlinError` line (a misspelt
    device, or `cuda` on a machine without a GPU)."""
    try:
        device = torch.device(device)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as error:  # torch says "Torch not compiled with CUDA..." as an assertion
        reason = " ".join(str(error).split()).split(". ")[0][:120]
        raise MarlinError(
            f"{device}: not usable here ({reason}); use cpu or a device this machine has.", parameter="device"
        ) from None
    return device


@dataclass
class SubjectFeatures:
    """Features of one face of a video (`MarlinFeatureExtractor.extract_subjects`).

    Attributes:
        id: the subject's number in the video, from 0 in order of first appearance.
        features: (num_windows, hidden_size) float32 (or (num_windows, num_patches, hidden_size) with `keep_seq`),
            one per window of the video that falls within the subject's time span.
        windows: one dict per window, as `VideoFeatures.windows`, plus `box`: the subject's median box (x1, y1, x2,
            y2) in that window, frame pixels.
        frame_indices, boxes: (K,) frames where the subject was detected and (K, 4) its boxes there, frame pixels.
        start_time, end_time: its first and last detection, seconds.
        detected_fraction: its detections over the distinct frames of its windows within its span, in [0, 1].
    """

    id: int
    features: np.ndarray
    windows: list[dict]
    frame_indices: np.ndarray
    boxes: np.ndarray
    start_time: float
    end_time: float
    detected_fraction: float

    def record(self) -> dict:
        """What the manifest says of the subject (its arrays go to the output file)."""
        return {
            "id": self.id,
            "start_time": round(self.start_time, 6),
            "end_time": round(self.end_time, 6),
            "num_detections": len(self.frame_indices),
            "detected_fraction": round(self.detected_fraction, 6),
            "windows": self.windows,
        }


@dataclass
class VideoFeatures:
    """Features of one video.

    Attributes:
        features: (num_windows, hidden_size) float32 pooled features, or (num_windows, num_patches, hidden_size)
            with `keep_seq`.
        windows: one dict per window: `frame_indices`, `start_time` and `end_time` (seconds), `num_padded`, and
            `face_detected_fraction` (fraction of the window's frames with a detected face; None without cropping).
        crops: the model's input frames of each window when asked for (num_windows, frames, 224, 224, 3) uint8.
        subjects: with `all_faces`, one `SubjectFeatures` per face (then `features` is empty and `windows` lists
            nothing).
    """

    features: np.ndarray
    windows: list[dict] = field(default_factory=list)
    crops: np.ndarray | None = None
    subjects: list[SubjectFeatures] | None = None

    def arrays(self) -> dict[str, np.ndarray] | np.ndarray:
        """What `marlin extract` saves: the features, or with subjects `features_<id>`, `frame_indices_<id>` and
        `boxes_<id>` for each (an `.npz`)."""
        if self.subjects is None:
            return self.features
        arrays = {}
        for subject in self.subjects:
            arrays[f"features_{subject.id}"] = subject.features
            arrays[f"frame_indices_{subject.id}"] = subject.frame_indices
            arrays[f"boxes_{subject.id}"] = subject.boxes
        return arrays


class MarlinFeatureExtractor:
    """Path -> per-window MARLIN features: decode (PyAV), track and crop the face, process, batch, encode.

    Args:
        model: a converted folder, a Hub id, an official checkpoint file, or a loaded MARLIN model (used as it is
            where its device and dtype match, and then given the CPU fast path, `kernels.enable_cpu_fast_path`).
        device: where the encoder runs.
        dtype: in which precision it runs (bf16 is about 2x faster on recent CPUs).
        batch_size: windows per forward pass.
        crop_face: track one face through the video and crop around it (else frames are only resized).
        on_no_face: with `crop_face`, "error" (raise NoFaceError) or "centre" (fall back to a centre crop).
        face_margin: crop side as a multiple of max(box width, box height) (1.0 = marlin-pytorch's crop).
        sample_rate: take every `sample_rate`-th decoded frame (see `video.windows.iter_windows`).
        stride: the next window starts `stride` sampled frames later.
        stride_seconds: if given, windows start every `stride_seconds` seconds instead.
        keep_seq: return every token's feature instead of the pooled one.
        num_frames, image_size: clips of another frame count (a multiple of the tubelet, 2) or size (a multiple of
            the patch, 16) than the model's, read with `interpolate_pos_encoding` (default: the model's, 16 x 224).
        compile: run the encoder through `torch.compile` (the first batches of each shape pay its compile time).
        all_faces: with `crop_face`, follow every face that stays long enough as its own subject
            (`video.multi_face_tracking`), and give each its features (`__call__` returns them in `subjects`).

    Attributes:
        timings: wall seconds by stage since construction: `model load` (loading and checking the weights),
            `decode`, `detection`, `tracking`, `crop` (the face tracker's), `process` (crops to `pixel_values`) and
            `encode` (the model); the pipelined path adds its workers' seconds (`pipeline.iter_outcomes`).
    """

    def __init__(
        self,
        model: str | os.PathLike | MarlinPreTrainedModel = "marlin_vit_base_ytf",
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        batch_size: int = 4,
        crop_face: bool = False,
        on_no_face: str = "error",
        face_margin: float = 1.0,
        sample_rate: int = SAMPLE_RATE,
        stride: int = STRIDE,
        stride_seconds: float | None = None,
        keep_seq: bool = False,
        num_frames: int | None = None,
        image_size: int | None = None,
        compile: bool = False,
        all_faces: bool = False,
    ):
        from ..video.face_tracking import FaceTracker
        from ..video_processing_marlin import MarlinVideoProcessor

        # Where the extractor's time goes, seconds by stage since it was made (see `timings` in the class docstring).
        self.timings: dict[str, float] = {}
        self.dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        self.device = check_device(device)
        with timed(self.timings, "model load"):
            # The CPU fast path computes what the model computes (off the CPU it runs the plain ops).
            self.model = enable_cpu_fast_path(load_marlin(model, dtype=self.dtype, device=self.device))
        config = self.model.config
        num_frames = num_frames or config.num_frames
        image_size = image_size or config.image_size
        if num_frames % config.tubelet_size or image_size % config.patch_size:
            raise MarlinError(
                f"num_frames {num_frames} / image_size {image_size}: MARLIN reads frame counts that are multiples "
                f"of {config.tubelet_size} and sizes that are multiples of {config.patch_size}."
            )
        self.interpolate_pos_encoding = (num_frames, image_size) != (config.num_frames, config.image_size)
        # What a manifest line records of how its features were made (beside the model and dtype).
        self.settings = {"num_frames": num_frames, "image_size": image_size, "sample_rate": sample_rate}
        self.processor = MarlinVideoProcessor(size={"height": image_size, "width": image_size}, num_frames=num_frames)
        self.encode = torch.compile(self.model) if compile else self.model
        self.batch_size = batch_size
        self.crop_face = crop_face
        self.on_no_face = on_no_face
        self.face_margin = face_margin
        self.window_options = dict(
            num_frames=num_frames, sample_rate=sample_rate, stride=stride, stride_seconds=stride_seconds
        )
        self.keep_seq = keep_seq
        # Crops at the released models' size, as marlin-pytorch cuts them; the processor resizes them to the model's.
        # Detection here runs between the encoder's batches, on all of torch's threads (a data loader worker of the
        # pipelined path, beside the encoder, detects on one: `pipeline.VideoWindows`).
        self.tracker = FaceTracker(
            margin=face_margin, crop_size=MARLIN_CROP_SIZE, device=str(self.device), num_threads=None
        )
        self.tracker.timings = self.timings
        if all_faces and not crop_face:
            raise MarlinError("all_faces follows faces: use it with crop_face.")
        self.all_faces = all_faces

    def iter_clips(self, path: str | os.PathLike):
        """Yield (window metadata dict, frames (T, H, W, 3) uint8) for each window of a video, cropped if asked."""
        tracker = self.tracker if self.crop_face else None
        return iter_clips(
            path, self.window_options, tracker, self.on_no_face, self.settings["image_size"], self.timings
        )

    @torch.inference_mode()
    def extract_clips(self, clips: list[np.ndarray] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Encode a batch of clips (each (frames, H, W, 3) uint8, or processed `pixel_values_videos`); on a CPU,
        `CPU_CLIPS_PER_CALL` clips at a time.

        Returns:
            (batch, hidden_size), or (batch, num_patches, hidden_size) with `keep_seq`, float32 on the CPU.
        """
        if isinstance(clips, torch.Tensor) and clips.is_floating_point():
            pixel_values = clips
        else:
            with timed(self.timings, "process"):
                pixel_values = self.processor(list(clips), return_tensors="pt")["pixel_values_videos"]
        with timed(self.timings, "encode"):
            pixel_values = pixel_values.to(self.device, self.dtype)
            step = CPU_CLIPS_PER_CALL if self.device.type == "cpu" else len(pixel_values)
            features = []
            for chunk in pixel_values.split(max(step, 1)):
                outputs = self.encode(chunk, interpolate_pos_encoding=self.interpolate_pos_encoding)
                features.append(outputs.last_hidden_state if self.keep_seq else outputs.pooler_output)
            return torch.cat(features).float().cpu()

    def __call__(self, path: str | os.PathLike, progress=None, keep_crops: bool = False) -> VideoFeatures:
        """Features and window metadata of one video (of each face in it, with `all_faces`). `progress` (a tqdm bar)
        is advanced by each batch's windows once they are encoded, so it counts finished work."""
        if self.all_faces:
            return VideoFeatures(features=np.zeros((0,), np.float32), subjects=self.extract_subjects(path, progress))
        records, features, batch, kept = [], [], [], []

        def encode() -> None:
            features.append(self.extract_clips(batch))
            if progress is not None:
                progress.update(len(batch))
            batch.clear()

        for record, frames in self.iter_clips(path):
            records.append(record)
            batch.append(frames)
            if keep_crops:
                kept.append(frames)
            if len(batch) == self.batch_size:
                encode()
        if batch:
            encode()
        if not all(bool(f.isfinite().all()) for f in features):  # fp16 overflow, say: never an "ok" of NaNs
            raise non_finite_features(path, self.dtype)
        return VideoFeatures(
            features=torch.cat(features).numpy(), windows=records, crops=np.stack(kept) if keep_crops else None
        )

    def extract_subjects(self, path: str | os.PathLike, progress=None) -> list[SubjectFeatures]:
        """Every face of a video that stays long enough, each with its own features: one pass over the windows finds
        the subjects (detections only are kept), a second cuts and encodes each window around each subject present.

        Raises:
            NoFaceError: no subject found, unless `on_no_face="centre"` (then an empty list).
        """
        from ..exceptions import NoFaceError
        from ..video.multi_face_tracking import MultiFaceTracker
        from ..video.windows import iter_windows

        tracker = MultiFaceTracker(self.tracker.detector, margin=self.face_margin, crop_size=MARLIN_CROP_SIZE)
        subjects = tracker.find_subjects(iter_windows(path, **self.window_options))
        if not subjects:
            if self.on_no_face == "error":
                raise NoFaceError(
                    f"{os.fspath(path)}: no face stays long enough to follow (at least {tracker.min_detections} "
                    "sampled frames); check the video, or allow it (on_no_face='centre' records no subject)."
                )
            return []
        records = {s.id: [] for s in subjects}
        features = {s.id: [] for s in subjects}
        seen = {s.id: set() for s in subjects}
        batch: list[tuple[int, np.ndarray]] = []

        def encode() -> None:
            encoded = self.extract_clips([clip for _, clip in batch])
            for (subject_id, _), feature in zip(batch, encoded):
                features[subject_id].append(feature)
            if progress is not None:
                progress.update(len(batch))
            batch.clear()

        for window in iter_windows(path, **self.window_options):
            for subject in subjects:
                if not subject.overlaps(window.frame_indices):
                    continue
                crops = tracker.crop(window, subject)
                record = window_record(window, crops.detected_fraction)
                record["box"] = [round(float(v), 1) for v in np.median(crops.boxes, axis=0)]
                records[subject.id].append(record)
                span = [i for i in window.frame_indices if subject.first_frame <= i <= subject.last_frame]
                seen[subject.id].update(span)
                batch.append((subject.id, crops.crops))
                if len(batch) == self.batch_size:
                    encode()
        if batch:
            encode()
        results = []
        for subject in subjects:
            stacked = torch.stack(features[subject.id])
            if not bool(stacked.isfinite().all()):
                raise non_finite_features(path, self.dtype)
            results.append(
                SubjectFeatures(
                    id=subject.id,
                    features=stacked.numpy(),
                    windows=records[subject.id],
                    frame_indices=subject.frame_indices,
                    boxes=subject.boxes,
                    start_time=subject.start_time,
                    end_time=subject.end_time,
                    detected_fraction=len(subject.frame_indices) / max(len(seen[subject.id]), 1),
                )
            )
        return results


def non_finite_features(path: str | os.PathLike, dtype: torch.dtype) -> MarlinError:
    """The error of a video whose features came out NaN or inf (fp16 overflow, say): never an "ok" of NaNs."""
    return MarlinError(
        f"{path}: the model gave NaN or inf features in {str(dtype).removeprefix('torch.')}; extract in float32."
    )


def iter_clips(
    path: str | os.PathLike,
    window_options: dict,
    tracker=None,
    on_no_face: str = "error",
    size: int = MARLIN_CROP_SIZE,
    timings: dict | None = None,
):
    """Yield (window metadata dict, frames (T, H, W, 3) uint8) for each window of a video: with a `FaceTracker`, the
    crops around the face it follows (reset for this video), else the whole frames, which the processor resizes to
    `size` (a `SqueezedVideoWarning` if they are far from square). `window_options` are
    `video.windows.iter_windows`'s; decoding's seconds are added to `timings["decode"]` where given (the tracker
    keeps its own, `FaceTracker.timings`)."""
    from ..video.cropping import warn_if_squeezed
    from ..video.windows import iter_windows

    # The tracker takes frames one at a time.
    windows = timed_iter(iter_windows(path, **window_options, stack=tracker is None), timings, "decode")
    if tracker is None:
        for number, window in enumerate(windows):
            if number == 0:
                warn_if_squeezed(path, window.frames.shape[2], window.frames.shape[1], size)
            yield window_record(window, None), window.frames
        return
    from ..video.face_tracking import iter_face_windows

    for window, crops in iter_face_windows(windows, tracker, source=path, on_no_face=on_no_face):
        yield window_record(window, crops.detected_fraction), crops.crops


def window_record(window, face_detected_fraction: float | None) -> dict:
    """One window's manifest entry (see `VideoFeatures.windows`), from a `video.windows.VideoWindow`."""
    return {
        "frame_indices": [int(i) for i in window.frame_indices],
        "start_time": round(float(window.start_time), 6),
        "end_time": round(float(window.end_time), 6),
        "num_padded": int(window.num_padded),
        "face_detected_fraction": face_detected_fraction,
    }


def extract_video(
    path: str | os.PathLike,
    model: str | os.PathLike | MarlinPreTrainedModel = "marlin_vit_base_ytf",
    crop_face: bool = False,
    sample_rate: int = SAMPLE_RATE,
    stride: int = STRIDE,
    reduction: str = "none",
    keep_seq: bool = False,
    **options,
) -> torch.Tensor:
    """marlin-pytorch's `Marlin.extract_video`: (num_windows, hidden) features (or their mean/max with `reduction`).

    Unlike the reference, the last window is aligned to the end of the video, short videos are padded, and the face
    is tracked rather than detected per frame.
    """
    extractor = MarlinFeatureExtractor(
        model, crop_face=crop_face, sample_rate=sample_rate, stride=stride, keep_seq=keep_seq, **options
    )
    features = torch.from_numpy(extractor(path).features)
    if reduction == "mean":
        return features.mean(dim=0)
    if reduction == "max":
        return features.max(dim=0).values
    return features


@torch.inference_mode()
def extract_features(model: MarlinPreTrainedModel, clip: torch.Tensor, keep_seq: bool = True) -> torch.Tensor:
    """marlin-pytorch's `Marlin.extract_features` on a (batch, 3, frames, H, W) clip in [0, 1] (its layout).

    Returns (batch, num_patches, hidden) with `keep_seq`, else (batch, hidden).
    """
    encoder = model.marlin if isinstance(model, MarlinForPreTraining) else model
    outputs = encoder(clip.transpose(1, 2))
    return outputs.last_hidden_state if keep_seq else outputs.pooler_output
