"""Pretraining: loss signs, the gradient penalty, the schedule, VideoMAE init, the clip dataset, exact resume,
crash-safe checkpoints that never unpickle code, and one-line argument errors."""

import csv
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TINY_CLIP
from marlin_transformers import MarlinConfig, MarlinForPreTraining
from marlin_transformers.constants import CAPTION_HEIGHT, ROW_LABEL_WIDTH, TITLE_HEIGHT, num_visible_tokens
from marlin_transformers.data import precomputed_label_maps, youtube_faces_clips
from marlin_transformers.exceptions import CheckpointError, DatasetError
from marlin_transformers.pretraining import (
    EpochShuffleSampler,
    FaceClipDataset,
    critic_loss,
    generator_adversarial_loss,
    gradient_penalty,
    learning_rate_at,
    load_videomae_weights,
    marlin_config_from_videomae,
    masked_patch_targets,
    penalty_interpolates,
    reconstruction_loss,
    reference_learning_rate_at,
    scaled_learning_rates,
    videomae_to_marlin_state_dict,
)
from marlin_transformers.pretraining.arguments import PretrainingArguments, parse_config_overrides
from marlin_transformers.pretraining.checkpointing import PROGRESS_FILENAME, checkpoint_problem
from marlin_transformers.pretraining.masking import seeded_generator
from marlin_transformers.pretraining.model import build_model
from marlin_transformers.video import decode_frames
from marlin_transformers.visualization import curve_figure, reconstruction_grid
from video_factory import encode_video

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pretrain.py"
TINY = {**TINY_CLIP, "mask_ratio": 0.5, "mask_strategy": "random"}


def import_example():
    spec = importlib.util.spec_from_file_location("pretrain_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PRETRAIN_EXAMPLE = import_example()
train = PRETRAIN_EXAMPLE.training_function  # the loop: a run of examples/pretrain.py without its command line


@pytest.fixture(scope="module")
def pretrain_example():
    return PRETRAIN_EXAMPLE


@pytest.fixture(scope="module")
def tiny_videos(tmp_path_factory):
    """Three 12-frame 32x32 videos of moving colour gradients, encoded losslessly."""
    folder = tmp_path_factory.mktemp("videos")
    ys, xs = np.mgrid[0:32, 0:32]
    for v in range(3):
        frames = []
        for t in range(12):
            r = (xs * 8 + t * 10 + v * 60) % 256
            g = (ys * 8 + t * 5) % 256
            b = np.full_like(xs, 80 * v)
            frames.append(np.stack([r, g, b], axis=-1).astype(np.uint8))
        encode_video(folder / f"clip{v}.mp4", np.stack(frames), fps=10)
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------------------------


def test_critic_and_generator_loss_signs():
    real, fake = torch.full((2, 5, 1), 3.0), torch.full((2, 5, 1), -1.0)
    # A critic that scores real tubelets high and predictions low has a low (negative) loss: the Wasserstein gap.
    assert critic_loss(fake, real).item() == pytest.approx(-4.0)
    assert critic_loss(real, fake).item() == pytest.approx(4.0)
    # The generator wants its predictions scored high: its adversarial loss falls as D(fake) rises.
    assert generator_adversarial_loss(fake, 0.01).item() == pytest.approx(0.01)
    assert generator_adversarial_loss(real, 0.01).item() == pytest.approx(-0.03)
    assert generator_adversarial_loss(real, 0.0).item() == 0.0


def test_critic_step_widens_the_gap():
    """One gradient step on the critic loss raises D(real) - D(fake)."""
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(), nn.Linear(8, 1))
    real, fake = torch.rand(2, 4, 6) + 1, torch.rand(2, 4, 6) - 1
    gap = lambda: (critic(real).mean() - critic(fake).mean()).item()  # noqa: E731
    before = gap()
    critic_loss(critic(fake), critic(real)).backward()
    torch.optim.SGD(critic.parameters(), lr=0.1).step()
    assert gap() > before


