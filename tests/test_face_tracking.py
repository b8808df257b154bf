"""`video.face_tracking` and `video.cropping`: one subject followed through a video's windows, and its crops."""

import sys

import numpy as np
import pytest

from marlin_transformers.exceptions import NoFaceError
from marlin_transformers.video import FaceTracker, MtcnnDetector, crop_faces, iter_face_windows, iter_windows
from video_factory import background, encode_video, moving_face_frames, two_faces_frames


@pytest.fixture(scope="module")
def tracker():
    return FaceTracker()  # MTCNN loads once for the module


def centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def test_constructing_a_tracker_loads_no_detector(monkeypatch):
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # importing it would now fail
    tracker = FaceTracker(crop_size=32, min_confidence=0.8, device="cpu")
    assert isinstance(tracker.detector, MtcnnDetector) and tracker.detector.min_confidence == 0.8
    assert tracker.crop_size == 32 and not tracker.has_face
    with pytest.raises(TypeError, match="either a detector"):
        FaceTracker(tracker.detector, min_confidence=0.5)


def test_crop_follows_a_moving_face(tmp_path, tracker):
    frames, true_centres = moving_face_frames(40)
    path = encode_video(tmp_path / "moving.mp4", frames)
    results = list(iter_face_windows(iter_windows(path), tracker, path))
    assert [w.frame_indices[0] for w, _ in results] == [0, 9]  # a regular window, then the tail
    for window, faces in results:
        assert faces.crops.shape == (16, 224, 224, 3) and faces.crops.dtype == np.uint8
        assert faces.detected_fraction == 1.0
        # The face moves about 180 px right and 80 px down; the box stays on it (the box is about 52 px wide).
        errors = np.linalg.norm(centres(faces.boxes) - true_centres[window.frame_indices], axis=1)
        assert errors.max() < 8, errors
        # The crop is centred on the face: its landmarks sit where a face's do, eyes above the mouth.
        eyes, nose, mouth = faces.crop_landmarks[:, :2], faces.crop_landmarks[:, 2], faces.crop_landmarks[:, 3:]
        assert np.all(eyes[:, 0, 0] < eyes[:, 1, 0])  # left eye left of the right eye
        assert np.all(eyes[..., 1].max(axis=1) < nose[:, 1]) and np.all(nose[:, 1] < mouth[..., 1].min(axis=1))
        assert np.all(np.abs(nose - 112) < 40)
        assert faces.landmarks.shape == (16, 5, 2) and faces.crop_boxes.shape == (16, 4)


def test_track_stays_on_the_first_subject(tmp_path, tracker):
    frames, first_centre = two_faces_frames(34, appear_at=4)
    path = encode_video(tmp_path / "two.mp4", frames)
    # The second face is larger, so a detector left to itself would pick it from frame 4 on.
    found = tracker.detector.detect(frames[10:11])[0][0]
    assert len(found) == 2
    results = list(iter_face_windows(iter_windows(path), tracker, path))
    assert len(results) == 2
    for _, faces in results:
        assert np.linalg.norm(centres(faces.boxes) - first_centre, axis=1).max() < 6
        assert faces.detected_fraction == 1.0


