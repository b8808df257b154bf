"""Evidence that fine-tuning and the linear probe learn: which video, and which person, a real face clip shows.

Small real tasks built from the sample videos in `../shared/videos` (never copied into the project):

1. Faces. The in-the-wild videos (`video*.mp4`) are face-cropped with the project's pipeline
   (`video.iter_windows` -> `video.face_tracking.FaceTracker`/`iter_face_windows`, 224 x 224); the `cropped*.mp4` ones
   are already 224 x 224 face crops and are used as they are.
2. Split in time. Of each video's N decoded frames, the first 60% give the training clips and the last part, after a
   gap of `--gap` frames, the test clips: no frame of a test clip is near a training frame. Each split gets the same
   number of clips per video (`--train-clips`, `--test-clips`, `--clip-frames` frames each, evenly spaced starts;
   clips of a split may overlap each other; a range too short for that many distinct starts gives fewer), written
   as small mp4 files (`video.write_video`, crf 12) with a labels CSV per split. Validation: the last `--val-clips`
   training clips of each video; the training clips that share a frame with them (or come within `--val-gap`
   frames) are dropped, so training, validation and test follow each other in time without sharing a frame.
3. Tasks (`--tasks`): `video`, which of the six videos (6 classes); `person`, which of the three recordings (3
   classes). `cropped0N.mp4` is the authors' face crop of the same recording as `video0N.mp4`, so in the `video`
   task three classes are near-duplicates of the other three (told apart by crop and encoding more than by the
   face); the `person` task gives each pair one class and is the identity task proper.
4. Model. A MARLIN ViT-B (`--variant`) with random weights (`torch.manual_seed(--seed)`), saved with
   `save_marlin_folder`: weights anyone can produce offline.
5. Fine-tuning: `examples/finetune.py` (`--freeze-encoder` by default, 16-frame windows at sample rate 1, linear
   learning-rate decay to 0) with the validation split as Trainer's eval set (selection on validation loss). The
   test split is scored afterwards (`evaluation.trainer`), for the last epoch's checkpoint and the
   validation-selected one; the test split never chooses anything.
6. Linear probe: `marlin extract` on every clip, then `evaluation.linear_probe.run_linear_probe` (what
   `examples/linear_probe.py` runs: temporal mean of the window features, one linear layer; epoch picked on the same
   validation split).

    python tests/benchmarks/downstream_evidence.py --work-dir /tmp/marlin_evidence

`--recipe marlin` runs both with the paper code's recipe (`evaluation.recipes`) instead of ours: its optimizer,
plateau, batch 32, one random clip per video, selection on the per-batch-mean validation AUC (`--epochs` caps its 2000
epochs); the test split is then scored both ways, one seeded random window per clip (the paper code's) and every
window (ours).

Prints each task's held-out metrics and writes them to WORK/evidence_<task>.json. Everything lands in `--work-dir`;
a re-run keeps what is already there (clips, model, fine-tuning runs, features). On 2 CPU cores in bfloat16: about
4 minutes to build the clips and extract the features, then about 7 minutes of fine-tuning per task.
"""

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from marlin_transformers import MarlinConfig, MarlinModel
from marlin_transformers.constants import MARLIN_CROP_SIZE, NUM_FRAMES
from marlin_transformers.evaluation.clip_dataset import ClipOptions, build_datasets
from marlin_transformers.evaluation.finetuning import build_classifier
from marlin_transformers.evaluation.linear_probe import LinearProbeConfig, run_linear_probe
from marlin_transformers.evaluation.recipes import PAPER_SEED, RECIPES
from marlin_transformers.evaluation.trainer import FinetuningArguments, build_trainer
from marlin_transformers.hub_folders import save_marlin_folder
from marlin_transformers.video import frame_rate, iter_windows, read_video, write_video

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VIDEOS = ROOT.parent / "shared" / "videos"
CLIP_SIZE = MARLIN_CROP_SIZE
TRAIN_FRACTION = 0.6  # of each video's frames, the first part, for training and validation clips


