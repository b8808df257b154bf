"""Every face as its own subject: `video.multi_face_tracking` and `marlin extract --all-faces`."""

import json

import numpy as np
import pytest

from marlin_transformers.cli import main
from marlin_transformers.extraction import MarlinFeatureExtractor
from marlin_transformers.video.multi_face_tracking import MultiFaceTracker
from marlin_transformers.video.windows import iter_windows
from video_factory import background, encode_video, two_faces_frames


def detections_of(boxes_by_frame: dict[int, list[list[float]]]):
    """Per-frame detections in the detector's format from plain boxes (landmarks at the box corners, probability 1)."""
    result = {}
    for index, boxes in boxes_by_frame.items():
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        landmarks = np.repeat(boxes[:, None, :2], 5, axis=1)
        result[index] = (boxes, np.ones(len(boxes), np.float32), landmarks)
    return result


def test_two_faces_give_two_subjects_that_never_swap(tmp_path):
    frames, left_centre = two_faces_frames(80, appear_at=10)
    video = encode_video(tmp_path / "two.mp4", frames)
    tracker = MultiFaceTracker()
    subjects = tracker.find_subjects(iter_windows(video))
    assert [s.id for s in subjects] == [0, 1]
    left, right = subjects
    # The left face from the first frame, the right one from frame 10 on (every 2nd frame sampled).
    assert left.first_frame == 0 and right.first_frame == 10 and right.start_time == pytest.approx(10 / 30, abs=0.02)
    inside = (left.boxes[:, 0] < left_centre[0]) & (left_centre[0] < left.boxes[:, 2])
    inside &= (left.boxes[:, 1] < left_centre[1]) & (left_centre[1] < left.boxes[:, 3])
    assert inside.all()  # every detection of subject 0 is the left face...
    assert (right.boxes[:, 0] > frames.shape[2] / 2).all()  # ...and every one of subject 1 the right face
    assert len(left.frame_indices) >= 40 and len(right.frame_indices) >= 35
    # Cropping a window around each subject: its boxes, interpolated and smoothed, stay on its own face.
    window = next(iter(iter_windows(video)))
    assert left.overlaps(window.frame_indices) and right.overlaps(window.frame_indices)
    crops = tracker.crop(window, right)
    assert crops.crops.shape == (16, 224, 224, 3) and (crops.boxes[:, 0] > frames.shape[2] / 2).all()
    assert crops.detected.tolist() == [i >= 10 for i in window.frame_indices]


def test_a_face_that_leaves_is_a_new_subject_unless_it_returns_within_the_gap():
    tracker = MultiFaceTracker(detector=object(), max_gap=64, min_detections=4)
    face = [100.0, 100.0, 160.0, 170.0]
    # Seen at frames 0-18, gone for 80 frames (more than the gap), back at the same place from frame 100.
    away = (
        {i: [face] for i in range(0, 20, 2)}
        | {i: [] for i in range(20, 100, 2)}
        | {i: [face] for i in range(100, 120, 2)}
    )
    subjects = tracker.link(detections_of(away))
    assert [(s.id, s.first_frame, s.last_frame) for s in subjects] == [(0, 0, 18), (1, 100, 118)]
    # Gone for 30 frames only: the same subject, its gap interpolated when cropped.
    brief = (
        {i: [face] for i in range(0, 20, 2)}
        | {i: [] for i in range(20, 50, 2)}
        | {i: [face] for i in range(50, 70, 2)}
    )
    subjects = tracker.link(detections_of(brief))
    assert [(s.id, s.first_frame, s.last_frame, len(s.frame_indices)) for s in subjects] == [(0, 0, 68, 20)]


