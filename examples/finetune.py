"""Fine-tune MARLIN on labelled face videos with `transformers.Trainer`, or train only its head (`--freeze-encoder`).

    python examples/finetune.py --model marlin_vit_base_ytf \
        --train-data train.csv --eval-data val.csv \
        --problem-type multi_label_classification \
        --output-dir runs/celebvhq_appearance --metric-for-best-model roc_auc

The model is a `MarlinForVideoClassification` (pooled MARLIN feature -> one linear layer) whose encoder comes from any
MARLIN checkpoint `marlin_transformers.extraction.load_encoder` reads: a converted folder, a Hub id, or an official
`.pt`/`.ckpt` file. Videos are decoded (and, with `--crop-face`, their face tracked and cropped) on the fly in the
dataset's `__getitem__`, so nothing is prepared beforehand.

Clips (16 frames every `--sample-rate` decoded frames, the windows of `marlin_transformers.video`):

- training: one window per video and epoch, drawn uniformly among the windows that start every `--train-stride`
  sampled frames (plus the one aligned to the video's end). The draw is seeded by (`--seed`, epoch, video index),
  so a run is reproducible whatever the number of data-loader workers or processes.
- evaluation (`--eval-clips all`, the default): every window of the video on the `marlin extract` grid (a window
  every `--eval-stride` sampled frames, default one window length, and one aligned to the end), and the video's
  logits are the mean of its windows' logits. The head is linear, so this equals the head applied to the temporal
  mean of the window features: the paper's linear-probe protocol. `--eval-clips first` scores the first window
  only; `--max-eval-windows N` keeps N evenly spaced windows of long videos.

Data (`--train-data`, `--eval-data`):

- a labels CSV (`marlin_transformers.celebv_hq`): `path` (relative to the CSV's folder), then `label`
  (single-label), one 0/1 column per label (multi-label) or one column per target (regression);
- a folder of class subfolders (`DIR/<class>/*.mp4`, single-label);
- a JSON list of records `{"path": ..., "label": ...}` (single-label) or `{"path": ..., "labels": [...]}`
  (multi-label, regression; or `"labels": {name: value}`), or `{"label_names": [...], "videos": [records]}`; JSON
  Lines (`.jsonl`) hold one record a line. Paths are relative to the file's folder;
- a `datasets` dataset saved with `save_to_disk` (columns `path` and `labels`, as
  `celebv_hq.labels_dataset`/`load_celebvhq` make them); for a `DatasetDict`, `--train-split`/`--eval-split` pick
  the splits.

`--freeze-encoder` trains only the head, on the fly: MAE's linear-probe head (BatchNorm without affine parameters,
then the linear layer; `ProbeHead`), folded into a single linear layer when the model is saved.

Metrics come from `evaluation.metrics` (offline `evaluate` module): `accuracy`, `roc_auc` (the paper's one
AUROC over every video x label pair), `roc_auc_macro` (per label, averaged); `mse`, `mae`, `pearson` for
regression. The best checkpoint by `--metric-for-best-model` is loaded at the end and saved to `--output-dir` with
`convert_marlin.save_marlin_folder`, so `AutoModelForVideoClassification.from_pretrained(output_dir)` loads it.

Several GPUs: `accelerate launch examples/finetune.py ...` or `torchrun --nproc-per-node N examples/finetune.py ...`;
`--per-device-*-batch-size` are per process.
"""

import argparse
import copy
import itertools
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from marlin_transformers import MarlinForVideoClassification, MarlinModel
from marlin_transformers.data.labels import LabelsTable, read_labels_csv
from marlin_transformers.evaluation.metrics import PROBLEM_TYPES, build_compute_metrics
from marlin_transformers.exceptions import DatasetError, MarlinError
from marlin_transformers.video import VIDEO_EXTENSIONS

SAVED_DATASET_FILES = ("dataset_dict.json", "dataset_info.json", "state.json")
DEFAULT_EVAL_SPLITS = ("validation", "val", "test")


# ----------------------------------------------------------------------------------------------------------- labels


