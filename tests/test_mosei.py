"""CMU-MOSEI: the labels .csd (an HDF5 file in the CMU Multimodal SDK's layout, written here with h5py), the standard
folds, and the preparation on a fake tree in the release layout of faces the test renders, with real MTCNN."""

import json
from pathlib import Path

import av
import h5py
import numpy as np
import pytest

from conftest import finetuned_test_metrics, interrupt_crops_on
from marlin_transformers.cli import main
from marlin_transformers.data.labels import read_labels_csv
from marlin_transformers.data.mosei import (
    EMOTIONS,
    find_labels_file,
    load_mosei,
    prepare_mosei,
    read_folds_file,
    read_mosei_labels,
    split_mosei,
    standard_folds,
)
from marlin_transformers.data.task_preparation import SPLIT_ORDER, read_videos_csv
from marlin_transformers.exceptions import DatasetError
from test_finetune import finetune, tiny_model  # noqa: F401  (fixtures)
from video_factory import encode_video, moving_face_frames

# Real video ids of the SDK's standard folds: two train, one valid, one test.
TRAIN_VIDEOS, VALID_VIDEO, TEST_VIDEO = ("hh04W3xXa5s", "81406"), "188343", "7l3BNtSE0xc"


def write_csd(path: Path, labels: dict[str, tuple[np.ndarray, np.ndarray]], group: str = "All Labels") -> Path:
    """A computational sequence as the SDK writes one: `<group>/data/<video>/{features, intervals}` and a
    `<group>/metadata` group of string datasets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        root = f.create_group(group)
        data = root.create_group("data")
        for video, (features, intervals) in labels.items():
            entry = data.create_group(video)
            entry.create_dataset("features", data=np.asarray(features, dtype=np.float32))
            entry.create_dataset("intervals", data=np.asarray(intervals, dtype=np.float32))
        metadata = root.create_group("metadata")
        metadata.create_dataset("root name", data=group)
        metadata.create_dataset("dimension names", data=json.dumps(["sentiment", *EMOTIONS]))
        metadata.create_dataset("computational sequence version", data="1.0")
    return path


def video_labels(num_segments: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, 7), intervals (N, 2)): sentiments in [-3, 3] in thirds, intensities 0 or in (0, 3]."""
    rng = np.random.default_rng(seed)
    sentiment = rng.integers(-9, 10, num_segments) / 3
    emotions = rng.integers(0, 4, (num_segments, 6)) * rng.choice([0.0, 1 / 3, 1.0], (num_segments, 6))
    starts = np.arange(num_segments) * 1.5 + 0.2
    return np.column_stack([sentiment, emotions]), np.column_stack([starts, starts + 1.0])


def test_read_labels_csd(tmp_path):
    features, intervals = video_labels(3, seed=0)
    features[1] = [-1.6666666, 0.0, 1.3333334, 0.0, 0.0, 0.6666667, 0.0]
    path = write_csd(tmp_path / "CMU_MOSEI_Labels.csd", {"81406": (features, intervals), "abc": video_labels(1, 1)})
    segments = read_mosei_labels(path)
    assert list(segments) == ["81406_0", "81406_1", "81406_2", "abc_0"]
    segment = segments["81406_1"]
    assert (segment.video, segment.index) == ("81406", 1)
    assert segment.start == pytest.approx(intervals[1, 0]) and segment.end == pytest.approx(intervals[1, 1])
    assert segment.sentiment == pytest.approx(-5 / 3, abs=1e-6)
    assert segment.emotions == pytest.approx((0, 4 / 3, 0, 0, 2 / 3, 0), abs=1e-6)
    assert segment.labels("mosei-sentiment") == pytest.approx([-5 / 3], abs=1e-6)
    assert segment.labels("mosei-emotions") == [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]  # present = intensity > 0
    assert find_labels_file(tmp_path) == path