def test_gradient_penalty_by_hand():
    # A linear critic D(x) = w.x + b has gradient w at every point: the penalty is (|w| - 1)^2 = (5 - 1)^2 = 16.
    critic = nn.Linear(4, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0, 0.0, 0.0]]))
    real, fake = torch.rand(2, 3, 4), torch.rand(2, 3, 4)
    points = penalty_interpolates(real, fake, torch.Generator().manual_seed(0))
    penalty = gradient_penalty(critic(points), points)
    assert penalty.item() == pytest.approx(16.0)
    # The penalty trains the critic: d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w| = 1.6 w.
    penalty.backward()
    torch.testing.assert_close(critic.weight.grad, 1.6 * critic.weight.detach())
    # A unit-norm critic pays nothing; D(x) = |x|^2 / 2 has gradient x, so the penalty is mean (|x| - 1)^2.
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.6, 0.8, 0.0, 0.0]]))
    assert gradient_penalty(critic(points), points).item() == pytest.approx(0.0, abs=1e-12)
    square = lambda x: 0.5 * x.pow(2).sum(-1, keepdim=True)  # noqa: E731
    expected = ((points.detach().flatten(0, 1).norm(dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(gradient_penalty(square(points), points), expected)


def test_penalty_interpolates_one_alpha_between_real_and_fake():
    real, fake = torch.ones(2, 3, 4), torch.zeros(2, 3, 4)
    alpha = torch.rand((), generator=torch.Generator().manual_seed(7))
    points = penalty_interpolates(real, fake, torch.Generator().manual_seed(7))
    torch.testing.assert_close(points, torch.full_like(real, alpha.item()))
    assert points.requires_grad and points.is_leaf


def test_reconstruction_loss_matches_the_model():
    config = MarlinConfig(**TINY)
    model = MarlinForPreTraining(config).eval()
    pixel_values_videos = torch.rand(2, 4, 3, 32, 32)
    bool_masked_pos = torch.tensor([[True, False, True, False, True, False, False, True]] * 2)
    output = model(pixel_values_videos, bool_masked_pos)
    targets = masked_patch_targets(pixel_values_videos, bool_masked_pos, 16, 2)
    assert targets.shape == output.logits.shape == (2, 4, 3 * 2 * 16 * 16)
    torch.testing.assert_close(reconstruction_loss(output.logits, targets), output.reconstruction_loss)
    grid = reconstruction_grid(pixel_values_videos, output.logits, bool_masked_pos, 16, 2, num_shown=2)
    # Per clip: a title line, a line naming the frames, three rows of 32 pixels; a column of row labels on the left.
    clip_height = TITLE_HEIGHT + CAPTION_HEIGHT + 3 * 32
    assert grid.shape == (2 * clip_height, ROW_LABEL_WIDTH + 2 * 32, 3) and grid.dtype == np.uint8
    # Row 0 is the original clip's first frame, unchanged, under its two label lines and right of the row labels.
    first = (pixel_values_videos[0, 0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    top = TITLE_HEIGHT + CAPTION_HEIGHT
    np.testing.assert_array_equal(grid[top : top + 32, ROW_LABEL_WIDTH : ROW_LABEL_WIDTH + 32], first)
    # Every label has text (dark pixels) in it: the clips' titles, the frame names, each row's label.
    for clip in range(2):
        title = grid[clip * clip_height : clip * clip_height + TITLE_HEIGHT]
        frames = grid[clip * clip_height + TITLE_HEIGHT : clip * clip_height + top]
        assert title.min() < 100 and all(
            frames[:, x : x + 32].min() < 100 for x in (ROW_LABEL_WIDTH, ROW_LABEL_WIDTH + 32)
        )
        for row in range(3):
            label = grid[
                clip * clip_height + top + row * 32 : clip * clip_height + top + (row + 1) * 32, :ROW_LABEL_WIDTH
            ]
            assert label.min() < 100, f"clip {clip}, row {row}: no label"


@pytest.mark.parametrize(
    "points",
    [
        [(0, 0.32071), (2, 0.32069), (4, 0.32066), (6, 0.32066)],  # a span the old PIL plot wrote 0, 0, 1, 2, 2 over
        [(0, 0.5), (1, 0.4)],
        [(100, 1e-3), (20000, 2e-4), (40000, 1.5e-4)],
    ],
)
def test_eval_curve_ticks_are_whole_steps_and_distinct_values(points):
    figure = curve_figure(points, "Reconstruction MSE", "optimizer step", "MSE")
    figure.canvas.draw()  # Agg: the ticks as they are written in the PNG
    (axes,) = figure.axes
    assert (axes.get_title(), axes.get_xlabel(), axes.get_ylabel()) == ("Reconstruction MSE", "optimizer step", "MSE")
    for axis, (low, high) in ((axes.xaxis, axes.get_xlim()), (axes.yaxis, axes.get_ylim())):
        ticks = [t for t in axis.get_majorticklocs() if low <= t <= high]
        labels = axis.get_major_formatter().format_ticks(ticks)
        assert len(ticks) >= 2 and len(set(labels)) == len(labels), labels
        assert axis.get_offset_text().get_text() == ""  # each label says its whole value
    steps = [t for t in axes.xaxis.get_majorticklocs() if axes.get_xlim()[0] <= t <= axes.get_xlim()[1]]
    assert all(float(t).is_integer() for t in steps), steps


def test_a_run_without_matplotlib_ends_with_one_line_for_its_curve(tmp_path, monkeypatch, capsys):
    from accelerate import Accelerator

    from marlin_transformers.pretraining.run_log import RunLog

    log = RunLog(Accelerator(cpu=True), tmp_path, max_steps=2, quiet=True)
    log.eval_curve = [(0, 0.3), (2, 0.2)]
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.ticker"):
        monkeypatch.setitem(sys.modules, module, None)  # importing it raises ModuleNotFoundError
    log.close()
    assert not (tmp_path / "eval_curve.png").exists()
    assert capsys.readouterr().err.strip() == (
        "eval_curve.png not drawn: matplotlib is not installed: install the 'train' extra "
        '(pip install -e ".[train]" in a clone)'
    )
    monkeypatch.undo()
    log.close()  # with matplotlib: the curve
    assert (tmp_path / "eval_curve.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------------------------------------------------


def test_scaled_learning_rates():
    assert scaled_learning_rates(256) == pytest.approx((1.5e-4, 1e-5))
    assert scaled_learning_rates(16) == pytest.approx((1.5e-4 / 16, 1e-5 / 16))


def test_schedule_matches_the_reference_formula():
    lr, min_lr, warmup, total = 1e-3, 1e-5, 40, 200
    # The reference's per-iteration array: linspace(0, lr, warmup), then a cosine over the remaining iterations.
    reference = np.concatenate(
        [
            np.linspace(0, lr, warmup),
            [min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * i / (total - warmup))) for i in range(160)],
        ]
    )
    ours = [learning_rate_at(step, lr, min_lr, warmup, total) for step in range(total)]
    np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-15)
    assert learning_rate_at(0, lr, min_lr, warmup, total) == 0.0
    assert learning_rate_at(warmup - 1, lr, min_lr, warmup, total) == pytest.approx(lr)
    assert learning_rate_at(warmup, lr, min_lr, warmup, total) == pytest.approx(lr)
    assert learning_rate_at(warmup + 80, lr, min_lr, warmup, total) == pytest.approx((lr + min_lr) / 2)
    assert learning_rate_at(total, lr, min_lr, warmup, total) == min_lr
    assert learning_rate_at(10_000, lr, min_lr, warmup, total) == min_lr
    # The paper's run: 40 warm-up epochs of 2000.
    peak, final = scaled_learning_rates(1024)
    assert learning_rate_at(40 * 100, peak, final, 40 * 100, 2000 * 100) == pytest.approx(6e-4)
    assert learning_rate_at(2000 * 100 - 1, peak, final, 40 * 100, 2000 * 100) == pytest.approx(4e-5, rel=1e-6)


def test_reference_schedule_steps_once_an_epoch_as_the_paper_code():
    """The paper code keeps the per-iteration array's value at each epoch's first iteration, divided by the peak, in a
    LambdaLR it steps after the first batch of each epoch; here that run is replayed with torch's own LambdaLR."""
    lr, min_lr, warmup_epochs, num_epochs, per_epoch = 1e-3, 1e-5, 2, 6, 5
    iterations = np.concatenate(
        [
            np.linspace(0, lr, warmup_epochs * per_epoch),
            [
                min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * i / ((num_epochs - warmup_epochs) * per_epoch)))
                for i in range((num_epochs - warmup_epochs) * per_epoch)
            ],
        ]
    )
    factors = iterations[::per_epoch] / lr  # one per epoch
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: factors[min(epoch, num_epochs - 1)])
    paper = []
    for _ in range(num_epochs):
        for batch in range(per_epoch):
            paper.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if batch == 0:
                scheduler.step()
    ours = [
        reference_learning_rate_at(step, per_epoch, lr, min_lr, warmup_epochs, num_epochs)
        for step in range(num_epochs * per_epoch)
    ]
    np.testing.assert_allclose(ours, paper, rtol=1e-12, atol=1e-15)
    assert ours[0] == 0.0 and ours[1] == pytest.approx(lr / (warmup_epochs * per_epoch - 1) * per_epoch)
    assert len(set(ours[1:per_epoch])) == 1  # constant within the epoch, one epoch ahead of the per-step schedule