@dataclass
class Settings:
    """What one evidence run does, as the command line sets it.

    Attributes:
        variant: MARLIN ViT size, "small" or "base".
        seed: seeds the random weights, the fine-tuning and the probe.
        clip_frames: frames per clip; val_clips: last training clips of a video that validate; val_gap: frames
            between the kept training clips and the validation ones.
        epochs: fine-tuning epochs; learning_rate: the fine-tuning's (None: 3e-3 frozen, 5e-5 full).
        full_finetune: train the encoder too, not only the head.
        lora: train LoRA adapters on the encoder (`examples/finetune.py --lora`, rank 8 on qkv, proj, fc1, fc2)
            and the head, not the encoder's weights.
        recipe: "ours" or "marlin" (`evaluation.recipes`); with "marlin", `epochs` caps its epochs and
            `learning_rate` is the recipe's unless given.
        dtype: "bfloat16" or "float32", for the fine-tuning and the extraction.
        workers: data-loader workers of the fine-tuning.
    """

    variant: str = "base"
    seed: int = 0
    clip_frames: int = 24
    val_clips: int = 3
    val_gap: int = 0
    epochs: int = 10
    learning_rate: float | None = None
    full_finetune: bool = False
    lora: bool = False
    recipe: str = "ours"
    dtype: str = "bfloat16"
    workers: int = 2


def face_frames(path: Path, crop_face: bool) -> tuple[np.ndarray, float]:
    """Every decoded frame of a video as 224 x 224 faces: (num_frames, 224, 224, 3) uint8, and its frame rate (frames
    per second)."""
    fps = float(frame_rate(path))
    if not crop_face:
        frames, _ = read_video(path)
        if frames.shape[1:3] != (CLIP_SIZE, CLIP_SIZE):
            raise SystemExit(f"{path}: expected {CLIP_SIZE} x {CLIP_SIZE} face crops, got {frames.shape[1:3]}")
        return frames, fps
    from marlin_transformers.video.face_tracking import FaceTracker, iter_face_windows

    # Consecutive windows cover every frame (the tail window is aligned to the end and may overlap).
    windows = iter_windows(path, num_frames=NUM_FRAMES, sample_rate=1, stride=NUM_FRAMES)
    by_index = {}
    for window, crops in iter_face_windows(windows, FaceTracker(crop_size=CLIP_SIZE), source=path):
        by_index.update(zip(window.frame_indices, crops.crops))
    return np.stack([by_index[i] for i in range(len(by_index))]), fps


def clip_starts(num_frames: int, clip_frames: int, train_fraction: float, gap: int, counts: tuple[int, int]):
    """First frame of each training and test clip: evenly spaced in [0, cut) and [cut + gap, num_frames).

    Fewer than `counts` clips come out of a range with fewer distinct start frames than that.
    """
    cut = int(round(train_fraction * num_frames))
    ranges = ((0, cut), (cut + gap, num_frames))
    starts = []
    for (first, end), count in zip(ranges, counts):
        last = end - clip_frames
        if last < first:
            raise SystemExit(f"a {num_frames}-frame video leaves fewer than {clip_frames} frames in [{first}, {end})")
        starts.append(np.unique(np.linspace(first, last, count).round().astype(int)).tolist())
    return starts[0], starts[1]


def build_task(
    videos_dir: Path,
    work_dir: Path,
    clip_frames: int,
    train_fraction: float,
    gap: int,
    train_clips: int,
    test_clips: int,
) -> tuple[Path, Path, dict]:
    """Write WORK/clips/{train,test}/<video>_<start>.mp4 and WORK/{train,test}.csv; returns the CSVs and a summary."""
    videos = sorted(videos_dir.glob("*.mp4"))
    if len(videos) != 6:
        raise SystemExit(f"{videos_dir}: expected the six sample videos, found {len(videos)}")
    rows = {"train": [], "test": []}
    summary = {}
    for video in videos:
        crop_face = not video.stem.startswith("cropped")
        started = time.time()
        frames, fps = face_frames(video, crop_face)
        train, test = clip_starts(len(frames), clip_frames, train_fraction, gap, (train_clips, test_clips))
        for split, starts in (("train", train), ("test", test)):
            folder = work_dir / "clips" / split
            folder.mkdir(parents=True, exist_ok=True)
            for start in starts:
                clip = folder / f"{video.stem}_{start:04d}.mp4"
                write_video(clip, frames[start : start + clip_frames], fps, crf=12, preset="fast")
                rows[split].append((clip.relative_to(work_dir).as_posix(), video.stem))
        summary[video.name] = {
            "frames": len(frames),
            "fps": round(fps, 3),
            "face_cropped": crop_face,
            "train_frames": [train[0], train[-1] + clip_frames - 1],
            "test_frames": [test[0], test[-1] + clip_frames - 1],
        }
        print(
            f"{video.name}: {len(frames)} frames, train {summary[video.name]['train_frames']}, test "
            f"{summary[video.name]['test_frames']}{' (face-cropped)' if crop_face else ''} "
            f"[{time.time() - started:.0f} s]",
            flush=True,
        )
    csvs = []
    for split, split_rows in rows.items():
        path = work_dir / f"{split}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows(split_rows)
        csvs.append(path)
    return csvs[0], csvs[1], summary


