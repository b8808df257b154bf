"""`marlin reconstruct` and `pretraining.reconstruction`: masks, predictions and the side-by-side video they draw."""

import numpy as np
import pytest
import torch

from conftest import TINY_CLIP
from marlin_transformers.cli import main
from marlin_transformers.constants import CAPTION_HEIGHT, ROW_LABEL_WIDTH, TITLE_HEIGHT
from marlin_transformers.loading import load_marlin
from marlin_transformers.modeling_marlin import patchify_video
from marlin_transformers.pretraining.reconstruction import reconstruct_video
from marlin_transformers.video.decoding import read_video
from marlin_transformers.visualization import labelled_panels, reconstruction_panels
from video_factory import encode_video, moving_face_frames

SIZE = TINY_CLIP["image_size"]  # 32-pixel panels
# Mean absolute error (uint8 levels) of each decoded panel against the panels drawn from the returned tensors: the
# H.264 (crf 18, yuv420p) loss. Measured over seeds 0-2 and the fasking and random strategies, maxima 3.07 (frames),
# 0.42 (masked input), 10.9 (reconstruction: the tiny random model predicts noise, H.264's worst case) and 5.27
# (parts); bounds at twice those. With the label lines above and below the panels (their edges share H.264's blocks),
# measured again: 3.38, 0.60, 11.64 and 5.61, still under the bounds. A panel in the wrong place is off by 49 or more.
PANEL_TOLERANCE = (6.0, 1.0, 22.0, 11.0)


@pytest.fixture(scope="module")
def face_video(tmp_path_factory):
    """40 frames of the astronaut moving at 20 fps: two windows (frames 0-30 and the tail, 9-39)."""
    frames, _ = moving_face_frames(40)
    return encode_video(tmp_path_factory.mktemp("videos") / "face.mp4", frames, fps=20)


def test_reconstruct_writes_four_panels_that_match_the_model(tiny_pretraining_dir, face_video, tmp_path, capsys):
    out = tmp_path / "rec.mp4"
    assert (
        main(["reconstruct", face_video, "--model", str(tiny_pretraining_dir), "--out", str(out), "--crop-face"]) == 0
    )
    assert "2 windows" in capsys.readouterr().out

    model = load_marlin(tiny_pretraining_dir, "pretraining")
    windows = list(reconstruct_video(face_video, model, crop_face=True))  # the CLI's defaults: fasking, 0.9, seed 0
    assert [w.window.frame_indices[0] for w in windows] == [0, 9]
    for w in windows:
        # Fasking had parsed faces to work from, and masked exactly its share of the 32 tokens.
        assert set(w.label_maps.unique().tolist()) >= {0, 1, 4, 5, 6} and int(w.bool_masked_pos.sum()) == 29
        tokens = {name: patchify_video(getattr(w, name)[None], 16, 2)[0] for name in ("original", "masked")}
        tokens["reconstruction"] = patchify_video(w.reconstruction[None], 16, 2)[0]
        visible, hidden = ~w.bool_masked_pos, w.bool_masked_pos
        # The masked input is the input where visible, grey where masked; so is the reconstruction where visible.
        assert torch.equal(tokens["masked"][visible], tokens["original"][visible])
        assert torch.equal(tokens["masked"][hidden], torch.full_like(tokens["masked"][hidden], 0.5))
        assert torch.equal(tokens["reconstruction"][visible], tokens["original"][visible])
        # Where masked, the reconstruction is the model's own prediction, run here afresh (measured: 1.6e-7 apart,
        # float32 rounding between batched kernels).
        with torch.no_grad():
            logits = model(w.original[None], w.bool_masked_pos[None], return_loss=False).logits[0]
        torch.testing.assert_close(tokens["reconstruction"][hidden], logits.clamp(0, 1), atol=1e-5, rtol=0)

    decoded, _ = read_video(out)
    # Four panels of the model's size per frame, their titles above, the window and the frame said below.
    assert decoded.shape == (16 * len(windows), TITLE_HEIGHT + SIZE + CAPTION_HEIGHT, 4 * SIZE, 3)
    decoded = decoded[:, TITLE_HEIGHT : TITLE_HEIGHT + SIZE]
    expected = np.concatenate(
        [
            reconstruction_panels(w.original, w.masked, w.reconstruction, w.label_maps, w.bool_masked_pos, 16, 2)
            for w in windows
        ]
    ).astype(np.float64)
    for panel, tolerance in enumerate(PANEL_TOLERANCE):
        columns = slice(panel * SIZE, (panel + 1) * SIZE)
        error = np.abs(decoded[:, :, columns] - expected[:, :, columns]).mean()
        assert error < tolerance, f"panel {panel}: mean abs error {error:.2f} >= {tolerance}"

    from PIL import Image

    grid = Image.open(out.with_suffix(".png"))  # per window: a title, the frames' names, then 3 labelled rows
    assert grid.size == (ROW_LABEL_WIDTH + 4 * SIZE, (TITLE_HEIGHT + CAPTION_HEIGHT + 3 * SIZE) * len(windows))


