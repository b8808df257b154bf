"""Prepare face videos for pretraining as the paper did: track, crop to 224, five landmarks, face-parsing maps.

`marlin prepare-ytf` (YouTube Faces frame folders) and `marlin prepare-faces` (any face videos) run `prepare_corpus`,
which writes the folder `data.prepared_faces` describes: per video one clip file and one small array file, not a file
per frame per artefact. Per video (`VideoPreparer`):

1. frames are read in chunks (`video.decoding`: a video file, or a frame folder in `--frame-order`);
2. `video.face_tracking.FaceTracker` follows one face (MTCNN, boxes interpolated over missed frames);
3. every frame is cut around it: `crop_style="tracker"` is the tracker's square (side max(w, h), centred on the
   smoothed box); `"reference"` the paper code's (side `2 * int(max(w, h) / 2)` around each detector box, no
   smoothing, boxes of frames without a detection interpolated between their neighbours'), zero-padded outside the
   frame, resized to 224 (`video.cropping`);
4. the crops are parsed into LaPa maps by `face_parsing.LandmarkFaceParser`, or `FarlFaceParser` (the paper's) when
   its model file is given;
5. the crops are written as one H.264 clip (`video.writing`, atomic), the rest as one compressed `.npz` (atomic);
   then the video's manifest line.

The job is `marlin extract`'s (`extraction.job` helpers): records bound to the input (path, size, mtime; for a frame
folder also its frame count and bytes) and to a fingerprint of the settings, so a re-run skips exactly the videos
done from the same input with the same settings and a folder made with other settings is refused; one run per
folder (a lock); what a killed run left half-written is removed; a video that fails gets one error line and the run
goes on. Videos are spread over `num_workers` processes, and under `torchrun` / `accelerate launch` over the
processes by rank first (each rank writes `manifest.rank<r>.jsonl`, merged into `manifest.jsonl` by the main process
at the end of the run, or at the start of the next if the run was killed).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..constants import MARLIN_CROP_SIZE
from ..data.face_videos import FaceVideo
from ..data.prepared_faces import (
    INFO_FILE,
    MANIFEST,
    SPLIT_CSV,
    SPLIT_FILE,
    annotations_path,
    clip_path,
    is_prepared_record,
    read_prepared_records,
    write_text_atomic,
)
from ..exceptions import DatasetError, MarlinError
from ..extraction.job import JobSummary, input_identity, model_identity, settings_fingerprint
from ..records import (
    OutputWriteError,
    append_lines,
    lock_folder,
    merge_manifest_shards,
    repair_torn_tail,
    save_arrays_atomic,
)
from ..video.cropping import FaceCrops, FaceTrack, crop_track, reference_crop_boxes
from ..video.decoding import FRAME_ORDERS, frame_files, frame_rate
from ..video.face_tracking import FaceTracker, iter_face_windows
from ..video.windows import VideoWindow, iter_frame_chunks

CROP_STYLES = ("tracker", "reference")
# YouTube Faces' frame folders state no frame rate; its videos come from YouTube, mostly 24-30 frames per second.
FRAME_FOLDER_FPS = 25.0


@dataclass(frozen=True)
class PreparationSettings:
    """How videos are prepared (everything but `chunk_frames` and `num_threads` is bound to the outputs).

    Attributes:
        crop_style: "tracker" or "reference" (see the module docstring).
        frame_order: frame folders only, "numeric" or "reference" (`video.decoding.FRAME_ORDERS`).
        lossless: clips as lossless RGB H.264 (about 5-10x larger) instead of H.264 at `crf`.
        crf: H.264 quality of the clips (18: visually lossless).
        frame_folder_fps: the rate stored for frame folders, which state none.
        farl_model: the FaRL LaPa TorchScript file for the paper's parsing; None: `LandmarkFaceParser`.
        crop_size: side of the crops, pixels.
        chunk_frames: frames read, tracked and parsed at a time (bounds memory).
        num_threads: torch threads per worker process (None: torch's default).
    """

    crop_style: str = "tracker"
    frame_order: str = "numeric"
    lossless: bool = False
    crf: int = 18
    frame_folder_fps: float = FRAME_FOLDER_FPS
    farl_model: str | None = None
    crop_size: int = MARLIN_CROP_SIZE
    chunk_frames: int = 32
    num_threads: int | None = None

    def __post_init__(self):
        if self.crop_style not in CROP_STYLES:
            raise DatasetError(f"crop style {self.crop_style!r}: use one of {', '.join(CROP_STYLES)}.")
        if self.frame_order not in FRAME_ORDERS:
            raise DatasetError(f"frame order {self.frame_order!r}: use one of {', '.join(FRAME_ORDERS)}.")

    def bound(self) -> dict:
        """The settings outputs are bound to (the parser model by identity, not by path alone)."""
        fields = asdict(self)
        del fields["chunk_frames"], fields["num_threads"]
        fields["farl_model"] = None if self.farl_model is None else model_identity(self.farl_model)
        return fields


class ReferenceCropTracker(FaceTracker):
    """A `FaceTracker` cutting the paper code's crops around each detector box, unsmoothed (`reference_crop_boxes`)."""

    def __init__(self, **kwargs):
        super().__init__(smoothing=0.0, **kwargs)

    def crop(self, frames: np.ndarray, track: FaceTrack) -> FaceCrops:
        return crop_track(frames, track, crop_size=self.crop_size, crop_boxes=reference_crop_boxes(track.boxes))


def source_identity(source: Path) -> dict | None:
    """`input_identity`, and for a frame folder its number of files and their total size (a folder's own mtime does
    not change when a frame is rewritten in place)."""
    identity = input_identity(source)
    if identity is not None and source.is_dir():
        sizes = [p.stat().st_size for p in source.iterdir() if p.is_file()]
        identity.update(files=len(sizes), bytes=sum(sizes))
    return identity


def iter_source_windows(
    source: Path, frame_order: str, chunk_frames: int, frame_folder_fps: float
) -> tuple[float, list[str] | None, Iterator[VideoWindow]]:
    """(fps, frame file names or None, consecutive chunks of every frame as `VideoWindow`s) of a video or frame folder
    (`video.windows.iter_frame_chunks`).

    Raises:
        VideoError: (while iterating) an unreadable video or image.
    """
    windows = iter_frame_chunks(source, chunk_frames, frame_order, frame_folder_fps)
    if source.is_dir():
        files = frame_files(source, frame_order)
        if not files:
            raise DatasetError(f"{source}: folder without frame images; remove it or add its frames.")
        return frame_folder_fps, [f.name for f in files], windows
    return float(frame_rate(source)), None, windows


class VideoPreparer:
    """Prepares one video at a time into a prepared folder (see the module docstring); holds the tracker and parser.

    Args:
        settings: how.
        detector: a face detector for the tracker (default: MTCNN, loaded on first use).
    """

    def __init__(self, settings: PreparationSettings, detector=None):
        from .face_parsing import FarlFaceParser, LandmarkFaceParser

        self.settings = settings
        tracker_class = ReferenceCropTracker if settings.crop_style == "reference" else FaceTracker
        self.tracker = tracker_class(detector=detector, crop_size=settings.crop_size)
        self.parser = FarlFaceParser(settings.farl_model) if settings.farl_model else LandmarkFaceParser()

    def __call__(self, video: FaceVideo, out_dir: str | os.PathLike) -> dict:
        """Write `clips/<id>.mp4` and `annotations/<id>.npz`; returns the record's fields (paths relative to
        `out_dir`, frame count, rate, detected fraction).

        Raises:
            VideoError, NoFaceError, DatasetError: the video cannot be read or shows no face.
            OutputWriteError: a file could not be written whole.
        """
        import torch

        from ..video.writing import write_video

        settings = self.settings
        out_dir = Path(out_dir)
        fps, frame_names, windows = iter_source_windows(
            video.source, settings.frame_order, settings.chunk_frames, settings.frame_folder_fps
        )
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("landmarks", "parsing", "frame_indices", "detected")}
        parts["crop_boxes"] = []

        def crops() -> Iterator[np.ndarray]:
            for window, faces in iter_face_windows(windows, self.tracker, source=video.source):
                landmarks = faces.crop_landmarks
                maps = self.parser(torch.from_numpy(faces.crops), torch.as_tensor(landmarks, dtype=torch.float32))
                parts["landmarks"].append(landmarks.astype(np.float32))
                parts["parsing"].append(np.asarray(maps, dtype=np.uint8))
                parts["frame_indices"].append(np.asarray(window.frame_indices, dtype=np.int64))
                parts["detected"].append(faces.detected)
                parts["crop_boxes"].append(faces.crop_boxes.astype(np.int64))
                yield from faces.crops

        clip = clip_path(out_dir, video.video_id)
        annotations = annotations_path(out_dir, video.video_id)
        annotations.parent.mkdir(parents=True, exist_ok=True)
        try:
            num_frames = write_video(clip, crops(), fps, crf=settings.crf, lossless=settings.lossless)
        except OSError as error:
            raise OutputWriteError(f"{clip}: cannot write ({error.strerror}); free space and run again.") from None
        arrays = {name: np.concatenate(values) for name, values in parts.items()}
        arrays["fps"] = np.float64(fps)
        if frame_names is not None:
            arrays["frame_names"] = np.asarray([frame_names[i] for i in arrays["frame_indices"]])
        save_arrays_atomic(annotations, arrays, compressed=True)
        return {
            "clip": clip.relative_to(out_dir).as_posix(),
            "annotations": annotations.relative_to(out_dir).as_posix(),
            "num_frames": num_frames,
            "fps": fps,
            "detected_fraction": round(float(arrays["detected"].mean()), 4),
        }


