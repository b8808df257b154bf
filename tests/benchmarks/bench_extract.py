"""Feature extraction from video files: marlin-pytorch's `extract_video` against `MarlinFeatureExtractor`.

    python tests/benchmarks/bench_extract.py [--videos ../shared/videos] [--variant base]

Prints, side by side in one run:
1. seconds per window on `cropped03.mp4` (already face-cropped): the reference (fp32, its only precision) against
   ours in fp32 and bf16, with the ratios (goal: bf16 >= 3.5x faster than the reference);
2. on the in-the-wild videos, ours in bf16 with `crop_face=True` against the same windows without cropping: the
   share of the time that face tracking and cropping add (goal: at most 35%).

Both models get the same random weights. The reference reads the frame count with `ffmpeg.probe`, which needs the
ffprobe binary; where it is missing, the script answers the probe with the container's frame count read by
OpenCV, which is what ffprobe reports for these files. The reference's own face cropping needs FaceX-Zoo (a git
clone at run time), so it is not timed. Nothing is asserted: machines are noisy.
"""

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from marlin_transformers.convert_marlin import convert_state_dict  # noqa: E402
from marlin_transformers.extraction import MarlinFeatureExtractor  # noqa: E402
from reference_utils import build_reference_model  # noqa: E402

DEFAULT_VIDEOS = Path(__file__).resolve().parents[3] / "shared" / "videos"


def patch_ffprobe_if_missing() -> None:
    if shutil.which("ffprobe"):
        return
    import cv2
    import marlin_pytorch.model.marlin as reference_module

    def probe(path):
        capture = cv2.VideoCapture(path)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()
        return {"streams": [{"nb_frames": str(count)}]}

    reference_module.ffmpeg.probe = probe


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS)
    parser.add_argument("--variant", default="base", choices=["small", "base", "large"])
    args = parser.parse_args()
    patch_ffprobe_if_missing()

    reference = build_reference_model(seed=0, as_feature_extractor=True)
    weights = convert_state_dict(reference.state_dict())
    cropped = str(args.videos / "cropped03.mp4")
    ours = {
        "float32": MarlinFeatureExtractor(weights, dtype="float32", batch_size=4),
        "bfloat16": MarlinFeatureExtractor(weights, dtype="bfloat16", batch_size=4),
    }
    ours["bfloat16"](cropped)  # warm-up (lazy init, allocator)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; videos from {args.videos}")
    ref_features, ref_seconds = timed(lambda: reference.extract_video(cropped))
    ref_per_window = ref_seconds / len(ref_features)
    print(f"\n1. {Path(cropped).name}: seconds per window")
    print(f"   {'marlin-pytorch extract_video (fp32)':<44}{ref_per_window:7.2f}  ({len(ref_features)} windows)")
    for dtype, extractor in ours.items():
        result, seconds = timed(lambda extractor=extractor: extractor(cropped))
        per_window = seconds / len(result.windows)
        print(
            f"   {'marlin-transformers ' + dtype:<44}{per_window:7.2f}  ({len(result.windows)} windows)  "
            f"{ref_per_window / per_window:.2f}x faster"
        )
        if dtype == "float32":
            same = min(len(ref_features), len(result.features))
            diff = (torch.from_numpy(result.features[:same]) - ref_features[:same]).abs().max().item()
            print(f"   {'':<44}max abs diff to the reference's windows: {diff:.1e}")

    print("\n2. face tracking and cropping (bf16): seconds per window, and the share cropping adds")
    cropper = MarlinFeatureExtractor(weights, dtype="bfloat16", batch_size=4, crop_face=True)
    for name in ("video01.mp4", "video02.mp4", "video03.mp4"):
        path = str(args.videos / name)
        plain, plain_seconds = timed(lambda path=path: ours["bfloat16"](path))
        crops, crop_seconds = timed(lambda path=path: cropper(path))
        assert len(plain.windows) == len(crops.windows)
        per_plain, per_crop = plain_seconds / len(plain.windows), crop_seconds / len(crops.windows)
        faces = sum(w["face_detected_fraction"] for w in crops.windows) / len(crops.windows)
        print(
            f"   {name}: {len(crops.windows)} windows, {per_plain:.2f} s without cropping, {per_crop:.2f} s with "
            f"(+{(per_crop / per_plain - 1) * 100:.0f}%), face found in {faces:.0%} of frames"
        )


if __name__ == "__main__":
    main()
