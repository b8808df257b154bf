"""Videos -> features in input order: one video at a time, or pipelined over worker processes.

Serial (`num_workers=0`): the extractor decodes, crops and encodes one video after another, batching each video's
windows on its own. Pipelined (`num_workers=N`): N `DataLoader` worker processes decode, track and crop the videos
(video i goes to worker i mod N) and run the processor, yielding one window at a time (at most `prefetch_factor`
windows waiting per worker, about two batches in all, so memory stays bounded); the main process packs the windows of
consecutive videos into full batches for the model, and hands each video back, in input order, once all its windows
are encoded. Beside a GPU encoder the workers' face detection runs in one more process, on the GPU, which searches
the frames of every worker's videos together (`video.shared_detection`); on a CPU each worker detects its own.

On the CPU each window's features are those of the serial path to the last bit: the processor works on one clip at
a time, and the encoder's rows do not depend on which other windows share their batch (tests/test_extraction.py
checks it in fp32; a GPU's kernels, chosen by batch shape, need not promise it). A video that fails in a worker is
handed back with its error, the others go on.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..exceptions import MarlinError
from ..jobs import error_text, timed
from ..video.shared_detection import DetectionClient, DetectionServer
from .extractor import MarlinFeatureExtractor, VideoFeatures, iter_clips, non_finite_features

# Windows a second one data loader worker (one core) decodes, tracks, crops and processes: 2-core AMX Xeon, the six
# sample videos, `tests/benchmarks/bench_corpus.py --no-encoder` (docs/benchmarks.md).
FEED_WINDOWS_PER_WORKER = 6.0
# Windows a second a GPU encodes: ViT-B in bf16 at about 10 ms a clip on an A100 (transformers' VideoMAE docs).
GPU_WINDOWS_PER_SECOND = 100.0


def default_num_workers(device: str | torch.device | None = None) -> int:
    """Worker processes for `marlin extract` on this machine and `device` (None: CUDA where there is a GPU, else CPU).

    With a GPU encoder the cores do nothing else: enough workers to feed it, `GPU_WINDOWS_PER_SECOND` /
    `FEED_WINDOWS_PER_WORKER` (17), at most every usable core but the main process's. On a 16-core machine that is 15
    workers, about 90 windows a second: the feed then keeps up with a ViT-B bf16 encoder on a GPU within 10%. Those
    figures are for workers detecting faces on a CPU core each; beside a GPU they detect through one process on it
    (`video.shared_detection`), which no GPU has measured yet (tests/benchmarks/run_gpu.py prints the feed with
    detection on the CPU, on the GPU in each worker, and shared).

    On the CPU the encoder and the workers share the cores: min(4, usable cores - 1), none on one or two cores. On two
    cores the encoder's threads already fill the machine, and workers beside it slow its synchronizing threads down
    more than they save: on the 2-core EPYC with the bf16 encoder, 2 workers made a ViT-B `--crop-face` corpus 4-8%
    slower than none (54.3-55.1 s against 50.2-52.7 s) and a ViT-S one 6% slower (25.2 s against 23.8 s); on the
    2-core AMX Xeon, 1 worker against none: docs/benchmarks.md (tests/benchmarks/bench_corpus.py --num-workers 0 1).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type != "cpu":
        return max(1, min(cores - 1, math.ceil(GPU_WINDOWS_PER_SECOND / FEED_WINDOWS_PER_WORKER)))
    return 0 if cores <= 2 else min(4, cores - 1)


def prefetch_factor(num_workers: int, batch_size: int) -> int:
    """Windows each worker may have waiting: enough that two full batches are queued over all the workers (the
    encoder never waits for a batch while the workers are ahead), at least 2, the data loader's default. A window
    waits as float32 pixel values, 9.6 MB at 16 x 224 x 224: 2 x batch_size of them bound the memory."""
    return max(2, math.ceil(2 * batch_size / max(num_workers, 1)))


def file_size_limited() -> bool:
    """Whether this process runs under a file-size limit (`ulimit -f`, RLIMIT_FSIZE)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return False
    return resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY


@dataclass
class VideoOutcome:
    """One input's result: its features, or the error that failed it; `seconds` from its first window to its end."""

    path: Path
    result: VideoFeatures | None
    error: Exception | None
    seconds: float


