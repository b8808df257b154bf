"""`video.shared_detection`: one MTCNN serving several clients, their frames searched together."""

import multiprocessing
import os
import signal
import threading

import numpy as np
import pytest

from marlin_transformers.exceptions import MarlinError
from marlin_transformers.video import MtcnnDetector
from marlin_transformers.video.shared_detection import DetectionClient, DetectionServer, serve_detections
from video_factory import moving_face_frames, two_faces_frames

# A frame's boxes move with the other frames in its batch by float rounding only: 1.5e-5 to 3.1e-5 pixels between
# batches of 1 and of 4 regions (2 cores, fp32); 1e-3 leaves that spread 30 times over and still fails a box that
# moved by any part of a pixel.
BATCH_ROUNDING_PIXELS = 1e-3
REGION = (0, 30, 160, 190)  # around the first face of `two_faces_frames`, reaching past the left edge


@pytest.fixture(scope="module")
def frames():
    frames, _ = two_faces_frames(8, appear_at=4)  # (8, 240, 400, 3): one face, then two
    return frames


@pytest.fixture(scope="module")
def local():
    return MtcnnDetector()


def assert_same_detections(found, expected):
    assert len(found) == len(expected)
    for (boxes, probs, landmarks), (want_boxes, want_probs, want_landmarks) in zip(found, expected):
        assert boxes.shape == want_boxes.shape and boxes.dtype == np.float32
        np.testing.assert_allclose(boxes, want_boxes, atol=BATCH_ROUNDING_PIXELS, rtol=0)
        np.testing.assert_allclose(landmarks, want_landmarks, atol=BATCH_ROUNDING_PIXELS, rtol=0)
        np.testing.assert_allclose(probs, want_probs, atol=1e-5, rtol=0)


class RecordingDetector(MtcnnDetector):
    """An MtcnnDetector that records how many images each pass through its cascade took."""

    def __init__(self, **options):
        super().__init__(**options)
        self.passes = []

    def cascade(self, images, *args):
        self.passes.append(len(images))
        return super().cascade(images, *args)


@pytest.fixture
def threaded_server():
    """serve_detections on a thread of this process for two clients: (clients, the server's ends, start(), the
    server's detector). The server ends, and the thread with it, once both clients have closed."""
    pipes = [multiprocessing.Pipe() for _ in range(2)]
    server_ends = [end for _, end in pipes]
    detector = RecordingDetector()
    clients = [DetectionClient(client, **detector.options) for client, _ in pipes]
    server = threading.Thread(target=serve_detections, args=(server_ends, detector), daemon=True)
    yield clients, server_ends, server.start, detector
    for client in clients:
        client.connection.close()
    server.join(timeout=60)
    assert not server.is_alive()  # it ended once every client had gone


def test_requests_ready_together_are_searched_in_one_pass(threaded_server, frames, local):
    clients, server_ends, start_server, server = threaded_server
    results = [None, None]

    def ask(k):  # client k: frames 4k..4k+3, searched in the region
        results[k] = clients[k].detect(frames[4 * k : 4 * k + 4], [REGION] * 4, region_scale=2.5)

    askers = [threading.Thread(target=ask, args=(k,)) for k in range(2)]
    for asker in askers:
        asker.start()
    assert all(end.poll(60) for end in server_ends)  # both requests wait in their pipes
    start_server()
    for asker in askers:
        asker.join(timeout=60)
    assert server.passes == [8]  # one pass over both clients' frames
    for k in range(2):
        assert_same_detections(results[k], local.detect(frames[4 * k : 4 * k + 4], [REGION] * 4, region_scale=2.5))
    assert [len(boxes) for boxes, _, _ in results[1]] == [1] * 4  # the first face, in frame pixels
    # Whole frames are searched at another size than regions: a pass of their own. Empty calls ask nothing.
    assert_same_detections(clients[0].detect(frames[3:6]), local.detect(frames[3:6]))
    assert [len(boxes) for boxes, _, _ in clients[0].detect(frames[3:6])] == [1, 2, 2]
    assert clients[1].detect(frames[:0]) == []
    assert server.passes == [8, 3, 3]