def test_read_labels_errors(tmp_path):
    (tmp_path / "junk.csd").write_bytes(b"not hdf5")
    with pytest.raises(DatasetError, match="not a readable .csd"):
        read_mosei_labels(tmp_path / "junk.csd")
    with pytest.raises(DatasetError, match="no such labels file"):
        read_mosei_labels(tmp_path / "missing.csd")
    features, intervals = video_labels(2, 0)
    with pytest.raises(DatasetError, match=r"shape \(2, 6\), expected \(N, 7\)"):
        read_mosei_labels(write_csd(tmp_path / "a.csd", {"v": (features[:, :6], intervals)}))
    with pytest.raises(DatasetError, match="2 label rows but intervals of shape"):
        read_mosei_labels(write_csd(tmp_path / "b.csd", {"v": (features, intervals[:1])}))
    features[0, 0] = np.nan
    with pytest.raises(DatasetError, match="NaN"):
        read_mosei_labels(write_csd(tmp_path / "c.csd", {"v": (features, intervals)}))
    with pytest.raises(DatasetError, match="no CMU_MOSEI_Labels.csd"):
        find_labels_file(tmp_path / "nowhere")


def test_standard_folds_are_the_sdks_and_disjoint():
    folds = standard_folds()
    assert [len(folds[s]) for s in ("train", "val", "test")] == [2250, 300, 678]
    assert (
        set(TRAIN_VIDEOS) <= set(folds["train"][:4])
        and folds["val"][0] == VALID_VIDEO
        and folds["test"][0] == TEST_VIDEO
    )
    everything = [v for s in folds.values() for v in s]
    assert len(set(everything)) == len(everything) == 3228


def test_folds_files_json_and_the_sdks_python_read_as_data(tmp_path):
    (tmp_path / "folds.json").write_text(json.dumps({"train": ["a", "b"], "valid": ["c"], "test": ["d"]}))
    assert read_folds_file(tmp_path / "folds.json") == {"train": ("a", "b"), "val": ("c",), "test": ("d",)}
    sdk = tmp_path / "cmu_mosei_std_folds.py"
    sdk.write_text(
        "standard_train_fold=['a', 'b']\n\nstandard_test_fold=['d']\n\nstandard_valid_fold=['c']\n"
        "import os; os.remove('nothing')\n"  # never run
    )
    assert read_folds_file(sdk) == {"train": ("a", "b"), "val": ("c",), "test": ("d",)}
    (tmp_path / "leak.json").write_text(json.dumps({"train": ["a"], "val": ["a"], "test": []}))
    with pytest.raises(DatasetError, match="'a' is in both train and val"):
        read_folds_file(tmp_path / "leak.json")
    (tmp_path / "short.json").write_text(json.dumps({"train": ["a"]}))
    with pytest.raises(DatasetError, match="expected lists"):
        read_folds_file(tmp_path / "short.json")


def test_split_by_video(tmp_path):
    labels = {v: video_labels(2, i) for i, v in enumerate([*TRAIN_VIDEOS, VALID_VIDEO, TEST_VIDEO, "not_in_folds"])}
    segments = read_mosei_labels(write_csd(tmp_path / "l.csd", labels))
    split, unassigned = split_mosei(segments, standard_folds())
    assert split == {
        "train": ["81406_0", "81406_1", "hh04W3xXa5s_0", "hh04W3xXa5s_1"],
        "val": ["188343_0", "188343_1"],
        "test": ["7l3BNtSE0xc_0", "7l3BNtSE0xc_1"],
    }
    assert unassigned == ["not_in_folds_0", "not_in_folds_1"]


# --- the preparation, on a fake tree of rendered faces, with real MTCNN -------------------------------------------

FPS = 5
# video -> its segments' intervals (seconds) in a 2 s full video; "81406" has one segment past the video's end.
INTERVALS = {
    "hh04W3xXa5s": [(0.2, 0.8), (1.0, 1.6)],
    "81406": [(0.0, 0.5), (5.0, 6.0)],
    VALID_VIDEO: [(0.3, 0.9)],
    TEST_VIDEO: [(0.5, 1.1), (1.2, 1.9)],
    "not_in_folds": [(0.0, 1.0)],
}
CORRUPT_VIDEO = "GdFP_p4eQX0"  # a train video whose file is broken