def read_labels(source: str | os.PathLike, problem_type: str, split: str | None = None) -> LabelsTable:
    """Videos and labels from a labels CSV, a folder of class subfolders, a JSON/JSON Lines file or a saved dataset.

    Args:
        source: see the module docstring for the layouts.
        problem_type: one of `metrics.PROBLEM_TYPES`.
        split: the split of a saved `DatasetDict` (default: the only one, or validation/val/test).

    Returns:
        `LabelsTable`: absolute paths; labels (num_videos,) int64 class indices, (num_videos, num_labels) 0/1 int64,
        or (num_videos, num_targets) float32; the class, label or target names.
    """
    if problem_type not in PROBLEM_TYPES:
        raise DatasetError(f"unknown problem type {problem_type!r}; use one of {', '.join(PROBLEM_TYPES)}")
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"{source}: no such labels file or folder")
    if path.is_dir():
        if any((path / name).is_file() for name in SAVED_DATASET_FILES):
            return _read_saved_dataset(path, problem_type, split)
        return _read_class_folders(path, problem_type)
    if path.suffix.lower() in (".json", ".jsonl"):
        return _read_json(path, problem_type)
    return read_labels_csv(path, problem_type)


def _read_class_folders(folder: Path, problem_type: str) -> LabelsTable:
    if problem_type != "single_label_classification":
        raise DatasetError(f"{folder}: a folder of class subfolders is single-label; pass a labels CSV instead")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for index, name in enumerate(names):
        videos = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
        paths.extend(str(p.absolute()) for p in videos)
        labels.extend([index] * len(videos))
    if not paths:
        raise DatasetError(f"{folder}: no videos in class subfolders (expected {folder}/<class>/<video>.mp4)")
    return LabelsTable(paths, np.array(labels, dtype=np.int64), names)


def _read_json(path: Path, problem_type: str) -> LabelsTable:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".jsonl":
            raw = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    label_names = None
    if isinstance(raw, dict):
        label_names, raw = raw.get("label_names"), raw.get("videos")
    if not isinstance(raw, list) or not raw or not all(isinstance(r, dict) and "path" in r for r in raw):
        raise DatasetError(f"{path}: expected a list of records with a 'path' (or {{'videos': [records]}})")
    paths = [os.path.normpath(path.parent.absolute() / r["path"]) for r in raw]
    key = "label" if problem_type == "single_label_classification" else "labels"
    if not all(key in r for r in raw):
        raise DatasetError(f"{path}: every record needs a {key!r} for {problem_type}")
    return _table(paths, [r[key] for r in raw], problem_type, label_names, str(path))


def _read_saved_dataset(folder: Path, problem_type: str, split: str | None) -> LabelsTable:
    import datasets

    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            names = list(loaded) if len(loaded) == 1 else [s for s in DEFAULT_EVAL_SPLITS if s in loaded][:1]
            if not names:
                raise DatasetError(f"{folder}: a DatasetDict with splits {list(loaded)}; pick one with --*-split")
            split = names[0]
        if split not in loaded:
            raise DatasetError(f"{folder}: no split {split!r} (has {', '.join(loaded)})")
        loaded = loaded[split]
    path_column = next((c for c in ("path", "video", "input") if c in loaded.column_names), None)
    label_column = next((c for c in ("labels", "label") if c in loaded.column_names), None)
    if path_column is None or label_column is None:
        raise DatasetError(f"{folder}: needs a 'path' and a 'labels' column, has {loaded.column_names}")
    paths = [os.path.normpath(folder.absolute() / p) for p in loaded[path_column]]
    feature = loaded.features[label_column]
    names = getattr(feature, "names", None)
    return _table(paths, loaded[label_column], problem_type, names, str(folder))


