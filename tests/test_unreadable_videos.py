"""Corrupt videos among many are left out before training, one stderr line each and a count; none readable is one
error line (`video.decoding.probe_video` / `skip_unreadable`, used by pretraining's `FaceClipDataset`; fine-tuning's
side is in test_finetune.py)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_CLIP
from marlin_transformers import MarlinConfig
from marlin_transformers.exceptions import VideoError
from marlin_transformers.pretraining import FaceClipDataset
from marlin_transformers.video import probe_video
from video_factory import encode_video

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pretrain.py"
TINY = {**TINY_CLIP, "mask_ratio": 0.5, "mask_strategy": "random"}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> tuple[list[Path], list[Path]]:
    """(good, corrupt): three 12-frame 32x32 videos, then random bytes named .mp4 and the first half of a good mp4
    (its index, written last, is gone), in one folder."""
    folder = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    good = [
        Path(encode_video(folder / f"clip{v}.mp4", rng.integers(0, 256, (12, 32, 32, 3), np.uint8))) for v in (0, 1, 2)
    ]
    (folder / "noise.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    data = good[0].read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    return good, [folder / "noise.mp4", folder / "truncated.mp4"]


def test_probe_video_refuses_corrupt_files_in_one_line(videos, tmp_path):
    good, corrupt = videos
    probe_video(good[0])
    for path in corrupt:
        with pytest.raises(VideoError, match=f"^{path}: cannot be opened as a video .*corrupt.$"):
            probe_video(path)
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "0001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoError, match="0001.jpg: cannot be read as an image"):
        probe_video(tmp_path / "frames")


@pytest.mark.parametrize("cached", [False, True])
def test_pretraining_dataset_skips_unreadable_videos(videos, tmp_path, capsys, cached):
    good, corrupt = videos
    listed = [corrupt[0], good[0], good[1], corrupt[1], good[2]]
    cache = {"cache_dir": tmp_path / "cache"} if cached else {}
    dataset = FaceClipDataset.from_config(MarlinConfig(**TINY), listed, sample_rate=1, clips_per_video=2, **cache)
    assert dataset.videos == good and len(dataset) == 6 and dataset.frame_counts == [12, 12, 12]
    assert dataset[5]["pixel_values_videos"].shape == (4, 3, 32, 32)  # item 5: a clip of the third good video
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err[:2]] == [f"skipping {corrupt[0]}", f"skipping {corrupt[1]}"]
    assert err[2:] == ["skipped 2 of 5 videos: unreadable; see the lines above"]

    with pytest.raises(VideoError, match=f"^none of the 2 videos is readable \\(the first: {corrupt[0]}: "):
        FaceClipDataset.from_config(MarlinConfig(**TINY), corrupt, **cache)


def test_pretraining_runs_past_corrupt_videos(videos, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("pretrain_example", EXAMPLE)
    pretrain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pretrain)
    overrides = [f"--config-override={k}={v}" for k, v in TINY.items()]
    argv = ["--train-data", str(videos[0][0].parent), "--output-dir", str(tmp_path / "run"), "--model-config=small"]
    argv += [*overrides, "--batch-size=2", "--num-workers=0", "--max-steps=2", "--eval-batch-size=2", "--cpu"]
    argv += ["--eval-steps=0", "--image-steps=0", "--checkpointing-steps=0", "--no-tensorboard", "--quiet"]
    assert pretrain.main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("skipping ") == 4  # the training and the held-out (end of each video) datasets, each twice
    assert "skipped 2 of 5 videos: unreadable; see the lines above" in err and "Traceback" not in err