def person_frames(seed: int, num_frames: int = 2 * FPS) -> np.ndarray:
    """The astronaut moving over the frame, tinted and shifted per video: (num_frames, 120, 160, 3) uint8."""
    frames, _ = moving_face_frames(num_frames, height=120, width=160, scale=0.35)
    tint = np.array([1.0 - 0.04 * (seed % 4), 0.92 + 0.02 * (seed % 3), 0.88 + 0.03 * (seed % 2)])
    return np.roll(np.clip(frames * tint, 0, 255).astype(np.uint8), 3 * seed, axis=1)


def tree_labels() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    labels = {}
    for seed, (video, intervals) in enumerate({**INTERVALS, CORRUPT_VIDEO: [(0.0, 1.0)]}.items()):
        features, _ = video_labels(len(intervals), seed)
        labels[video] = (features, np.array(intervals))
    return labels


def render_tree(root: Path, segmented: bool = False) -> dict:
    """The release layout: CMU_MOSEI/Labels/CMU_MOSEI_Labels.csd and the full videos in Videos/Full/Combined/ (or,
    `segmented`, the segments in Videos/Segmented/Combined/)."""
    labels = tree_labels()
    write_csd(root / "Labels" / "CMU_MOSEI_Labels.csd", labels)
    for seed, video in enumerate(labels):
        frames = person_frames(seed)
        if segmented:
            folder = root / "Videos" / "Segmented" / "Combined"
            folder.mkdir(parents=True, exist_ok=True)
            for index, (start, end) in enumerate(INTERVALS.get(video, [])[:1]):
                encode_video(folder / f"{video}_{index}.mp4", frames[round(start * FPS) : round(end * FPS)], fps=FPS)
            continue
        path = root / "Videos" / "Full" / "Combined" / f"{video}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        if video == CORRUPT_VIDEO:
            path.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
        else:
            encode_video(path, frames, fps=FPS)
    return labels


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("CMU_MOSEI")
    render_tree(root)
    return root


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    result = prepare_mosei(tree, out, progress=False)
    assert sorted(result.failed) == ["81406_1", f"{CORRUPT_VIDEO}_0"]  # the broken file; the segment past the end
    assert result.summary.done == 6
    return out