# ---------------------------------------------------------------------------------------------------------------------
# VideoMAE init
# ---------------------------------------------------------------------------------------------------------------------


def test_init_from_videomae(tmp_path):
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    videomae_config = VideoMAEConfig(
        **{**TINY_CLIP, "decoder_num_hidden_layers": 2},
        use_mean_pooling=False,
        layer_norm_eps=1e-5,
        norm_pix_loss=False,
    )
    torch.manual_seed(0)
    videomae = VideoMAEForPreTraining(videomae_config).eval()
    with torch.no_grad():  # biases and norms are zeros/ones at init: randomize everything to catch mix-ups
        for param in videomae.parameters():
            param.add_(0.1 * torch.randn_like(param))
    videomae.save_pretrained(tmp_path / "videomae")

    state_dict = videomae.state_dict()
    renamed, skipped = videomae_to_marlin_state_dict(state_dict)
    qkv = renamed["marlin.encoder.layer.1.attention.qkv.weight"]
    attention = videomae.videomae.encoder.layer[1].attention.attention
    torch.testing.assert_close(qkv, torch.cat([attention.query.weight, attention.key.weight, attention.value.weight]))
    torch.testing.assert_close(renamed["marlin.encoder.layer.1.attention.q_bias"], attention.query.bias)
    # The original checkpoints' names (q_bias / v_bias) map the same way.
    old_names = {k.replace("query.bias", "q_bias").replace("value.bias", "v_bias"): v for k, v in state_dict.items()}
    assert videomae_to_marlin_state_dict(old_names)[0].keys() == renamed.keys()

    config = marlin_config_from_videomae(json.loads((tmp_path / "videomae" / "config.json").read_text()))
    assert (config.hidden_size, config.decoder_hidden_size, config.decoder_num_hidden_layers) == (32, 16, 2)
    model = MarlinForPreTraining(config).eval()
    left_at_init = load_videomae_weights(model, tmp_path / "videomae")
    assert all(name.startswith("discriminator.") for name in left_at_init), left_at_init

    pixel_values_videos = torch.rand(2, 4, 3, 32, 32)
    bool_masked_pos = torch.tensor([[True, False, True, False, True, False, False, True]] * 2)
    with torch.no_grad():
        theirs = videomae(pixel_values_videos, bool_masked_pos=bool_masked_pos).logits
        ours = model(pixel_values_videos, bool_masked_pos, return_loss=False).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)

    from marlin_transformers import CheckpointError

    wrong = MarlinForPreTraining(marlin_config_from_videomae(videomae_config.to_dict(), intermediate_size=128))

    with pytest.raises(CheckpointError, match="shapes differ"):
        load_videomae_weights(wrong, tmp_path / "videomae")


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


def test_clip_dataset_is_seeded_per_item(tiny_videos):
    dataset = FaceClipDataset.from_config(
        MarlinConfig(**TINY), sorted(tiny_videos.glob("*.mp4")), sample_rate=2, seed=3, clips_per_video=2
    )
    assert len(dataset) == 6
    item = dataset[4]
    assert item["pixel_values_videos"].shape == (4, 3, 32, 32)
    assert item["pixel_values_videos"].min() >= 0 and item["pixel_values_videos"].max() <= 1
    assert item["bool_masked_pos"].sum() == 8 - num_visible_tokens(8, 0.5)
    # The same item whatever was loaded before; another epoch draws another clip and mask.
    again = FaceClipDataset.from_config(MarlinConfig(**TINY), dataset.videos, sample_rate=2, seed=3, clips_per_video=2)
    again[5]
    torch.testing.assert_close(again[4], item)
    starts = {dataset.frame_indices(4, seeded_generator(3, epoch, 4))[0] for epoch in range(8)}
    assert len(starts) > 1 and max(starts) <= 12 - 7
    dataset.set_epoch(1)
    assert not torch.equal(dataset[4]["bool_masked_pos"], item["bool_masked_pos"]) or not torch.equal(
        dataset[4]["pixel_values_videos"], item["pixel_values_videos"]
    )
    # Frames every 2nd one from the start: frame t of video 2 has red (8x + 10t + 120) mod 256, so at x = 0 ...
    dataset.set_epoch(0)
    indices = dataset.frame_indices(4, seeded_generator(3, 0, 4))
    red = dataset[4]["pixel_values_videos"][:, 0, 0, 0] * 255
    np.testing.assert_allclose(red.numpy(), [(10 * t + 120) % 256 for t in indices], atol=3)


