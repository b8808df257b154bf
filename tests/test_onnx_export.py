"""`marlin export --format onnx`: the encoder as an ONNX graph that onnxruntime runs to PyTorch's numbers."""

import numpy as np
import onnxruntime
import pytest
import torch

from conftest import TINY_CLIP
from marlin_transformers import MarlinConfig, MarlinModel
from marlin_transformers.cli import main
from marlin_transformers.extraction.onnx_export import OUTPUT_NAMES, export_onnx

# The bound for fp32 parity; measured over seeds 0-2 of the tiny model: 1.1e-6 to 1.4e-6 (sdpa in PyTorch,
# onnxruntime's own attention kernels).
TOLERANCE = 1e-4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_onnxruntime_gives_the_models_numbers_at_any_batch_size(tmp_path, seed):
    torch.manual_seed(seed)
    model = MarlinModel(MarlinConfig(**TINY_CLIP)).eval()
    path = tmp_path / "marlin.onnx"
    assert export_onnx(model, path) < TOLERANCE  # the export's own check, on a batch of 2
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        clips = torch.rand(batch, 4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
        hidden, pooled = session.run(OUTPUT_NAMES, {"pixel_values_videos": clips.numpy()})
        with torch.inference_mode():
            expected = model(clips)
        assert hidden.shape == (batch, 8, 32) and pooled.shape == (batch, 32)
        np.testing.assert_allclose(hidden, expected.last_hidden_state.numpy(), atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(pooled, expected.pooler_output.numpy(), atol=TOLERANCE, rtol=0)
    assert not list(tmp_path.glob(".*.partial"))


def test_cli_export_says_what_it_wrote_and_refuses_a_wrong_model_in_one_line(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "models" / "tiny.onnx"
    assert main(["export", str(tiny_model_dir), str(out), "--format", "onnx", "--static-batch"]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"wrote {out} (ONNX, batch 2); onnxruntime matches PyTorch to ") and out.is_file()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [2, 16, 3, 32, 32]  # fixed batch
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such model folder or checkpoint file" in err
    assert not (tmp_path / "x.onnx").exists()
