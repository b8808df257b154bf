"""FaceForensics++ preparation on a fake tree in the official layout, with faces rendered here and real MTCNN.

The tree holds what the release's download script writes (`original_sequences/youtube/c23/videos/000.mp4`,
`manipulated_sequences/<Method>/c23/videos/000_001.mp4`, the DeepFakeDetection and actors folders) and split files in
the released format (`[["000", "001"], ...]`). Each "person" (an original id) is the astronaut at their own place and
colour; a fake of target t and source s shows t's place with s's colouring, changed again per method.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import av
import numpy as np
import pytest

from conftest import finetuned_test_metrics
from marlin_transformers.cli import main
from marlin_transformers.data.ffpp import FFPP_PROTOCOL, ffpp_videos, load_ffpp, prepare_ffpp, read_split_files
from marlin_transformers.data.labels import read_labels_csv
from marlin_transformers.data.task_preparation import read_videos_csv
from marlin_transformers.exceptions import DatasetError
from test_finetune import finetune, tiny_model  # noqa: F401  (fixtures)
from video_factory import _paste, astronaut_patch, background, encode_video

SPLITS = {"train": [["000", "001"], ["002", "003"]], "val": [["004", "005"]], "test": [["006", "007"]]}
METHODS = ("Deepfakes", "FaceSwap")
HEIGHT, WIDTH, FRAMES = 120, 160, 3


def person_tint(person: int) -> np.ndarray:
    return np.array([1.0 + 0.12 * np.sin(person), 1.0, 1.0 + 0.12 * np.cos(person)])


def render(target: int, source: int | None = None, method: int = 0) -> np.ndarray:
    """The astronaut at the target person's place; coloured as the source person (a fake) and changed per method."""
    patch = astronaut_patch(0.5).astype(np.float64) * person_tint(target if source is None else source)
    if source is not None:
        patch = patch * (0.92 + 0.08 * method) + 6 * (method + 1)
    patch = np.clip(patch, 0, 255).astype(np.uint8)
    frames = []
    for index in range(FRAMES):
        frame = background(HEIGHT, WIDTH, seed=target)
        _paste(frame, patch, 10 + 4 * (target % 5) + 2 * index, 10)
        frames.append(frame)
    return np.stack(frames)


def make_tree(root, dfd: bool = True, cross_pair: bool = False) -> None:
    """The official layout at c23 (every pair's originals and both fakes per method), split files in root/splits."""
    videos = root / "original_sequences" / "youtube" / "c23" / "videos"
    videos.mkdir(parents=True)
    (root / "splits").mkdir()
    for name, pairs in SPLITS.items():
        (root / "splits" / f"{name}.json").write_text(json.dumps(pairs))
    ids = [i for pairs in SPLITS.values() for pair in pairs for i in pair]
    for video in ids:
        encode_video(videos / f"{video}.mp4", render(int(video)), fps=25)
    for m, method in enumerate(METHODS):
        folder = root / "manipulated_sequences" / method / "c23" / "videos"
        folder.mkdir(parents=True)
        for a, b in (pair for pairs in SPLITS.values() for pair in pairs):
            encode_video(folder / f"{a}_{b}.mp4", render(int(a), int(b), m), fps=25)
            encode_video(folder / f"{b}_{a}.mp4", render(int(b), int(a), m), fps=25)
    if cross_pair:  # a fake mixing a train and a test person: no split may take it
        encode_video(root / "manipulated_sequences" / "Deepfakes" / "c23" / "videos" / "000_006.mp4", render(0, 6))
    if dfd:
        actors = root / "original_sequences" / "actors" / "c23" / "videos"
        actors.mkdir(parents=True)
        encode_video(actors / "01__kitchen_pan.mp4", render(11), fps=25)
        folder = root / "manipulated_sequences" / "DeepFakeDetection" / "c23" / "videos"
        folder.mkdir(parents=True)
        encode_video(folder / "01_02__meeting_serious__YVGY8LOK.mp4", render(11, 12), fps=25)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("FaceForensics")
    make_tree(root, cross_pair=True)
    return root