def test_clip_dataset_frame_range_holds_out_the_end(tiny_videos):
    videos = sorted(tiny_videos.glob("*.mp4"))
    config = MarlinConfig(**TINY)
    train = FaceClipDataset.from_config(config, videos, sample_rate=1, frame_range=(0.0, 0.5), clips_per_video=4)
    held_out = FaceClipDataset.from_config(config, videos, sample_rate=1, frame_range=(0.5, 1.0), clips_per_video=4)
    for epoch in range(3):
        for index in range(len(train)):
            assert max(train.frame_indices(index, seeded_generator(0, epoch, index))) < 6
            assert min(held_out.frame_indices(index, seeded_generator(0, epoch, index))) >= 6
    # A range shorter than a clip repeats its last frame rather than leaving it.
    short = FaceClipDataset.from_config(config, videos, sample_rate=4, frame_range=(0.5, 1.0))
    assert short.frame_indices(0, seeded_generator(0)) == [6, 10, 11, 11]
    with pytest.raises(ValueError, match="frame_range"):
        FaceClipDataset.from_config(config, videos, frame_range=(0.5, 0.5))


def test_batches_do_not_depend_on_the_number_of_workers(tiny_videos):
    dataset = FaceClipDataset.from_config(MarlinConfig(**TINY), sorted(tiny_videos.glob("*.mp4")), clips_per_video=2)
    dataset.set_epoch(2)

    def batches(num_workers):
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=2, sampler=EpochShuffleSampler(len(dataset), seed=5), num_workers=num_workers
        )
        return list(loader)

    for one, other in zip(batches(0), batches(2)):
        torch.testing.assert_close(one, other)


def test_decode_frames_in_any_order_and_past_the_end(tiny_videos):
    from marlin_transformers.video import read_video

    frames, _ = read_video(tiny_videos / "clip0.mp4")
    decoded = decode_frames(tiny_videos / "clip0.mp4", [3, 1, 1, 20])
    np.testing.assert_array_equal(decoded, frames[[3, 1, 1, 11]])


def test_epoch_shuffle_sampler():
    sampler = EpochShuffleSampler(10, seed=1)
    first = list(sampler)
    assert sorted(first) == list(range(10)) and list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first


# ---------------------------------------------------------------------------------------------------------------------
# The training script
# ---------------------------------------------------------------------------------------------------------------------


TINY_RUN_FLAGS = [
    *(f"--config-override={k}={v}" for k, v in TINY.items() if k != "mask_strategy"),
    "--config-override=mask_strategy=random",
    "--batch-size=2",
    "--clips-per-video=2",
    "--num-workers=0",
    "--num-epochs=4",
    "--warmup-epochs=1",
    "--learning-rate=1e-3",
    "--max-steps=5",
    "--gp-weight=1.0",
    "--adv-weight=0.1",
    "--eval-batch-size=2",
    "--eval-steps=5",
    "--image-steps=5",
    "--checkpointing-steps=2",
    "--cpu",
]


def tiny_run(tiny_videos, output_dir, **changes) -> PretrainingArguments:
    """The arguments `TINY_RUN_FLAGS` give on the command line, with `changes`."""
    fields = dict(
        train_data=[str(tiny_videos)],
        output_dir=str(output_dir),
        model_config="small",
        config_override=[f"{k}={v}" for k, v in TINY.items() if k != "mask_strategy"] + ["mask_strategy=random"],
        batch_size=2,
        clips_per_video=2,
        num_workers=0,
        num_epochs=4,
        warmup_epochs=1,
        learning_rate=1e-3,
        max_steps=5,
        gp_weight=1.0,
        adv_weight=0.1,
        eval_batch_size=2,
        eval_steps=5,
        image_steps=5,
        checkpointing_steps=2,
        cpu=True,
    )
    return PretrainingArguments(**{**fields, **changes})


def test_command_line_flags_are_the_arguments_fields(pretrain_example, tiny_videos, tmp_path):
    argv = ["--train-data", str(tiny_videos), "--output-dir", str(tmp_path), "--model-config=small", *TINY_RUN_FLAGS]
    assert pretrain_example.parse_args(argv) == tiny_run(tiny_videos, tmp_path)
    extra = ["--resume", "latest", "--gradient-checkpointing", "--no-tensorboard", "--holdout-fraction", "0.3"]
    assert pretrain_example.parse_args(argv + extra) == tiny_run(
        tiny_videos, tmp_path, resume="latest", gradient_checkpointing=True, tensorboard=False, holdout_fraction=0.3
    )
    with pytest.raises(SystemExit):  # neither --train-data nor --youtube-faces
        pretrain_example.parse_args(["--output-dir", str(tmp_path)])


def test_old_spellings_of_farl_model_and_crop_face(pretrain_example, tiny_videos, tmp_path, capsys):
    argv = ["--train-data", str(tiny_videos), "--output-dir", str(tmp_path)]
    assert pretrain_example.parse_args([*argv, "--farl-model", "a.pt"]).farl_model == "a.pt"  # marlin's name
    assert capsys.readouterr().err == ""
    assert pretrain_example.parse_args([*argv, "--farl-parser", "b.pt"]).farl_model == "b.pt"
    assert capsys.readouterr().err == "marlin: --farl-parser is deprecated; use --farl-model\n"
    assert pretrain_example.parse_args([*argv, "--farl_parser", "c.pt"]).farl_model == "c.pt"
    assert capsys.readouterr().err == "marlin: --farl_parser is deprecated; use --farl-model\n"
    assert pretrain_example.parse_args([*argv, "--crop-face", "never"]).crop_face == "never"
    assert pretrain_example.parse_args([*argv, "--crop", "always"]).crop_face == "always"
    assert capsys.readouterr().err == "marlin: --crop is deprecated; use --crop-face\n"
    with pytest.raises(SystemExit):  # the old spelling takes the same values only
        pretrain_example.parse_args([*argv, "--crop", "sometimes"])


