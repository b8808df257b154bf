"""CelebV-HQ preparation on a small fake tree in the release layout, with videos encoded here by PyAV."""

import csv
import json
import warnings
from pathlib import Path

import av
import numpy as np
import pytest

from marlin_transformers.data.celebv_hq import (
    bbox_crop_box,
    celebvhq_split,
    face_tracker_cropper,
    load_celebvhq,
    prepare_celebvhq,
    read_celebvhq_info,
    resize_cropper,
    split_clip_ids,
)
from marlin_transformers.data.labels import read_labels_csv
from marlin_transformers.exceptions import DatasetError
from video_factory import encode_video

APPEARANCE = [f"appearance_{i}" for i in range(40)]
ACTION = [f"action_{i}" for i in range(35)]
RED, BLUE = (220, 20, 20), (20, 20, 220)
# A 160 x 96 frame whose face box covers rows 24..72 and columns 60..100.
BBOX = {"top": 0.25, "bottom": 0.75, "left": 0.375, "right": 0.625}


def decode_video(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def face_frames(num_frames: int = 4, height: int = 96, width: int = 160) -> np.ndarray:
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    frames[:] = BLUE
    frames[:, 24:72, 60:100] = RED
    return frames


def clip_labels(index: int) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(index)
    return rng.integers(0, 2, 40).tolist(), rng.integers(0, 2, 35).tolist()


def make_tree(root: Path, num_clips: int = 20, missing: tuple[int, ...] = (3, 7, 11), square: bool = False) -> list:
    clips = {}
    for i in range(num_clips):
        appearance, action = clip_labels(i)
        clips[f"yt{i:03d}abcde_{i % 3}"] = {
            "ytb_id": f"yt{i:03d}abcde",
            "duration": {"start_sec": 1.0 + i, "end_sec": 3.5 + i},
            "bbox": BBOX,
            "attributes": {
                "appearance": appearance,
                "action": action,
                "emotion": {"sep_flag": False, "labels": "neutral"},
            },
        }
    info = {"mete_info": {"appearance_mapping": APPEARANCE, "action_mapping": ACTION}, "clips": clips}
    root.mkdir(parents=True, exist_ok=True)
    (root / "celebvhq_info.json").write_text(json.dumps(info))
    frames = face_frames(height=96, width=96) if square else face_frames()
    for i, clip_id in enumerate(clips):
        if i not in missing:
            path = root / "downloaded" / f"{clip_id}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            encode_video(path, frames, fps=25)
    return list(clips)


def test_read_info(tmp_path):
    clip_ids = make_tree(tmp_path, num_clips=3, missing=(0, 1, 2))
    info = read_celebvhq_info(tmp_path / "celebvhq_info.json")
    assert info.label_names("appearance") == tuple(APPEARANCE) and info.label_names("action") == tuple(ACTION)
    clip = info.clips[clip_ids[1]]
    assert clip.appearance == tuple(clip_labels(1)[0]) and clip.action == tuple(clip_labels(1)[1])
    assert clip.bbox == (0.25, 0.75, 0.375, 0.625) and (clip.start_sec, clip.end_sec) == (2.0, 4.5)


def test_read_info_errors(tmp_path):
    with pytest.raises(DatasetError, match="no CelebV-HQ info file"):
        read_celebvhq_info(tmp_path / "celebvhq_info.json")
    (tmp_path / "celebvhq_info.json").write_text(json.dumps({"clips": {}}))
    with pytest.raises(DatasetError, match="mete_info"):
        read_celebvhq_info(tmp_path / "celebvhq_info.json")


def test_split_is_deterministic_sized_and_order_free():
    ids = [f"clip{i:04d}" for i in range(1000)]
    split = split_clip_ids(ids, seed=0)
    assert [len(split[s]) for s in ("train", "val", "test")] == [800, 100, 100]
    assert sorted(split["train"] + split["val"] + split["test"]) == ids
    assert split_clip_ids(list(reversed(ids)), seed=0) == split
    assert split_clip_ids(ids, seed=1) != split
    # pinned so that a change of the split procedure cannot pass unnoticed
    assert split["test"][:3] == ["clip0003", "clip0007", "clip0021"]


def test_missing_videos_do_not_move_other_clips(tmp_path):
    make_tree(tmp_path, missing=(3,))
    info = read_celebvhq_info(tmp_path / "celebvhq_info.json")
    before, missing = celebvhq_split(info, tmp_path / "downloaded")
    assert len(missing) == 1 and sum(map(len, before.values())) == 19
    gone = before["train"][0]
    (tmp_path / "downloaded" / f"{gone}.mp4").unlink()
    after, missing = celebvhq_split(info, tmp_path / "downloaded")
    assert gone in missing
    assert after["train"] == before["train"][1:] and after["val"] == before["val"] and after["test"] == before["test"]


def test_bbox_crop_box_follows_release_script():
    # grown by 0.02: rows 22.08..73.92 -> 22..74, columns 56.8..103.2 -> 57..103; square of side 46 around (48, 80)
    assert bbox_crop_box((0.25, 0.75, 0.375, 0.625), height=96, width=160) == (25, 57, 46)
    top, left, side = bbox_crop_box((0.0, 0.5, 0.9, 1.0), height=100, width=100)
    assert 0 <= top and top + side <= 100 and 0 <= left and left + side <= 100


def test_prepare_crops_splits_and_writes_csvs(tmp_path):
    root, out = tmp_path / "CelebV-HQ", tmp_path / "prepared"
    clip_ids = make_tree(root)
    kept = prepare_celebvhq(root, out, crop="bbox", num_workers=2, progress=False)
    assert sum(map(len, kept.values())) == 17
    assert not set(kept["train"]) & set(kept["test"]) and not set(kept["val"]) & set(kept["test"])
    record = json.loads((out / "split.json").read_text())
    assert record["seed"] == 0 and len(record["missing_video"]) == 3 and record["test"] == kept["test"]

    with open(out / "appearance" / "train.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", *APPEARANCE] and len(rows) == 1 + len(kept["train"])
    first = rows[1]
    clip_id = Path(first[0]).stem
    assert first[0] == f"../cropped/{clip_id}.mp4"
    assert [int(v) for v in first[1:]] == clip_labels(clip_ids.index(clip_id))[0]

    frames = decode_video(out / "cropped" / f"{clip_id}.mp4")
    assert frames.shape == (4, 224, 224, 3)
    # the crop sits on the red face box: red inside, blue only in thin side margins
    red_fraction = ((frames[..., 0] > 128) & (frames[..., 2] < 128)).mean()
    assert red_fraction > 0.8
    assert (frames[:, 112, 112, 0] > 150).all() and (frames[:, 112, 112, 2] < 100).all()

    table = read_labels_csv(out / "action" / "test.csv", "multi_label_classification")
    assert table.labels.shape == (len(kept["test"]), 35) and table.label_names == ACTION
    assert all(Path(p).exists() for p in table.paths)


def test_load_celebvhq_as_dataset_dict(tmp_path):
    root = tmp_path / "CelebV-HQ"
    clip_ids = make_tree(root)
    kept = prepare_celebvhq(root, root, crop=None, progress=False)
    dataset = load_celebvhq(root, "action")
    assert {name: len(dataset[name]) for name in dataset} == {name: len(ids) for name, ids in kept.items()}
    row = dataset["val"][0]
    assert Path(row["path"]).parent == (root / "downloaded").absolute()  # crop=None keeps the downloaded videos
    assert row["labels"] == [float(v) for v in clip_labels(clip_ids.index(Path(row["path"]).stem))[1]]
    with pytest.raises(DatasetError, match="unknown CelebV-HQ task"):
        load_celebvhq(root, "emotion")


def test_face_crop_runs_in_several_workers_each_with_its_own_tracker(tmp_path, monkeypatch):
    import threading

    from marlin_transformers.data import celebv_hq

    made_in = []  # the thread each face cropper (and its tracker) is made in

    def counted(*args, **kwargs):
        made_in.append(threading.get_ident())
        return face_tracker_cropper(*args, **kwargs)

    monkeypatch.setattr(celebv_hq, "face_tracker_cropper", counted)
    root, out = tmp_path / "CelebV-HQ", tmp_path / "prepared"
    make_tree(root, num_clips=4, missing=())
    kept = prepare_celebvhq(root, out, crop="face", size=32, num_workers=2, progress=False)
    in_workers = [ident for ident in made_in if ident != threading.get_ident()]  # the first checks the name
    assert in_workers and len(in_workers) == len(set(in_workers)) <= 2  # one a worker thread, never shared
    clips = sorted((out / "cropped").glob("*.mp4"))
    assert len(clips) == sum(map(len, kept.values())) == 4
    assert all(decode_video(clip).shape == (4, 32, 32, 3) for clip in clips)
    with pytest.raises(DatasetError, match="2: your crop function may keep per-clip state"):
        prepare_celebvhq(root, tmp_path / "other", crop=lambda frames, clip: frames, num_workers=2, progress=False)


def test_injected_cropper_and_failed_video(tmp_path):
    root = tmp_path / "CelebV-HQ"
    clip_ids = make_tree(root, num_clips=6, missing=())
    (root / "downloaded" / f"{clip_ids[0]}.mp4").write_bytes(b"not a video")
    seen = []

    def grey_cropper(frames, clip):
        seen.append(clip.clip_id)
        for _ in frames:
            yield np.full((32, 32, 3), 128, dtype=np.uint8)

    kept = prepare_celebvhq(root, tmp_path / "out", crop=grey_cropper, size=32, progress=False)
    record = json.loads((tmp_path / "out" / "split.json").read_text())
    assert list(record["failed"]) == [clip_ids[0]] and "cannot be opened" in record["failed"][clip_ids[0]]
    assert clip_ids[0] not in sum(kept.values(), [])
    assert sorted(seen) == sorted(clip_ids[1:])  # one call per decodable clip, with its annotation
    assert decode_video(tmp_path / "out" / "cropped" / f"{clip_ids[1]}.mp4").shape == (4, 32, 32, 3)


def test_bbox_crop_refuses_already_cropped_square_clips(tmp_path):
    root = tmp_path / "CelebV-HQ"
    make_tree(root, num_clips=3, missing=(), square=True)
    with pytest.raises(DatasetError, match="--crop resize"):
        prepare_celebvhq(root, tmp_path / "out", crop="bbox", num_workers=2, progress=False)
    kept = prepare_celebvhq(root, tmp_path / "out", crop="resize", progress=False)
    assert sum(map(len, kept.values())) == 3
    assert not list((tmp_path / "out" / "cropped").glob(".*partial*"))  # nothing half-written left behind


def test_read_labels_csv_single_label_and_errors(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\na.mp4,smile\nsub/b.mp4,frown\nc.mp4,smile\n")
    table = read_labels_csv(labels, "single_label_classification")
    assert table.label_names == ["frown", "smile"] and table.labels.tolist() == [1, 0, 1]
    assert table.paths[1] == str(tmp_path / "sub" / "b.mp4")
    labels.write_text("input,label\na.mp4,2\nb.mp4,0\n")
    assert read_labels_csv(labels, "single_label_classification").label_names == ["0", "1", "2"]
    labels.write_text("path,x,y\na.mp4,0,2\n")
    with pytest.raises(DatasetError, match="0 or 1"):
        read_labels_csv(labels, "multi_label_classification")
    assert read_labels_csv(labels, "regression").labels.tolist() == [[0.0, 2.0]]
    labels.write_text("video,label\na.mp4,1\n")
    with pytest.raises(DatasetError, match="no 'path'"):
        read_labels_csv(labels, "single_label_classification")


class FakeTracker:
    """Stands in for video.face_tracking.FaceTracker: records its calls, returns crops coding the frame index."""

    def __init__(self):
        self.calls = []

    def reset(self):
        self.calls.append("reset")

    def track(self, frames, frame_indices):
        self.calls.append(list(frame_indices))
        crops = np.zeros((len(frames), 16, 16, 3), dtype=np.uint8)
        crops[..., 0] = np.asarray(frame_indices, dtype=np.uint8)[:, None, None]

        class Crops:
            pass

        result = Crops()
        result.crops = crops
        return result


def test_face_tracker_cropper_feeds_chunks_in_order_and_resets_per_clip():
    tracker = FakeTracker()
    cropper = face_tracker_cropper(tracker, size=16, chunk_frames=4)
    frames = [np.zeros((8, 8, 3), dtype=np.uint8)] * 10
    out = list(cropper(iter(frames), clip=None))
    assert [int(c[0, 0, 0]) for c in out] == list(range(10))
    assert tracker.calls == ["reset", [0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    list(cropper(iter(frames[:2]), clip=None))
    assert tracker.calls[-2:] == ["reset", [0, 1]]


def test_resize_crop_says_once_that_it_cuts_non_square_clips():
    from types import SimpleNamespace

    cropper = resize_cropper(size=16)
    square, wide = np.zeros((32, 32, 3), np.uint8), np.zeros((32, 48, 3), np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert list(cropper(iter([square] * 2), SimpleNamespace(clip_id="square")))[0].shape == (16, 16, 3)
        assert not caught
        for clip_id in ("wide_1", "wide_2"):
            assert list(cropper(iter([wide] * 3), SimpleNamespace(clip_id=clip_id)))[0].shape == (16, 16, 3)
    assert len(caught) == 1 and "--crop resize: wide_1 is 48x32, not square" in str(caught[0].message)


def test_cli_prepare_celebvhq(tmp_path, capsys):
    from marlin_transformers.cli import main

    root = tmp_path / "CelebV-HQ"
    make_tree(root, num_clips=10, missing=())
    assert main(["prepare-celebvhq", str(root), str(tmp_path / "prepared"), "--crop", "none"]) == 0
    assert "train 8" in capsys.readouterr().out
    assert (tmp_path / "prepared" / "appearance" / "train.csv").is_file()
    assert main(["prepare-celebvhq", str(tmp_path / "nowhere"), str(tmp_path / "p2")]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err


def test_rotated_phone_clip_is_cropped_upright(tmp_path):
    """A clip stored sideways with a display rotation is decoded upright, as `marlin extract` decodes it."""
    root = tmp_path / "CelebV-HQ"
    clip_ids = make_tree(root, num_clips=1, missing=(0,))
    upright = np.empty((4, 160, 96, 3), dtype=np.uint8)  # portrait: red top half, blue bottom half
    upright[:, :80], upright[:, 80:] = RED, BLUE
    stored = np.ascontiguousarray(np.rot90(upright, k=-1, axes=(1, 2)))  # landscape, shown turned back by 90 degrees
    (root / "downloaded").mkdir()
    encode_video(root / "downloaded" / f"{clip_ids[0]}.mp4", stored, fps=25, rotation=90)
    prepare_celebvhq(root, tmp_path / "out", crop="resize", size=32, progress=False)
    crops = decode_video(tmp_path / "out" / "cropped" / f"{clip_ids[0]}.mp4").astype(int)
    assert np.abs(crops[:, 2:12, 4:28] - RED).max() < 40  # the top of the centred square is red...
    assert np.abs(crops[:, 20:30, 4:28] - BLUE).max() < 40  # ...and its bottom blue: upright, not sideways


class FixedDetector:
    """A stand-in detector: per frame, the boxes it is given (None: no face), two of them when asked."""

    def __init__(self, boxes):
        self.boxes = list(boxes)

    def detect(self, frames):
        found = []
        for _ in frames:
            box = self.boxes.pop(0)
            if box is None:
                found.append((np.zeros((0, 4), np.float32), np.zeros(0, np.float32), None))
            else:  # a weaker second face the crop must not take
                boxes = np.array([[0, 0, 8, 8], box], np.float32)
                found.append((boxes, np.array([0.91, 0.99], np.float32), None))
        return found


def test_reference_crop_is_the_paper_codes_square_per_frame():
    from marlin_transformers.data.celebv_hq import reference_cropper
    from marlin_transformers.video.cropping import reference_square

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (4, 100, 120, 3), dtype=np.uint8)
    # w 31, h 41: side 2 * int(41 / 2) = 40, centred on (int(25.5), int(40.5)) = (25, 40)
    assert reference_square((10, 20, 41, 61)) == (5, 20, 45, 60)
    boxes = [(10, 20, 41, 61), (12, 20, 43, 61), None, (100, -10, 130, 20)]
    crops = list(reference_cropper(FixedDetector(boxes), size=40, chunk_frames=3)(iter(frames), None))
    assert len(crops) == 4 and all(c.shape == (40, 40, 3) for c in crops)
    np.testing.assert_array_equal(crops[0], frames[0, 20:60, 5:45])
    np.testing.assert_array_equal(crops[1], frames[1, 20:60, 7:47])  # its own box: no smoothing
    np.testing.assert_array_equal(crops[2], frames[2, 20:60, 7:47])  # no face: the last box, never a 2x2 corner
    # (115, 5) +- 15: beyond the right and top edges, zero there
    assert reference_square((100, -10, 130, 20)) == (100, -10, 130, 20)
    side = 30
    expected = np.zeros((side, side, 3), np.uint8)
    expected[10:, :20] = frames[3, 0:20, 100:120]
    from marlin_transformers.video.decoding import resize_frames

    np.testing.assert_array_equal(crops[3], resize_frames(expected[None], 40)[0])
    from marlin_transformers import cli

    parsed = cli.build_parser().parse_args(["prepare-celebvhq", "root", "out", "--crop", "reference"])
    assert parsed.crop == "reference"
