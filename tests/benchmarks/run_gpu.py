"""Every GPU figure in one run and two tables, for a lent machine.

    python tests/benchmarks/run_gpu.py [--variant base] [--batch-sizes 1 32] [--repeats 5] [--device cuda]
        [--videos DIR] [--corpus-copies 8] [--corpus-batch-size 32] [--pretrain-steps 50]

Rows (bf16 unless said; best of `--repeats` after a warm-up; clips/s and peak memory from
`torch.cuda.max_memory_allocated`, reset before each row):
- the MARLIN reference (marlin-pytorch 0.3.4, `extract_features` under bf16 autocast) per batch size;
- ours (`MarlinModel` in bf16) with PyTorch's SDPA choosing its kernel, and with SDPA held to the flash kernel, per
  batch size;
- one pretraining step (critic + generator, Fasking-sized mask) of the reference and of ours under bf16 autocast,
  batch 8, from `bench_pretrain.py` (each in its own subprocess), with the speed-up (goal: >= 2x).

Then a second table, whole runs (`--corpus-copies 0` / `--pretrain-steps 0` skip them):
- a corpus: `--corpus-copies` copies of the videos in `--videos` through the whole `marlin extract --crop-face
  --dtype bfloat16` on `--device` with the workers `pipeline.default_num_workers` gives it there (start-up, model load
  of a `marlin init` folder, decoding, face tracking, encoding, writing), windows/s and its own encode seconds
  (`--timings`); and the feed alone (`bench_corpus.feed_rates`: decode, track and crop on the CPU) in 1 and N - 1
  workers (N usable cores), which says whether the feed or the encoder sets the pace, with face detection three ways:
  on the CPU in each worker, on `--device` in each worker, and in one process on `--device` batching every
  worker's frames (`video.shared_detection`, what `marlin extract` does on a GPU);
- pretraining under `accelerate launch` (one process, bf16 on a GPU): `examples/pretrain.py` on the same videos for
  `--pretrain-steps` optimizer steps, random masking (Fasking's face parser is a download), start-up and data
  included, with the losses of the first and last step from its `train_log.csv`.

On a lent machine, from the repository's root with the sample videos copied into an ignored folder (the device tool
carries only the checkout): `python tests/benchmarks/run_gpu.py --videos .gpu/videos` (not yet timed
on a GPU; wheels for what its image lacks in docs/benchmarks.md#gpu).

`--device cpu --variant small --batch-sizes 1 --repeats 1 --pretrain-batch-size 1 --pretrain-steps 2` (and a folder
of short face videos) runs the same code on a CPU in about a minute (the test suite does, so the script cannot rot
between lent machines); on a CPU peak memory is not measured. Nothing is asserted here: the figures go in docs with
the machine named.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from bench_encoder import best_time, build_models  # noqa: E402
from bench_extract import DEFAULT_VIDEOS  # noqa: E402


def measure(fn, repeats: int, device: torch.device) -> tuple[float, float | None]:
    """(best seconds of `fn`, peak GiB allocated during it, None off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seconds = best_time(fn, repeats, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return seconds, peak


def encoder_rows(args, device: torch.device) -> list[tuple[str, int, float, float | None]]:
    """(label, batch size, seconds per batch, peak GiB) of the reference and ours, per batch size."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    _, reference, ours = build_models(args.variant, device)
    ours = ours.bfloat16()
    rows = []
    for batch_size in args.batch_sizes:
        clip = torch.rand(batch_size, 3, 16, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
        ours_clip = clip.transpose(1, 2).contiguous().bfloat16()
        with torch.inference_mode():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                seconds, peak = measure(lambda: reference.extract_features(clip, keep_seq=False), args.repeats, device)  # noqa: B023
            rows.append(("marlin-pytorch bf16 autocast", batch_size, seconds, peak))
            seconds, peak = measure(lambda: ours(ours_clip), args.repeats, device)  # noqa: B023
            rows.append(("marlin-transformers bf16 (sdpa)", batch_size, seconds, peak))
            if device.type == "cuda":
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                    seconds, peak = measure(lambda: ours(ours_clip), args.repeats, device)  # noqa: B023
                rows.append(("marlin-transformers bf16 (flash)", batch_size, seconds, peak))
    return rows


def pretraining_rows(args) -> list[tuple[str, int, float, float | None]]:
    """One pretraining step of each implementation, from `bench_pretrain.py`'s child mode (its JSON line)."""
    rows = []
    for impl, label in (("reference", "pretraining step, reference"), ("ours", "pretraining step, ours")):
        command = [sys.executable, str(HERE / "bench_pretrain.py"), "--impl", impl, "--variant", args.variant]
        command += ["--batch-size", str(args.pretrain_batch_size), "--repeats", str(max(1, args.repeats // 2))]
        command += ["--device", args.device, "--mixed-precision", "bf16"]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        peak = result["peak_bytes"] / 2**30 if args.device.startswith("cuda") else None
        rows.append((label, args.pretrain_batch_size, result["seconds_per_step"], peak))
    return rows


def corpus_rows(args, root: Path) -> list[tuple[str, int, float]]:
    """(what, windows, seconds) of the whole `marlin extract` over the corpus with this machine's default workers, of
    its encoding within that run, and of the feed alone in 1 and N - 1 workers."""
    from bench_corpus import corpus, count_windows, feed_rates, whole_run

    from marlin_transformers.extraction.pipeline import default_num_workers

    paths = corpus(args.videos, args.corpus_copies, root / "videos")
    model = root / "model"
    init = [sys.executable, "-m", "marlin_transformers.cli", "init", str(model), "--variant", args.variant]
    subprocess.run(init, check=True, capture_output=True)
    workers = default_num_workers(args.device)
    options = ["--device", args.device, "--batch-size", str(args.corpus_batch_size), "--num-workers", str(workers)]
    seconds, timings = whole_run(root / "videos", model, root / "out", options)
    windows = count_windows(root / "out")
    rows = [(f"marlin extract, whole run, {workers} workers, batch {args.corpus_batch_size}", windows, seconds)]
    rows.append(("  its encode seconds (the encoder's share of the run)", windows, timings["encode"]))
    rows.append(("  its start-up and exit (wall less job)", windows, seconds - timings["job"]))
    counts = sorted({1, max(1, len(os.sched_getaffinity(0)) - 1)})
    feeds = [("cpu", False, "MTCNN on cpu in each worker")]
    if args.device != "cpu":
        feeds.append((args.device, False, f"MTCNN on {args.device} in each worker"))
    feeds.append((args.device, True, f"one shared MTCNN process on {args.device}"))  # marlin extract's on a GPU
    for device, shared, detection in feeds:
        for count, fed, feed_seconds in feed_rates(paths, counts, device, shared):
            rows.append((f"the feed alone ({detection}), {count} workers", fed, feed_seconds))
    return rows


def accelerate_pretraining_row(args, root: Path) -> tuple[str, int, float, str]:
    """(what, optimizer steps, seconds, losses) of `examples/pretrain.py` under `accelerate launch` on the videos."""
    run = root / "pretrain"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1"]
    command += ["--dynamo_backend", "no", "--mixed_precision", "bf16" if args.device.startswith("cuda") else "no"]
    command += [str(HERE.parents[1] / "examples" / "pretrain.py"), "--train-data", str(args.videos)]
    command += ["--output-dir", str(run), "--cache-dir", str(root / "cache"), "--max-steps", str(args.pretrain_steps)]
    command += ["--model-config", args.variant, "--config-override=mask_strategy=random", "--quiet"]
    command += ["--batch-size", str(args.pretrain_batch_size), "--clips-per-video", "4", "--eval-batch-size", "2"]
    command += ["--checkpointing-steps=0", "--no-tensorboard", "--image-steps=0", "--eval-steps=0"]
    command += ["--cpu"] if not args.device.startswith("cuda") else ["--mixed-precision", "bf16"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"accelerate launch examples/pretrain.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
    with open(run / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    losses = ", ".join(f"step {row['step']} rec_loss {row['rec_loss']}" for row in (rows[0], rows[-1]))
    return f"pretraining, accelerate launch, batch {args.pretrain_batch_size}", int(rows[-1]["step"]), seconds, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="base", choices=["small", "base", "large"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--pretrain-batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS, help="face videos")
    parser.add_argument("--corpus-copies", type=int, default=8, help="times each video is in the corpus (0: skip)")
    parser.add_argument("--corpus-batch-size", type=int, default=32)
    parser.add_argument("--pretrain-steps", type=int, default=50, help="under accelerate launch (0: skip)")
    args = parser.parse_args()
    device = torch.device(args.device)
    started = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"MARLIN ViT-{args.variant[0].upper()} on {name}, torch {torch.__version__}")
    rows = encoder_rows(args, device) + pretraining_rows(args)
    print("| what | batch | seconds per batch | clips/s | peak memory (GiB) | vs reference |")
    print("|---|---|---|---|---|---|")
    reference = {}
    for label, batch_size, seconds, peak in rows:
        key = (batch_size, label.startswith("pretraining"))
        if "reference" in label or "marlin-pytorch" in label:
            reference[key] = seconds
        ratio = f"{reference[key] / seconds:.2f}x" if key in reference else ""
        memory = f"{peak:.2f}" if peak is not None else "-"
        print(f"| {label} | {batch_size} | {seconds:.4f} | {batch_size / seconds:.1f} | {memory} | {ratio} |")
    print(f"(all rows in {time.perf_counter() - started:.0f} s)")
    with tempfile.TemporaryDirectory() as temporary:
        whole = corpus_rows(args, Path(temporary)) if args.corpus_copies else []
        pretraining = [accelerate_pretraining_row(args, Path(temporary))] if args.pretrain_steps else []
    print("\n| whole run | windows or steps | seconds | per second | |")
    print("|---|---|---|---|---|")
    for label, count, seconds, *notes in whole + pretraining:
        rate = "" if label.startswith(" ") else f"{count / seconds:.2f}"  # a part of the run above: no rate
        print(f"| {label} | {count} | {seconds:.1f} | {rate} | {' '.join(notes)} |")
    print(f"(everything in {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