# One preparer per worker process, made by `_start_worker` (the pool's initializer).
_worker_preparer: VideoPreparer | None = None


def _start_worker(settings: PreparationSettings) -> None:
    global _worker_preparer
    if settings.num_threads:
        import torch

        torch.set_num_threads(settings.num_threads)
    _worker_preparer = VideoPreparer(settings)


def _prepare_in_worker(video: FaceVideo, out_dir: str) -> dict:
    """The record fields of one video, or {"error": line}: every failure is reported, never raised."""
    try:
        return _worker_preparer(video, out_dir)
    except OutputWriteError:
        raise  # a full disk stops the run
    except Exception as error:  # one bad video never stops the run
        message = str(error) if isinstance(error, MarlinError) else f"{type(error).__name__}: {error}"
        message = " ".join(message.split())
        return {"error": message if str(video.source) in message else f"{video.source}: {message}"}


def remove_stale_outputs(out_dir: Path) -> int:
    """Remove the hidden partial files a killed run left under `out_dir` (called holding the folder's lock)."""
    stale = [p for p in out_dir.rglob(".*.partial*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def prepare_corpus(
    videos: Sequence[FaceVideo],
    out_dir: str | os.PathLike,
    settings: PreparationSettings,
    split: dict[str, list[str]],
    split_info: dict,
    name: str = "face_videos",
    num_workers: int = 1,
    show_progress: bool = True,
    command: str = "marlin prepare-faces",
) -> JobSummary:
    """Prepare every video not done yet into `out_dir`, write the split, and return the counts.

    Args:
        videos: the corpus (`data.face_videos.list_face_videos`, `data.youtube_faces.ytf_videos`).
        split: {"train": ids, "validation": ids}; ids of no listed video are ignored, videos of neither split are
            prepared and recorded in split.json as `left_out`.
        split_info: how the split was made (method, seed, files), kept in split.json.
        name: "youtube_faces" or "face_videos": the builder and the dataset card follow it.
        num_workers: processes preparing videos at once (each with its own MTCNN and parser).
        command: names the command in messages.

    Raises:
        DatasetError: `out_dir` holds videos prepared with other settings, or cannot be written.
        OutputWriteError: the disk is full (what is done is kept).
    """
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    state = PartialState(cpu=not torch.cuda.is_available())
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatasetError(f"{out_dir}: cannot make this output folder ({error.strerror}); pass another.") from None
    bound = settings.bound()
    fingerprint = settings_fingerprint(bound)
    known = {video.video_id for video in videos}
    listed = {name_: [i for i in ids if i in known] for name_, ids in split.items()}
    in_split = set().union(*listed.values())
    summary = JobSummary()
    with lock_folder(out_dir, command) if state.is_main_process else contextlib.nullcontext():
        if state.is_main_process:  # holding the lock: tidy what a killed run left, records stranded in shards too
            repair_torn_tail(out_dir / MANIFEST, is_prepared_record)
            merge_manifest_shards(out_dir, is_prepared_record)
            remove_stale_outputs(out_dir)
        state.wait_for_everyone()
        previous = read_prepared_records(out_dir)
        other = [r for r in previous.values() if r.get("status") == "ok" and r.get("fingerprint") != fingerprint]
        if other:
            before = other[0].get("settings") if isinstance(other[0].get("settings"), dict) else {}
            changed = ", ".join(sorted(k for k in bound if before.get(k) != bound[k])) or "unrecorded"
            raise DatasetError(
                f"{out_dir}: holds videos prepared with other settings ({changed}); prepare into another folder."
            )
        if state.is_main_process:
            info = {"name": name, "settings": bound}
            write_text_atomic(out_dir / INFO_FILE, _dumps(info))
            left_out = sorted(known - in_split)
            write_text_atomic(out_dir / SPLIT_FILE, _dumps({**split_info, **listed, "left_out": left_out}))
        todo = []
        for video in videos[state.process_index :: state.num_processes]:
            record = previous.get(video.video_id)
            done = (
                record is not None
                and record.get("status") == "ok"
                and record.get("fingerprint") == fingerprint
                and record.get("identity") == source_identity(video.source)
                and (out_dir / record["clip"]).is_file()
                and (out_dir / record["annotations"]).is_file()
            )
            if done:
                summary.skipped += 1
            else:
                todo.append(video)
        manifest = out_dir / (MANIFEST if state.num_processes == 1 else f"manifest.rank{state.process_index}.jsonl")
        label = f"[{state.process_index}] " if state.num_processes > 1 else ""
        bar = tqdm(total=len(todo), desc=f"{label}videos", unit="video", disable=not show_progress)
        started = {}

        def finish(video: FaceVideo, result: dict) -> None:
            record = {
                "input": str(video.source),
                "video_id": video.video_id,
                "person": video.person,
                "status": "error" if "error" in result else "ok",
                "error": result.get("error"),
                **{k: v for k, v in result.items() if k != "error"},
                "identity": source_identity(video.source),
                "fingerprint": fingerprint,
                "settings": bound,
                "seconds": round(time.perf_counter() - started[video.video_id], 3),
            }
            if "error" in result:
                summary.failed += 1
                tqdm.write(f"{command}: {result['error']}", file=sys.stderr)
            else:
                summary.done += 1
            append_lines(manifest, [_dumps(record, indent=None)])
            bar.update(1)

        if num_workers <= 1 or len(todo) <= 1:
            _start_worker(PreparationSettings(**{**asdict(settings), "num_threads": None}))
            for video in todo:
                started[video.video_id] = time.perf_counter()
                finish(video, _prepare_in_worker(video, str(out_dir)))
        elif todo:
            import multiprocessing

            threads = settings.num_threads or max(1, (os.cpu_count() or 1) // num_workers)
            worker_settings = PreparationSettings(**{**asdict(settings), "num_threads": threads})
            with ProcessPoolExecutor(
                num_workers, multiprocessing.get_context("spawn"), _start_worker, (worker_settings,)
            ) as pool:
                futures = {}
                for video in todo:
                    started[video.video_id] = time.perf_counter()
                    futures[pool.submit(_prepare_in_worker, video, str(out_dir))] = video
                for future in as_completed(futures):
                    finish(futures[future], future.result())
        bar.close()
        if state.num_processes > 1:
            summary = summary.gathered(state, out_dir, is_prepared_record)
        if state.is_main_process:
            write_split_csvs(out_dir, listed)
    return summary


def write_split_csvs(out_dir: Path, split: dict[str, list[str]]) -> None:
    """`train_set.csv` / `val_set.csv` in the paper's format (`path,len`) for the prepared videos of each split."""
    records = read_prepared_records(out_dir)
    for name, ids in split.items():
        rows = [f"{i},{records[i]['num_frames']}" for i in ids if records.get(i, {}).get("status") == "ok"]
        write_text_atomic(out_dir / SPLIT_CSV[name], "path,len\n" + "".join(row + "\n" for row in rows))


def _dumps(value, indent: int | None = 1) -> str:
    import json

    return json.dumps(value, indent=indent, default=str)
