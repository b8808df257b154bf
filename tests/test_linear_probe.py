"""examples/linear_probe.py end to end on fake `marlin extract` output (random features, class-dependent means), and
`evaluation.linear_probe`'s training."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from marlin_transformers.data.labels import match_videos
from marlin_transformers.evaluation.linear_probe import (
    CACHE_NAME,
    LinearProbeConfig,
    evaluate_probe,
    train_linear_probe,
)
from marlin_transformers.evaluation.selection import is_better
from marlin_transformers.exceptions import DatasetError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "linear_probe.py"
HIDDEN = 24


@pytest.fixture(scope="module")
def linear_probe():
    spec = importlib.util.spec_from_file_location("linear_probe", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_extract_output(out: Path, means: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Fake `marlin extract --out OUT`: per video (windows, HIDDEN) features around means[i], plus the manifest.

    Returns the `input` of each video, as relative paths the way a user would have typed them.
    """
    out.mkdir(parents=True, exist_ok=True)
    inputs, lines = [], []
    for i, mean in enumerate(means):
        name = f"videos/person{i:03d}.mp4"
        num_windows = int(rng.integers(1, 5))
        windows = mean + rng.normal(scale=1.0, size=(num_windows, HIDDEN))
        np.save(out / f"person{i:03d}.npy", windows.astype(np.float32))
        window_meta = [
            {
                "frame_indices": list(range(32 * w, 32 * w + 32, 2)),
                "start_time": 1.28 * w,
                "end_time": 1.28 * w + 1.2,
                "face_detected_fraction": 1.0,
            }
            for w in range(num_windows)
        ]
        if i == 0:  # a first run failed on this input, a re-run fixed it: the last line wins
            lines.append({"input": name, "status": "error", "error": "truncated", "output": None, "windows": []})
        lines.append(
            {
                "input": name,
                "status": "ok",
                "error": None,
                "output": str(out / f"person{i:03d}.npy"),
                "windows": window_meta,
            }
        )
        inputs.append(name)
    lines.append(
        {"input": "videos/broken.mp4", "status": "error", "error": "not a video", "output": None, "windows": []}
    )
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return inputs


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return path


def test_single_label_probe_learns_and_caches(linear_probe, tmp_path):
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 3, 150)
    centres = rng.normal(scale=1.2, size=(3, HIDDEN))
    inputs = write_extract_output(tmp_path / "features", centres[classes], rng)
    names = np.array(["neutral", "smile", "surprise"])
    # train lists bare stems, eval lists the paths as extracted: both must match the manifest
    train_csv = write_csv(
        tmp_path / "train.csv", ["input", "label"], [[Path(p).stem, names[c]] for p, c in zip(inputs[:100], classes)]
    )
    eval_csv = write_csv(
        tmp_path / "eval.csv", ["path", "label"], [[p, names[c]] for p, c in zip(inputs[100:], classes[100:])]
    )
    output = tmp_path / "metrics.json"
    argv = ["--features", str(tmp_path / "features"), "--train-labels", str(train_csv), "--eval-labels",
            str(eval_csv), "--problem-type", "single_label_classification", "--epochs", "30", "--batch-size", "32",
            "--out", str(output)]  # fmt: skip
    with pytest.warns(UserWarning, match="file name only") as said:
        assert linear_probe.main(argv) == 0
    # one line a labels file: the manifest's relative paths are not those of the CSVs' folder, so names matched
    by_name = [str(w.message).split(" (e.g.")[0] for w in said if "file name only" in str(w.message)]
    assert by_name == [f"{n} of {n} labelled videos matched by file name only, not by path" for n in (100, 50)]
    report = json.loads(output.read_text())
    assert report["num_train"] == 100 and report["num_eval"] == 50 and report["hidden_size"] == HIDDEN
    assert report["label_names"] == names.tolist()
    assert report["eval"]["accuracy"] >= 0.9 and report["eval"]["roc_auc"] >= 0.95

    # the cache holds the temporal means; with the npy files gone, a second run still works and gives the same
    cache = np.load(tmp_path / "features" / CACHE_NAME)
    first = np.load(tmp_path / "features" / "person001.npy").mean(axis=0)
    np.testing.assert_allclose(cache["features"][cache["inputs"].tolist().index(inputs[1])], first, rtol=1e-5)
    for npy in (tmp_path / "features").glob("*.npy"):
        npy.unlink()
    assert linear_probe.main(argv) == 0
    assert json.loads(output.read_text())["eval"] == report["eval"]
    # a changed manifest invalidates the cache (and here the features are gone: a one-line error, exit 1)
    with open(tmp_path / "features" / "manifest.jsonl", "a") as f:
        f.write("\n")
    assert linear_probe.main(argv) == 1