def test_crossing_faces_keep_their_ids_and_a_passer_by_is_dropped():
    tracker = MultiFaceTracker(detector=object(), min_detections=6)
    frames = {}
    for step, index in enumerate(range(0, 40, 2)):
        a = 20 + 6 * step  # moves right
        b = 160 - 6 * step  # moves left, a little lower: the two pass each other, overlapping little
        frames[index] = [[a, 40, a + 40, 90], [b, 95, b + 40, 145]]
        if index in (10, 12, 14):  # a passer-by, seen in 3 sampled frames only
            frames[index].append([300, 10, 330, 45])
    subjects = tracker.link(detections_of(frames))
    assert len(subjects) == 2
    top, bottom = subjects
    assert (top.boxes[:, 1] == 40).all() and (np.diff(top.boxes[:, 0]) > 0).all()
    assert (bottom.boxes[:, 1] == 95).all() and (np.diff(bottom.boxes[:, 0]) < 0).all()


@pytest.fixture(scope="module")
def two_faces_video(tmp_path_factory):
    frames, _ = two_faces_frames(80, appear_at=10)
    return encode_video(tmp_path_factory.mktemp("two") / "two.mp4", frames)


def test_extract_all_faces_writes_each_subject_with_its_span_and_boxes(tiny_model_dir, two_faces_video, tmp_path):
    out = tmp_path / "features"
    args = ["extract", str(two_faces_video), "--model", str(tiny_model_dir), "--out", str(out), "--quiet"]
    assert main([*args, "--crop-face", "--all-faces"]) == 0
    record = json.loads((out / "manifest.jsonl").read_text())
    assert record["output"] == "two.npz" and record["status"] == "ok"
    subjects = record["subjects"]
    assert [s["id"] for s in subjects] == [0, 1]
    assert subjects[0]["start_time"] == 0.0 and 0.3 < subjects[1]["start_time"] < 0.4
    assert all(0.9 <= s["detected_fraction"] <= 1.0 for s in subjects)
    assert all(s["windows"][0]["box"][0] < 200 for s in subjects[:1]) and subjects[1]["windows"][0]["box"][0] > 200
    with np.load(out / "two.npz") as arrays:
        assert sorted(arrays) == sorted(f"{k}_{i}" for k in ("features", "frame_indices", "boxes") for i in (0, 1))
        features = {i: arrays[f"features_{i}"] for i in (0, 1)}
        assert arrays["boxes_1"].shape == (len(arrays["frame_indices_1"]), 4)
    assert all(features[i].shape == (len(subjects[i]["windows"]), 32) for i in (0, 1))

    # Each subject's features are the model's on that subject's crops.
    extractor = MarlinFeatureExtractor(tiny_model_dir, crop_face=True)
    tracker = MultiFaceTracker(margin=1.0)
    found = tracker.find_subjects(iter_windows(two_faces_video))
    for subject in found:
        windows = [w for w in iter_windows(two_faces_video) if subject.overlaps(w.frame_indices)]
        expected = extractor.extract_clips([tracker.crop(w, subject).crops for w in windows]).numpy()
        np.testing.assert_allclose(features[subject.id], expected, atol=1e-5)
    assert not np.allclose(features[0][0], features[1][0], atol=1e-3)  # two faces, two features

    # A re-run skips it; the single-subject folder is another feature set, refused in one line.
    assert main([*args, "--crop-face", "--all-faces"]) == 0
    assert main([*args, "--crop-face"]) == 1


def test_all_faces_needs_crop_face_and_a_faceless_video_is_one_line(tiny_model_dir, tmp_path, capsys):
    video = encode_video(tmp_path / "empty.mp4", np.stack([background(96, 128)] * 20))
    out = tmp_path / "features"
    args = ["extract", str(video), "--model", str(tiny_model_dir), "--out", str(out), "--quiet"]
    assert main([*args, "--all-faces"]) == 1
    assert "--all-faces follows faces: use it with --crop-face" in capsys.readouterr().err
    assert main([*args, "--crop-face", "--all-faces"]) == 1
    assert "no face stays long enough to follow" in json.loads((out / "manifest.jsonl").read_text())["error"]
    assert main([*args, "--out", str(tmp_path / "centre"), "--crop-face", "--all-faces", "--no-face", "centre"]) == 0
    record = json.loads((tmp_path / "centre" / "manifest.jsonl").read_text())
    assert record["status"] == "ok" and record["subjects"] == []
    with np.load(tmp_path / "centre" / record["output"]) as arrays:
        assert list(arrays) == []
