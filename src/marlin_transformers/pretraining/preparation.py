"""Prepare face videos for pretraining as the paper did: track, crop to 224, five landmarks, face-parsing maps.

`marlin prepare-ytf` (YouTube Faces frame folders) and `marlin prepare-faces` (any face videos) run `prepare_corpus`,
which writes the folder `data.prepared_faces` describes: per video one clip file and one small array file, not a file
per frame per artefact. Per video (`FacePreparer.prepare`):

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

The job is a `jobs.run_job`, as `marlin extract` is: records bound to the input (path, size, mtime; for a frame
folder also its frame count and bytes) and to a fingerprint of the settings, so a re-run skips exactly the videos
done from the same input with the same settings and a folder made with other settings is refused; one run per
folder (a lock); what a killed run left half-written is removed; a video that fails gets one error line and the run
goes on. Videos are spread over `num_workers` processes, and under `torchrun` / `accelerate launch` over the
processes by rank first (each rank writes `manifest.rank<r>.jsonl`, merged into `manifest.jsonl` by the main process
at the end of the run, or at the start of the next if the run was killed).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..constants import MARLIN_CROP_SIZE
from ..data.face_videos import FaceVideo
from ..data.prepared_faces import (
    INFO_FILE,
    SPLIT_CSV,
    SPLIT_FILE,
    annotations_path,
    clip_path,
    is_prepared_record,
    read_prepared_records,
)
from ..data.youtube_faces import precomputed_label_maps
from ..exceptions import DatasetError
from ..jobs import Item, JobKind, JobSummary, Outcome, Shard, Work, each_item, error_text, model_identity, run_job
from ..records import OutputWriteError, save_arrays_atomic, write_text_atomic
from ..video.cropping import FaceCrops, FaceTrack, crop_track, reference_crop_boxes
from ..video.decoding import FRAME_ORDERS, count_frames, frame_files, frame_rate, resize_frames
from ..video.face_tracking import FaceTracker, iter_face_windows
from ..video.windows import VideoWindow, iter_frame_chunks

CROPS = ("auto", "always", "never")
CROP_STYLES = ("tracker", "reference")
# YouTube Faces' frame folders state no frame rate; its videos come from YouTube, mostly 24-30 frames per second.
FRAME_FOLDER_FPS = 25.0


@dataclass(frozen=True)
class PreparationSettings:
    """How videos are prepared (everything but `chunk_frames` and `num_threads` is bound to the outputs).

    Attributes:
        crop: "always" tracks and crops the face in every video; "never" takes the frames as face crops already
            (the reference's `crop_images_DB`): resized, not cut, parsed from the landmarks found on them or read from
            its `face_parsing_images_DB` maps (`precomputed_label_maps`); "auto" does so for frames square and
            `MARLIN_CROP_SIZE` or `crop_size` pixels.
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

    crop: str = "always"
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
        if self.crop not in CROPS:
            raise ValueError(f"crop must be 'auto', 'always' or 'never', got {self.crop!r}")
        if self.crop_style not in CROP_STYLES:
            raise DatasetError(f"crop style {self.crop_style!r}: use one of {', '.join(CROP_STYLES)}.")
        if self.frame_order not in FRAME_ORDERS:
            raise DatasetError(f"frame order {self.frame_order!r}: use one of {', '.join(FRAME_ORDERS)}.")

    def bound(self) -> dict:
        """The settings outputs are bound to (the parser model by identity, not by path alone)."""
        fields = asdict(self)
        del fields["chunk_frames"], fields["num_threads"]
        fields["farl_model"] = None if self.farl_model is None else model_identity(self.farl_model)
        if self.crop == "always":  # what every folder made before `crop` existed holds: they stay valid
            del fields["crop"]
        return fields


class ReferenceCropTracker(FaceTracker):
    """A `FaceTracker` cutting the paper code's crops around each detector box, unsmoothed (`reference_crop_boxes`)."""

    def __init__(self, **kwargs):
        super().__init__(smoothing=0.0, **kwargs)

    def crop(self, frames: np.ndarray, track: FaceTrack) -> FaceCrops:
        return crop_track(frames, track, crop_size=self.crop_size, crop_boxes=reference_crop_boxes(track.boxes))


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


class FacePreparer:
    """The one preparer: face crops (and LaPa maps) of one video at a time, in memory (`__call__`, for
    `clips.FaceClipDataset`), into the pretraining cache (`cache_video`) or into a prepared folder (`prepare`, for
    `prepare_corpus`; see the module docstring). Holds the tracker and the parser.

    Args:
        settings: how (crop side, `crop`, crop style, parser model).
        detector: a face detector for the tracker (default: MTCNN, loaded on first use).
        parse: `__call__` / `cache_video` also produce label maps (needed by the "fasking" and "fasking_opp"
            strategies). `prepare` always parses.
        face_parser: a `face_parsing.FaceParser`; default `FarlFaceParser` of `settings.farl_model` if given, else
            the built-in `LandmarkFaceParser`.
    """

    def __init__(
        self,
        settings: PreparationSettings | None = None,
        detector=None,
        *,
        parse: bool = True,
        face_parser=None,
    ):
        from .face_parsing import FarlFaceParser, LandmarkFaceParser

        self.settings = settings = settings if settings is not None else PreparationSettings()
        self.image_size = settings.crop_size
        self.crop = settings.crop
        self.parse = parse
        tracker_class = ReferenceCropTracker if settings.crop_style == "reference" else FaceTracker
        self.tracker = tracker_class(detector=detector, crop_size=settings.crop_size)
        if face_parser is None:
            face_parser = FarlFaceParser(settings.farl_model) if settings.farl_model else LandmarkFaceParser()
        self.face_parser = face_parser

    def is_cropped(self, height: int, width: int) -> bool:
        if self.crop != "auto":
            return self.crop == "never"
        return height == width and height in (MARLIN_CROP_SIZE, self.image_size)

    def reset(self) -> None:
        """Call before the frames of another video."""
        self.tracker.reset()

    def __call__(
        self, frames: np.ndarray, frame_indices: Sequence[int], label_maps: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Crop (and parse) the next frames of the current video.

        Args:
            frames: (T, H, W, 3) uint8 RGB, in video order after the frames of the previous call.
            frame_indices: (T,) their indices in the video.
            label_maps: (T, H, W) LaPa maps already made for these (already cropped) frames, e.g. by the
                reference's preprocessing (`precomputed_label_maps`): used, resized, instead of parsing.

        Returns:
            crops (T, image_size, image_size, 3) uint8 and label maps (T, image_size, image_size) uint8 (None when
            `parse` is off). Frames where no face is known get all-background maps (random masking there).
        """
        if not self.is_cropped(*frames.shape[1:3]):
            faces = self.tracker.track(frames, frame_indices)
        elif self.parse and label_maps is None:
            faces = self.cropped_faces(frames, frame_indices)
        else:
            return resize_frames(frames, self.image_size), self.resized_maps(label_maps) if self.parse else None
        return faces.crops, self.parsed(faces) if self.parse else None

    def parsed(self, faces: FaceCrops) -> np.ndarray:
        """(T, size, size) uint8 LaPa maps of face crops, from their landmarks (`face_parser`)."""
        import torch

        landmarks = torch.as_tensor(faces.crop_landmarks, dtype=torch.float32)
        return np.asarray(self.face_parser(torch.from_numpy(faces.crops), landmarks), dtype=np.uint8)

    def resized_maps(self, label_maps: np.ndarray) -> np.ndarray:
        """(T, size, size) uint8: LaPa maps made already (`precomputed_label_maps`), resized (nearest) to the crops."""
        return resize_frames(np.asarray(label_maps, np.uint8)[..., None], self.image_size, nearest=True)[..., 0]

    def cropped_faces(self, frames: np.ndarray, frame_indices: Sequence[int]) -> FaceCrops:
        """Frames that are face crops already (`is_cropped`), resized to the crop side, with the face the tracker
        finds on them (landmarks NaN, nothing detected, until one is found); each crop box is the whole frame."""
        count, height, width = frames.shape[:3]
        track = self.tracker.locate(frames, frame_indices)
        whole = np.tile(np.array([0, 0, width, height], np.int64), (count, 1))
        missing = np.full((count, 5, 2), np.nan, np.float32)
        landmarks = missing if track is None else track.landmarks
        scale = np.array([self.image_size / width, self.image_size / height])
        return FaceCrops(
            crops=resize_frames(frames, self.image_size),
            boxes=whole.astype(np.float32) if track is None else track.boxes,
            crop_boxes=whole,
            landmarks=landmarks,
            crop_landmarks=missing if track is None else (landmarks * scale).astype(np.float32),
            detected=np.zeros(count, bool) if track is None else track.detected,
            confidence=np.zeros(count, np.float32) if track is None else track.confidence,
        )

    def iter_faces(
        self, windows: Iterable[VideoWindow], source: Path
    ) -> Iterator[tuple[VideoWindow, FaceCrops, np.ndarray]]:
        """(window, its face crops, their (T, size, size) uint8 LaPa maps) of every window of one video: tracked and
        cut (`iter_face_windows`), or, for frames that are face crops already (`crop`), `cropped_faces` with the
        reference's saved maps where it has them.

        Raises:
            NoFaceError: no face in a video that is not cropped yet.
        """
        windows = iter(windows)
        first = next(windows, None)
        windows = itertools.chain([] if first is None else [first], windows)
        cropped = first is not None and self.is_cropped(*first.frames.shape[1:3])
        if cropped:
            self.reset()
            faces = ((window, self.cropped_faces(window.frames, window.frame_indices)) for window in windows)
        else:
            faces = iter_face_windows(windows, self.tracker, source=source)
        order = self.settings.frame_order
        for window, crops in faces:
            saved = precomputed_label_maps(source, window.frame_indices, order) if cropped else None
            yield window, crops, self.parsed(crops) if saved is None else self.resized_maps(saved)

    def cache_video(self, path: str | os.PathLike, cache_dir: str | os.PathLike, chunk_size: int = 32) -> Path:
        """Crop (and parse) every frame of a video once, into `cache_dir/<name>-<key>/` as `crops.npy` and
        `labels.npy` (what `clips.FaceClipDataset` reads, memory-mapped).

        The key hashes the video's path, size and modification time with the preparer's crop side, `crop`, parser and
        `parse`, so a changed video or setting gets a fresh entry; a finished entry is reused. Frames are processed
        `chunk_size` at a time, so memory stays bounded for long videos (the cache itself is uncompressed: frames *
        image_size**2 * 4 bytes).

        Returns:
            The entry's folder.
        """
        path = Path(path)
        stat = path.stat()
        parser_name = getattr(self.face_parser, "cache_name", type(self.face_parser).__name__)
        settings = [str(path.resolve()), stat.st_size, stat.st_mtime_ns, self.image_size, self.crop, parser_name]
        settings.append(self.parse)
        key = hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:12]
        entry = Path(cache_dir) / f"{path.stem}-{key}"
        if (entry / "done").exists():
            return entry
        entry.mkdir(parents=True, exist_ok=True)
        num_frames = count_frames(path)
        size = self.image_size
        crops = np.lib.format.open_memmap(entry / "crops.npy", "w+", np.uint8, (num_frames, size, size, 3))
        labels = None
        if self.parse:
            labels = np.lib.format.open_memmap(entry / "labels.npy", "w+", np.uint8, (num_frames, size, size))
        self.reset()
        written = 0
        for window in iter_frame_chunks(path, chunk_size, strict=False):
            indices = np.asarray(window.frame_indices)
            keep = indices < num_frames  # the frames counted, if decoding gives more
            if not keep.any():
                break
            chunk, indices = window.frames[keep], indices[keep]
            saved_maps = precomputed_label_maps(path, indices.tolist()) if self.parse else None
            chunk_crops, chunk_labels = self(chunk, indices.tolist(), saved_maps)
            crops[indices] = chunk_crops
            if labels is not None:
                labels[indices] = chunk_labels
            written = int(indices.max()) + 1
        if written < num_frames:  # fewer decodable frames than packets: repeat the last one
            crops[written:] = crops[written - 1]
            if labels is not None:
                labels[written:] = labels[written - 1]
        crops.flush()
        if labels is not None:
            labels.flush()
        (entry / "done").write_text(json.dumps({"video": str(path), "num_frames": num_frames}) + "\n")
        return entry

    def prepare(self, video: FaceVideo, out_dir: str | os.PathLike) -> dict:
        """Write `clips/<id>.mp4` and `annotations/<id>.npz`; returns the record's fields (paths relative to
        `out_dir`, frame count, rate, detected fraction).

        Raises:
            VideoError, NoFaceError, DatasetError: the video cannot be read or shows no face.
            OutputWriteError: a file could not be written whole.
        """
        from ..video.writing import write_video

        settings = self.settings
        out_dir = Path(out_dir)
        fps, frame_names, windows = iter_source_windows(
            video.source, settings.frame_order, settings.chunk_frames, settings.frame_folder_fps
        )
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("landmarks", "parsing", "frame_indices", "detected")}
        parts["crop_boxes"] = []

        def crops() -> Iterator[np.ndarray]:
            for window, faces, maps in self.iter_faces(windows, video.source):
                parts["landmarks"].append(faces.crop_landmarks.astype(np.float32))
                parts["parsing"].append(maps)
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


def face_video(item: Item) -> FaceVideo:
    """The video a preparation item names."""
    return FaceVideo(item.fields["video_id"], item.fields["person"], item.source)


# One preparer per worker process, made by `_start_worker` (the pool's initializer).
_worker_preparer: FacePreparer | None = None


def _start_worker(settings: PreparationSettings) -> None:
    global _worker_preparer
    if settings.num_threads:
        import torch

        torch.set_num_threads(settings.num_threads)
    _worker_preparer = FacePreparer(settings)


def _prepare_in_worker(video: FaceVideo, out_dir: str) -> tuple[dict, str | None]:
    """(The record fields of one video, None), or ({}, its error line): every failure is reported, never raised, but
    a full disk, which stops the run."""
    try:
        return _worker_preparer.prepare(video, out_dir), None
    except Exception as error:  # one bad video never stops the run, a full disk does
        if isinstance(error, OutputWriteError) and error.stops_run:
            raise
        return {}, error_text(error)


def prepare_videos(settings: PreparationSettings, out_dir: Path, num_workers: int) -> Work:
    """The `jobs.Work` of a preparation: a `FacePreparer` in this process, or one in each of `num_workers`
    processes (each with its own MTCNN and parser, records as videos end)."""

    def work(todo: list[Item], shard: Shard) -> Iterator[Outcome]:
        if num_workers <= 1 or len(todo) <= 1:
            preparer = FacePreparer(PreparationSettings(**{**asdict(settings), "num_threads": None}))
            yield from each_item(lambda item: preparer.prepare(face_video(item), out_dir))(todo, shard)
            return
        import multiprocessing

        threads = settings.num_threads or max(1, (os.cpu_count() or 1) // num_workers)
        worker_settings = PreparationSettings(**{**asdict(settings), "num_threads": threads})
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(num_workers, context, _start_worker, (worker_settings,)) as pool:
            started = time.perf_counter()
            futures = {pool.submit(_prepare_in_worker, face_video(item), str(out_dir)): item for item in todo}
            for future in as_completed(futures):
                fields, error = future.result()
                yield Outcome(futures[future], fields, error=error, seconds=time.perf_counter() - started)

    return work


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
    """Prepare every video not done yet into `out_dir` (a `jobs.run_job`), write the split, and return the counts.

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
    out_dir = Path(out_dir)
    bound = settings.bound()
    known = {video.video_id for video in videos}
    listed = {name_: [i for i in ids if i in known] for name_, ids in split.items()}
    left_out = sorted(known - set().union(*listed.values()))

    def start() -> None:  # the folder checked: what it holds, and how it is split
        write_text_atomic(out_dir / INFO_FILE, _dumps({"name": name, "settings": bound}))
        write_text_atomic(out_dir / SPLIT_FILE, _dumps({**split_info, **listed, "left_out": left_out}))

    kind = JobKind(
        command,
        "video_id",
        is_prepared_record,
        outputs=lambda record: [record["clip"], record["annotations"]],
        made="videos prepared",
        nested=True,
    )
    items = [Item({"input": str(v.source), "video_id": v.video_id, "person": v.person}, v.source) for v in videos]
    work = prepare_videos(settings, out_dir, num_workers)
    return run_job(
        items, out_dir, bound, work, kind, show_progress, start=start, end=lambda: write_split_csvs(out_dir, listed)
    )


def write_split_csvs(out_dir: Path, split: dict[str, list[str]]) -> None:
    """`train_set.csv` / `val_set.csv` in the paper's format (`path,len`) for the prepared videos of each split."""
    records = read_prepared_records(out_dir)
    for name, ids in split.items():
        rows = [f"{i},{records[i]['num_frames']}" for i in ids if records.get(i, {}).get("status") == "ok"]
        write_text_atomic(out_dir / SPLIT_CSV[name], "path,len\n" + "".join(row + "\n" for row in rows))


def _dumps(value, indent: int | None = 1) -> str:
    import json

    return json.dumps(value, indent=indent, default=str)