def build_model_folder(folder: Path, variant: str = "small", seed: int = 0) -> Path:
    """A randomly initialized MARLIN encoder saved as a Transformers folder (reproducible from `seed`)."""
    if not (folder / "config.json").is_file():
        torch.manual_seed(seed)
        save_marlin_folder(MarlinModel(MarlinConfig.from_variant(variant)), folder)
    return folder


TASKS = {
    "video": "which of the six sample videos a clip comes from (6 classes)",
    "person": "which of the three recordings/people a clip shows (3 classes: cropped0N and video0N share class 0N)",
}


def task_label(video: str, task: str) -> str:
    """A clip's class: the video's name (`video` task) or its recording, `cropped0N`/`video0N` -> `person0N`."""
    return video if task == "video" else "person" + video[-2:]


def read_rows(path: Path) -> list[tuple[str, str, int]]:
    """(clip path, video name, start frame) of each row of a split CSV (clip files are named <video>_<start>.mp4)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        video, start = Path(row["path"]).stem.rsplit("_", 1)
        out.append((row["path"], video, int(start)))
    return out


def write_rows(path: Path, rows: list[tuple[str, str, int]], task: str) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows((clip, task_label(video, task)) for clip, video, _ in rows)
    return path


def carve_validation(train_csv: Path, clip_frames: int, val_clips: int, val_gap: int):
    """Split each video's training clips in time: its last `val_clips` clips validate; the training clips kept end
    more than `val_gap` frames before the first validation frame (the ones in between are dropped)."""
    rows = read_rows(train_csv)
    fit, val = [], []
    for video in sorted({r[1] for r in rows}):
        clips = sorted((r for r in rows if r[1] == video), key=lambda r: r[2])
        held = clips[-val_clips:]
        first = held[0][2]
        fit += [r for r in clips[:-val_clips] if r[2] + clip_frames + val_gap <= first]
        val += held
    return fit, val


def checkpoint_test_metrics(
    checkpoint: Path, model: Path, fit_csv: Path, test_csv: Path, bf16: bool, mode: str, eval_clips: str = "all"
) -> dict:
    """A fine-tuning checkpoint's metrics on the test split (every window of a clip, as Trainer's evaluation; or,
    with `eval_clips="random"`, one window a clip drawn with the paper code's test seed)."""
    from safetensors.torch import load_file

    problem = "single_label_classification"
    options = ClipOptions(num_frames=NUM_FRAMES, image_size=CLIP_SIZE, sample_rate=1, eval_clips=eval_clips)
    if eval_clips == "random":
        options.train_stride = RECIPES["marlin"].finetuning["train_stride"]
    seed = PAPER_SEED if eval_clips == "random" else 0
    _, test_dataset, label_names = build_datasets(str(fit_csv), str(test_csv), problem, options, seed)
    if mode == "lora":  # the checkpoint holds the adapters and the head
        from peft import PeftModel

        classifier = PeftModel.from_pretrained(build_classifier(str(model), problem, label_names), checkpoint)
    else:  # "frozen" (a probe head) or "full"
        classifier = build_classifier(str(model), problem, label_names, freeze_encoder=mode == "frozen")
        classifier.load_state_dict(load_file(str(checkpoint / "model.safetensors")))
    with tempfile.TemporaryDirectory() as scratch:
        training_args = FinetuningArguments(
            output_dir=scratch,
            problem_type=problem,
            per_device_eval_batch_size=4,
            dataloader_num_workers=2,
            bf16=bf16,
        )
        trainer = build_trainer(classifier, training_args, problem, eval_dataset=test_dataset)
        metrics = trainer.evaluate(metric_key_prefix="test")
    return {k: metrics[k] for k in ("test_accuracy", "test_roc_auc", "test_roc_auc_macro")}


