"""`marlin prepare-ffpp`, `prepare-ravdess` and `prepare-mosei` on the sample videos laid out as each release.

    python tests/benchmarks/bench_tasks.py [--videos ../shared/videos] [--num-workers 1 2] [--repeats 2]

The sample videos are linked (never copied) into temporary trees of each release's layout:

- FaceForensics++: `original_sequences/youtube/c23/videos/00K.mp4`, and the same video again as its Deepfakes fake
  `manipulated_sequences/Deepfakes/c23/videos/00K_00J.mp4`; the pairs in the official split files' format, the
  last two pairs val and test, the rest train;
- RAVDESS: `Actor_0K/02-01-03-01-01-01-0K.mp4`, one actor per video, each with its full-AV twin, which the default
  `--modality video-only` leaves out;
- CMU-MOSEI: `Videos/Full/Combined/<video id>.mp4` under ids of the SDK's standard folds, and a
  `CMU_MOSEI_Labels.csd` cutting every video into two segments: its first and second half, less 0.1-0.2 s at the
  ends.

Each preparation runs into a fresh folder, `--repeats` times per worker count, interleaved; every line gives clips,
frames written, seconds, clips/s and frames/s, and the load average: the machine is shared, so compare within a
run. MTCNN loads once per worker in every run (counted). Nothing is asserted.
"""

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from marlin_transformers.data.ffpp import prepare_ffpp
from marlin_transformers.data.mosei import prepare_mosei, standard_folds
from marlin_transformers.data.ravdess import prepare_ravdess
from marlin_transformers.video.decoding import count_frames, frame_rate


def ffpp_tree(root: Path, videos: list[Path]) -> Path:
    ffpp = root / "FaceForensics++"
    originals = ffpp / "original_sequences" / "youtube" / "c23" / "videos"
    fakes = ffpp / "manipulated_sequences" / "Deepfakes" / "c23" / "videos"
    originals.mkdir(parents=True)
    fakes.mkdir(parents=True)
    ids = [f"{i:03d}" for i in range(len(videos) + len(videos) % 2)]  # pairs: an even number of ids
    for index, video in enumerate(videos):
        partner = ids[index ^ 1]  # 000 <-> 001, 002 <-> 003, ...
        (originals / f"{ids[index]}.mp4").symlink_to(video.resolve())
        (fakes / f"{ids[index]}_{partner}.mp4").symlink_to(video.resolve())
    pairs = [ids[i : i + 2] for i in range(0, len(ids), 2)]
    (ffpp / "splits").mkdir()
    for split, chosen in {"train": pairs[:-2], "val": pairs[-2:-1], "test": pairs[-1:]}.items():
        (ffpp / "splits" / f"{split}.json").write_text(json.dumps(chosen))
    return ffpp


def ravdess_tree(root: Path, videos: list[Path]) -> Path:
    for actor, video in enumerate(videos, start=1):
        folder = root / "RAVDESS" / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for modality in (1, 2):
            (folder / f"{modality:02d}-01-03-01-01-01-{actor:02d}.mp4").symlink_to(video.resolve())
    return root / "RAVDESS"


def mosei_tree(root: Path, videos: list[Path]) -> Path:
    folds = standard_folds()
    ids = [*folds["train"][: len(videos) - 2], folds["val"][0], folds["test"][0]]
    combined = root / "CMU_MOSEI" / "Videos" / "Full" / "Combined"
    combined.mkdir(parents=True)
    (root / "CMU_MOSEI" / "Labels").mkdir()
    with h5py.File(root / "CMU_MOSEI" / "Labels" / "CMU_MOSEI_Labels.csd", "w") as f:
        data = f.create_group("All Labels").create_group("data")
        for video_id, video in zip(ids, videos):
            (combined / f"{video_id}.mp4").symlink_to(video.resolve())
            seconds = count_frames(video) / float(frame_rate(video))
            entry = data.create_group(video_id)
            entry.create_dataset("features", data=np.tile([[1.0, 0.3, 0, 0, 0, 0, 0]], (2, 1)))
            entry.create_dataset("intervals", data=[[0.2, seconds / 2 - 0.1], [seconds / 2, seconds - 0.2]])
    return root / "CMU_MOSEI"


def run(name: str, prepare, tree: Path, out: Path, num_workers: int) -> None:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = prepare(tree, out, num_workers=num_workers, progress=False)
    seconds = time.perf_counter() - start
    frames = sum(json.loads(line).get("num_frames", 0) for line in open(out / "manifest.jsonl"))
    done = result.summary.done
    print(
        f"{name:8s} workers {num_workers}: {done} clips ({result.summary.failed} failed), {frames} frames in "
        f"{seconds:.1f} s: {done / seconds:.2f} clips/s, {frames / seconds:.0f} frames/s "
        f"(load {os.getloadavg()[0]:.1f})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", default="../shared/videos", help="the sample videos' folder")
    parser.add_argument("--num-workers", type=int, nargs="+", default=[1, 2], help="worker counts to time")
    parser.add_argument("--repeats", type=int, default=2, help="runs per worker count, interleaved")
    args = parser.parse_args()
    videos = sorted(Path(args.videos).glob("*.mp4"))
    if len(videos) < 6:
        raise SystemExit(f"{args.videos}: needs at least 6 sample videos, found {len(videos)}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        trees = {
            "ffpp": ffpp_tree(root, videos),
            "ravdess": ravdess_tree(root, videos),
            "mosei": mosei_tree(root, videos),
        }
        preparers = {"ffpp": prepare_ffpp, "ravdess": prepare_ravdess, "mosei": prepare_mosei}
        for _ in range(args.repeats):
            for num_workers in args.num_workers:
                for name, tree in trees.items():
                    run(name, preparers[name], tree, root / f"out_{name}", num_workers)


if __name__ == "__main__":
    main()
