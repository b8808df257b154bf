"""`video.face_detection`: MTCNN on whole frames and on regions, and the thread count it leaves behind."""

import numpy as np
import pytest
import torch

from marlin_transformers.video import MtcnnDetector
from marlin_transformers.video.face_detection import torch_threads
from video_factory import two_faces_frames


@pytest.fixture(scope="module")
def detector():
    return MtcnnDetector()  # MTCNN loads once for the module


@pytest.fixture
def three_threads():
    """torch set to 3 CPU threads for the test (not the detector's 1 nor, on 2 cores, torch's own), then restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(previous)


def centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def test_finds_both_faces_whole_and_the_first_in_a_region(detector):
    frames, first_centre = two_faces_frames(12, appear_at=4)
    (boxes, probs, landmarks), (late_boxes, _, _) = detector.detect(frames[[0, 10]])
    assert len(boxes) == 1 and len(late_boxes) == 2  # the second face from frame 4 on
    assert probs.dtype == np.float32 and probs.min() >= detector.min_confidence
    assert boxes.shape == (1, 4) and landmarks.shape == (1, 5, 2)
    assert np.linalg.norm(centres(boxes)[0] - first_centre) < 6
    # Searched in a square around the first face only (reaching past the left edge): boxes in frame pixels.
    side = round(max(boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1]) * 2.5)
    corner = np.round(centres(boxes)[0] - side / 2).astype(np.int64)
    ((region_boxes, _, region_landmarks),) = detector.detect(
        frames[10:11], [(*corner, *(corner + side))], region_scale=2.5
    )
    assert len(region_boxes) == 1
    np.testing.assert_allclose(region_boxes, boxes, atol=4)
    np.testing.assert_allclose(region_landmarks, landmarks, atol=4)


def test_detection_leaves_the_thread_count_as_it_was(detector, three_threads):
    frames, _ = two_faces_frames(2)
    assert detector.num_threads == 1
    detector.detect(frames)
    assert torch.get_num_threads() == three_threads


def test_torch_threads_is_scoped_even_on_errors(three_threads):
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == three_threads
    with pytest.raises(RuntimeError), torch_threads(2):
        assert torch.get_num_threads() == 2
        raise RuntimeError("inside")
    assert torch.get_num_threads() == three_threads
    with torch_threads(None):
        assert torch.get_num_threads() == three_threads


@pytest.mark.parametrize("num_threads", [1, 2])
def test_frames_go_through_the_cascade_a_few_at_a_time_with_the_same_detections(detector, num_threads, three_threads):
    frames, _ = two_faces_frames(10, appear_at=4)
    one_by_one = MtcnnDetector(batch_size=1).detect(frames)
    batched = MtcnnDetector(num_threads=num_threads)
    assert batched.batch_size == 4
    # A list of frames (views, not copied) is taken like an array.
    found = batched.detect(list(frames))
    assert torch.get_num_threads() == three_threads  # left as it was, threads or not
    assert [len(boxes) for boxes, _, _ in found] == [1] * 4 + [2] * 6
    # The same detections up to float rounding: measured 6e-5 pixels at most (sums in another batch shape).
    for (boxes, probs, landmarks), (boxes_1, probs_1, landmarks_1) in zip(found, one_by_one):
        np.testing.assert_allclose(boxes, boxes_1, atol=1e-3)
        np.testing.assert_allclose(probs, probs_1, atol=1e-5)
        np.testing.assert_allclose(landmarks, landmarks_1, atol=1e-3)
    with pytest.raises(ValueError, match="batch_size"):
        MtcnnDetector(batch_size=0)


def test_candidates_are_ranked_within_their_image_in_the_order_given():
    from marlin_transformers.video.face_detection import rank_within_images

    generator = torch.Generator().manual_seed(0)
    for size in (1, 7, 300):
        image_indices = torch.randint(0, 9, (size,), generator=generator)
        seen = {}
        expected = []
        for image in image_indices.tolist():  # the plain loop: how many of its image came before
            expected.append(seen.get(image, 0))
            seen[image] = expected[-1] + 1
        assert rank_within_images(image_indices).tolist() == expected
    assert rank_within_images(torch.tensor([3, 3, 0, 3, 0])).tolist() == [0, 1, 0, 2, 1]