def iter_outcomes(
    extractor,
    paths: list[Path],
    num_workers: int = 0,
    progress=None,
    private_files: tuple[int, ...] = (),
    shared_detection: bool | None = None,
) -> Iterator[VideoOutcome]:
    """A `VideoOutcome` per path, in order. `progress` (a tqdm bar) counts encoded windows.

    Pipelined only for a `MarlinFeatureExtractor` following one face (or none) per video and without a file-size limit
    (`ulimit -f`); otherwise serial.
    `private_files`: descriptors a forked worker must not keep open (the folder's lock: a worker outliving a killed
    run would otherwise hold it).
    `shared_detection`: pipelined with `crop_face`, the workers' face detection runs in one process on the
    extractor's device, batched across their videos (`video.shared_detection`), rather than in each worker; None
    (the default) does so where that device is not the CPU.
    """
    pipelined = num_workers > 0 and isinstance(extractor, MarlinFeatureExtractor) and not extractor.all_faces
    if pipelined and file_size_limited():  # workers hand windows over in /dev/shm files, which the limit cuts
        pipelined = False
    if pipelined:
        if shared_detection is None:
            shared_detection = extractor.device.type != "cpu"
        yield from _iter_pipelined(extractor, paths, num_workers, progress, private_files, shared_detection)
        return
    for path in paths:
        started = time.perf_counter()
        try:
            result, error = extractor(path, progress=progress), None
        except Exception as caught:  # one bad input never stops the job
            result, error = None, caught
        yield VideoOutcome(path, result, error, time.perf_counter() - started)


class VideoWindows(torch.utils.data.IterableDataset):
    """(video index, window record, pixel_values (frames, 3, H, W) float32, None, None) per window of the worker's
    videos, then (video index, None, None, error line or None, the video's seconds by stage) when it ends or fails.

    `detector_ends`: one pipe end per worker to a `video.shared_detection.DetectionServer`, which then detects the
    faces of every worker's videos; None: each worker detects its own.
    """

    def __init__(self, paths: list[Path], extractor: MarlinFeatureExtractor, detector_ends: list | None = None):
        self.paths = paths
        self.detector_ends = detector_ends
        # Only what makes the clips travels to the workers, not the model.
        self.window_options = extractor.window_options
        self.tracker = extractor.tracker if extractor.crop_face else None
        self.on_no_face = extractor.on_no_face
        self.processor = extractor.processor
        self.image_size = extractor.settings["image_size"]

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None and self.tracker is not None:
            if self.detector_ends is not None:
                options = self.tracker.detector.options
                self.tracker.detector = DetectionClient(self.detector_ends[worker], **options)
            self.tracker.detector.num_threads = 1  # the worker's own copy: the encoder fills the cores beside it
        for index in range(worker, len(self.paths), num_workers):
            timings = {}  # this video's seconds by stage, handed back with its end
            if self.tracker is not None:
                self.tracker.timings = timings
            clips = iter_clips(
                self.paths[index], self.window_options, self.tracker, self.on_no_face, self.image_size, timings
            )
            try:
                for record, frames in clips:
                    with timed(timings, "process"):
                        pixel_values = self.processor([frames], return_tensors="pt")["pixel_values_videos"][0]
                    yield index, record, pixel_values, None, None
            except Exception as error:  # the video's line; the worker goes on with its next video
                yield index, None, None, error_text(error), timings
            else:
                yield index, None, None, None, timings


@dataclass
class _Video:
    records: list[dict] = field(default_factory=list)
    features: list[torch.Tensor | None] = field(default_factory=list)
    pending: int = 0  # windows in the batch being packed
    ended: bool = False
    error: Exception | None = None
    started: float = 0.0
    handed_back: bool = False


def close_files(descriptors: tuple[int, ...], worker_id: int) -> None:
    """A forked worker's `worker_init_fn`: close its copies of the parent's `descriptors`."""
    for descriptor in descriptors:
        with contextlib.suppress(OSError):
            os.close(descriptor)


@contextlib.contextmanager
def running_workers(loader: torch.utils.data.DataLoader) -> Iterator:
    """The loader's iterator, its workers stopped when the block ends, not when the iterator is collected (until
    then torch's SIGCHLD handler still watches a worker that died, and raises from whatever the main process runs
    next). A worker killed meanwhile, whether seen by that handler (torch cleans up before its error leaves the
    shutdown) or as its half-sent window's broken connection (reset, or closed before a byte came: EOFError), is one
    `MarlinError` line."""
    windows = iter(loader)
    try:
        try:
            yield windows
        finally:
            windows._shutdown_workers()
    except (RuntimeError, ConnectionError, EOFError) as error:
        if isinstance(error, RuntimeError) and "DataLoader worker" not in str(error):
            raise
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        raise MarlinError(
            f"0 to decode in the main process, or run again to resume: a decoding worker died ({reason})",
            parameter="num_workers",
        ) from None