def test_resume_matches_an_uninterrupted_run(tiny_videos, tmp_path, capsys):
    """3 batches per epoch: the resumed run restarts mid-epoch 0 (step 2) and crosses into epoch 1."""
    full = train(tiny_run(tiny_videos, tmp_path / "full"))
    assert full.steps == 5 and len(full.train_log) == 5
    umask = os.umask(0)
    os.umask(umask)
    weights = list((tmp_path / "full").glob("**/*.safetensors"))
    assert any("checkpoints" in str(w) for w in weights)
    assert {stat.S_IMODE(w.stat().st_mode) for w in weights} == {0o666 & ~umask}  # safetensors writes 0600
    # On the terminal: the step bar (stderr), with the latest losses, and one line per evaluation (stdout; steps 0, 5).
    shown = capsys.readouterr()
    assert "pretraining: 100%" in shown.err and "5/5" in shown.err and "rec=" in shown.err
    assert shown.out.count("held-out reconstruction MSE") == 2 and "step 0/5: held-out reconstruction MSE" in shown.out
    assert f"step 5/5: rec_loss {full.train_log[-1]['rec_loss']:.5f}, d_loss" in shown.out
    # Gradient checkpointing recomputes the same numbers: the resumed run uses it.
    checkpoint = str(tmp_path / "full" / "checkpoints" / "step_2")
    resumed = train(tiny_run(tiny_videos, tmp_path / "resumed", resume=checkpoint, gradient_checkpointing=True))
    assert [row["step"] for row in resumed.train_log] == [3, 4, 5]
    for expected, got in zip(full.train_log[2:], resumed.train_log):
        for name in ("rec_loss", "adv_loss", "d_loss", "gp", "lr"):
            assert got[name] == pytest.approx(expected[name], abs=1e-6, rel=0), (got["step"], name)
    assert full.eval_curve[-1][1] == pytest.approx(resumed.eval_curve[-1][1], abs=1e-6)

    # Every loss term and the lr reach the log, and the picture is written.
    header = (tmp_path / "full" / "train_log.csv").read_text().splitlines()[0].split(",")
    assert {"rec_loss", "adv_loss", "g_loss", "d_loss", "gp", "lr"} <= set(header)
    assert (tmp_path / "full" / "reconstructions" / "step_000005.png").exists()
    assert list((tmp_path / "full").rglob("events.out.tfevents*"))

    # The final model loads with the Auto classes, critic included.
    from transformers import AutoModel, AutoModelForPreTraining

    folder = tmp_path / "full" / "model"
    assert full.model_dir == folder
    pretraining = AutoModelForPreTraining.from_pretrained(folder)
    encoder = AutoModel.from_pretrained(folder)
    torch.testing.assert_close(
        encoder.embeddings.patch_embeddings.projection.weight,
        pretraining.marlin.embeddings.patch_embeddings.projection.weight,
    )
    resumed_model = AutoModelForPreTraining.from_pretrained(tmp_path / "resumed" / "model")
    for (name, a), (_, b) in zip(pretraining.state_dict().items(), resumed_model.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    assert (folder / "modeling_marlin.py").exists()

    # `--init-from` a previous run's model continues from its weights, critic included.
    continued = build_model("base", init_from=str(folder), config_overrides=parse_config_overrides(["adv_weight=0.5"]))
    assert continued.config.adv_weight == 0.5
    torch.testing.assert_close(continued.discriminator.fc1.weight, pretraining.discriminator.fc1.weight)


@pytest.mark.slow
def test_face_clips_cropped_and_parsed_for_fasking(tmp_path):
    """An in-the-wild video is tracked, cropped and parsed once into the cache; Fasking masks come from the parsing."""
    from video_factory import moving_face_frames

    frames, _ = moving_face_frames(8, height=160, width=200, scale=0.6)
    encode_video(tmp_path / "wild.mp4", frames, fps=10)
    config = MarlinConfig(**{**TINY, "image_size": 64, "mask_ratio": 0.75, "mask_strategy": "fasking"})
    dataset = FaceClipDataset.from_config(config, [tmp_path / "wild.mp4"], sample_rate=2, cache_dir=tmp_path / "cache")
    (entry,) = dataset.cache_entries
    crops, labels = np.load(entry / "crops.npy"), np.load(entry / "labels.npy")
    assert crops.shape == (8, 64, 64, 3) and labels.shape == (8, 64, 64)
    # The face fills the crop: eyes, nose and mouth are parsed in every frame.
    for part in (4, 5, 6, 7):
        assert (labels == part).any(axis=(1, 2)).all(), part
    item = dataset[0]
    num_tokens = 2 * 16
    assert item["bool_masked_pos"].sum() == num_tokens - num_visible_tokens(num_tokens, 0.75)
    # A second dataset over the same cache reuses it, and items are the same.
    again = FaceClipDataset.from_config(config, [tmp_path / "wild.mp4"], sample_rate=2, cache_dir=tmp_path / "cache")
    assert again.cache_entries == dataset.cache_entries
    torch.testing.assert_close(again[0], item)
    # Without a cache, each item is decoded, tracked and parsed on its own (the tracker then smooths boxes over the
    # clip's frames only, so crops differ a little from the cache's, which tracked every frame).
    live_item = FaceClipDataset.from_config(config, [tmp_path / "wild.mp4"], sample_rate=2)[0]
    assert live_item["pixel_values_videos"].shape == (4, 3, 64, 64)
    assert live_item["bool_masked_pos"].sum() == item["bool_masked_pos"].sum()


def test_gradient_accumulation_counts_optimizer_steps(tiny_videos, tmp_path):
    result = train(
        tiny_run(tiny_videos, tmp_path / "run", gradient_accumulation_steps=2, max_steps=2, tensorboard=False)
    )
    # 3 micro-batches per epoch: step 1 = batches 1-2, step 2 = batch 3 (the end of the epoch syncs).
    assert result.steps == 2 and [row["step"] for row in result.train_log] == [1, 2]
    assert result.train_log[0]["lr"] == 0.0 and result.train_log[1]["lr"] > 0


def test_reference_lr_schedule_in_the_loop(tiny_videos, tmp_path):
    args = tiny_run(tiny_videos, tmp_path / "run", lr_schedule="reference", max_steps=4, tensorboard=False)
    args.eval_steps = args.image_steps = args.checkpointing_steps = 0
    result = train(args)
    # 3 batches an epoch (see above); the final lr is the scaled one of the tiny batch
    final = scaled_learning_rates(args.batch_size)[1]
    expected = [reference_learning_rate_at(step, 3, 1e-3, final, 1, 4) for step in range(4)]
    assert [row["lr"] for row in result.train_log] == pytest.approx(expected)
    assert expected[0] == 0.0 and expected[1] == expected[2] == expected[3] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="lr_schedule"):
        tiny_run(tiny_videos, tmp_path, lr_schedule="epoch")