def test_random_masks_need_no_face_and_repeat_with_the_seed(tiny_pretraining_dir, face_video):
    model = load_marlin(tiny_pretraining_dir, "pretraining")
    first = list(reconstruct_video(face_video, model, strategy="random", seed=3, max_windows=1))
    again = list(reconstruct_video(face_video, model, strategy="random", seed=3, max_windows=1))
    other = list(reconstruct_video(face_video, model, strategy="random", seed=4, max_windows=1))
    assert len(first) == 1 and first[0].face is None and first[0].window.frames is None
    assert torch.equal(first[0].bool_masked_pos, again[0].bool_masked_pos)
    assert not torch.equal(first[0].bool_masked_pos, other[0].bool_masked_pos)
    assert torch.equal(first[0].reconstruction, again[0].reconstruction)


def test_an_encoder_only_model_is_one_line_before_the_video_is_read(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "rec.mp4"
    missing_video = str(tmp_path / "not-there.mp4")  # never opened: the model is refused first
    assert main(["reconstruct", missing_video, "--model", str(tiny_model_dir), "--out", str(out)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"marlin reconstruct: error: {tiny_model_dir}: an encoder-only model") and "decoder" in line
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_each_frame_of_the_video_names_its_panels_window_and_frame(tiny_pretraining_dir, face_video):
    model = load_marlin(tiny_pretraining_dir, "pretraining")
    (window,) = reconstruct_video(face_video, model, crop_face=True, max_windows=1)
    frames = labelled_panels(window, 16, 2)
    assert frames.shape == (16, TITLE_HEIGHT + SIZE + CAPTION_HEIGHT, 4 * SIZE, 3)
    plain = reconstruction_panels(
        window.original, window.masked, window.reconstruction, window.label_maps, window.bool_masked_pos, 16, 2
    )
    np.testing.assert_array_equal(frames[:, TITLE_HEIGHT : TITLE_HEIGHT + SIZE], plain)
    titles, captions = frames[:, :TITLE_HEIGHT], frames[:, TITLE_HEIGHT + SIZE :]
    for panel in range(4):  # a title over each panel, the same on every frame
        assert titles[0, :, panel * SIZE : (panel + 1) * SIZE].min() < 100, f"panel {panel} has no title"
    assert (titles == titles[:1]).all()
    # Below: the window (the same on every frame) in the left half, the frame (its own on each) in the right half.
    window_half, frame_half = captions[:, :, : 2 * SIZE], captions[:, :, 2 * SIZE :]
    assert window_half.min() < 100 and (window_half == window_half[:1]).all()
    assert frame_half.min() < 100 and all(not np.array_equal(frame_half[0], frame_half[i]) for i in range(1, 16))


@pytest.mark.parametrize("verbose", [False, True])
def test_transformers_bars_only_with_verbose(tiny_pretraining_dir, face_video, tmp_path, verbose):
    """One progress display per command: ours; transformers' "Loading weights" bar only with --verbose. A process of
    its own: the quieting is process-wide."""
    import subprocess
    import sys

    argv = ["reconstruct", face_video, "--model", str(tiny_pretraining_dir), "--out", str(tmp_path / "rec.mp4")]
    run = subprocess.run(
        [sys.executable, "-m", "marlin_transformers.cli", *argv, *(["--verbose"] if verbose else [])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "reconstructing" in run.stderr and "wrote" in run.stdout
    assert ("Loading weights" in run.stderr) == verbose, run.stderr
