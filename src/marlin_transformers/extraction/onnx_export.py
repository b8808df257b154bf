"""MARLIN's encoder as an ONNX graph, for serving outside PyTorch (onnxruntime, TensorRT, ...): `marlin export`.

The graph comes from PyTorch's dynamo exporter (`torch.onnx.export(..., dynamo=True)`, which traces with
`torch.export`: the model's oneDNN fast path steps aside there, so the graph holds plain matrix products). It reads
`pixel_values_videos` (batch, frames, 3, height, width) float32 in [0, 1] at the model's clip shape, the batch
dynamic by default, and gives `last_hidden_state` (batch, num_patches, hidden_size) and `pooler_output` (batch,
hidden_size), as `MarlinModel` does. The file is written beside its destination and renamed into place, then checked
with onnxruntime against the PyTorch model on a seeded clip.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import torch

from ..exceptions import MarlinError
from ..loading import load_marlin

INPUT_NAMES = ["pixel_values_videos"]
OUTPUT_NAMES = ["last_hidden_state", "pooler_output"]


def export_onnx(
    model, path: str | os.PathLike, dynamic_batch: bool = True, opset: int | None = None, check: bool = True
) -> float | None:
    """Write the encoder of `model` (a converted folder, a Hub id, an official checkpoint or a loaded model) to `path`.

    Args:
        dynamic_batch: any batch size (else the graph is fixed at batch 2, the example's).
        opset: the ONNX opset (default: the exporter's).
        check: run the file with onnxruntime on a seeded batch of 2 clips and compare with PyTorch.

    Returns:
        With `check`, the largest absolute difference of either output to PyTorch's (fp32; about 1e-6 on the tiny
        test model), else None.
    """
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's dependency: fail here in one line, not deep inside)
    except ImportError:
        raise MarlinError("ONNX export needs onnx and onnxscript: pip install 'marlin-transformers[onnx]'.") from None
    encoder = load_marlin(model)
    config = encoder.config
    generator = torch.Generator().manual_seed(0)
    size = config.image_size
    example = torch.rand(2, config.num_frames, config.num_channels, size, size, generator=generator)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates every stage on stdout
            program = torch.onnx.export(
                encoder,
                (example,),
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                input_names=INPUT_NAMES,
                output_names=OUTPUT_NAMES,
                opset_version=opset,
                verbose=False,
            )
        program.save(str(partial))
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if not check:
        return None
    return compare_with_onnxruntime(encoder, path, example)


def compare_with_onnxruntime(encoder, path: str | os.PathLike, clips: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime's outputs for `path` and `encoder`'s on `clips`."""
    try:
        import onnxruntime
    except ImportError:
        raise MarlinError(f"{path}: written; checking it needs onnxruntime (pip install onnxruntime).") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(OUTPUT_NAMES, {INPUT_NAMES[0]: clips.numpy()})
    with torch.inference_mode():
        expected = encoder(clips)
    return max(
        float(np.abs(got - want.numpy()).max())
        for got, want in zip(outputs, (expected.last_hidden_state, expected.pooler_output))
    )