def test_multi_label_probe_learns(linear_probe, tmp_path, capsys):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (160, 5))
    directions = rng.normal(scale=1.5, size=(5, HIDDEN))
    inputs = write_extract_output(tmp_path / "features", labels @ directions, rng)
    header = ["path", "blurry", "male", "young", "smiling", "talking"]
    train_csv = write_csv(tmp_path / "train.csv", header, [[p, *y] for p, y in zip(inputs[:120], labels[:120])])
    eval_csv = write_csv(tmp_path / "eval.csv", header, [[p, *y] for p, y in zip(inputs[120:], labels[120:])])
    output = tmp_path / "metrics.json"
    code = linear_probe.main(
        [
            "--features",
            str(tmp_path / "features"),
            "--train-labels",
            str(train_csv),
            "--eval-labels",
            str(eval_csv),
            "--val-labels",
            str(train_csv),
            "--eval-every",
            "50",
            "--problem-type",
            "multi_label_classification",
            "--epochs",
            "200",
            "--batch-size",
            "0",
            "--learning-rate",
            "1e-2",
            "--output",  # the old spelling of --out: still accepted, with one line saying so
            str(output),
        ]  # fmt: skip
    )
    assert code == 0
    assert "marlin: --output is deprecated; use --out\n" in capsys.readouterr().err
    report = json.loads(output.read_text())
    assert report["best_epoch"] in (50, 100, 150, 200) and report["validation"]["roc_auc"] >= 0.95
    metrics = report["eval"]
    assert metrics["accuracy"] >= 0.9 and metrics["roc_auc"] >= 0.95 and metrics["roc_auc_macro"] >= 0.95


def test_training_is_reproducible_and_separates_classes():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 200)
    features = rng.normal(size=(200, 8)) + 3.0 * labels[:, None]
    probes = [
        train_linear_probe(
            features, labels, "single_label_classification", 2, LinearProbeConfig(epochs=5, batch_size=16)
        )[0]
        for _ in range(2)
    ]
    assert all(
        np.array_equal(a.detach().numpy(), b.detach().numpy())
        for a, b in zip(probes[0].parameters(), probes[1].parameters())
    )
    metrics = evaluate_probe(probes[0], features, labels, "single_label_classification")
    assert metrics["accuracy"] > 0.95


def test_missing_features_are_an_error_unless_skipped(linear_probe, tmp_path, capsys):
    rng = np.random.default_rng(3)
    inputs = write_extract_output(tmp_path / "features", rng.normal(size=(6, HIDDEN)), rng)
    rows = [[p, i % 2] for i, p in enumerate(inputs)] + [["videos/broken.mp4", 0]]
    labels = write_csv(tmp_path / "labels.csv", ["path", "label"], rows)
    argv = ["--features", str(tmp_path / "features"), "--train-labels", str(labels), "--eval-labels", str(labels),
            "--problem-type", "single_label_classification", "--epochs", "1"]  # fmt: skip
    assert linear_probe.main(argv) == 1
    message = capsys.readouterr().err.strip()
    assert message.startswith("linear_probe: error: ") and "broken.mp4" in message and "\n" not in message
    assert "(1 labelled video lacks them)" in message  # one video: singular
    with pytest.raises(DatasetError, match=r"\(2 labelled videos lack them\)"):
        match_videos(inputs, [*inputs, "videos/broken.mp4", "videos/gone.mp4"])
    assert linear_probe.main([*argv, "--skip-missing"]) == 0
    report = json.loads((tmp_path / "features" / "linear_probe_metrics.json").read_text())
    assert report["skipped_without_features"] == {"train": 1, "eval": 1}
    # the recipe is described from the values in force: our probe's lr is constant
    assert "constant lr" in report["recipe"]["description"] and "linear decay" not in report["recipe"]["description"]