def _table(paths: list[str], values: list, problem_type: str, label_names: Sequence[str] | None, source: str):
    """Labels of JSON records or dataset rows -> `LabelsTable`, checked like `read_labels_csv` checks a CSV."""
    if problem_type == "single_label_classification":
        if all(isinstance(v, int | np.integer) for v in values):
            labels = np.array(values, dtype=np.int64)
            if labels.min() < 0:
                raise DatasetError(f"{source}: class indices must be >= 0, found {labels.min()}")
            names = list(label_names) if label_names else [str(i) for i in range(int(labels.max()) + 1)]
            return LabelsTable(paths, labels, names)
        names = sorted({str(v) for v in values})
        index = {name: i for i, name in enumerate(names)}
        return LabelsTable(paths, np.array([index[str(v)] for v in values], dtype=np.int64), names)
    if all(isinstance(v, dict) for v in values):
        label_names = list(values[0])
        values = [[v[name] for name in label_names] for v in values]
    try:
        matrix = np.array([np.atleast_1d(v) for v in values], dtype=np.float64)
    except ValueError:
        raise DatasetError(f"{source}: every video needs the same number of numeric labels") from None
    names = list(label_names) if label_names else [f"LABEL_{i}" for i in range(matrix.shape[1])]
    if len(names) != matrix.shape[1]:
        raise DatasetError(f"{source}: {len(names)} label names for {matrix.shape[1]} labels per video")
    if problem_type == "regression":
        return LabelsTable(paths, matrix.astype(np.float32), names)
    if not np.isin(matrix, (0.0, 1.0)).all():
        raise DatasetError(f"{source}: multi-label labels must be 0 or 1")
    return LabelsTable(paths, matrix.astype(np.int64), names)


