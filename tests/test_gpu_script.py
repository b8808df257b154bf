"""The GPU benchmark script (`tests/benchmarks/run_gpu.py`) runs, so it is ready when a GPU is lent: here on the CPU,
at its smallest."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_reference
from video_factory import encode_video, moving_face_frames

SCRIPT = Path(__file__).parent / "benchmarks" / "run_gpu.py"


@pytest.mark.slow
def test_gpu_benchmark_script_runs_and_prints_its_tables_on_a_cpu(tmp_path):
    require_reference()  # the table compares with the reference
    videos = tmp_path / "videos"
    videos.mkdir()
    for name, num_frames in (("a.mp4", 40), ("b.mp4", 34)):
        encode_video(videos / name, moving_face_frames(num_frames, height=120, width=160, scale=0.35)[0])
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--variant", "small", "--batch-sizes", "1"]
    command += ["--repeats", "1", "--pretrain-batch-size", "1", "--videos", str(videos), "--corpus-copies", "1"]
    command += ["--corpus-batch-size", "2", "--pretrain-steps", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    tables = result.stdout.split("| whole run |")
    assert len(tables) == 2, result.stdout
    feeds = 2 if len(os.sched_getaffinity(0)) > 2 else 1  # 1 and N - 1 workers
    whole = [line for line in tables[1].splitlines() if line.startswith("| ") and "---" not in line]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in whole]
    assert [row[0].split(",")[0] for row in cells] == [
        "marlin extract",
        "its encode seconds (the encoder's share of the run)",
        "its start-up and exit (wall less job)",
        *["the feed alone (MTCNN on cpu in each worker)"] * feeds,
        *["the feed alone (one shared MTCNN process on cpu)"] * feeds,  # on a GPU also MTCNN there in each worker
        "pretraining",
    ]
    windows = int(cells[0][1])
    assert windows == 4 and all(int(row[1]) == windows for row in cells[1:-1])  # 40 and 34 frames: 2 windows each
    assert 0 < float(cells[1][2]) < float(cells[0][2]) and float(cells[2][2]) > 0
    steps, seconds, losses = int(cells[-1][1]), float(cells[-1][2]), cells[-1][4]
    assert steps == 2 and seconds > 0 and re.fullmatch(r"step 1 rec_loss [\d.e-]+, step 2 rec_loss [\d.e-]+", losses)
    rows = [line for line in tables[0].splitlines() if line.startswith("| ") and "---" not in line][1:]
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