def test_a_failing_pass_fails_its_clients_with_one_line_and_the_server_goes_on(threaded_server, frames, monkeypatch):
    clients, _, start_server, server = threaded_server
    real = server.cascade

    def failing_once(images, *args):
        if not server.passes:
            server.passes.append(len(images))
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(images, *args)

    monkeypatch.setattr(server, "cascade", failing_once)
    start_server()
    with pytest.raises(MarlinError, match=r"^face detection failed: RuntimeError: CUDA out of memory\."):
        clients[0].detect(frames[:2])
    assert [len(boxes) for boxes, _, _ in clients[1].detect(frames[:2])] == [1, 1]
    assert server.passes == [2, 2]


def test_the_server_process_ends_with_its_clients_and_a_dead_server_is_one_line(frames, local):
    with DetectionServer(local, num_clients=2) as server:
        clients = [DetectionClient(end, **local.options) for end in server.client_ends]
        assert_same_detections(clients[0].detect(frames[:2]), local.detect(frames[:2]))
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.join(timeout=60)
        stopped = r"^face detection stopped: .* ended; run again to resume, or with --num-workers 0 "
        with pytest.raises(MarlinError, match=stopped):
            clients[1].detect(frames[:2])

    with DetectionServer(local, num_clients=1) as server:
        server.release_clients()  # no client holds an end any more
        server.process.join(timeout=60)
        assert server.process.exitcode == 0


def test_moving_face_regions_equal_the_local_detectors_through_a_server_process(local):
    moving, _ = moving_face_frames(6, height=120, width=160, scale=0.35)
    regions = [(10, 0, 130, 120)] * 6
    with DetectionServer(local, num_clients=1) as server:
        client = DetectionClient(server.client_ends[0], **local.options)
        assert_same_detections(client.detect(moving, regions, region_scale=2.5), local.detect(moving, regions, 2.5))


class NoLocalMtcnn(MtcnnDetector):
    """A detector that must not run here: what a worker holds where the server detects for it."""

    def load(self):
        raise AssertionError("a worker loaded its own MTCNN")


def test_spawned_workers_take_their_pipe_ends_and_crop_as_workers_detecting_alone(tmp_path):
    """Spawned, as the data loader's workers are beside a GPU encoder (forked ones: tests/test_extraction.py)."""
    from types import SimpleNamespace

    import torch

    from marlin_transformers.constants import SAMPLE_RATE, STRIDE
    from marlin_transformers.extraction.pipeline import VideoWindows, window_loader
    from marlin_transformers.video.face_tracking import FaceTracker
    from marlin_transformers.video_processing_marlin import MarlinVideoProcessor
    from video_factory import encode_video

    paths = [
        encode_video(tmp_path / f"{n}.mp4", moving_face_frames(n, height=120, width=160, scale=0.35)[0])
        for n in (40, 34)
    ]
    source = SimpleNamespace(  # what VideoWindows takes of an extractor, on a device the workers are spawned for
        window_options=dict(num_frames=16, sample_rate=SAMPLE_RATE, stride=STRIDE, stride_seconds=None),
        tracker=FaceTracker(num_threads=1),
        crop_face=True,
        on_no_face="error",
        processor=MarlinVideoProcessor(),
        settings={"image_size": 224},
        device=torch.device("meta"),
    )

    def windows(loader) -> dict:
        found = {}
        for index, record, pixel_values, error, _ in loader:
            assert error is None
            if record is not None:
                found[index, record["start_time"]] = pixel_values
        return found

    alone = windows(VideoWindows(paths, source))  # detecting in this process
    source.tracker = FaceTracker(NoLocalMtcnn(num_threads=1))  # the workers' copies detect only through the server
    with DetectionServer(source.tracker.detector, num_clients=2) as server:
        loader = window_loader(source, paths, num_workers=2, batch_size=4, server=server)
        assert loader.multiprocessing_context.get_start_method() == "spawn"
        shared = windows(iter(loader))
    assert shared.keys() == alone.keys() and len(alone) == 4
    for key, pixel_values in alone.items():
        torch.testing.assert_close(shared[key], pixel_values, rtol=0, atol=0)