def window_loader(
    source: MarlinFeatureExtractor,
    paths: list[Path],
    num_workers: int,
    batch_size: int,
    private_files: tuple[int, ...] = (),
    server: DetectionServer | None = None,
) -> torch.utils.data.DataLoader:
    """The data loader of `VideoWindows` over `paths` in `num_workers` processes, for batches of `batch_size`: forked
    on a CPU, spawned where `source.device` is not (a forked worker cannot use CUDA, where its face detector would
    run without a `server`)."""
    forked = source.device.type == "cpu"
    return torch.utils.data.DataLoader(
        VideoWindows(paths, source, server.client_ends if server is not None else None),
        batch_size=None,
        num_workers=num_workers,
        prefetch_factor=prefetch_factor(num_workers, batch_size),
        multiprocessing_context=None if forked else "spawn",
        worker_init_fn=functools.partial(close_files, tuple(private_files)) if forked else None,
    )


@contextlib.contextmanager
def window_feed(
    source: MarlinFeatureExtractor,
    paths: list[Path],
    num_workers: int,
    batch_size: int,
    private_files: tuple[int, ...] = (),
    shared_detection: bool = False,
) -> Iterator:
    """`VideoWindows`' items over `paths` from `num_workers` running workers (`window_loader`, `running_workers`);
    with `shared_detection` and `source.crop_face`, their faces detected by one `DetectionServer` on `source`'s
    tracker's device. Workers and server are stopped when the block ends."""
    shared = shared_detection and source.crop_face
    with DetectionServer(source.tracker.detector, num_workers) if shared else contextlib.nullcontext() as server:
        loader = window_loader(source, paths, num_workers, batch_size, private_files, server)
        with running_workers(loader) as windows:
            if server is not None:
                server.release_clients()  # the workers hold their ends: the server ends once they have all gone
            yield windows


def _iter_pipelined(
    extractor: MarlinFeatureExtractor,
    paths: list[Path],
    num_workers: int,
    progress,
    private_files: tuple[int, ...],
    shared_detection: bool,
):
    videos = [_Video() for _ in paths]
    batch: list[tuple[int, int, torch.Tensor]] = []  # (video index, window position, pixel_values)
    next_out = 0

    def encode() -> None:
        try:
            features = extractor.extract_clips(torch.stack([pixel_values for _, _, pixel_values in batch]))
        except Exception as error:  # fails every video with a window in this batch
            for index, _, _ in batch:
                videos[index].error = videos[index].error or error
        else:
            for (index, position, _), feature in zip(batch, features):
                if not videos[index].handed_back:  # a video that failed meanwhile has gone
                    videos[index].features[position] = feature
        for index, _, _ in batch:
            videos[index].pending -= 1
        if progress is not None:
            progress.update(len(batch))
        batch.clear()

    def finished() -> Iterator[VideoOutcome]:
        nonlocal next_out
        while next_out < len(paths):
            video = videos[next_out]
            if not (video.ended and (video.error is not None or video.pending == 0)):
                return
            result, error = None, video.error
            if error is None:
                try:
                    features = torch.stack(video.features)  # (windows, hidden) or (windows, patches, hidden)
                    if not bool(features.isfinite().all()):
                        raise non_finite_features(paths[next_out], extractor.dtype)
                    result = VideoFeatures(features=features.numpy(), windows=video.records)
                except Exception as caught:
                    error = caught
            yield VideoOutcome(paths[next_out], result, error, time.perf_counter() - video.started)
            video.handed_back, video.records, video.features = True, [], []  # frees its features
            next_out += 1

    feed = window_feed(extractor, paths, num_workers, extractor.batch_size, private_files, shared_detection)
    with feed as windows:
        for index, record, pixel_values, error, timings in windows:
            video = videos[index]
            video.started = video.started or time.perf_counter()
            if record is None:
                for stage, seconds in timings.items():  # the workers' seconds, spent beside the encoder
                    extractor.timings[stage] = extractor.timings.get(stage, 0.0) + seconds
                video.ended = True
                video.error = MarlinError(error) if error is not None else video.error
            else:
                video.records.append(record)
                video.features.append(None)
                video.pending += 1
                batch.append((index, len(video.features) - 1, pixel_values))
                if len(batch) == extractor.batch_size:
                    encode()
            yield from finished()
    if batch:
        encode()
    yield from finished()