def test_videos_are_split_by_pairs_and_labels_decoded(tree):
    pairs = read_split_files(tree / "splits")
    assert pairs["val"] == [("004", "005")]
    videos, found = ffpp_videos(tree, pairs)
    assert found["methods"] == list(METHODS) and found["missing"] == []
    assert [os.path.basename(p) for p in found["unsplit"]] == ["000_006.mp4"]  # train x test: left out
    by_id = {v.video_id: v for v in videos}
    assert len(videos) == 8 + 8 * len(METHODS) + 2
    fake = by_id["FaceSwap_005_004"]
    assert fake.split == "val" and fake.labels == {"ffpp": "fake"}
    assert fake.fields == dict(
        label="fake", method="FaceSwap", target="005", source="004", pair="004_005", compression="c23"
    )
    assert by_id["original_002"].fields["label"] == "real" and by_id["original_002"].split == "train"
    assert by_id["DeepFakeDetection_01_02__meeting_serious__YVGY8LOK"].split == "dfd"
    assert by_id["actors_01__kitchen_pan"].labels == {"ffpp": "real"}
    # no person in two splits: every id a split's videos show (as target or source) belongs to that split only
    persons = {}
    for video in videos:
        if video.split != "dfd":
            for person in filter(None, (video.fields["target"], video.fields["source"])):
                persons.setdefault(person, set()).add(video.split)
    assert all(len(splits) == 1 for splits in persons.values()) and len(persons) == 8
    counts = {s: sum(v.split == s for v in videos) for s in ("train", "val", "test", "dfd")}
    assert counts == {"train": 12, "val": 6, "test": 6, "dfd": 2}  # 2 pairs: 4 originals + 8 fakes


def test_split_files_are_checked(tmp_path):
    with pytest.raises(
        DatasetError, match="not-there/original_sequences/youtube/c23/videos: no such folder; pass the"
    ):
        prepare_ffpp(tmp_path / "not-there", tmp_path / "out")
    (tmp_path / "train.json").write_text('[["000", "001"]]')
    (tmp_path / "val.json").write_text('[["001", "002"]]')
    (tmp_path / "test.json").write_text('[["003", "004"]]')
    with pytest.raises(DatasetError, match="video 001 is in train already"):
        read_split_files(tmp_path)
    (tmp_path / "val.json").write_text('{"pairs": []}')
    with pytest.raises(DatasetError, match="list of id pairs"):
        read_split_files(tmp_path)
    (tmp_path / "val.json").unlink()
    with pytest.raises(DatasetError, match="no FaceForensics\\+\\+ split file"):
        read_split_files(tmp_path)
    with pytest.raises(DatasetError, match="no such folder"):
        ffpp_videos(tmp_path, {}, "c23")
    with pytest.raises(DatasetError, match="unknown compression"):
        ffpp_videos(tmp_path, {}, "c99")


def decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# Runs `marlin prepare-ffpp` and SIGKILLs it while it crops its fourth clip (after three records; the encoder still
# holds the frames, so PyAV has not opened the clip's temporary file yet).
KILL_IN_FOURTH_CLIP = textwrap.dedent(
    """
    import os, signal, sys
    from marlin_transformers.data import task_preparation

    real_crop_video = task_preparation.crop_video
    calls = {"n": 0}

    def crop_video(source, target, cropper, clip=None, size=224):
        calls["n"] += 1
        if calls["n"] == 4:
            def dying(frames, clip):
                for number, face in enumerate(cropper(frames, clip)):
                    if number == 2:
                        os.kill(os.getpid(), signal.SIGKILL)  # two frames are in the partial clip
                    yield face
            return real_crop_video(source, target, dying, clip, size)
        return real_crop_video(source, target, cropper, clip, size)

    task_preparation.crop_video = crop_video
    from marlin_transformers.cli import main

    sys.exit(main(sys.argv[1:]))
    """
)