def parameter_counts(model: Path, fit_csv: Path, mode: str) -> tuple[int, int]:
    """(trained, all) parameters of the fine-tuning `examples/finetune.py` runs in `mode`, as it counts them."""
    from marlin_transformers.evaluation.finetuning import add_lora

    with open(fit_csv, newline="", encoding="utf-8") as f:
        label_names = sorted({row["label"] for row in csv.DictReader(f)})
    classifier = build_classifier(str(model), "single_label_classification", label_names, mode == "frozen")
    classifier = add_lora(classifier) if mode == "lora" else classifier
    parameters = list(classifier.parameters())
    return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)


def run(command: list[str]) -> None:
    print("$ " + " ".join(command), flush=True)
    started = time.time()
    subprocess.run(command, check=True, cwd=ROOT)
    print(f"[{time.time() - started:.0f} s]", flush=True)


def run_task(task: str, settings: Settings, work: Path, model: Path, train_csv: Path, test_csv: Path) -> dict:
    """Fine-tuning (epoch picked on validation) and linear probe for one labelling of the clips: their metrics."""
    fit_rows, val_rows = carve_validation(train_csv, settings.clip_frames, settings.val_clips, settings.val_gap)
    fit_csv = write_rows(work / f"{task}_fit.csv", fit_rows, task)
    val_csv = write_rows(work / f"{task}_val.csv", val_rows, task)
    task_test_csv = write_rows(work / f"{task}_test.csv", read_rows(test_csv), task)

    # Fine-tuning with Trainer, clips decoded on the fly; Trainer's evaluation set is the validation split.
    mode = "lora" if settings.lora else "full" if settings.full_finetune else "frozen"
    paper = settings.recipe == "marlin"
    recipe = RECIPES[settings.recipe]
    learning_rate = settings.learning_rate or {"lora": 5e-4, "full": 5e-5, "frozen": 3e-3}[mode]
    if paper:
        learning_rate = settings.learning_rate or recipe.finetuning["learning_rate"]
    suffix = "_marlin" if paper else ""
    finetune_dir = work / f"finetune_{task}_{mode}{suffix}_seed{settings.seed}"
    command = [sys.executable, "examples/finetune.py", "--model", str(model)]
    command += ["--train-data", str(fit_csv), "--eval-data", str(val_csv)]
    command += ["--problem-type", "single_label_classification", "--output-dir", str(finetune_dir)]
    command += ["--sample-rate", "1", "--num-train-epochs", str(settings.epochs)]
    command += ["--learning-rate", str(learning_rate), "--seed", str(settings.seed)]
    command += ["--dataloader-num-workers", str(settings.workers), "--logging-steps", "4"]
    if paper:  # the recipe's optimizer, plateau, batches, clips and selection; only the epochs capped
        command += ["--recipe", "marlin"]
    else:
        command += ["--metric-for-best-model", "loss", "--weight-decay", "0"]
        command += ["--per-device-train-batch-size", "8", "--per-device-eval-batch-size", "4"]
        command += ["--eval-clips", "first"]  # validation: one window a clip (the test below scores every window)
    command += {"lora": ["--lora"], "full": [], "frozen": ["--freeze-encoder"]}[mode]
    command += ["--bf16"] if settings.dtype == "bfloat16" else []
    if not (finetune_dir / "eval_results.json").is_file():
        run(command)
    checkpoints = sorted(finetune_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    val_evals = [entry for entry in state["log_history"] if "eval_loss" in entry]
    best_checkpoint = Path(state["best_model_checkpoint"])
    best_checkpoint = finetune_dir / best_checkpoint.name
    bf16 = settings.dtype == "bfloat16"
    started = time.time()
    last_test = checkpoint_test_metrics(checkpoints[-1], model, fit_csv, task_test_csv, bf16, mode)
    if best_checkpoint == checkpoints[-1]:
        best_test = last_test
    else:
        best_test = checkpoint_test_metrics(best_checkpoint, model, fit_csv, task_test_csv, bf16, mode)
    random_clip_test = None
    if paper:  # the paper code's test: one random window a clip, seeded as its evaluate.py seeds it
        random_clip_test = checkpoint_test_metrics(
            best_checkpoint, model, fit_csv, task_test_csv, bf16, mode, "random"
        )
    trainable, total = parameter_counts(model, fit_csv, mode)
    print(f"test evaluation [{time.time() - started:.0f} s]", flush=True)
    best_step = state["best_global_step"]

    # Linear probe on `marlin extract` features of the same clips (same windows as the fine-tuning's test).
    features = work / "features"
    command = [sys.executable, "-m", "marlin_transformers.cli", "extract", str(work / "clips"), "--model", str(model)]
    command += ["--out", str(features), "--sample-rate", "1", "--dtype", settings.dtype, "--quiet"]
    if not (features / "manifest.jsonl").is_file():
        run(command)
    probe_json = work / f"linear_probe_{task}{suffix}_seed{settings.seed}.json"
    probe = run_linear_probe(
        features,
        fit_csv,
        task_test_csv,
        "single_label_classification",
        LinearProbeConfig(**recipe.linear_probe)
        if paper
        else LinearProbeConfig(seed=settings.seed, metric_for_best_model="accuracy"),
        val_labels=val_csv,
    )
    probe_json.write_text(json.dumps(probe, indent=1) + "\n")

    selected_on = "validation per-batch-mean AUC (the paper code's)" if paper else "validation loss"
    return {
        "recipe": settings.recipe,
        "task": TASKS[task] + ", train/validation/test disjoint in time",
        "model": f"MARLIN ViT-{settings.variant[0].upper()}, random weights, seed {settings.seed}",
        "num_train": len(fit_rows),
        "num_validation": len(val_rows),
        "num_test": probe["num_eval"],
        "finetune": {
            "mode": {"lora": "LoRA (--lora)", "full": "full", "frozen": "frozen encoder (--freeze-encoder)"}[mode],
            "trainable_parameters": trainable,
            "parameters": total,
            "epochs": settings.epochs,
            "learning_rate": learning_rate,
            "epochs_trained": len(val_evals),
            "validation": [
                {k: e[k] for k in ("epoch", "eval_loss", "eval_accuracy", "eval_roc_auc_batch_mean") if k in e}
                for e in val_evals
            ],
            "last_epoch_test": last_test,
            "validation_selected": {
                "epoch": next(e["epoch"] for e in val_evals if e["step"] == best_step),
                "selected_on": selected_on,
                **best_test,
            },
            "validation_selected_one_random_test_clip": random_clip_test,
        },
        "linear_probe": probe["eval"],
        "linear_probe_epochs": {"best": probe["best_epoch"], "trained": probe["epochs_trained"]},
    }


def main(argv: list[str] | None = None) -> int:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS, help="the six sample videos")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/marlin_evidence"))
    parser.add_argument("--variant", default=defaults.variant, choices=["small", "base"], help="MARLIN ViT size")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seeds the random weights and the training")
    parser.add_argument("--clip-frames", type=int, default=defaults.clip_frames)
    parser.add_argument("--gap", type=int, default=12, help="frames between the training and the test range")
    parser.add_argument("--train-clips", type=int, default=16, help="per video")
    parser.add_argument("--test-clips", type=int, default=8, help="per video")
    parser.add_argument(
        "--val-clips", type=int, default=defaults.val_clips, help="last training clips of a video that validate"
    )
    parser.add_argument(
        "--val-gap", type=int, default=defaults.val_gap, help="frames between the kept training and validation clips"
    )
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=["video", "person"])
    parser.add_argument("--full-finetune", action="store_true", help="train the encoder too (slow on a CPU)")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters on the encoder, and the head")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--learning-rate", type=float, default=None, help="default 3e-3 frozen, 5e-5 full, 5e-4 LoRA")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=defaults.recipe, help="evaluation.recipes preset")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default=defaults.dtype)
    parser.add_argument("--workers", type=int, default=defaults.workers, help="data-loader workers of the fine-tuning")
    args = parser.parse_args(argv)
    settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})

    work = args.work_dir.absolute()
    work.mkdir(parents=True, exist_ok=True)
    model = build_model_folder(work / f"marlin_vit_{args.variant}_random_seed{args.seed}", args.variant, args.seed)
    train_csv, test_csv = work / "train.csv", work / "test.csv"
    if not (train_csv.is_file() and test_csv.is_file()):
        train_csv, test_csv, summary = build_task(
            args.videos, work, args.clip_frames, TRAIN_FRACTION, args.gap, args.train_clips, args.test_clips
        )
        (work / "task.json").write_text(json.dumps(summary, indent=1) + "\n")

    for task in args.tasks:
        result = run_task(task, settings, work, model, train_csv, test_csv)
        (work / f"evidence_{task}{'_marlin' * (args.recipe == 'marlin')}.json").write_text(
            json.dumps(result, indent=1) + "\n"
        )
        print(json.dumps(result, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