def test_validation_keeps_the_best_epoch():
    # 30 training videos, 31 noisy features: the probe overfits after a few epochs
    rng = np.random.default_rng(4)
    targets = rng.normal(size=(60, 1))
    features = np.concatenate([targets, rng.normal(size=(60, 30))], axis=1) + 0.5 * rng.normal(size=(60, 31))
    train, val = slice(0, 30), slice(30, 60)
    settings = dict(epochs=40, batch_size=0, learning_rate=0.05, weight_decay=0.0)
    probe, selection = train_linear_probe(
        features[train],
        targets[train],
        "regression",
        1,
        LinearProbeConfig(metric_for_best_model="mse", eval_every=5, **settings),
        validation=(features[val], targets[val]),
    )
    assert selection["best_epoch"] < 40
    # the returned probe is the selected one, better on validation than the last epoch's
    assert evaluate_probe(probe, features[val], targets[val], "regression") == pytest.approx(selection["validation"])
    last, _ = train_linear_probe(features[train], targets[train], "regression", 1, LinearProbeConfig(**settings))
    last_mse = evaluate_probe(last, features[val], targets[val], "regression")["mse"]
    assert selection["validation"]["mse"] < last_mse
    with pytest.raises(DatasetError, match="roc_auc"):
        train_linear_probe(
            features[train],
            targets[train],
            "regression",
            1,
            LinearProbeConfig(epochs=1),
            validation=(features[val], targets[val]),
        )


@pytest.mark.parametrize(
    "flags",
    [["--epochs", "0"], ["--batch-size", "-1"], ["--learning-rate", "0"], ["--learning-rate", "-0.001"],
     ["--weight-decay", "-1"], ["--eval-every", "0"]],
)  # fmt: skip
def test_settings_that_train_nothing_are_refused_up_front(linear_probe, tmp_path, capsys, flags):
    argv = ["--features", str(tmp_path / "none"), "--train-labels", "t.csv", "--eval-labels", "e.csv", *flags]
    with pytest.raises(SystemExit) as exit_:
        linear_probe.main(argv)
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert ": error: " in last and f"{flags[0][2:].replace('-', '_')} must be" in last and f"got {flags[1]}" in last


def test_nan_label_is_one_line_naming_file_line_and_column(linear_probe, tmp_path, capsys):
    rng = np.random.default_rng(5)
    inputs = write_extract_output(tmp_path / "features", rng.normal(size=(4, HIDDEN)), rng)
    labels = write_csv(
        tmp_path / "labels.csv", ["path", "score"], [[p, v] for p, v in zip(inputs, [0.1, 2, "inf", 1])]
    )
    argv = ["--features", str(tmp_path / "features"), "--train-labels", str(labels), "--eval-labels", str(labels),
            "--problem-type", "regression", "--epochs", "1"]  # fmt: skip
    assert linear_probe.main(argv) == 1
    assert capsys.readouterr().err == (
        f"linear_probe: error: {labels}:4: column 'score' holds 'inf', not a finite number; "
        "give a real value or remove the row\n"
    )
    assert not (tmp_path / "features" / "linear_probe_metrics.json").exists()


def test_a_tied_metric_goes_to_the_lower_validation_loss():
    # Two clusters far apart: accuracy is 1.0 from the first evaluation on while the loss keeps falling.
    rng = np.random.default_rng(5)
    labels = np.arange(40) % 2
    features = (labels[:, None] * 2.0 - 1.0) * 5.0 + 0.1 * rng.normal(size=(40, 4))
    config = LinearProbeConfig(metric_for_best_model="accuracy", eval_every=5, epochs=20, batch_size=0)
    _, selection = train_linear_probe(
        features[:20], labels[:20], "single_label_classification", 2, config, (features[20:], labels[20:])
    )
    assert selection["validation"]["accuracy"] == 1.0 and selection["best_epoch"] == 20
    assert is_better(1.0, 0.1, 1.0, 0.2, greater=True) and not is_better(1.0, 0.2, 1.0, 0.1, greater=True)
    assert not is_better(float("nan"), 0.0, 0.5, 1.0, greater=True) and is_better(0.1, 9.0, 0.2, 0.0, greater=False)
