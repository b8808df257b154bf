"""examples/finetune.py end to end on a tiny MARLIN and tiny videos (Trainer, metrics, saving, frozen encoder), and the
pieces of `evaluation` it calls (`clip_dataset`, `finetuning`, `probe_head`, `trainer`)."""

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_CLIP
from marlin_transformers import MarlinConfig, MarlinModel
from marlin_transformers.data.labels import read_labels
from marlin_transformers.evaluation import clip_dataset, finetuning, probe_head, trainer
from marlin_transformers.hub_folders import save_marlin_folder
from video_factory import encode_video, indexed_frames, read_frame_index

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "finetune.py"
TINY = {**TINY_CLIP, "num_hidden_layers": 1}
COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}
FAST = ["--sample-rate", "1", "--dataloader-num-workers", "0", "--per-device-train-batch-size", "2"]
FAST += ["--num-train-epochs", "2", "--logging-steps", "1", "--learning-rate", "1e-3"]


@pytest.fixture(scope="module")
def finetune():
    spec = importlib.util.spec_from_file_location("finetune_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_marlin")
    save_marlin_folder(MarlinModel(MarlinConfig(**TINY)), folder)
    return folder


def coloured_video(path: Path, colour: tuple[int, int, int], seed: int, num_frames: int = 10) -> str:
    rng = np.random.default_rng(seed)
    frames = np.clip(np.array(colour) + rng.normal(0, 20, (num_frames, 40, 40, 3)), 0, 255).astype(np.uint8)
    return encode_video(path, frames, fps=10)


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory) -> tuple[Path, Path]:
    """train/<colour>/*.mp4 (2 a class) and eval/<colour>/*.mp4 (1 a class)."""
    root = tmp_path_factory.mktemp("colours")
    for split, count in (("train", 2), ("eval", 1)):
        for c, (name, colour) in enumerate(COLOURS.items()):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                coloured_video(root / split / name / f"{i}.mp4", colour, seed=100 * c + 10 * i + len(split))
    return root / "train", root / "eval"


def test_single_label_end_to_end(finetune, tiny_model, class_folders, tmp_path):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForVideoClassification

    out = tmp_path / "run"
    argv = ["--model", str(tiny_model), "--train-data", str(class_folders[0]), "--eval-data", str(class_folders[1])]
    argv += ["--problem-type", "single_label_classification", "--output-dir", str(out), *FAST]
    assert finetune.main(argv) == 0

    metrics = json.loads((out / "eval_results.json").read_text())
    assert {"eval_accuracy", "eval_roc_auc", "eval_roc_auc_macro", "eval_loss"} <= set(metrics)
    # The weights the run wrote, Trainer's checkpoints included, have the umask's modes (safetensors writes 0600).
    umask = os.umask(0)
    os.umask(umask)
    weights = [out / "model.safetensors", *out.glob("checkpoint-*/model.safetensors")]
    assert len(weights) > 1 and {stat.S_IMODE(w.stat().st_mode) for w in weights} == {0o666 & ~umask}
    best = json.loads(next(out.glob("checkpoint-*/trainer_state.json")).read_text())["best_metric"]
    assert best is not None
    # The card: base model, data and the evaluation's metrics, also as model-index results the Hub reads.
    card = ModelCard.load(out / "README.md")
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["accuracy"] == pytest.approx(metrics["eval_accuracy"]) and "loss" in results
    assert card.data.base_model is None and "(a local checkpoint)" in card.text  # a local path is no Hub id
    assert str(class_folders[0]) in card.text and "labels: blue, green, red" in card.text
    model = AutoModelForVideoClassification.from_pretrained(out)
    assert type(model).__name__ == "MarlinForVideoClassification"
    assert model.config.id2label == {0: "blue", 1: "green", 2: "red"}
    assert model.config.problem_type == "single_label_classification"
    assert json.loads((out / "config.json").read_text())["auto_map"]["AutoModelForVideoClassification"]
    with torch.no_grad():
        logits = model(torch.rand(2, 4, 3, 32, 32)).logits
    assert logits.shape == (2, 3)


