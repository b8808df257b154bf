"""`--task`: the task table (`evaluation.tasks`), FF++'s probability averaging over windows, and a one-epoch
fine-tune per task (and a linear probe) on a tiny MARLIN over a prepared folder in the preparers' format, which the
test writes itself: OUT/clips/<id>.mp4 and OUT/<task>/{train,val,test}.csv."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ONE_EPOCH
from marlin_transformers.data.labels import write_labels_csv
from marlin_transformers.evaluation import trainer
from marlin_transformers.evaluation.recipes import RECIPES
from marlin_transformers.evaluation.tasks import TASKS, get_task, labels_tables, prepared_labels
from marlin_transformers.exceptions import DatasetError
from test_finetune import coloured_video, finetune, tiny_model  # noqa: F401  (fixtures)
from test_linear_probe import linear_probe  # noqa: F401  (fixture)

RAVDESS = TASKS["ravdess"].label_names
EMOTIONS = TASKS["mosei-emotions"].label_names
# Twelve clips: 0-7 train, 8-11 are both the validation and the test split (a smoke test, not a protocol).
TRAIN, HELD_OUT = list(range(8)), list(range(8, 12))


def _labels(task: str, clips: list[int]):
    """Each task's labels of `clips`, in the form `write_labels_csv` writes for its problem type."""
    if task == "ffpp":
        return ["fake" if clip % 2 else "real" for clip in clips]
    if task == "ravdess":
        return [RAVDESS[clip % 8] for clip in clips]
    if task == "mosei-sentiment":
        return [[round(-3.0 + 6.0 * clip / 11, 2)] for clip in clips]
    # every emotion present in some clips and absent in others, in both splits
    return [[(clip // (1 + j % 2) + j) % 2 for j in range(len(EMOTIONS))] for clip in clips]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A prepared folder in the preparers' format: OUT/clips/<id>.mp4 and each task's three tables."""
    out = tmp_path_factory.mktemp("prepared")
    (out / "clips").mkdir()
    clips = [
        coloured_video(out / "clips" / f"clip{c:02d}.mp4", (40 + 15 * c, 200 - 12 * c, 90), seed=c) for c in range(12)
    ]
    for name, task in TASKS.items():
        for split, members in (("train", TRAIN), ("val", HELD_OUT), ("test", HELD_OUT)):
            names = (
                task.label_names if task.problem_type != "single_label_classification" else sorted(task.label_names)
            )
            write_labels_csv(
                out / name / f"{split}.csv",
                [clips[c] for c in members],
                _labels(name, members),
                names,
                task.problem_type,
            )
    return out


def test_probability_averaging_over_windows_is_not_logit_averaging():
    # Three windows of one video, logits (ln 9, 0), (0, 0), (0, 0): softmax (0.9, 0.1), (0.5, 0.5), (0.5, 0.5).
    # Mean probability of class 0: (0.9 + 0.5 + 0.5) / 3 = 0.6333; the mean logits (ln 9 / 3, 0) give instead
    # 9^(1/3) / (9^(1/3) + 1) = 2.0801 / 3.0801 = 0.6753.
    window_logits = torch.tensor([[math.log(9.0), 0.0], [0.0, 0.0], [0.0, 0.0]])

    class Windows(torch.nn.Module):
        def forward(self, pixel_values_videos):  # each clip holds the index of its window
            return type("Output", (), {"logits": window_logits[pixel_values_videos[:, 0, 0, 0, 0].long()]})

    videos = torch.arange(3.0).reshape(1, 3, 1, 1, 1, 1).expand(1, 3, 1, 1, 1, 1).clone()  # (1, 3 windows, ...)
    mask = torch.ones(1, 3, dtype=torch.bool)
    by_probability = trainer.video_logits(Windows(), videos, mask, chunk=2, aggregation="probabilities")
    by_logits = trainer.video_logits(Windows(), videos, mask, chunk=2)
    assert by_probability.softmax(-1)[0, 0].item() == pytest.approx(1.9 / 3)
    assert by_logits.softmax(-1)[0, 0].item() == pytest.approx(9 ** (1 / 3) / (9 ** (1 / 3) + 1))
    multi = trainer.video_logits(Windows(), videos, mask, 2, "probabilities", "multi_label_classification")
    # sigmoid: (0.9, 0.5), (0.5, 0.5), (0.5, 0.5) -> mean 0.6333 and 0.5
    assert multi.sigmoid()[0].tolist() == pytest.approx([1.9 / 3, 0.5])
    with pytest.raises(ValueError, match="classification"):
        trainer.video_logits(Windows(), videos, mask, 2, "probabilities", "regression")
    with pytest.raises(ValueError, match="window_aggregation"):
        trainer.FinetuningArguments(output_dir="x", problem_type="regression", window_aggregation="probabilities")


def test_task_table_and_prepared_tables(prepared, tmp_path):
    assert set(TASKS) == {"ffpp", "ravdess", "mosei-sentiment", "mosei-emotions"}
    assert get_task("ffpp").finetuning_defaults() == {
        "problem_type": "single_label_classification",
        "metric_for_best_model": "video_auc",
        "window_aggregation": "probabilities",
    }
    with pytest.raises(ValueError, match="unknown task"):
        get_task("lrs2")
    train, val, test = labels_tables(prepared, "ravdess")
    assert (train, val, test) == tuple(str(prepared / "ravdess" / f"{s}.csv") for s in ("train", "val", "test"))
    mine = str(tmp_path / "mine.csv")
    assert labels_tables(prepared, "ravdess", train=mine)[0] == mine  # a table given wins
    assert labels_tables(None, None, "a.csv", "b.csv") == ("a.csv", "b.csv", None)
    with pytest.raises(DatasetError, match="give the task"):
        labels_tables(prepared, None)
    with pytest.raises(DatasetError, match="no such labels table"):
        prepared_labels(tmp_path, "ffpp", "train")
    with pytest.raises(DatasetError, match="no val labels"):
        labels_tables(None, None, "a.csv")
    with pytest.raises(DatasetError, match="the ffpp task needs two or more of fake, real"):
        get_task("ffpp").check_label_names(["original", "manipulated"], "x.csv")
    with pytest.raises(DatasetError, match="x.csv: labels real; the ffpp task needs two or more of"):
        get_task("ffpp").check_label_names(["real"], "x.csv")
    get_task("ravdess").check_label_names(["angry", "calm", "happy"], "songs.csv")  # RAVDESS songs: six emotions
    with pytest.raises(DatasetError, match="the mosei-emotions task needs the columns happy, sad"):
        get_task("mosei-emotions").check_label_names(["happy", "sad"], "x.csv")
    # the paper recipe's selection is an AUC: a regression task keeps its own metric
    assert "metric_for_best_model" not in RECIPES["marlin"].finetuning_for("regression")
    assert RECIPES["marlin"].finetuning_for("multi_label_classification") == RECIPES["marlin"].finetuning


def test_every_table_a_preparer_writes_is_a_task():
    """`--task` takes every table `marlin prepare-ffpp|prepare-ravdess|prepare-mosei` writes, as written there."""
    from marlin_transformers.data import ffpp, mosei, ravdess

    written = [ffpp.TASK, ravdess.ravdess_task(), *mosei.mosei_tasks()]
    assert sorted(TASKS) == sorted(table.name for table in written)
    for table in written:
        task = TASKS[table.name]
        assert (task.table, task.problem_type, task.label_names) == (table, table.problem_type, table.label_names)


def _finite_in(metrics: dict, key: str, low: float = 0.0, high: float = 1.0) -> float:
    value = metrics[key]
    assert value is not None and math.isfinite(value) and low <= value <= high, (key, value)
    return value


# The keys each task's evaluation must report (Trainer prefixes them with eval_ / test_).
TASK_KEYS = {
    "ffpp": ["video_auc", "video_accuracy", "accuracy", "roc_auc"],
    "ravdess": ["accuracy", "unweighted_accuracy", "weighted_f1", "unweighted_f1"]
    + [f"recall_{e}" for e in ("neutral", "calm", "happy", "sad")]
    + [f"f1_{e}" for e in ("neutral", "calm", "happy", "sad")],
    "mosei-sentiment": ["acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc7"],
    "mosei-emotions": ["weighted_accuracy", "f1"] + [f"weighted_accuracy_{e}" for e in EMOTIONS],
}


@pytest.mark.parametrize("task", list(TASKS))
def test_one_epoch_finetune_per_task(finetune, tiny_model, prepared, tmp_path, task, capsys):  # noqa: F811
    out = tmp_path / task
    argv = ["--model", str(tiny_model), "--task", task, "--data", str(prepared), "--output-dir", str(out)]
    if task == "ravdess":  # a flag given wins over the task's selection metric
        argv += ["--metric-for-best-model", "unweighted_accuracy"]
    assert finetune.main([*argv, *ONE_EPOCH]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["task"] == task and set(summary["test"]) >= {f"test_{k}" for k in TASK_KEYS[task]}
    for prefix in ("eval", "test"):
        metrics = json.loads((out / f"{prefix}_results.json").read_text())
        for key in TASK_KEYS[task]:
            _finite_in(metrics, f"{prefix}_{key}")
        if task == "mosei-sentiment":
            _finite_in(metrics, f"{prefix}_mae", 0.0, 6.0)
            _finite_in(metrics, f"{prefix}_pearson", -1.0, 1.0)
    state = json.loads(next(out.glob("checkpoint-*/trainer_state.json")).read_text())
    evaluation = next(e for e in state["log_history"] if "eval_loss" in e)
    selected = {"ffpp": "video_auc", "ravdess": "unweighted_accuracy"}.get(task, get_task(task).metric_for_best_model)
    assert state["best_metric"] == pytest.approx(evaluation[f"eval_{selected}"])
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == get_task(task).problem_type
    arguments = torch.load(next(out.glob("checkpoint-*/training_args.bin")), weights_only=False)
    assert arguments.window_aggregation == ("probabilities" if task == "ffpp" else "logits")


def test_missing_tables_are_one_line_errors(finetune, linear_probe, prepared, tmp_path, capsys):  # noqa: F811
    argv = ["--model", "unused", "--output-dir", str(tmp_path / "run")]
    assert finetune.main(argv) == 1
    assert "error: no train or val labels" in capsys.readouterr().err
    assert finetune.main([*argv, "--data", str(prepared)]) == 1
    assert "give the task (--task) whose tables" in capsys.readouterr().err
    assert finetune.main([*argv, "--data", str(tmp_path), "--task", "ffpp"]) == 1
    assert f"--data {tmp_path / 'ffpp' / 'train.csv'}: no such labels table" in capsys.readouterr().err
    assert linear_probe.main(["--features", str(tmp_path), "--train-labels", "a.csv"]) == 1
    assert "no test labels" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_paper_recipe_on_a_regression_task_selects_on_the_tasks_metric(finetune, tiny_model, prepared, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    argv = ["--model", str(tiny_model), "--task", "mosei-sentiment", "--data", str(prepared), "--recipe", "marlin"]
    assert finetune.main([*argv, "--output-dir", str(out), *ONE_EPOCH]) == 0
    record = json.loads((out / "recipe.json").read_text())
    assert record["recipe"] == "marlin" and "metric_for_best_model" not in record["values"]
    arguments = torch.load(next(out.glob("checkpoint-*/training_args.bin")), weights_only=False)
    assert arguments.metric_for_best_model == "mae" and arguments.greater_is_better is False
    assert arguments.adam_beta1 == 0.5  # the rest of the recipe holds


def test_linear_probe_with_a_task(linear_probe, prepared, tmp_path):  # noqa: F811
    """`--task ffpp --data OUT` on fake `marlin extract` output of the prepared clips (fake clips' features offset)."""
    features = tmp_path / "features"
    features.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for clip in sorted((prepared / "clips").glob("*.mp4")):
        index = int(clip.stem.removeprefix("clip"))
        windows = rng.normal(size=(3, 16)) + 1.5 * (index % 2)  # (windows, hidden); odd clips are fake
        np.save(features / f"{clip.stem}.npy", windows.astype(np.float32))
        lines.append({"input": str(clip), "status": "ok", "output": f"{clip.stem}.npy", "windows": []})
    (features / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    output = tmp_path / "probe.json"
    argv = ["--features", str(features), "--task", "ffpp", "--data", str(prepared), "--epochs", "20"]
    assert linear_probe.main([*argv, "--eval-every", "5", "--out", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["task"] == "ffpp" and report["problem_type"] == "single_label_classification"
    assert report["label_names"] == ["fake", "real"] and report["num_eval"] == 4
    assert report["hyperparameters"]["metric_for_best_model"] == "video_auc"
    for key in TASK_KEYS["ffpp"]:
        _finite_in(report["eval"], key)
        _finite_in(report["validation"], key)
    assert report["eval"]["video_auc"] == pytest.approx(1.0)  # an offset of 1.5 sigma in 16 dimensions separates
