"""CMU-MOSEI: the labels .csd (an HDF5 file in the CMU Multimodal SDK's layout, written here with h5py), the standard
folds, and the preparation on a fake tree in the release layout of faces the test renders, with real MTCNN."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from marlin_transformers.data.mosei import (
    EMOTIONS,
    find_labels_file,
    read_folds_file,
    read_mosei_labels,
    split_mosei,
    standard_folds,
)
from marlin_transformers.exceptions import DatasetError

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
