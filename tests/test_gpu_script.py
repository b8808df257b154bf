"""The GPU benchmark script (`tests/benchmarks/run_gpu.py`) runs, so it is ready when a GPU is lent: here on the CPU,
at its smallest."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_reference

SCRIPT = Path(__file__).parent / "benchmarks" / "run_gpu.py"


@pytest.mark.slow
def test_gpu_benchmark_script_runs_and_prints_its_table_on_a_cpu():
    require_reference()  # the table compares with the reference
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--variant", "small", "--batch-sizes", "1"]
    command += ["--repeats", "1", "--pretrain-batch-size", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    labels = [row.split(" | ")[0].lstrip("| ") for row in rows]
    assert labels == [
        "marlin-pytorch bf16 autocast",
        "marlin-transformers bf16 (sdpa)",
        "pretraining step, reference",
        "pretraining step, ours",
    ]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(cells[2]) > 0 and float(cells[3]) > 0 and cells[5].endswith("x")