def test_lora_finetune_saves_the_adapter_or_merged_weights(finetune, tiny_model, class_folders, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForVideoClassification

    argv = ["--model", str(tiny_model), "--train-data", str(class_folders[0]), "--eval-data", str(class_folders[1])]
    argv += ["--problem-type", "single_label_classification", *FAST, "--lora", "--lora-rank", "2"]
    argv += ["--lora-alpha", "4", "--lora-target-modules", "qkv", "fc2", "--save-strategy", "no"]
    argv += ["--eval-strategy", "no", "--load-best-model-at-end", "false"]
    adapter_dir, merged_dir = tmp_path / "adapter", tmp_path / "merged"
    assert finetune.main([*argv, "--output-dir", str(adapter_dir)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # Rank-2 adapters on qkv (32 -> 96) and fc2 (64 -> 32) of the one layer, plus the 3-class head (32 x 3 + 3).
    assert summary["trainable_parameters"] == 2 * (32 + 96) + 2 * (64 + 32) + 32 * 3 + 3
    assert summary["trainable_parameters"] < summary["parameters"] / 50
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json"} <= {
        p.name for p in adapter_dir.iterdir()
    }
    assert not (adapter_dir / "model.safetensors").exists()

    config = AutoConfig.from_pretrained(adapter_dir)
    adapted = PeftModel.from_pretrained(
        AutoModelForVideoClassification.from_pretrained(tiny_model, config=config), adapter_dir
    )
    adapted.eval()
    base = AutoModelForVideoClassification.from_pretrained(tiny_model, config=config).eval()
    video = torch.rand(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted_logits = adapted(pixel_values_videos=video).logits
        adapted_features = adapted.get_base_model().marlin(video).pooler_output
        base_features = base.marlin(video).pooler_output
    assert adapted.get_base_model().config.id2label == {0: "blue", 1: "green", 2: "red"}
    assert (adapted_features - base_features).abs().max() > 1e-4  # the trained adapters changed the encoder

    assert finetune.main([*argv, "--output-dir", str(merged_dir), "--merge-lora"]) == 0
    merged = AutoModelForVideoClassification.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        merged_logits = merged(video).logits
    # Same seed, same data: the merged run trained the same adapters; merging reorders fp32 sums only (measured
    # 4.8e-7 here; test_adapters.py measured <= 1.5e-6 for the merge over seeds and thread counts).
    torch.testing.assert_close(merged_logits, adapted_logits, atol=5e-6, rtol=0)

    assert finetune.main([*argv, "--output-dir", str(tmp_path / "both"), "--freeze-encoder"]) == 1
    assert "--lora and --freeze-encoder" in capsys.readouterr().err


def test_multi_label_frozen_encoder(finetune, tiny_model, class_folders, tmp_path):
    from transformers import AutoModelForVideoClassification

    # two labels: "reddish" and "not blue", in a CSV with paths relative to it
    rows = ["path,reddish,not_blue"]
    for split in ("train", "eval"):
        lines = []
        for video in sorted(class_folders[0 if split == "train" else 1].rglob("*.mp4")):
            colour = video.parent.name
            lines.append(f"{video},{int(colour == 'red')},{int(colour != 'blue')}")
        (tmp_path / f"{split}.csv").write_text("\n".join(rows + lines) + "\n")
    out = tmp_path / "probe"
    argv = ["--model", str(tiny_model), "--train-data", str(tmp_path / "train.csv")]
    argv += ["--eval-data", str(tmp_path / "eval.csv"), "--problem-type", "multi_label_classification"]
    argv += ["--freeze-encoder", "--output-dir", str(out), "--metric-for-best-model", "roc_auc", *FAST]
    assert finetune.main(argv) == 0

    metrics = json.loads((out / "eval_results.json").read_text())
    assert {"eval_accuracy", "eval_roc_auc", "eval_roc_auc_macro", "eval_subset_accuracy"} <= set(metrics)
    trained = AutoModelForVideoClassification.from_pretrained(out)
    assert trained.config.id2label == {0: "reddish", 1: "not_blue"}
    original = MarlinModel.from_pretrained(tiny_model).state_dict()
    for name, tensor in trained.marlin.state_dict().items():
        torch.testing.assert_close(tensor, original[name], rtol=0, atol=0, msg=name)
    initial_head = finetuning.build_classifier(tiny_model, "multi_label_classification", ["a", "b"]).classifier
    assert not torch.equal(trained.classifier.weight, initial_head.weight)  # the head did train


def test_train_windows_are_seeded_and_vary_by_epoch(tmp_path):
    video = encode_video(tmp_path / "indexed.mp4", indexed_frames(40, 48, 64))
    options = clip_dataset.ClipOptions(num_frames=4, image_size=32, sample_rate=2, train_stride=1)
    dataset = clip_dataset.VideoClipDataset(
        [video], np.array([0]), "single_label_classification", options, True, seed=3
    )

    def first_frame(epoch: int) -> int:
        dataset.set_epoch(epoch)
        rng = np.random.default_rng([dataset.seed, dataset.epoch, 0])
        return read_frame_index(dataset.train_clip(video, rng)[0])

    starts = [first_frame(epoch) for epoch in range(8)]
    assert starts == [first_frame(epoch) for epoch in range(8)]  # reproducible
    assert len(set(starts)) > 2 and all(start % 2 == 0 for start in starts)  # varies, on the sampled-frame grid
    dataset.set_epoch(5)
    item = dataset[0]
    assert item["pixel_values_videos"].shape == (4, 3, 32, 32)
    assert 0.0 <= item["pixel_values_videos"].min() and item["pixel_values_videos"].max() <= 1.0


def test_eval_windows_and_logit_average(tiny_model, tmp_path):
    long_video = encode_video(tmp_path / "long.mp4", indexed_frames(20, 48, 64))
    short_video = encode_video(tmp_path / "short.mp4", indexed_frames(8, 48, 64))
    options = clip_dataset.ClipOptions(num_frames=4, image_size=32, sample_rate=1)
    labels = np.array([[1.0], [0.0]])
    dataset = clip_dataset.VideoClipDataset([long_video, short_video], labels, "regression", options, training=False)
    items = [dataset[0], dataset[1]]
    assert items[0]["pixel_values_videos"].shape == (5, 4, 3, 32, 32)  # frames 0-3, 4-7, ..., 16-19
    assert items[1]["pixel_values_videos"].shape == (2, 4, 3, 32, 32)
    batch = clip_dataset.collate_clips(items)
    assert batch["window_mask"].tolist() == [[True] * 5, [True, True, False, False, False]]

    model = finetuning.build_classifier(tiny_model, "regression", ["score"]).eval()
    with torch.no_grad():
        averaged = trainer.video_logits(model, batch["pixel_values_videos"], batch["window_mask"], chunk=3)
        expected = [model(pixel_values_videos=item["pixel_values_videos"]).logits.mean(0) for item in items]
    torch.testing.assert_close(averaged, torch.stack(expected), rtol=1e-5, atol=1e-6)

    options.eval_clips, options.max_eval_windows = "first", 0
    assert dataset[0]["pixel_values_videos"].shape == (1, 4, 3, 32, 32)
    options.eval_clips, options.max_eval_windows = "all", 3
    assert dataset[0]["pixel_values_videos"].shape == (3, 4, 3, 32, 32)


def test_json_and_saved_dataset_sources(tmp_path):
    import datasets

    from marlin_transformers.exceptions import DatasetError

    (tmp_path / "a.mp4").write_bytes(b"")
    records = {"label_names": ["valence", "arousal"], "videos": [{"path": "a.mp4", "labels": [0.5, -1.0]}]}
    (tmp_path / "data.json").write_text(json.dumps(records))
    table = read_labels(tmp_path / "data.json", "regression")
    assert table.paths == [str(tmp_path / "a.mp4")] and table.label_names == ["valence", "arousal"]
    np.testing.assert_allclose(table.labels, [[0.5, -1.0]])

    (tmp_path / "data.jsonl").write_text('{"path": "a.mp4", "label": "smile"}\n{"path": "b.mp4", "label": "calm"}\n')
    table = read_labels(tmp_path / "data.jsonl", "single_label_classification")
    assert table.label_names == ["calm", "smile"] and table.labels.tolist() == [1, 0]

    features = datasets.Features({"path": datasets.Value("string"), "labels": datasets.ClassLabel(names=["x", "y"])})
    split = datasets.Dataset.from_dict({"path": [str(tmp_path / "a.mp4")], "labels": [1]}, features=features)
    datasets.DatasetDict({"train": split, "val": split}).save_to_disk(tmp_path / "saved")
    table = read_labels(tmp_path / "saved", "single_label_classification")  # picks "val"
    assert table.label_names == ["x", "y"] and table.labels.tolist() == [1]
    with pytest.raises(DatasetError, match="no split 'nope'"):
        read_labels(tmp_path / "saved", "single_label_classification", split="nope")
    with pytest.raises(DatasetError, match="single-label"):
        read_labels(tmp_path, "multi_label_classification")


def test_unknown_eval_class_is_a_one_line_error(finetune, tiny_model, class_folders, tmp_path, capsys):
    (tmp_path / "eval.csv").write_text(f"path,label\n{next(class_folders[1].rglob('*.mp4'))},purple\n")
    argv = [
        "--model",
        str(tiny_model),
        "--train-data",
        str(class_folders[0]),
        "--eval-data",
        str(tmp_path / "eval.csv"),
    ]
    assert finetune.main([*argv, "--output-dir", str(tmp_path / "out")]) == 1
    assert "class 'purple' never occurs in the training data" in capsys.readouterr().err


def test_probe_head_folds_into_one_linear_layer():
    torch.manual_seed(0)
    head = probe_head.ProbeHead(torch.nn.Linear(8, 3))
    head.train()
    for _ in range(3):
        head(torch.randn(16, 8) * 5 + 2)  # running statistics
    head.eval()
    features = torch.randn(4, 8) * 5 + 2
    with torch.no_grad():
        torch.testing.assert_close(head.fold()(features), head(features), rtol=1e-5, atol=1e-5)
    head.train()
    head(features[:1]).sum().backward()  # a last batch of one video trains on the running statistics
    assert head.linear.weight.grad is not None


def test_dataloader_workers_default_fits_the_machine():
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert trainer.FinetuningArguments(output_dir="unused").dataloader_num_workers == min(4, cores)


def write_corrupt_videos(folder: Path, good_video: Path) -> list[Path]:
    """Random bytes named .mp4, and the first half of a real mp4 (its index, written last, is gone)."""
    noise, truncated = folder / "noise.mp4", folder / "truncated.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    data = good_video.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return [noise, truncated]


def test_corrupt_videos_are_skipped_with_a_line_each(finetune, tiny_model, class_folders, tmp_path, capsys):
    videos = sorted(class_folders[0].rglob("*.mp4"))
    corrupt = write_corrupt_videos(tmp_path, videos[0])
    rows = [f"{v},{v.parent.name}" for v in [corrupt[0], *videos, corrupt[1]]]
    (tmp_path / "train.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    argv = ["--model", str(tiny_model), "--train-data", str(tmp_path / "train.csv")]
    argv += ["--eval-data", str(class_folders[1]), "--problem-type", "single_label_classification", *FAST]
    argv += ["--num-train-epochs", "1", "--save-strategy", "no", "--load-best-model-at-end", "false"]
    assert finetune.main([*argv, "--output-dir", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err.splitlines()
    skipped = [line for line in err if line.startswith("skipping ")]
    assert [line.split(":")[0] for line in skipped] == [f"skipping {c}" for c in corrupt]
    assert f"skipped 2 of 8 videos of {tmp_path / 'train.csv'}: unreadable; see the lines above" in err
    assert "Traceback" not in "\n".join(err)

    (tmp_path / "bad.csv").write_text(f"path,label\n{corrupt[0]},red\n{corrupt[1]},blue\n")
    argv[3] = argv[5] = str(tmp_path / "bad.csv")
    assert finetune.main([*argv, "--output-dir", str(tmp_path / "bad")]) == 1
    message = capsys.readouterr().err.splitlines()[-1]
    assert message.startswith(f"finetune: error: none of the 2 videos of {tmp_path / 'bad.csv'} is readable")


@pytest.mark.parametrize(
    "flags",
    [
        ["--num-train-epochs", "0"],
        ["--per-device-train-batch-size", "0"],
        ["--per-device-train-batch-size", "-2"],
        ["--per-device-eval-batch-size", "0"],
        ["--learning-rate", "0"],
        ["--gradient-accumulation-steps", "0"],
        ["--sample-rate", "0"],
        ["--max-eval-windows", "-1"],
    ],
)
def test_settings_that_train_nothing_are_refused_up_front(finetune, tmp_path, capsys, flags):
    # The model is not even looked at: the check comes first (and this one does not exist).
    argv = ["--model", str(tmp_path / "no_model"), "--train-data", "t.csv", "--eval-data", "e.csv"]
    with pytest.raises(SystemExit) as exit_:
        finetune.main([*argv, "--output-dir", str(tmp_path / "out"), *flags])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert ": error: " in last and flags[0][2:].replace("-", "_") in last and f"got {flags[1]}" in last
    assert not (tmp_path / "out").exists()


def test_nan_regression_label_stops_before_training(finetune, tiny_model, class_folders, tmp_path, capsys):
    videos = sorted(class_folders[0].rglob("*.mp4"))
    (tmp_path / "train.csv").write_text(f"path,score\n{videos[0]},0.5\n{videos[1]},nan\n")
    argv = ["--model", str(tiny_model), "--train-data", str(tmp_path / "train.csv"), "--eval-data"]
    argv += [str(tmp_path / "train.csv"), "--problem-type", "regression", "--output-dir", str(tmp_path / "out"), *FAST]
    assert finetune.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()  # above the error: transformers' loading progress
    assert err[-1] == (
        f"finetune: error: {tmp_path / 'train.csv'}:3: column 'score' holds 'nan', not a finite number; "
        "give a real value or remove the row"
    )
    assert not (tmp_path / "out").exists()


def test_user_errors_past_loading_are_one_line(finetune, tiny_model, class_folders, tmp_path, capsys, monkeypatch):
    from marlin_transformers.exceptions import CheckpointError

    def refuse(*args, **kwargs):
        raise CheckpointError("somewhere: cannot be written; free some space")

    monkeypatch.setattr(finetune, "build_trainer", refuse)
    argv = ["--model", str(tiny_model), "--train-data", str(class_folders[0]), "--eval-data", str(class_folders[1])]
    assert finetune.main([*argv, "--output-dir", str(tmp_path / "out"), *FAST]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "finetune: error: somewhere: cannot be written; free some space"
    )


class _Line(torch.nn.Module):
    """y = w x, trained towards y = x: its loss falls every epoch while the test's metric stays 1.0."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, labels=None):
        prediction = self.w * x
        return {"loss": torch.nn.functional.mse_loss(prediction, labels), "logits": prediction}


def test_tied_metric_keeps_the_checkpoint_with_the_lower_loss(tmp_path):
    from transformers import Trainer, TrainingArguments

    data = [{"x": torch.tensor([1.0]), "labels": torch.tensor([1.0])}] * 4
    args = TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=3, per_device_train_batch_size=4, learning_rate=0.1,
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="score",
        greater_is_better=True, report_to=[], use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    run = Trainer(
        model=_Line(), args=args, train_dataset=data, eval_dataset=data,
        compute_metrics=lambda prediction: {"score": 1.0}, callbacks=[trainer.TieOnLossCallback()],
    )  # fmt: skip
    run.train()
    losses = [e["eval_loss"] for e in run.state.log_history if "eval_loss" in e]
    assert losses[2] < losses[1] < losses[0]  # three evaluations, all scoring 1.0
    assert run.state.best_model_checkpoint.endswith("checkpoint-3") and run.state.best_global_step == 3


# Runs an example with `datasets` unimportable, as on a machine without the 'train' extra.
WITHOUT_DATASETS = (
    "import sys, runpy; sys.modules['datasets'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


@pytest.mark.parametrize("example", ["finetune", "linear_probe"])
def test_an_example_without_its_extra_names_it_in_one_line(example):
    script = Path(__file__).resolve().parents[1] / "examples" / f"{example}.py"
    command = [sys.executable, "-c", WITHOUT_DATASETS, str(script), "--help"]
    process = subprocess.run(command, capture_output=True, text=True)
    assert process.returncode == 1 and process.stdout == ""
    said = "datasets is not installed: install the 'train' extra (pip install -e \".[train]\" in a clone)"
    assert process.stderr == f"{example}: {said}\n"
