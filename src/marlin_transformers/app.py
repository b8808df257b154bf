"""`marlin app`: a web app (Gradio) showing what MARLIN does with one video, laid out for a Hugging Face Space.

For an uploaded video (or the demo clip `demo.render_demo_clip` renders) it shows the tracked face boxes, the crops of
each window, the Fasking mask, the reconstruction video and how alike the windows' features are, and offers the
features (.npy) and their manifest (the format of `marlin extract`) for download. The work is `analyse_video`, plain
Python the tests call without a browser; `build_app` only lays out the page. The repository's `app.py` is the Space's
entry point and calls `build_app`.

Without a model it runs on randomly initialized ViT-B weights, as `marlin demo` does offline, and says so on the
page and in the manifest: the released weights with a decoder (`marlin_vit_base_ytf.full.pt`) are not on the Hub.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .constants import SAMPLE_RATE
from .exceptions import MarlinError

PICTURES = ("crops", "mask", "similarity")  # `<stem>.<kind>.png`, in that order
RANDOM_WEIGHTS = "random-init ViT-B (no model given: pass --model marlin_vit_base_ytf.full.pt for the released one)"


@dataclass
class AppResult:
    """What `analyse_video` made for one video: files in its output folder, and a summary in Markdown."""

    faces_video: Path
    reconstruction_video: Path
    reconstruction_grid: Path
    crops_picture: Path
    mask_picture: Path
    similarity_picture: Path
    features: Path
    manifest: Path
    summary: str
    similarity: list[list[float]] = field(default_factory=list)


def load_app_model(model: str | os.PathLike | None = None):
    """A `MarlinForPreTraining` and the label of its weights: `model` checked (`load_marlin`), or without
    one a randomly initialized ViT-B, said in one line on stderr (the pictures then show the pipeline only)."""
    import torch

    from .configuration_marlin import MarlinConfig
    from .loading import load_marlin
    from .modeling_marlin import MarlinForPreTraining

    if model is not None:
        return load_marlin(model, "pretraining"), str(model)
    print(
        "marlin app: no --model given; going on with RANDOMLY INITIALIZED ViT-B weights: the reconstructions and "
        "features are meaningless, the app only shows the pipeline.",
        file=sys.stderr,
    )
    torch.manual_seed(0)  # the same random weights on every start
    return MarlinForPreTraining(MarlinConfig.from_variant("base")).eval(), RANDOM_WEIGHTS


def analyse_video(
    path: str | os.PathLike,
    model,
    weights: str,
    out_dir: str | os.PathLike,
    max_windows: int = 8,
    strategy: str = "fasking",
    progress=None,
) -> AppResult:
    """Track, crop, mask, reconstruct and encode the first `max_windows` windows of a video; write what the app shows.

    Args:
        path: the video.
        model: a `MarlinForPreTraining` (`load_app_model`).
        weights: the label of its weights, written in the summary and the manifest.
        out_dir: where the files go (made if missing).
        max_windows: windows analysed from the start of the video (each costs two passes of the model).
        progress: called as `progress(fraction, desc=...)` as windows are done (a `gr.Progress`).

    Raises:
        MarlinError: one line, for a video that cannot be read or shows no face.
    """
    import torch

    from .extraction.extractor import window_record
    from .pretraining.reconstruction import reconstruct_video
    from .video.decoding import frame_rate
    from .visualization import write_reconstruction_video

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = model.config
    report = progress or (lambda fraction, desc=None: None)
    report(0.0, desc="decoding and tracking the face")
    fps = float(frame_rate(path)) / SAMPLE_RATE  # the sampled frames at their real speed

    def counted(windows):
        for done, window in enumerate(windows, start=1):
            report(done / max_windows, desc=f"window {done} reconstructed and encoded")
            yield window

    windows = reconstruct_video(
        path,
        model,
        strategy=strategy,
        crop_face=True,
        max_windows=max_windows,
        with_features=True,
        keep_source_frames=True,
    )
    stem = Path(path).stem
    reconstruction_video = out_dir / f"{stem}.reconstruction.mp4"
    done = write_reconstruction_video(
        counted(windows), reconstruction_video, fps, config.patch_size, config.tubelet_size
    )
    report(1.0, desc="drawing")
    faces_video = _write_faces_video(done, out_dir / f"{stem}.faces.mp4", fps)

    records = [window_record(w.window, w.face.detected_fraction) for w in done]
    features = torch.stack([w.features for w in done]).numpy()  # (windows, hidden_size)
    crops_picture, mask_picture, similarity_picture, similarity = _draw_pictures(
        done, records, features, out_dir, stem, config
    )
    features_file, manifest = _write_features(
        path, features, records, out_dir / "features", weights, max_windows, config
    )
    return AppResult(
        faces_video=faces_video,
        reconstruction_video=reconstruction_video,
        reconstruction_grid=reconstruction_video.with_suffix(".png"),
        crops_picture=crops_picture,
        mask_picture=mask_picture,
        similarity_picture=similarity_picture,
        features=features_file,
        manifest=manifest,
        summary=_summary(weights, done, records),
        similarity=similarity.tolist(),
    )


def _write_faces_video(done: list, path: Path, fps: float) -> Path:
    """The face boxes on the frames the windows read, each frame once (the tail window overlaps the one before)."""
    from .video.writing import write_video
    from .visualization import draw_face_boxes

    shown = {}
    for window in done:
        drawn = draw_face_boxes(window.window.frames, window.face.crop_boxes, window.face.detected)
        shown.update(zip(window.window.frame_indices, drawn))
    write_video(path, (shown[index] for index in sorted(shown)), fps)
    return path


def _draw_pictures(done: list, records: list[dict], features, out_dir: Path, stem: str, config) -> tuple:
    """`<stem>.crops.png` (each window's crops), `<stem>.mask.png` (the first window's mask) and
    `<stem>.similarity.png` (the windows' feature similarity): their paths, and that similarity (windows, windows)."""
    import numpy as np
    import torch

    from .visualization import render_mask_overlay, save_crops_picture, save_similarity_picture

    crops_picture, mask_picture, similarity_picture = (out_dir / f"{stem}.{kind}.png" for kind in PICTURES)
    # The model inputs as pictures: (windows, t, size, size, 3) uint8.
    crops = np.stack([(w.original.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy() for w in done])
    save_crops_picture(crops, records, crops_picture)
    first = done[0]
    render_mask_overlay(
        crops[0],
        first.label_maps,
        first.bool_masked_pos,
        mask_picture,
        config.patch_size,
        config.tubelet_size,
        frame_indices=list(first.window.frame_indices),
    )
    similarity = save_similarity_picture(features, similarity_picture)
    return crops_picture, mask_picture, similarity_picture, similarity


def _write_features(path, features, records: list[dict], features_dir: Path, weights: str, max_windows: int, config):
    """The features file and the manifest, written as `marlin extract` writes them (atomic, manifest bound to the
    input and to these settings); a failure is a `MarlinError` naming the video."""
    from .extraction.extractor import VideoFeatures
    from .extraction.job import run_extraction

    computed = VideoFeatures(features=features, windows=records)
    settings = {"model": weights, "crop_face": True, "max_windows": max_windows, "num_frames": config.num_frames}
    summary = run_extraction(
        [path],
        features_dir,
        lambda device: lambda video, progress=None: computed,
        metadata={"model": weights, "dtype": "float32", "crop_face": True, "keep_seq": False},
        show_progress=False,
        settings=settings,
    )
    manifest = features_dir / "manifest.jsonl"
    record = json.loads(manifest.read_text().splitlines()[-1])
    if summary.failed:
        raise MarlinError(f"{path}: {record.get('error')}")
    return features_dir / record["output"], manifest


def _summary(weights: str, done: list, records: list[dict]) -> str:
    """The page's Markdown: the weights, and a table of the windows with their reconstruction error."""
    lines = [
        f"**Weights:** {weights}",
        "",
        "| window | frames | seconds | face detected | reconstruction error (MSE) |",
        "|---|---|---|---|---|",
    ]
    for index, (window, record) in enumerate(zip(done, records)):
        error = float(((window.reconstruction - window.original) ** 2).mean())
        lines.append(
            f"| {index} | {record['frame_indices'][0]}-{record['frame_indices'][-1]} | "
            f"{record['start_time']:.2f}-{record['end_time']:.2f} | {record['face_detected_fraction']:.0%} | "
            f"{error:.4f} |"
        )
    return "\n".join(lines)


def build_app(model: str | os.PathLike | None = None, work_dir: str | os.PathLike | None = None, max_windows: int = 8):
    """The Gradio page (`gr.Blocks`) over `analyse_video`; the model is loaded and checked here, before any video.

    Args:
        model: a `.full.pt`/`.ckpt` file or a converted pretraining folder; None: random ViT-B weights, labelled.
        work_dir: where each run's files go, one folder per run (default: a new folder in the system's temp dir).
        max_windows: windows analysed per video, from its start.
    """
    import gradio as gr

    from .demo import render_demo_clip

    loaded, weights = load_app_model(model)
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="marlin-app-"))
    work_dir.mkdir(parents=True, exist_ok=True)

    def use_demo_clip():
        clip = work_dir / "demo_face.mp4"
        if not clip.exists():
            render_demo_clip(clip)
        return str(clip)

    def run(video, progress=gr.Progress()):  # noqa: B008 (Gradio finds its progress bar by this default)
        if not video:
            raise gr.Error("no video: upload one, or press 'Use the demo clip'.")
        try:
            result = analyse_video(
                video, loaded, weights, tempfile.mkdtemp(dir=work_dir), max_windows=max_windows, progress=progress
            )
        except MarlinError as error:
            raise gr.Error(str(error)) from None
        return (
            result.summary,
            str(result.faces_video),
            str(result.reconstruction_video),
            str(result.crops_picture),
            str(result.mask_picture),
            str(result.similarity_picture),
            [str(result.features), str(result.manifest)],
        )

    warning = ""
    if weights == RANDOM_WEIGHTS:
        warning = (
            "\n\n**RANDOMLY INITIALIZED WEIGHTS**: no model was given, so reconstructions are noise and features "
            "meaningless; the page shows the pipeline. Start it with `marlin app --model marlin_vit_base_ytf.full.pt`."
        )
    with gr.Blocks(title="MARLIN: what it sees", analytics_enabled=False) as page:
        gr.Markdown(
            "# MARLIN: what a masked autoencoder for faces sees\n"
            f"Upload a face video (or take the demo clip). The first {max_windows} windows of 16 frames are tracked, "
            "cropped, masked with Fasking (facial parts first) and reconstructed.\n\n"
            f"Weights: `{weights}`{warning}",
            elem_id="header",
        )
        with gr.Row():
            video = gr.Video(label="face video", sources=["upload"], elem_id="input-video")
            with gr.Column():
                demo_button = gr.Button("Use the demo clip", elem_id="demo-clip")
                analyse_button = gr.Button("Analyse", variant="primary", elem_id="analyse")
                summary = gr.Markdown(elem_id="summary")
        with gr.Row():
            faces = gr.Video(label="tracked face (green: detected, orange: interpolated)", elem_id="faces-video")
            reconstruction = gr.Video(
                label="frames | masked input | reconstruction | face parts", elem_id="reconstruction-video"
            )
        with gr.Row():
            crops = gr.Image(label="crops per window", type="filepath", elem_id="crops")
            mask = gr.Image(label="Fasking mask (first window)", type="filepath", elem_id="mask")
            similarity = gr.Image(label="window-by-window feature similarity", type="filepath", elem_id="similarity")
        downloads = gr.File(label="features (.npy) and manifest", file_count="multiple", elem_id="downloads")
        demo_button.click(use_demo_clip, outputs=video)
        analyse_button.click(
            run, inputs=video, outputs=[summary, faces, reconstruction, crops, mask, similarity, downloads]
        )
    page.marlin_work_dir = work_dir  # where `launch_app` lets Gradio serve files from
    return page


def launch_app(
    model: str | os.PathLike | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    work_dir: str | os.PathLike | None = None,
) -> None:
    """Build the app and serve it until interrupted (`marlin app`)."""
    page = build_app(model, work_dir)
    print(f"marlin app: serving on http://{host}:{port}", file=sys.stderr)
    page.queue().launch(
        server_name=host, server_port=port, allowed_paths=[str(page.marlin_work_dir)], ssr_mode=False, quiet=True
    )
