"""Frames per second of `marlin prepare-faces` beside decoding alone and one batched MTCNN pass, and prepared size.

python tests/benchmarks/bench_prepare.py [VIDEO ...]   # default: ../shared/videos/*.mp4 (relative to the repo)
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_extract import DEFAULT_VIDEOS

from marlin_transformers.data.face_videos import list_face_videos, person_disjoint_split
from marlin_transformers.pretraining.preparation import PreparationSettings, prepare_corpus
from marlin_transformers.video.decoding import read_video
from marlin_transformers.video.face_detection import MtcnnDetector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="*", default=sorted(map(str, DEFAULT_VIDEOS.glob("*.mp4"))))
    args = parser.parse_args()
    detector = MtcnnDetector()
    print("| video | frames | seconds of video | decode fps | MTCNN fps (batch 32) | prepare fps | MB per minute |")
    print("|---|---|---|---|---|---|---|")
    for video in args.videos:
        started = time.perf_counter()
        frames, times = read_video(video)
        decode = len(frames) / (time.perf_counter() - started)
        batch = frames[:32]
        detector.detect(batch[:2])  # load the networks
        started = time.perf_counter()
        detector.detect(batch)
        mtcnn = len(batch) / (time.perf_counter() - started)
        out = Path(tempfile.mkdtemp())
        try:
            videos = list_face_videos([video])
            started = time.perf_counter()
            prepare_corpus(videos, out, PreparationSettings(), person_disjoint_split(videos), {}, show_progress=False)
            prepare = len(frames) / (time.perf_counter() - started)
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
        finally:
            shutil.rmtree(out)
        minutes = (float(times[-1]) + float(np.diff(times).mean() if len(times) > 1 else 0)) / 60
        print(
            f"| {Path(video).name} | {len(frames)} | {minutes * 60:.1f} | {decode:.0f} | {mtcnn:.1f} | {prepare:.1f} "
            f"| {size / minutes:.1f} |"
        )


if __name__ == "__main__":
    main()
