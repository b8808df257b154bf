import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoVideoProcessor

from marlin_transformers import MarlinConfig
from marlin_transformers.exceptions import VideoError
from marlin_transformers.video import iter_windows
from marlin_transformers.video_processing_marlin import MarlinVideoProcessor
from video_factory import encode_video, indexed_frames


@pytest.fixture(scope="module")
def processor():
    return MarlinVideoProcessor()


def clip(height=224, width=224, num_frames=16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


def pixels(processor, videos, **kwargs) -> torch.Tensor:
    return processor(videos, return_tensors="pt", **kwargs)["pixel_values_videos"]


def test_square_clip_is_only_rescaled(processor):
    frames = clip()
    out = processor(frames, return_tensors="pt")
    assert list(out.keys()) == ["pixel_values_videos"]
    values = out["pixel_values_videos"]
    assert values.shape == (1, 16, 3, 224, 224) and values.dtype == torch.float32
    # Raw RGB in [0, 1]: no mean/std normalization.
    torch.testing.assert_close(values[0], torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)


@pytest.mark.parametrize(("height", "width"), [(99, 131), (480, 360), (225, 225)])
def test_any_size_is_resized_to_224(processor, height, width):
    values = pixels(processor, clip(height, width))
    assert values.shape == (1, 16, 3, 224, 224)
    assert 0.0 <= values.min() and values.max() <= 1.0


def test_input_forms_agree(processor):
    frames = clip(64, 64, seed=1)
    expected = pixels(processor, frames)
    tensor = torch.from_numpy(frames)
    torch.testing.assert_close(pixels(processor, tensor), expected)
    torch.testing.assert_close(pixels(processor, tensor.permute(0, 3, 1, 2)), expected)
    torch.testing.assert_close(pixels(processor, list(frames)), expected)
    torch.testing.assert_close(pixels(processor, [Image.fromarray(f) for f in frames]), expected)
    batch = pixels(processor, [frames, clip(80, 100, seed=2)])
    assert batch.shape == (2, 16, 3, 224, 224)
    torch.testing.assert_close(batch[:1], expected)
    assert pixels(processor, np.stack([frames, frames])).shape == (2, 16, 3, 224, 224)


def test_video_file_gives_its_windows_without_torchcodec(tmp_path, monkeypatch):
    def no_fetch(*args, **kwargs):
        raise AssertionError("transformers' torchcodec/torchvision decoding must not be used")

    monkeypatch.setattr(MarlinVideoProcessor, "fetch_videos", no_fetch)
    processor = MarlinVideoProcessor()
    path = encode_video(tmp_path / "v.mkv", indexed_frames(40, 224, 224))
    values = pixels(processor, path)
    windows = list(iter_windows(path))
    assert values.shape == (len(windows), 16, 3, 224, 224) == (2, 16, 3, 224, 224)
    expected = torch.from_numpy(np.stack([w.frames for w in windows])).permute(0, 1, 4, 2, 3).float() / 255
    torch.testing.assert_close(values, expected)
    # Window options per call and per processor.
    assert pixels(processor, path, stride=4).shape[0] == 3  # starts 0 and 8, then the tail 9..39
    assert pixels(MarlinVideoProcessor(sample_rate=1), path).shape[0] == 3  # 0..15, 16..31, 24..39
    assert pixels(processor, [path, path]).shape[0] == 4


def test_bad_inputs(processor, tmp_path):
    with pytest.raises(VideoError, match="not found"):
        processor(str(tmp_path / "missing.mp4"))
    with pytest.raises(TypeError):
        processor(42)
    with pytest.raises(ValueError):
        processor([])


def test_save_and_load_round_trip(tmp_path):
    processor = MarlinVideoProcessor(sample_rate=3, stride=8)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "video_preprocessor_config.json").read_text())
    assert saved["video_processor_type"] == "MarlinVideoProcessor"
    assert saved["do_normalize"] is False and saved["size"] == {"height": 224, "width": 224}
    loaded = MarlinVideoProcessor.from_pretrained(tmp_path)
    assert (loaded.sample_rate, loaded.stride, loaded.do_normalize) == (3, 8, False)
    assert loaded.to_dict() == processor.to_dict()
    frames = clip(100, 100)
    torch.testing.assert_close(pixels(loaded, frames), pixels(processor, frames))
    # What the package registers: the Auto class finds the processor by its saved type.
    AutoVideoProcessor.register(MarlinConfig, MarlinVideoProcessor, exist_ok=True)
    assert type(AutoVideoProcessor.from_pretrained(tmp_path)) is MarlinVideoProcessor


@pytest.mark.parametrize("as_tensor", [False, True])
def test_floats_in_unit_range_are_taken_as_already_scaled(processor, as_tensor):
    frames = clip()
    scaled = frames.astype(np.float32) / 255
    video = torch.from_numpy(scaled) if as_tensor else scaled
    # The README's `torch.rand` input: divided by 255 a second time before (max 0.0039).
    torch.testing.assert_close(pixels(processor, video), pixels(processor, frames))
    torch.testing.assert_close(pixels(processor, frames.astype(np.float32)), pixels(processor, frames))  # [0, 255]
    with pytest.raises(ValueError, match="floats in \\[0, 1\\] and others"):
        pixels(processor, [scaled, frames])


@pytest.mark.parametrize("num_frames", [8, 20])
def test_clip_of_another_length_is_one_clear_error(processor, num_frames):
    with pytest.raises(ValueError, match=f"a clip has {num_frames} frames; MARLIN takes clips of 16 frames"):
        pixels(processor, clip(num_frames=num_frames))
