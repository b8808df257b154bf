"""`marlin demo`: the whole pipeline on a face clip it makes itself, with or without network.

It renders a clip from scikit-image's bundled astronaut photo (moving and zooming over time), tracks and crops the
face, writes a picture of the crops, and extracts features with the official ViT-B weights from the Hub. Where the
Hub cannot be reached it says so in one line and goes on with randomly initialized ViT-B weights, labelled as such
on screen and in the manifest, so the pipeline still runs end to end.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HUB_MODEL = "ControlNet/marlin_vit_base_ytf"


def render_demo_clip(path: str | Path, num_frames: int = 72, fps: int = 25, size: tuple[int, int] = (480, 360)):
    """Write an H.264 clip of the astronaut's face drifting right and zooming in; returns (num_frames, fps)."""
    from PIL import Image
    from skimage import data

    from .video.writing import write_video

    photo = Image.fromarray(data.astronaut())  # 512x512 RGB, face around (230, 120)
    width, height = size

    def frames():
        for t in range(num_frames):
            progress = t / max(1, num_frames - 1)
            scale = 0.55 + 0.25 * progress  # zoom in over time
            frame = Image.new("RGB", size, (40, 40, 48))
            resized = photo.resize((round(512 * scale), round(512 * scale)), Image.BILINEAR)
            x = round(-40 + 120 * progress - 230 * scale + width / 3)
            y = round(height / 2 - 150 * scale)
            frame.paste(resized, (x, y))
            yield np.asarray(frame)

    write_video(path, frames(), fps, crf=None)
    return num_frames, fps


def load_demo_model():
    """The official ViT-B from the Hub, or (offline) a randomly initialized ViT-B; returns (model, weights label)."""
    from .configuration_marlin import MarlinConfig
    from .exceptions import CheckpointError
    from .loading import load_marlin
    from .modeling_marlin import MarlinModel

    try:
        _check_hub_reachable()
        return load_marlin(HUB_MODEL), HUB_MODEL
    except (CheckpointError, OSError) as error:
        reason = str(error).split(";")[0]
        print(
            f"marlin demo: cannot load {HUB_MODEL} ({reason}); going on with RANDOMLY INITIALIZED ViT-B weights: "
            "the features are meaningless, this run only checks the pipeline.",
            file=sys.stderr,
        )
        import torch

        torch.manual_seed(0)
        return MarlinModel(MarlinConfig.from_variant("base")).eval(), "random-init ViT-B (offline demo fallback)"


def _check_hub_reachable(timeout: float = 3.0) -> None:
    """Fail fast (OSError) when the Hub's host does not answer, rather than after the Hub client's retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return  # the cache may hold the model; loading says if it does not
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as error:
        raise OSError(f"{host} is not reachable: {error.strerror or error}") from None


def run_demo(out_dir: str | Path, dtype: str = "float32") -> int:
    from .extraction import MarlinFeatureExtractor
    from .extraction.job import run_extraction
    from .visualization import save_crops_picture

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clip = out_dir / "demo_face.mp4"
    num_frames, fps = render_demo_clip(clip)
    print(f"marlin demo: made {clip} ({num_frames} frames at {fps} fps, the astronaut moving and zooming)")
    model, weights = load_demo_model()
    extractor = MarlinFeatureExtractor(model, dtype=dtype, crop_face=True, batch_size=2)

    crops = {}

    def make_extractor(device: str):
        def extract(path, progress=None):
            result = extractor(path, progress=progress, keep_crops=True)
            crops[str(path)] = result
            return result

        return extract

    features_dir = out_dir / "features"
    manifest = features_dir / "manifest.jsonl"
    if manifest.exists():
        manifest.unlink()  # the demo always runs afresh
    summary = run_extraction([clip], features_dir, make_extractor, {"model": weights, "dtype": dtype})
    if summary.failed:
        return 1
    result = crops[str(clip.absolute())]
    picture = out_dir / "demo_crops.png"
    save_crops_picture(result.crops, result.windows, picture)
    record = json.loads(manifest.read_text().splitlines()[-1])
    print(f"marlin demo: weights: {weights}")
    shape = tuple(result.features.shape)
    print(f"marlin demo: {len(result.windows)} windows -> features {shape} in {features_dir / record['output']}")
    for window in result.windows:
        print(
            f"  frames {window['frame_indices'][0]:>3}-{window['frame_indices'][-1]:<3} "
            f"{window['start_time']:.2f}-{window['end_time']:.2f} s, "
            f"face detected in {window['face_detected_fraction']:.0%} of frames"
        )
    print(f"marlin demo: crops picture {picture}; manifest {manifest}")
    return 0
