"""One MTCNN for several processes: their frames searched together, in batches across videos.

With a GPU encoder, `marlin extract` decodes, tracks and crops in many data loader workers at once. Each worker
running its own MTCNN on the GPU would keep its own CUDA context and send the GPU batches of 1 to 4 small images, a
few hundred tiny kernels each. Instead `DetectionServer` starts one process with the detector on the device; every
worker gets a `DetectionClient` (an `MtcnnDetector` in all but where the cascade runs) on a pipe of its own. The
server waits on all the pipes at once, takes every request that is ready, and runs the frames searched the same way
(same size, same smallest face) through the cascade together, `max_batch` at a time.

What stays in the clients: choosing the regions, resizing each frame or region to the size searched (the CPU work,
spread over the workers), and mapping the boxes back to frame pixels. A frame's detections do not depend on the frames
beside it in a batch but for float rounding (boxes within 3.1e-5 pixels between batches of 1 and 4 on a CPU;
tests/test_shared_detection.py allows 1e-3).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from collections import defaultdict
from multiprocessing.connection import Connection, wait

import numpy as np

from ..exceptions import MarlinError
from ..jobs import error_text
from .face_detection import Detections, MtcnnDetector

# Frames a pass through the cascade on the server: every worker's request of a batch at once on a GPU (16 workers of
# 4 frames). Not yet measured on a GPU (tests/benchmarks/run_gpu.py prints the feed with and without the server).
SERVER_BATCH_FRAMES = 64


class DetectionClient(MtcnnDetector):
    """An `MtcnnDetector` whose cascade runs in a `DetectionServer`'s process, at the other end of `connection`.

    Args:
        connection: this client's end of a pipe to the server; one client (one process) per pipe.
        options: `MtcnnDetector`'s arguments, the server's detector's (`MtcnnDetector.options`).
    """

    def __init__(self, connection: Connection, **options):
        super().__init__(**options)
        self.connection = connection

    def load(self):
        """Nothing: MTCNN lives in the server."""
        return None

    def _search(self, searched, num_frames: int, min_face_size: float, max_per_image: int | None):
        """All the frames of one `detect` call in one request: the server batches them with other clients'."""
        if not num_frames:
            return []
        try:
            self.connection.send((searched(range(num_frames)), min_face_size, max_per_image))
            reply = self.connection.recv()
        except (EOFError, OSError):
            raise MarlinError(
                "face detection stopped: the process detecting for the workers ended; run again to resume, or with "
                "--num-workers 0 to detect in the main process."
            ) from None
        if isinstance(reply, str):  # the cascade failed on the server: its error line
            raise MarlinError(f"face detection failed: {reply}")
        return reply


def serve_detections(
    connections: list[Connection], detector: MtcnnDetector, max_batch: int = SERVER_BATCH_FRAMES
) -> None:
    """The server's loop: answer each client's request with its frames' `Detections`, until every client's pipe
    has closed. Requests that are ready together and searched alike go through the cascade together.

    Args:
        connections: the server's end of each client's pipe.
        detector: runs the cascade (on its device).
        max_batch: frames a pass through the cascade.
    """
    live = list(connections)
    while live:
        groups = defaultdict(list)  # (searched size, smallest face, candidates kept) -> [(connection, images)]
        for connection in wait(live):
            try:
                images, min_face_size, max_per_image = connection.recv()
            except (EOFError, OSError):  # that client has gone
                live.remove(connection)
                continue
            groups[images.shape[1:], min_face_size, max_per_image].append((connection, images))
        for (_, min_face_size, max_per_image), requests in groups.items():
            _answer(detector, requests, min_face_size, max_per_image, max_batch)


def _server_process(connections: list[Connection], options: dict, max_batch: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle; it closes the pipes
    detector = MtcnnDetector(**options)
    detector.load()  # while the clients start, not on their first request (3.5 s from spawn to loaded, 2 EPYC cores)
    serve_detections(connections, detector, max_batch)


def _answer(detector: MtcnnDetector, requests, min_face_size: float, max_per_image: int | None, max_batch: int):
    """Run the requests' frames through the cascade together and send each client its share, or the error line."""
    images = np.concatenate([images for _, images in requests])  # (n, h, w, 3) uint8
    try:
        found: list[Detections] | str = [
            detections
            for start in range(0, len(images), max_batch)
            for detections in detector.cascade(images[start : start + max_batch], min_face_size, max_per_image)
        ]
    except Exception as error:  # e.g. out of GPU memory: the clients fail their videos with it, the server goes on
        found = error_text(error)
    start = 0
    for connection, mine in requests:
        reply = found if isinstance(found, str) else found[start : start + len(mine)]
        start += len(mine)
        with contextlib.suppress(OSError):  # a client that died meanwhile
            connection.send(reply)


class DetectionServer:
    """A process running `detector`'s MTCNN (on its device) for `num_clients` client processes.

    Give `client_ends[i]` to the i-th client process (`DetectionClient(client_ends[i], **detector.options)`), start
    them, then `release_clients()`: the server ends by itself once every client process has closed its end. Leaving
    the `with` block waits for that, and stops the server if it has not ended.
    """

    def __init__(self, detector: MtcnnDetector, num_clients: int, max_batch: int = SERVER_BATCH_FRAMES):
        context = multiprocessing.get_context("spawn")  # the server may use CUDA, which a forked process cannot
        pipes = [context.Pipe() for _ in range(num_clients)]
        self.client_ends = [client for client, _ in pipes]
        server_ends = [server for _, server in pipes]
        self.process = context.Process(
            target=_server_process,
            args=(server_ends, detector.options, max_batch),
            name="marlin-face-detection",
            daemon=True,
        )
        self.process.start()
        for end in server_ends:  # the server holds them now
            end.close()

    def release_clients(self) -> None:
        """Close this process's copies of the client ends (once the client processes have their own)."""
        for end in self.client_ends:
            end.close()

    def __enter__(self) -> DetectionServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release_clients()
        self.process.join(timeout=10)  # ends once the clients have
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