@pytest.fixture
def youtube_faces_root(tmp_path):
    """A fake YouTube Faces tree in the reference's layout: 2 training clips, 1 val clip, with parsing maps."""
    from PIL import Image

    root = tmp_path / "ytf"
    rng = np.random.default_rng(0)
    for split, clips in (("train", ["Ann/0", "Bob/1"]), ("val", ["Cid/0"])):
        (root / f"{split}_set.csv").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{split}_set.csv").write_text("path,len\n" + "".join(f"{c},12\n" for c in clips))
        for clip in clips:
            (root / "crop_images_DB" / clip).mkdir(parents=True)
            (root / "face_parsing_images_DB" / clip).mkdir(parents=True)
            for t in range(12):
                frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(frame).save(root / "crop_images_DB" / clip / f"{t:04d}.png")
                # The left half is nose (6), the right half background; the last frame has no parsed face.
                labels = np.zeros((1, 32, 32), np.uint8)
                labels[0, :, :16] = 6
                np.save(root / "face_parsing_images_DB" / clip / f"{t:04d}.npy", labels if t < 11 else labels[:0])
    return root


def test_youtube_faces_frame_folders_with_saved_parsing(youtube_faces_root, tmp_path):
    from PIL import Image

    clips = youtube_faces_clips(youtube_faces_root, "train")
    assert [c.relative_to(youtube_faces_root / "crop_images_DB").as_posix() for c in clips] == ["Ann/0", "Bob/1"]
    maps = precomputed_label_maps(clips[0], [0, 11])
    assert maps.shape == (2, 32, 32) and (maps[0, :, :16] == 6).all() and (maps[1] == 0).all()

    config = MarlinConfig(**{**TINY, "mask_strategy": "fasking"})
    dataset = FaceClipDataset.from_config(config, clips, sample_rate=1, frame_range=(0.0, 0.9))
    cached = FaceClipDataset.from_config(
        config, clips, sample_rate=1, frame_range=(0.0, 0.9), cache_dir=tmp_path / "cache"
    )
    for index in range(2):
        item = dataset[index]
        torch.testing.assert_close(cached[index], item)
        # Fasking makes the background column visible first: the nose column (tokens 0 and 2 of each tubelet) is
        # masked.
        assert item["bool_masked_pos"].tolist() == [True, False, True, False] * 2
        start = dataset.frame_indices(index, seeded_generator(0, 0, index))[0]
        frame = np.asarray(Image.open(clips[index] / f"{start:04d}.png"))
        np.testing.assert_allclose(item["pixel_values_videos"][0].permute(1, 2, 0).numpy() * 255, frame, atol=1e-3)

    with pytest.raises(DatasetError, match="no such split"):
        youtube_faces_clips(youtube_faces_root, "test")


def test_crop_images_db_converted_to_a_prepared_folder(youtube_faces_root, tmp_path):
    """The reference's `crop_images_DB` (with its saved parsing maps) becomes a prepared folder through the one
    preparer, without tracking: the clips are its frames, the parsing its maps."""
    from PIL import Image

    from marlin_transformers.data.face_videos import FaceVideo
    from marlin_transformers.data.prepared_faces import read_annotations, read_prepared
    from marlin_transformers.pretraining import PreparationSettings, prepare_corpus

    clips = youtube_faces_clips(youtube_faces_root, "train")
    db = youtube_faces_root / "crop_images_DB"
    videos = [FaceVideo(clip.relative_to(db).as_posix(), clip.parent.name, clip) for clip in clips]
    split = {"train": [video.video_id for video in videos], "validation": []}
    settings = PreparationSettings(crop="never", crop_size=32, lossless=True)
    out = tmp_path / "prepared"
    summary = prepare_corpus(videos, out, settings, split, {}, name="youtube_faces", show_progress=False)
    assert summary.failed == 0
    _, prepared = read_prepared(out)
    assert [video.video_id for video in prepared["train"]] == ["Ann/0", "Bob/1"]
    for video, clip in zip(prepared["train"], clips):
        expected = np.stack([np.asarray(Image.open(clip / f"{t:04d}.png")) for t in range(12)])
        np.testing.assert_array_equal(decode_frames(video.clip, list(range(12))), expected)
        arrays = read_annotations(video.annotations)
        parsing = arrays["parsing"]
        assert parsing.shape == (12, 32, 32) and (parsing[:11, :, :16] == 6).all()
        assert (parsing[:11, :, 16:] == 0).all() and (parsing[11] == 0).all()
        assert arrays["crop_boxes"].tolist() == [[0, 0, 32, 32]] * 12
    # The outputs are bound to `crop`; tracked folders, made before it existed, keep their settings fingerprint.
    assert PreparationSettings().bound() != settings.bound() and "crop" not in PreparationSettings().bound()