def test_prepare_ffpp_resumes_after_a_kill_and_isolates_a_corrupt_video(finetune, tiny_model, tmp_path, capsys):  # noqa: F811
    root, out = tmp_path / "FaceForensics", tmp_path / "prepared"
    make_tree(root)
    corrupt = root / "manipulated_sequences" / "Deepfakes" / "c23" / "videos" / "002_003.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    args = ["prepare-ffpp", str(root), str(out), "--methods", ",".join(METHODS), "--quiet"]

    killed = subprocess.run([sys.executable, "-c", KILL_IN_FOURTH_CLIP, *args], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    # train in id order: Deepfakes_000_001, Deepfakes_001_000, Deepfakes_002_003 (the corrupt one: an error record)
    assert [r["status"] for r in records] == ["ok", "ok", "error"] and killed.stderr.count("002_003.mp4") == 1

    assert main([*args, "--num-workers", "2"]) == 1  # one video failed
    err = capsys.readouterr()
    # the two clips done are kept, the corrupt video is tried again and fails again: one error line
    assert err.err.count("002_003.mp4") == 1 and "23 done, 2 already done, 1 failed" in err.err
    assert "train: 4 real, 7 fake (1 : 1.8)" in err.out and "dfd: 1 real, 1 fake" in err.out
    assert not list(out.rglob(".*partial*"))

    record = json.loads((out / "preparation.json").read_text())
    assert list(record["failed"]) == ["Deepfakes_002_003"]
    assert record["splits"] == {"train": 11, "val": 6, "test": 6, "dfd": 2}
    assert record["class_balance"]["ffpp"]["test"] == {"fake": 4, "real": 2}
    assert record["class_balance"]["by method"]["train"] == {"Deepfakes": 3, "FaceSwap": 4, "original": 4}
    assert record["protocol"]["training"] == FFPP_PROTOCOL["training"] and record["protocol"]["compression"] == "c23"

    test = read_labels_csv(out / "ffpp" / "test.csv", "single_label_classification")
    names = [os.path.basename(p) for p in test.paths]
    assert sorted(names) == sorted(
        ["original_006.mp4", "original_007.mp4"] + [f"{m}_{p}.mp4" for m in METHODS for p in ("006_007", "007_006")]
    )
    assert all(test.label_names[label] == ("real" if n.startswith("original") else "fake") for n, label in
               zip(names, test.labels))  # fmt: skip
    rows = {row["id"]: row for row in read_videos_csv(out / "videos.csv")}
    assert rows["Deepfakes_002_003"]["clip"] == "" and rows["original_000"]["clip"] == "clips/original_000.mp4"
    assert rows["FaceSwap_001_000"]["pair"] == "000_001" and rows["FaceSwap_001_000"]["method"] == "FaceSwap"
    assert rows["FaceSwap_001_000"]["source"] == "000" and rows["FaceSwap_001_000"]["video"].endswith("001_000.mp4")

    # the prepared folder feeds fine-tuning as written: the video-level AUC of the test split
    metrics = finetuned_test_metrics(finetune, tiny_model, out, "ffpp", tmp_path / "run")
    assert 0.0 <= metrics["test_video_auc"] <= 1.0 and 0.0 <= metrics["test_video_accuracy"] <= 1.0

    clip = decode(out / "clips" / "original_000.mp4")
    assert clip.shape == (FRAMES, 224, 224, 3)
    # the crop is the face: the astronaut's skin in the middle, not the background's blue-grey gradient
    centre = clip[:, 90:134, 90:134].reshape(-1, 3).mean(0)
    assert centre[0] > centre[2] + 20, centre

    dataset = load_ffpp(out)
    assert list(dataset) == ["train", "val", "test", "dfd"]
    assert dataset["dfd"].features["labels"].names == ["fake", "real"] and len(dataset["val"]) == 6
    real = [row["labels"] for row in dataset["val"] if "original_" in row["path"]]
    assert real == [1, 1]