def align_eval_labels(train: LabelsTable, evaluated: LabelsTable, problem_type: str, source: str) -> np.ndarray:
    """The eval labels indexed by the training class names (single-label), or checked to name the same labels."""
    if problem_type != "single_label_classification":
        if list(evaluated.label_names) != list(train.label_names):
            raise DatasetError(f"{source}: label names differ from the training data's")
        return evaluated.labels
    index = {name: i for i, name in enumerate(train.label_names)}
    unknown = sorted({evaluated.label_names[i] for i in np.unique(evaluated.labels)} - set(index))
    if unknown:
        raise DatasetError(f"{source}: class {unknown[0]!r} never occurs in the training data")
    return np.array([index[evaluated.label_names[i]] for i in evaluated.labels], dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------- dataset


@dataclass
class ClipOptions:
    """How videos become model inputs.

    Attributes:
        num_frames: frames per window (the model's `config.num_frames`).
        image_size: side of the model's input frames, pixels (`config.image_size`).
        sample_rate: take every `sample_rate`-th decoded frame.
        train_stride: training windows start every `train_stride` sampled frames; one is drawn per video and epoch.
        eval_stride: evaluation windows start every `eval_stride` sampled frames (None: `num_frames`, as `marlin
            extract`).
        eval_clips: "all" (every evaluation window, logits averaged) or "first".
        max_eval_windows: keep at most this many evenly spaced evaluation windows per video (0: all).
        crop_face: track the face with `face_detection.FaceTracker` and crop around it.
        face_margin: crop side as a multiple of the face box side.
    """

    num_frames: int = 16
    image_size: int = 224
    sample_rate: int = 2
    train_stride: int = 4
    eval_stride: int | None = None
    eval_clips: str = "all"
    max_eval_windows: int = 0
    crop_face: bool = False
    face_margin: float = 1.0


class FrameConverter:
    """(frames, H, W, 3) uint8 clips -> (frames, 3, size, size) float32 in [0, 1], through `MarlinVideoProcessor`.

    Until the processor module exists, the same conversion is done here: bilinear resize, divide by 255, no mean/std.
    """

    def __init__(self, image_size: int):
        self.image_size = image_size
        try:
            from marlin_transformers.video_processing_marlin import MarlinVideoProcessor
        except ImportError:
            self.processor = None
        else:
            self.processor = MarlinVideoProcessor(size={"height": image_size, "width": image_size})

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        if self.processor is not None:
            return self.processor([frames], return_tensors="pt")["pixel_values_videos"][0]
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
        if video.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            video = torch.nn.functional.interpolate(video, size=size, mode="bilinear", antialias=True)
        return (video / 255.0).clamp_(0.0, 1.0)


class VideoClipDataset(torch.utils.data.Dataset):
    """Labelled videos, decoded and cropped on the fly.

    Items: `pixel_values_videos` (num_frames, 3, size, size) float32 in [0, 1] in training, (num_windows, num_frames,
    3, size, size) at evaluation; `labels` int64 () single-label, float32 (num_labels,) otherwise.

    Args:
        paths, labels: the videos and their labels (see `read_labels`).
        problem_type: one of `metrics.PROBLEM_TYPES`.
        options: the clip sampling.
        training: one seeded random window per item (True) or the evaluation windows (False).
        seed: with the epoch (`set_epoch`) and the item's index, seeds its window draw.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: np.ndarray,
        problem_type: str,
        options: ClipOptions,
        training: bool,
        seed: int = 0,
    ):
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise DatasetError(
                f"{missing[0]}: video not found ({len(missing)} of {len(paths)} labelled videos missing)"
            )
        self.paths = list(paths)
        dtype = torch.long if problem_type == "single_label_classification" else torch.float32
        self.labels = torch.as_tensor(np.asarray(labels), dtype=dtype)
        if problem_type != "single_label_classification":
            self.labels = self.labels.reshape(len(self.paths), -1)
        self.options = options
        self.training = training
        self.seed = seed
        self.epoch = 0
        self._tracker = None  # made in each worker on first use
        self._converter = None

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def tracker(self):
        if self._tracker is None:
            from marlin_transformers.video.face_tracking import FaceTracker

            self._tracker = FaceTracker(margin=self.options.face_margin, crop_size=self.options.image_size)
        return self._tracker

    @property
    def converter(self) -> FrameConverter:
        if self._converter is None:
            self._converter = FrameConverter(self.options.image_size)
        return self._converter

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path = self.paths[index]
        if self.training:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            pixel_values = self.converter(self.train_clip(path, rng))
        else:
            pixel_values = torch.stack([self.converter(frames) for frames in self.eval_clips(path)])
        return {"pixel_values_videos": pixel_values, "labels": self.labels[index]}

    def train_clip(self, path: str, rng: np.random.Generator) -> np.ndarray:
        """One window drawn uniformly (reservoir sampling while streaming), face-cropped if asked: (T, H, W, 3)."""
        from marlin_transformers.video import iter_windows

        o = self.options
        chosen = None
        windows = iter_windows(path, num_frames=o.num_frames, sample_rate=o.sample_rate, stride=o.train_stride)
        for count, window in enumerate(windows, start=1):
            if rng.integers(count) == 0:
                chosen = window
        if not o.crop_face:
            return chosen.frames
        self.tracker.reset()
        return self.tracker.track(chosen.frames, chosen.frame_indices).crops

    def eval_clips(self, path: str) -> list[np.ndarray]:
        """The evaluation windows of a video, each (T, H, W, 3) uint8, face-cropped if asked (tracked in order)."""
        from marlin_transformers.video import iter_windows

        o = self.options
        stride = o.eval_stride or o.num_frames
        windows = iter_windows(path, num_frames=o.num_frames, sample_rate=o.sample_rate, stride=stride)
        if o.crop_face:
            from marlin_transformers.video.face_tracking import iter_face_windows

            tracked = iter_face_windows(windows, self.tracker, source=path, on_no_face="centre")
            clips = (crops.crops for _, crops in tracked)
        else:
            clips = (window.frames for window in windows)
        if o.eval_clips == "first":
            return list(itertools.islice(clips, 1))
        clips = list(clips)
        if o.max_eval_windows and len(clips) > o.max_eval_windows:
            keep = np.linspace(0, len(clips) - 1, o.max_eval_windows).round().astype(int)
            clips = [clips[i] for i in keep]
        return clips


def collate_clips(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack training items; pad evaluation items to the longest video, with `window_mask` (batch, windows) True
    on real windows."""
    labels = torch.stack([item["labels"] for item in items])
    videos = [item["pixel_values_videos"] for item in items]
    if videos[0].ndim == 4:  # training: (T, 3, H, W) each
        return {"pixel_values_videos": torch.stack(videos), "labels": labels}
    num_windows = max(len(v) for v in videos)
    padded = videos[0].new_zeros((len(videos), num_windows, *videos[0].shape[1:]))  # (B, W, T, 3, H, W)
    window_mask = torch.zeros(len(videos), num_windows, dtype=torch.bool)
    for i, video in enumerate(videos):
        padded[i, : len(video)] = video
        window_mask[i, : len(video)] = True
    return {"pixel_values_videos": padded, "window_mask": window_mask, "labels": labels}


def build_datasets(
    train_source: str | os.PathLike,
    eval_source: str | os.PathLike,
    problem_type: str,
    options: ClipOptions,
    seed: int = 0,
    train_split: str | None = "train",
    eval_split: str | None = None,
) -> tuple[VideoClipDataset, VideoClipDataset, list[str]]:
    """The training and evaluation datasets, and the class/label/target names (from the training data)."""
    train = read_labels(train_source, problem_type, train_split)
    evaluated = read_labels(eval_source, problem_type, eval_split)
    eval_labels = align_eval_labels(train, evaluated, problem_type, str(eval_source))
    return (
        VideoClipDataset(train.paths, train.labels, problem_type, options, training=True, seed=seed),
        VideoClipDataset(evaluated.paths, eval_labels, problem_type, options, training=False, seed=seed),
        list(train.label_names),
    )


# ------------------------------------------------------------------------------------------------- model, trainer


class ProbeHead(torch.nn.Module):
    """The linear-probe head of MAE (He et al. 2022, appendix A.2): BatchNorm without affine parameters, then the
    linear layer. It keeps the model linear in the frozen features, and standardizing them makes the head train in a
    few epochs where a bare linear layer on raw MARLIN features trains slowly (their scales and offsets differ a lot,
    see `examples/linear_probe.py`, which standardizes too). `fold()` absorbs the norm into the linear layer.
    """

    def __init__(self, linear: torch.nn.Linear, eps: float = 1e-6):
        super().__init__()
        # momentum=None: running statistics are the plain average over every training batch seen
        self.norm = torch.nn.BatchNorm1d(linear.in_features, eps=eps, affine=False, momentum=None)
        self.linear = linear

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (batch, hidden) -> (batch, num_labels)
        if self.training and len(features) == 1:  # a last batch of one video has no batch statistics
            norm = self.norm
            normalized = torch.nn.functional.batch_norm(
                features, norm.running_mean, norm.running_var, training=False, eps=norm.eps
            )
            return self.linear(normalized)
        return self.linear(self.norm(features))

    @torch.no_grad()
    def fold(self) -> torch.nn.Linear:
        """The single `nn.Linear` equal to this head in eval mode (running statistics)."""
        scale = (self.norm.running_var + self.norm.eps).rsqrt()  # (hidden,)
        folded = torch.nn.Linear(self.linear.in_features, self.linear.out_features)
        folded.weight.copy_(self.linear.weight * scale)
        folded.bias.copy_(self.linear.bias - folded.weight @ self.norm.running_mean)
        return folded


def export_model(model: MarlinForVideoClassification) -> MarlinForVideoClassification:
    """The model as `AutoModelForVideoClassification` loads it: a probe head folded into one linear layer."""
    if isinstance(model.classifier, ProbeHead):
        model.classifier = model.classifier.fold().to(model.device)
    return model


def build_model(
    model: str | os.PathLike | MarlinModel,
    problem_type: str,
    label_names: Sequence[str],
    freeze_encoder: bool = False,
) -> MarlinForVideoClassification:
    """A `MarlinForVideoClassification` with the encoder of any MARLIN checkpoint and a new linear head.

    Args:
        model: converted folder (also a fine-tuned one: its head is replaced), Hub id, official `.pt`/`.ckpt`, or a
            loaded `MarlinModel`.
        label_names: one output per name (classes, labels or regression targets).
        freeze_encoder: train only the head (the encoder's parameters get `requires_grad=False`), a `ProbeHead`
            (standardization then linear) that `export_model` folds back into the linear layer.
    """
    from marlin_transformers.extraction import load_encoder

    encoder = load_encoder(model)
    config = copy.deepcopy(encoder.config)
    config.id2label = dict(enumerate(label_names))
    config.label2id = {name: i for i, name in enumerate(label_names)}
    config.problem_type = problem_type
    config.architectures = ["MarlinForVideoClassification"]
    classifier = MarlinForVideoClassification(config)
    classifier.marlin.load_state_dict(encoder.state_dict())
    if freeze_encoder:
        classifier.marlin.requires_grad_(False)
        classifier.classifier = ProbeHead(classifier.classifier)
    return classifier


def video_logits(model: torch.nn.Module, videos: torch.Tensor, window_mask: torch.Tensor, chunk: int) -> torch.Tensor:
    """Mean logits over each video's windows.

    Args:
        videos: (batch, windows, frames, 3, H, W); padding windows are skipped.
        window_mask: (batch, windows) True on real windows.
        chunk: windows per forward pass.

    Returns:
        (batch, num_labels) float32.
    """
    clips = videos[window_mask]  # (num_real_windows, frames, 3, H, W)
    owner = window_mask.nonzero()[:, 0]  # (num_real_windows,) video of each window
    logits = torch.cat(
        [model(pixel_values_videos=clips[i : i + chunk]).logits.float() for i in range(0, len(clips), chunk)]
    )
    sums = logits.new_zeros(len(videos), logits.shape[1]).index_add_(0, owner, logits)
    return sums / window_mask.sum(dim=1, keepdim=True).to(sums.dtype)


class VideoClipTrainer(Trainer):
    """`Trainer` whose evaluation batches carry several windows per video (`window_mask`): a video's logits are the
    mean of its windows' logits, and the loss is computed on those."""

    window_chunk = 16

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if "window_mask" not in inputs:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad(), self.compute_loss_context_manager():
            logits = video_logits(model, inputs["pixel_values_videos"], inputs["window_mask"], self.window_chunk)
        loss = None
        if labels is not None:
            unwrapped = self.accelerator.unwrap_model(model)
            loss = unwrapped.loss_function(labels, logits, unwrapped.config).detach()
        if prediction_loss_only:
            return loss, None, None
        return loss, logits, labels


class EpochSeedCallback(TrainerCallback):
    """Tells the training dataset the epoch before its data loader starts, so each epoch draws new windows."""

    def __init__(self, dataset: VideoClipDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(round(state.epoch or 0)))


def push_folder_to_hub(folder: str | os.PathLike, repo_id: str, token: str | None = None) -> str:
    """Upload the final model folder (not the Trainer's checkpoints); returns the repo's URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder),
        repo_id=url.repo_id,
        ignore_patterns=["checkpoint-*", "checkpoint-*/**", "runs/**", "*.partial"],
        commit_message="MARLIN fine-tuned with examples/finetune.py",
    )
    return str(url)


# ------------------------------------------------------------------------------------------------------------- main


def _finite(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument("--model", required=True, help="converted MARLIN folder, Hub id or official .pt/.ckpt file")
    data.add_argument("--train-data", required=True, help="labels CSV, class folders, JSON(L) or saved dataset")
    data.add_argument("--eval-data", required=True, help="as --train-data, for evaluation and model selection")
    data.add_argument("--train-split", default="train", help="split of a saved DatasetDict (default: train)")
    data.add_argument("--eval-split", default=None, help="split of a saved DatasetDict (default: validation/val/test)")
    data.add_argument("--problem-type", choices=PROBLEM_TYPES, default="single_label_classification")
    clips = parser.add_argument_group("clips")
    clips.add_argument("--crop-face", action="store_true", help="track and crop the face (in-the-wild videos)")
    clips.add_argument("--face-margin", type=float, default=1.0, help="crop side / face box side (default 1.0)")
    clips.add_argument("--sample-rate", type=int, default=2, help="take every n-th decoded frame (default 2)")
    clips.add_argument("--train-stride", type=int, default=4, help="training windows start every n sampled frames")
    clips.add_argument("--eval-stride", type=int, default=None, help="evaluation windows (default: num_frames)")
    clips.add_argument("--eval-clips", choices=["all", "first"], default="all", help="windows scored per video")
    clips.add_argument("--max-eval-windows", type=int, default=0, help="at most n evaluation windows a video (0: all)")
    train = parser.add_argument_group("training")
    train.add_argument("--freeze-encoder", action="store_true", help="train only the head (an on-the-fly probe)")
    train.add_argument("--output-dir", required=True)
    train.add_argument("--metric-for-best-model", default=None, help="roc_auc (default), accuracy, mse (regression)")
    train.add_argument("--num-train-epochs", type=float, default=10)
    train.add_argument("--max-steps", type=int, default=-1, help="stop after n optimizer steps (overrides epochs)")
    train.add_argument("--learning-rate", type=float, default=1e-4)
    train.add_argument("--weight-decay", type=float, default=0.05)
    train.add_argument("--warmup-steps", type=float, default=0, help="steps, or a fraction of all steps if < 1")
    train.add_argument("--per-device-train-batch-size", type=int, default=8)
    train.add_argument("--per-device-eval-batch-size", type=int, default=2, help="videos (all their windows)")
    train.add_argument("--gradient-accumulation-steps", type=int, default=1)
    train.add_argument("--dataloader-num-workers", type=int, default=4)
    train.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision (GPUs, recent CPUs)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--logging-steps", type=int, default=10)
    train.add_argument("--save-total-limit", type=int, default=2)
    train.add_argument("--report-to", default="none", help="trackers, e.g. tensorboard or wandb (default: none)")
    train.add_argument("--resume-from-checkpoint", default=None)
    hub = parser.add_argument_group("hub")
    hub.add_argument("--push-to-hub", action="store_true", help="upload the final model folder")
    hub.add_argument("--hub-model-id", default=None, help="repo id (default: the output folder's name)")
    hub.add_argument("--hub-token", default=None)
    args = parser.parse_args(argv)

    metric = args.metric_for_best_model or ("mse" if args.problem_type == "regression" else "roc_auc")
    try:
        from marlin_transformers.extraction import load_encoder

        encoder = load_encoder(args.model)
        options = ClipOptions(
            num_frames=encoder.config.num_frames,
            image_size=encoder.config.image_size,
            sample_rate=args.sample_rate,
            train_stride=args.train_stride,
            eval_stride=args.eval_stride,
            eval_clips=args.eval_clips,
            max_eval_windows=args.max_eval_windows,
            crop_face=args.crop_face,
            face_margin=args.face_margin,
        )
        train_dataset, eval_dataset, label_names = build_datasets(
            args.train_data, args.eval_data, args.problem_type, options, args.seed, args.train_split, args.eval_split
        )
        model = build_model(encoder, args.problem_type, label_names, args.freeze_encoder)
    except MarlinError as error:
        print(f"finetune: error: {error}", file=sys.stderr)
        return 1

    training_args = TrainingArguments(
        output_dir=args.output_dir,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=metric.removeprefix("eval_") not in ("loss", "mse", "mae"),
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        dataloader_num_workers=args.dataloader_num_workers,
        dataloader_pin_memory=torch.accelerator.is_available(),
        bf16=args.bf16,
        # Without an accelerator Trainer must be told it runs on the CPU: it refuses bf16 otherwise (recent CPUs do
        # bf16 well), and under torchrun it would run one independent training per process instead of DDP (gloo).
        use_cpu=not torch.accelerator.is_available(),
        seed=args.seed,
        logging_steps=args.logging_steps,
        save_total_limit=args.save_total_limit,
        report_to=args.report_to,
        remove_unused_columns=False,
        label_names=["labels"],
    )
    trainer = VideoClipTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collate_clips,
        compute_metrics=build_compute_metrics(args.problem_type),
        callbacks=[EpochSeedCallback(train_dataset)],
    )
    try:
        trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
        metrics = trainer.evaluate()  # the best checkpoint, reloaded by load_best_model_at_end
    except MarlinError as error:
        print(f"finetune: error: {error}", file=sys.stderr)
        return 1
    trainer.save_metrics("eval", metrics)
    if trainer.is_world_process_zero():
        from marlin_transformers.convert_marlin import save_marlin_folder

        save_marlin_folder(export_model(trainer.model), args.output_dir)
        print(json.dumps({"eval": _finite(metrics), "best_checkpoint": trainer.state.best_model_checkpoint}))
        if args.push_to_hub:
            repo_id = args.hub_model_id or Path(args.output_dir).absolute().name
            print(f"pushed to {push_folder_to_hub(args.output_dir, repo_id, args.hub_token)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