def test_pretrain_on_youtube_faces(youtube_faces_root, tmp_path):
    """The example script end to end, in its own process."""
    overrides = [f"--config-override={k}={v}" for k, v in TINY.items() if k != "mask_strategy"]
    run = tmp_path / "run"
    command = (
        [sys.executable, str(EXAMPLE), "--youtube-faces", str(youtube_faces_root), "--output-dir", str(run)]
        + ["--model-config=small", *overrides]
        + ["--config-override=mask_strategy=fasking", "--sample-rate=1", "--batch-size=2", "--num-workers=0"]
        + ["--num-epochs=2", "--warmup-epochs=1", "--eval-batch-size=1", "--eval-steps=2", "--image-steps=0"]
        + ["--checkpointing-steps=0", "--no-tensorboard", "--cpu"]
    )
    process = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr
    with open(run / "train_log.csv", newline="") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    eval_steps = [int(line.split(",")[0]) for line in (run / "eval.csv").read_text().splitlines()]
    assert steps == [1, 2] and eval_steps == [0, 2]
    assert (run / "model" / "config.json").exists()


@pytest.mark.slow
def test_the_documented_two_process_cpu_command_starts_two_ranks(tiny_videos, tmp_path):
    """docs/pretraining.md's CPU data-parallel command, on the tiny model for 2 steps: one RNG state file per rank."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "pretraining.md").read_text()
    documented = re.search(r"`(torchrun [^`]*) \.\.\.`", page).group(1).split()
    assert documented[:4] == ["torchrun", "--nproc_per_node", "2", "examples/pretrain.py"], documented
    run = tmp_path / "run"
    argv = ["--train-data", str(tiny_videos), "--output-dir", str(run), "--model-config=small", *TINY_RUN_FLAGS]
    argv += ["--max-steps=2", "--eval-steps=0", "--image-steps=0", "--no-tensorboard"]
    command = [sys.executable, "-m", "torch.distributed.run", *documented[1:3], str(EXAMPLE), *documented[4:], *argv]
    process = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr
    states = sorted(p.name for p in (run / "checkpoints" / "step_2").glob("random_states_*.pkl"))
    assert states == ["random_states_0.pkl", "random_states_1.pkl"]


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints: written whole, pruned, never unpickling code; argument errors
# ---------------------------------------------------------------------------------------------------------------------


# Run as a script: examples/pretrain.py with Accelerate's file writer patched to SIGKILL the process right after the
# first optimizer file of the step-4 checkpoint, i.e. inside `save_state`, with some of its files written.
KILLED_IN_SAVE_STATE = """
import os, runpy, signal, sys
import accelerate.checkpointing as checkpointing

write = checkpointing.save

def write_then_die(obj, path, *args, **kwargs):
    write(obj, path, *args, **kwargs)
    if "step_4" in str(path) and os.path.basename(str(path)) == "optimizer.bin":
        os.kill(os.getpid(), signal.SIGKILL)

checkpointing.save = write_then_die
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def checkpoint_names(output_dir: Path) -> list[str]:
    return sorted(p.name for p in (output_dir / "checkpoints").iterdir())