def count_frames(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_prepare_cuts_segments_and_writes_both_tasks(prepared, tree):
    labels = tree_labels()
    sentiment = {
        name: read_labels_csv(prepared / "mosei-sentiment" / f"{name}.csv", "regression") for name in SPLIT_ORDER
    }
    ids = {name: [Path(p).stem for p in table.paths] for name, table in sentiment.items()}
    assert ids == {
        "train": ["81406_0", "hh04W3xXa5s_0", "hh04W3xXa5s_1"],
        "val": [f"{VALID_VIDEO}_0"],
        "test": [f"{TEST_VIDEO}_0", f"{TEST_VIDEO}_1"],
    }
    for name in SPLIT_ORDER:
        emotions = read_labels_csv(prepared / "mosei-emotions" / f"{name}.csv", "multi_label_classification")
        assert emotions.label_names == list(EMOTIONS) and emotions.paths == sentiment[name].paths
        for path, value, present in zip(sentiment[name].paths, sentiment[name].labels, emotions.labels):
            video, index = Path(path).stem.rsplit("_", 1)
            features = labels[video][0][int(index)]
            assert value[0] == pytest.approx(features[0], abs=1e-5)  # the raw sentiment
            assert present.tolist() == (features[1:] > 0).astype(int).tolist()
    # Each clip holds its interval's frames: [1.0, 1.6) s at 5 fps is frames 5, 6, 7; [1.2, 1.9) s frames 6 to 9.
    assert count_frames(prepared / "clips" / "hh04W3xXa5s_1.mp4") == 3
    assert count_frames(prepared / "clips" / f"{TEST_VIDEO}_1.mp4") == 4


def test_videos_csv_and_preparation_json(prepared, tree):
    rows = {row["id"]: row for row in read_videos_csv(prepared / "videos.csv")}
    assert len(rows) == 8  # every segment with a video and a fold; not_in_folds_0 is counted, not listed
    row = rows[f"{TEST_VIDEO}_1"]
    features = tree_labels()[TEST_VIDEO][0][1]
    assert (row["split"], row["video_id"], row["index"]) == ("test", TEST_VIDEO, "1")
    assert (float(row["start"]), float(row["end"])) == pytest.approx((1.2, 1.9), abs=1e-5)
    assert [float(row[name]) for name in ("sentiment", *EMOTIONS)] == pytest.approx(features, abs=1e-5)
    assert row["video"] == str(tree / "Videos" / "Full" / "Combined" / f"{TEST_VIDEO}.mp4")
    assert "no frame in 5.00-6.00 s" in rows["81406_1"]["error"] and rows["81406_1"]["clip"] == ""
    record = json.loads((prepared / "preparation.json").read_text())
    protocol = record["protocol"]
    assert protocol["name"] == "standard folds" and "cmu_mosei_std_folds.py" in protocol["source"]
    assert (protocol["segments_labelled"], protocol["segments_in_no_fold"]) == (9, 1)
    assert record["splits"] == {"train": 3, "val": 1, "test": 2}
    assert record["class_balance"]["mosei-emotions"]["train"]["videos"] == 3
    assert set(record["class_balance"]["mosei-sentiment"]["test"]["sentiment"]) == {"mean", "min", "max"}
    dataset = load_mosei(prepared, "mosei-emotions")
    assert list(dataset) == ["train", "val", "test"] and len(dataset["train"][0]["labels"]) == 6
    assert load_mosei(prepared)["test"][1]["labels"] == pytest.approx([features[0]], abs=1e-5)


def test_segmented_clips_used_as_they_are(tmp_path):
    render_tree(tmp_path / "CMU_MOSEI", segmented=True)
    result = prepare_mosei(tmp_path / "CMU_MOSEI", tmp_path / "out", source="segmented", progress=False)
    assert result.splits == {
        "train": ["81406_0", "hh04W3xXa5s_0"],
        "val": [f"{VALID_VIDEO}_0"],
        "test": [f"{TEST_VIDEO}_0"],
    }
    assert count_frames(tmp_path / "out" / "clips" / "hh04W3xXa5s_0.mp4") == 3  # the clip whole
    with pytest.raises(DatasetError, match="none of the 9 labelled segments has a video"):
        prepare_mosei(tmp_path / "CMU_MOSEI", tmp_path / "out2", source="full", progress=False)


def test_resume_after_a_kill_and_the_cli(tree, tmp_path, monkeypatch, capsys):
    interrupt_crops_on(monkeypatch, 3)  # a Ctrl-C or a kill between two segments
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prepare_mosei(tree, out, progress=False)
    assert not (out / "videos.csv").exists()
    monkeypatch.undo()
    labels = tree / "Labels" / "CMU_MOSEI_Labels.csd"
    assert main(["prepare-mosei", str(tree), str(out), "--labels", str(labels), "--quiet"]) == 1  # two failed
    err = capsys.readouterr().err
    assert "5 done, 1 already done, 2 failed" in err  # 81406_0 done before the kill; failures are retried
    assert len(read_labels_csv(out / "mosei-sentiment" / "train.csv", "regression").paths) == 3


def test_one_epoch_finetune_on_the_prepared_folder(finetune, tiny_model, prepared, tmp_path):  # noqa: F811
    sentiment = finetuned_test_metrics(finetune, tiny_model, prepared, "mosei-sentiment", tmp_path / "sentiment")
    assert 0.0 <= sentiment["test_mae"] <= 6.0 and 0.0 <= sentiment["test_acc7"] <= 1.0
    assert 0.0 <= sentiment["test_acc2_has0"] <= 1.0
    emotions = finetuned_test_metrics(finetune, tiny_model, prepared, "mosei-emotions", tmp_path / "emotions")
    assert {f"test_weighted_accuracy_{emotion}" for emotion in EMOTIONS} <= set(emotions)
