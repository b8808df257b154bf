"""The shared face-clip job of the task preparers, with a stand-in cropper (MTCNN runs in tests/test_ffpp.py)."""

import csv
import json

import numpy as np
import pytest

from marlin_transformers.data.labels import read_labels_csv
from marlin_transformers.data.task_preparation import (
    LabelTask,
    TaskVideo,
    class_balance,
    load_task,
    prepare_task,
    read_videos_csv,
)
from marlin_transformers.exceptions import DatasetError
from video_factory import encode_video

TASKS = (
    LabelTask("mood", "single_label_classification", ("sad", "happy")),
    LabelTask("score", "regression", ("score",)),
)


def grey_factory():
    """A `FrameCropper` factory whose croppers cut a grey 32 x 32 square per frame and count the videos they see."""
    grey_factory.made += 1

    def crop(frames, clip):
        grey_factory.seen.append(clip.video_id)
        for _ in frames:
            yield np.full((32, 32, 3), 128, dtype=np.uint8)

    return crop


def make_videos(root, corrupt=()):
    videos = []
    for index in range(6):
        path = root / f"v{index}.mp4"
        if index in corrupt:
            path.write_bytes(b"not a video")
        else:
            encode_video(path, np.full((3, 48, 64, 3), 40 * index, dtype=np.uint8), fps=25)
        split = ("train", "train", "val", "test", "test", "extra")[index]
        labels = {"mood": "happy" if index % 2 else "sad", "score": [float(index)]}
        videos.append(TaskVideo(f"v{index}", path, split, labels, {"label": labels["mood"], "take": index}))
    return videos


def test_prepare_task_writes_the_shared_layout_and_isolates_a_bad_video(tmp_path, capsys):
    grey_factory.made, grey_factory.seen = 0, []
    videos = make_videos(tmp_path, corrupt=(3,))
    out = tmp_path / "out"
    kwargs = dict(protocol={"name": "toy", "source": "here"}, command="marlin toy", crop=grey_factory, size=32)
    result = prepare_task(videos, out, TASKS, num_workers=2, progress=False, **kwargs)
    assert result.splits == {"train": ["v0", "v1"], "val": ["v2"], "test": ["v4"], "extra": ["v5"]}
    assert list(result.failed) == ["v3"] and capsys.readouterr().err.count("v3.mp4") == 1
    assert result.summary.done == 5 and result.summary.failed == 1 and grey_factory.made == 2  # one per thread

    table = read_labels_csv(out / "mood" / "test.csv", "single_label_classification")
    assert table.label_names == ["sad"] and table.labels.tolist() == [0]  # v4: sad (a table names its own classes)
    assert table.paths == [str(out / "clips" / "v4.mp4")]
    assert read_labels_csv(out / "score" / "extra.csv", "regression").labels.tolist() == [[5.0]]
    rows = read_videos_csv(out / "videos.csv")
    assert [r["id"] for r in rows] == [f"v{i}" for i in range(6)]
    assert rows[3]["clip"] == "" and "v3.mp4" in rows[3]["error"] and rows[4]["clip"] == "clips/v4.mp4"
    assert rows[1]["label"] == "happy" and rows[1]["take"] == "1" and rows[1]["split"] == "train"
    record = json.loads((out / "preparation.json").read_text())
    assert record["protocol"] == {"name": "toy", "source": "here"} and list(record["failed"]) == ["v3"]
    assert record["splits"] == {"train": 2, "val": 1, "test": 1, "extra": 1}
    assert record["class_balance"]["mood"]["train"] == {"happy": 1, "sad": 1}
    assert record["class_balance"]["score"]["train"]["score"]["mean"] == 0.5

    dataset = load_task(out, "mood", "single_label_classification")
    assert list(dataset) == ["train", "val", "test", "extra"] and dataset["train"].features["labels"].names == [
        "happy",
        "sad",
    ]

    grey_factory.seen = []  # again: the clips done are kept, the bad video is tried again
    again = prepare_task(videos, out, TASKS, progress=False, **kwargs)
    assert again.summary.skipped == 5 and grey_factory.seen == [] and again.splits == result.splits
    with open(out / "mood" / "train.csv", newline="") as f:
        assert next(csv.reader(f)) == ["path", "label"]

    # another protocol into the same folder: the clips are kept, a split it no longer has loses its tables
    moved = [
        TaskVideo(v.video_id, v.path, "test" if v.split == "extra" else v.split, v.labels, v.fields) for v in videos
    ]
    assert prepare_task(moved, out, TASKS, progress=False, **kwargs).splits["test"] == ["v4", "v5"]
    assert sorted(p.name for p in (out / "mood").iterdir()) == ["test.csv", "train.csv", "val.csv"]
    assert not (out / "score" / "extra.csv").exists()


def test_prepare_task_refuses_duplicate_ids_and_unknown_crops(tmp_path):
    video = TaskVideo("a", tmp_path / "a.mp4", "train", {"mood": "sad"})
    with pytest.raises(DatasetError, match="share the id 'a'"):
        prepare_task([video, video], tmp_path / "out", TASKS, {}, "marlin toy")
    with pytest.raises(DatasetError, match="may not be called 'clip'"):
        prepare_task([TaskVideo("a", video.path, "train", {}, {"clip": 1})], tmp_path / "out", TASKS, {}, "marlin toy")
    with pytest.raises(DatasetError, match="unknown crop 'bbox'"):
        prepare_task([video], tmp_path / "out", TASKS, {}, "marlin toy", crop="bbox")


def test_class_balance_counts_per_split():
    videos = [
        TaskVideo(str(i), f"{i}.mp4", "train" if i < 3 else "test", {"mood": ["sad", "happy"][i % 2]})
        for i in range(5)
    ]
    assert class_balance(videos, TASKS[0]) == {"train": {"happy": 1, "sad": 2}, "test": {"happy": 1, "sad": 1}}