def test_run_killed_while_saving_resumes_from_the_last_whole_checkpoint(
    pretrain_example, tiny_videos, tmp_path, capsys
):
    run = tmp_path / "run"
    argv = ["--train-data", str(tiny_videos), "--output-dir", str(run), "--model-config=small", *TINY_RUN_FLAGS]
    argv.append("--no-tensorboard")
    script = tmp_path / "killed_in_save_state.py"
    script.write_text(KILLED_IN_SAVE_STATE)
    killed = subprocess.run([sys.executable, str(script), str(EXAMPLE), *argv], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # The step-4 save was cut after optimizer.bin: its files are in the hidden partial folder, no step_4 exists.
    assert checkpoint_names(run) == [".step_4.partial", "step_2"]
    assert sorted(p.name for p in (run / "checkpoints" / ".step_4.partial").iterdir()) == [
        "model.safetensors",
        "optimizer.bin",
    ]

    capsys.readouterr()
    assert pretrain_example.main([*argv, "--resume", "latest"]) == 0
    shown = capsys.readouterr().out
    assert f"removed {run / 'checkpoints' / '.step_4.partial'}, an unfinished checkpoint" in shown
    assert f"resumed from {run / 'checkpoints' / 'step_2'} at step 2" in shown
    assert checkpoint_names(run) == ["step_2", "step_4"] and checkpoint_problem(run / "checkpoints" / "step_4") is None
    # The killed and resumed run ends where an uninterrupted one does.
    full = train(tiny_run(tiny_videos, tmp_path / "full", tensorboard=False))
    resumed, expected = (MarlinForPreTraining.from_pretrained(r / "model") for r in (run, full.model_dir.parent))
    for (name, a), (_, b) in zip(expected.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


def test_keep_checkpoints_leaves_the_newest(tiny_videos, tmp_path):
    train(tiny_run(tiny_videos, tmp_path, checkpointing_steps=1, keep_checkpoints=2, tensorboard=False))
    assert checkpoint_names(tmp_path) == ["step_4", "step_5"]
    assert all(checkpoint_problem(tmp_path / "checkpoints" / name) is None for name in ("step_4", "step_5"))
    assert json.loads((tmp_path / "checkpoints" / "step_5" / PROGRESS_FILENAME).read_text())["step"] == 5


def test_resume_latest_skips_incomplete_checkpoints(tiny_videos, tmp_path, capsys):
    train(tiny_run(tiny_videos, tmp_path, max_steps=2, tensorboard=False))
    checkpoints = tmp_path / "checkpoints"
    # step_6: a copy cut short (one file shorter than progress.json says); step_8: no progress.json at all (a save of
    # an older version, killed after its first file); step_x: not a step.
    shutil.copytree(checkpoints / "step_2", checkpoints / "step_6")
    with open(checkpoints / "step_6" / "optimizer_1.bin", "r+b") as f:
        f.truncate(100)
    (checkpoints / "step_8").mkdir()
    shutil.copy(checkpoints / "step_2" / "model.safetensors", checkpoints / "step_8")
    (checkpoints / "step_x").mkdir()
    capsys.readouterr()
    result = train(tiny_run(tiny_videos, tmp_path, max_steps=3, resume="latest", tensorboard=False))
    shown = capsys.readouterr().out
    assert f"--resume latest: skipping {checkpoints / 'step_8'}, not a complete checkpoint: no progress.json" in shown
    assert f"skipping {checkpoints / 'step_6'}, not a complete checkpoint: optimizer_1.bin has 100 bytes" in shown
    assert f"resumed from {checkpoints / 'step_2'} at step 2" in shown
    assert [row["step"] for row in result.train_log] == [3]
    # --resume of an incomplete folder is refused, in one line naming it; 'latest' without checkpoints starts afresh.
    with pytest.raises(CheckpointError, match=r"--resume .*step_6: not a complete pretraining checkpoint \(") as error:
        train(tiny_run(tiny_videos, tmp_path, resume=str(checkpoints / "step_6")))
    assert "\n" not in str(error.value)
    fresh = train(tiny_run(tiny_videos, tmp_path / "fresh", max_steps=1, resume="latest", tensorboard=False))
    assert fresh.steps == 1
    assert "--resume latest: no complete checkpoint in" in capsys.readouterr().out


class Planted:
    """A pickle that, when unpickled in full, creates the folder `marker`: proof that loading ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.fixture(scope="module")
def saved_checkpoint(tiny_videos, tmp_path_factory):
    """The step_2 checkpoint of a tiny run."""
    output_dir = tmp_path_factory.mktemp("planted")
    train(tiny_run(tiny_videos, output_dir, max_steps=2, eval_steps=0, tensorboard=False))
    return output_dir / "checkpoints" / "step_2"


# custom_checkpoint_1.pkl is where `register_for_checkpointing` put the step, which Accelerate unpickles in full.
@pytest.mark.parametrize("planted", ["custom_checkpoint_1.pkl", "random_states_0.pkl", "optimizer.bin"])
def test_resume_does_not_unpickle_a_planted_pickle(saved_checkpoint, tiny_videos, tmp_path, planted):
    folder = tmp_path / "downloaded" / "step_2"
    shutil.copytree(saved_checkpoint, folder)
    marker = tmp_path / "code_ran"
    torch.save(Planted(marker), folder / planted)
    # Whoever planted it also lists it in progress.json, so that the folder looks complete.
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.name != PROGRESS_FILENAME}
    (folder / PROGRESS_FILENAME).write_text(json.dumps({"step": 2, "files": files}))

    args = tiny_run(tiny_videos, tmp_path / "run", resume=str(folder), max_steps=3, tensorboard=False)
    with pytest.raises(CheckpointError) as error:
        train(args)
    assert not marker.exists()
    assert "\n" not in str(error.value)
    if planted == "custom_checkpoint_1.pkl":
        assert "custom_checkpoint_1.pkl: a pickle pretraining checkpoints neither hold nor read" in str(error.value)
    else:
        assert "pass --trust-checkpoint only if you trust the folder's origin" in str(error.value)
    if planted == "optimizer.bin":  # the flag does what it says: a full unpickling, which runs the planted code
        with pytest.raises(Exception):  # noqa: B017  (whatever the optimizer makes of the planted object)
            train(tiny_run(tiny_videos, tmp_path / "run", resume=str(folder), trust_checkpoint=True))
        assert marker.is_dir()


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--config-override=hiden_size=32"],
            "--config-override hiden_size=32: hiden_size is not a MarlinConfig field; did you mean hidden_size?",
        ),
        (["--config-override=hidden_size"], "--config-override hidden_size: give KEY=VALUE"),
        (["--num-epochs=0"], "num_epochs (--num-epochs) is 0; give at least 1"),
        (["--batch-size=-2"], "batch_size (--batch-size) is -2; give at least 1"),
        (["--keep-checkpoints=-1"], "keep_checkpoints (--keep-checkpoints) is -1; give at least 0"),
        (["--logging-steps=0"], "logging_steps (--logging-steps) is 0; give at least 1"),
    ],
)
def test_bad_arguments_are_refused_up_front(pretrain_example, tiny_videos, tmp_path, capsys, flags, message):
    argv = ["--train-data", str(tiny_videos), "--output-dir", str(tmp_path), *TINY_RUN_FLAGS, *flags]
    with pytest.raises(SystemExit) as exit_:
        pretrain_example.parse_args(argv)
    assert exit_.value.code == 2
    shown = capsys.readouterr().err
    assert f"error: {message}" in shown.splitlines()[-1]
    assert "Traceback" not in shown


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--config-override=num_attention_heads=3"],
            "hidden_size (32) must be a multiple of num_attention_heads (3)",
        ),
        (["--config-override=num_attention_heads=0"], "num_attention_heads must be at least 1, got 0"),
        (["--config-override=num_hidden_layers=-1"], "num_hidden_layers must be at least 1, got -1"),
        (["--config-override=hidden_size=wide"], "Field 'hidden_size' expected int, got str"),
        (["--model-config=huge"], "Unknown MARLIN variant 'huge'"),
        (["--train-data={tmp}/MISSING"], "MISSING: no such video file or folder"),
        (["--train-data={tmp}/EMPTY"], "no video files"),
        (["--batch-size=64"], "training clips, fewer than one batch of 64; lower --batch-size"),
        (
            ["--resume={tmp}/NOT_A_CHECKPOINT"],
            "NOT_A_CHECKPOINT: not a complete pretraining checkpoint (no progress.json",
        ),
    ],
)
def test_bad_inputs_are_one_line(pretrain_example, tiny_videos, tmp_path, capsys, flags, message):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "NOT_A_CHECKPOINT").mkdir()
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    argv = ["--train-data", str(tiny_videos), "--output-dir", str(tmp_path / "run"), *TINY_RUN_FLAGS, *flags]
    capsys.readouterr()
    assert pretrain_example.main(argv) == 1
    shown = capsys.readouterr().err
    (line,) = [line for line in shown.splitlines() if line.startswith("pretrain: error:")]
    assert message in line and "Traceback" not in shown