def test_no_face_raises_or_falls_back_to_centre(tmp_path, tracker):
    frames = np.stack([background(120, 160, seed=i) for i in range(16)])
    path = encode_video(tmp_path / "empty_scene.mp4", frames)
    with pytest.raises(NoFaceError) as info:
        list(iter_face_windows(iter_windows(path), tracker, path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    ((window, faces),) = list(iter_face_windows(iter_windows(path), tracker, path, on_no_face="centre"))
    assert faces.detected_fraction == 0.0
    np.testing.assert_array_equal(faces.crop_boxes[0], [20, 0, 140, 120])
    assert faces.crops.shape == (16, 224, 224, 3)


def test_crop_is_the_reference_square_zero_padded():
    frames = np.arange(100 * 120 * 3, dtype=np.int64).reshape(1, 100, 120, 3) % 251
    frames = frames.astype(np.uint8)
    # Box 20 wide, 30 high, centred on (110, 40): a 30-pixel square reaching 5 pixels past the right edge.
    boxes = np.array([[100, 25, 120, 55]], dtype=np.float32)
    landmarks = np.array([[[110, 40]] * 5], dtype=np.float32)
    crops, crop_boxes, crop_landmarks = crop_faces(frames, boxes, landmarks, margin=1.0, crop_size=30)
    np.testing.assert_array_equal(crop_boxes, [[95, 25, 125, 55]])
    np.testing.assert_array_equal(crops[0, :, :25], frames[0, 25:55, 95:120])
    assert np.all(crops[0, :, 25:] == 0)
    np.testing.assert_allclose(crop_landmarks[0], [[15, 15]] * 5)
    # A margin scales the square around the same centre; crops are resized to crop_size.
    crops, crop_boxes, _ = crop_faces(frames, boxes, margin=2.0, crop_size=224)
    np.testing.assert_array_equal(crop_boxes, [[80, 10, 140, 70]])
    assert crops.shape == (1, 224, 224, 3)


class ScriptedDetector:
    """A detector returning scripted boxes: frame k carries k in its first pixel."""

    def __init__(self, script: dict[int, list[list[float]]]):
        self.script = script
        self.detected_frames: list[int] = []
        self.searches: list[tuple] = []  # (regions, region_scale) of each call

    def detect(self, frames, regions=None, region_scale=None):
        self.searches.append((regions, region_scale))
        results = []
        for frame in frames:
            index = int(frame[0, 0, 0])
            self.detected_frames.append(index)
            boxes = np.array(self.script.get(index, []), dtype=np.float32).reshape(-1, 4)
            landmarks = np.repeat(centres(boxes)[:, None, :], 5, axis=1) if len(boxes) else np.zeros((0, 5, 2))
            results.append((boxes, np.ones(len(boxes), np.float32), landmarks.astype(np.float32)))
        return results


def scripted(script: dict[int, list[list[float]]], **kwargs) -> FaceTracker:
    return FaceTracker(ScriptedDetector(script), **kwargs)


def indexed(indices) -> np.ndarray:
    frames = np.zeros((len(indices), 200, 300, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = indices
    return frames


def test_missed_frames_are_interpolated_and_carried():
    box = np.array([50, 50, 90, 100], dtype=np.float32)
    script = {0: [box], 4: [box + [20, 0, 20, 0]], 12: [box + [20, 16, 20, 16]]}
    tracker = scripted(script, smoothing=0)
    indices = list(range(0, 16, 2))
    track = tracker.locate(indexed(indices), indices)
    np.testing.assert_array_equal(track.detected, [i in script for i in indices])
    # Frame 2 halfway between 0 and 4; 6..10 between 4 and 12; 14 carried from 12.
    np.testing.assert_allclose(track.boxes[1], box + [10, 0, 10, 0])
    np.testing.assert_allclose(track.boxes[3], box + [20, 4, 20, 4])
    np.testing.assert_allclose(track.boxes[7], box + [20, 16, 20, 16])
    np.testing.assert_allclose(track.landmarks[1], [[80, 75]] * 5)
    # A later window with no detection carries the last box forward.
    track = tracker.locate(indexed([16, 18]), [16, 18])
    assert not track.detected.any()
    np.testing.assert_allclose(track.boxes, [box + [20, 16, 20, 16]] * 2)


def test_largest_face_starts_the_track_and_a_newcomer_never_takes_over():
    small, large, newcomer = [20, 20, 60, 70], [150, 40, 230, 140], [220, 30, 360, 200]
    script = {0: [small, large], 2: [small, large], 4: [newcomer, large, small], 6: [newcomer], 8: [large]}
    tracker = scripted(script, smoothing=0)
    track = tracker.locate(indexed([0, 2, 4, 6, 8]), [0, 2, 4, 6, 8])
    # Starts on the largest; frame 6 shows only a bigger face beside the subject, touching it: not the subject.
    np.testing.assert_array_equal(track.detected, [True, True, True, False, True])
    np.testing.assert_allclose(track.boxes, [large] * 5)


def test_smoothing_removes_jitter_but_keeps_a_steady_box():
    steady = [100, 50, 160, 120]
    jitter = {i: [np.add(steady, 3 * (-1) ** (i // 2)).tolist()] for i in range(0, 32, 2)}
    tracker = scripted(jitter, smoothing=1.5)
    track = tracker.locate(indexed(range(0, 32, 2)), range(0, 32, 2))
    deviation = np.abs(centres(track.boxes) - [130, 85])
    assert deviation.mean() < 0.6 and deviation.max() < 2  # from 3 pixels on every frame
    tracker = scripted({i: [steady] for i in range(0, 32, 2)}, smoothing=1.5)
    np.testing.assert_allclose(tracker.locate(indexed(range(0, 32, 2)), range(0, 32, 2)).boxes, [steady] * 16)


def test_overlapping_windows_reuse_detections_and_padding_is_detected_once():
    box = [50, 50, 90, 100]
    tracker = scripted({i: [box] for i in range(50)})
    tracker.locate(indexed(range(0, 31, 2)), range(0, 31, 2))
    tracker.locate(indexed(range(9, 40, 2)), range(9, 40, 2))
    tracker.locate(indexed([39] * 4), [39] * 4)  # a padded window: its frames were all seen
    assert sorted(tracker.detector.detected_frames) == sorted(list(range(0, 31, 2)) + list(range(9, 40, 2)))


def test_once_found_the_subject_is_searched_around_its_box():
    box = [100, 60, 140, 110]  # 40 x 50: a 125-pixel square around its centre (120, 85)
    tracker = scripted({0: [box], 2: [box]}, region_scale=2.5)
    tracker.locate(indexed([0]), [0])
    tracker.locate(indexed([2]), [2])
    assert tracker.detector.searches == [(None, None), ([(58, 22, 183, 147)], 2.5)]
    tracker = scripted({0: [box], 2: [box]}, region_scale=0)
    tracker.locate(indexed([0]), [0])
    tracker.locate(indexed([2]), [2])
    assert tracker.detector.searches == [(None, None), (None, None)]


def test_before_the_subject_frames_are_searched_whole_only_until_a_face_turns_up():
    small, large = [20, 20, 60, 70], [100, 60, 150, 120]  # the larger: 50 x 60, a 150-pixel square around (125, 90)
    tracker = scripted({4: [small, large], 6: [large], 8: [large]}, region_scale=2.5)
    track = tracker.locate(indexed([0, 2, 4, 6, 8]), [0, 2, 4, 6, 8])
    # Frames 0, 2 and 4 whole, one at a time; then 6 and 8 together, around frame 4's largest face.
    assert tracker.detector.searches == [(None, None)] * 3 + [([(50, 15, 200, 165)] * 2, 2.5)]
    assert tracker.detector.detected_frames == [0, 2, 4, 6, 8]
    np.testing.assert_array_equal(track.detected, [False, False, True, True, True])
    np.testing.assert_allclose(track.boxes, [large] * 5)


def test_a_moving_first_face_is_searched_where_it_was_last_found():
    # 20 pixels right per sampled frame: by frame 16 the face is 160 pixels from where it started.
    script = {i: [[100 + 10 * i, 60, 150 + 10 * i, 120]] for i in range(0, 17, 2)}
    tracker = scripted(script, region_scale=2.5)
    indices = list(range(0, 17, 2))
    track = tracker.locate(indexed(indices), indices)
    # Frame 0 whole; then 4 frames at a time (the detector's batch), around the face's box in the batch before.
    assert tracker.detector.searches == [
        (None, None),
        ([(50, 15, 200, 165)] * 4, 2.5),
        ([(130, 15, 280, 165)] * 4, 2.5),
    ]
    assert track.detected.all()


def test_faceless_leading_windows_are_back_filled_with_the_first_face():
    box = [100, 60, 140, 110]
    tracker = scripted({i: [box] for i in range(40, 80)})

    class Window:
        def __init__(self, indices):
            self.frames, self.frame_indices = indexed(indices), list(indices)

    windows = [Window(range(s, s + 31, 2)) for s in (0, 32, 64)]
    results = list(iter_face_windows(windows, tracker, "scripted"))
    assert [faces.detected_fraction for _, faces in results] == [0.0, 0.75, 0.5]
    np.testing.assert_allclose(results[0][1].boxes, [box] * 16)
