"""Every GPU figure in one run and one table, within about 5 minutes on one GPU: for a lent machine.

    python tests/benchmarks/run_gpu.py [--variant base] [--batch-sizes 1 32] [--repeats 5] [--device cuda]

Rows (bf16 unless said; best of `--repeats` after a warm-up; clips/s and peak memory from
`torch.cuda.max_memory_allocated`, reset before each row):
- the MARLIN reference (marlin-pytorch 0.3.4, `extract_features` under bf16 autocast) per batch size;
- ours (`MarlinModel` in bf16) with PyTorch's SDPA choosing its kernel, and with SDPA held to the flash kernel, per
  batch size;
- one pretraining step (critic + generator, Fasking-sized mask) of the reference and of ours under bf16 autocast,
  batch 8, from `bench_pretrain.py` (each in its own subprocess), with the speed-up (goal: >= 2x).

`--device cpu --variant small --batch-sizes 1 --repeats 1 --pretrain-batch-size 1` runs the same code on a CPU in
under a minute (the test suite does, so the script cannot rot between lent machines); on a CPU peak memory is not
measured. Nothing is asserted here: the figures go in docs with the machine named.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from bench_encoder import best_time, build_models  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="base", choices=["small", "base", "large"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--pretrain-batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
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


if __name__ == "__main__":
    main()
