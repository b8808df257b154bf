"""Seconds per 16-frame clip: marlin-pytorch 0.3.4 against marlin-transformers, side by side in one run.

    python tests/benchmarks/bench_encoder.py [--variant base] [--batch-size 1] [--repeats 3] [--device cpu]
        [--fp32-only] [--compile] [--onnx] [--clips-per-call]

Both models get the same random weights (every tensor random, via the converter) and the same clip. Prints fp32
and bf16 timings, the speed-up ratios against the reference's fp32 `extract_features`, the max abs difference of
ours to the reference in fp32, and the cosine similarity of our bf16 features to our fp32 ones. Machines are
noisy: the script reports the best of `--repeats` runs after a warm-up, and nothing here is asserted. With
`--compile`, ours is also timed through `torch.compile` (what `marlin extract --compile` runs), its one-off compile
time (the first call) printed on its own line. With `--onnx`, ours is exported with `marlin export` (dynamo exporter)
and timed in onnxruntime on the CPU with as many threads as torch uses, fp32, beside PyTorch. Last, the floor: this
machine's fp32 (and bf16) peak in a large square matmul, and each of our paths' share of it on a clip's multiply-adds
(`marlin_transformers.model_card.clip_macs`, about 180 G for ViT-B). On a CPU with AVX-512 BF16 and no AMX, ours in
bf16 is timed twice: with the head-wise attention it takes there by default, and with PyTorch's fused sdpa. With
`--clips-per-call`, ours is timed on 8 clips given to the model 8, 4, 2 and 1 at a time, in fp32 and bf16 (why
`MarlinFeatureExtractor` hands a CPU encoder `extraction.extractor.CPU_CLIPS_PER_CALL` clips at a time).

    python tests/benchmarks/bench_encoder.py --floor [--compile] [--repeats 3]

`--floor` prints only the bf16 floor, quickly (about a minute on an idle 2-core AMX Xeon; `--compile` adds Inductor's
compile, minutes): this CPU's bf16 matrix-product peak (a 4096^3 product, best of `--repeats`; AMX where present),
the FLOPs of a ViT-B clip as `torch.utils.flop_counter.FlopCounterMode` counts them, and the share of the peak a
bf16 clip reaches at 1, 2 and 8 clips a call: ours as `marlin extract` runs it, with the other attention kernel (the
head-wise one where sdpa is the default, and the reverse), and with `--compile` through `torch.compile` (Inductor,
weights frozen); with each, the cosine of its features to fp32's (min over the clips). Every line carries the load
average (a shared machine: compare within one run).
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from marlin_transformers import MarlinConfig  # noqa: E402
from marlin_transformers.convert_marlin import convert_state_dict  # noqa: E402
from marlin_transformers.kernels import cpu as cpu_kernels  # noqa: E402
from marlin_transformers.kernels import enable_cpu_fast_path  # noqa: E402
from marlin_transformers.model_card import clip_macs  # noqa: E402
from reference_utils import build_reference_model  # noqa: E402


def matmul_peak(dtype: torch.dtype, device: torch.device, size: int = 2048, repeats: int = 3) -> float:
    """This machine's floor for dense products: FLOP/s of a large square matmul in `dtype` (best of `repeats`), the
    faster of `torch.mm` and, on the CPU, oneDNN's matrix product (the one `fused_linear` calls). On an AMD EPYC,
    `torch.mm` in fp32 (MKL) ran at half of oneDNN's speed (0.21 against 0.44 TFLOP/s): the floor is the faster."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    seconds = best_time(lambda: torch.mm(a, b), repeats, device)
    if device.type == "cpu" and cpu_kernels.ONEDNN_LINEAR and (dtype == torch.float32 or cpu_kernels.ONEDNN_BF16):
        weight = b.t().contiguous()  # (out, in), as nn.Linear keeps it
        onednn = best_time(
            lambda: torch.ops.mkldnn._linear_pointwise(a, weight, None, "none", [], ""), repeats, device
        )
        seconds = min(seconds, onednn)
    return 2 * size**3 / seconds


def clip_flops(config) -> int:
    """FLOPs of one clip through the plain encoder, counted by `FlopCounterMode` (one fp32 clip, a second or two),
    with eager attention: the counter has no formula for PyTorch's CPU flash attention and would leave the attention's
    two products out."""
    from torch.utils.flop_counter import FlopCounterMode

    from marlin_transformers.modeling_marlin import MarlinModel

    config = MarlinConfig.from_dict({**config.to_dict(), "_attn_implementation": "eager"})
    config._attn_implementation = "eager"
    model = MarlinModel(config).eval()
    clip = torch.zeros(1, config.num_frames, config.num_channels, config.image_size, config.image_size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(clip)
    return counter.get_total_flops()


def floor(variant: str, repeats: int, compile: bool) -> None:
    """`--floor`: the bf16 peak, a clip's FLOPs, and the share of the peak ours reaches at 1, 2 and 8 clips a call."""
    import copy
    import os

    def load() -> str:
        return "load " + " ".join(f"{value:.2f}" for value in os.getloadavg())

    device = torch.device("cpu")
    config = MarlinConfig.from_variant(variant)
    flops = clip_flops(config)
    peak = matmul_peak(torch.bfloat16, device, size=4096, repeats=repeats)
    capabilities = {
        k for k, v in (torch.cpu.get_capabilities() or {}).items() if v and k in ("amx_bf16", "avx512_bf16")
    }
    print(
        f"ViT-{variant[0].upper()} clip: {flops / 1e9:.1f} GFLOP (FlopCounterMode; 2 x clip_macs = "
        f"{2 * clip_macs(config) / 1e9:.1f}); bf16 peak (4096^3 matmul, best of {repeats}): {peak / 1e12:.2f} TFLOP/s "
        f"on {torch.get_num_threads()} threads, {', '.join(sorted(capabilities)) or 'no bf16 matrix units'} ({load()})"
    )
    torch.manual_seed(0)
    plain = convert_state_dict(build_reference_model(seed=0, as_feature_extractor=True).state_dict()).eval()
    clips = torch.rand(8, 16, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        fp32 = torch.cat([plain(chunk).pooler_output for chunk in clips.split(2)])
    ours = enable_cpu_fast_path(copy.deepcopy(plain).to(torch.bfloat16))
    other = "head-wise" if not cpu_kernels.CPU_BF16_WITHOUT_AMX else "sdpa"
    paths = [("ours, as marlin extract", ours, None), (f"ours, {other} attention", ours, other)]
    if compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # weights as constants: Inductor prepacks them for oneDNN / AMX
        paths.append(("ours, torch.compile (Inductor, frozen)", torch.compile(copy.deepcopy(ours)), None))
    bf16 = clips.bfloat16()
    rows = []
    for label, model, attention in paths:
        with torch.inference_mode(), swapped_attention(attention):
            times = []
            for per_call in (1, 2, 8):
                seconds = best_time(lambda: [model(c) for c in bf16.split(per_call)], repeats, device)  # noqa: B023
                times.append(seconds / len(clips))
            features = torch.cat([model(chunk).pooler_output.float() for chunk in bf16.split(2)])
        cosine = torch.nn.functional.cosine_similarity(features, fp32).min().item()
        rows.append((label, times, cosine, load()))
    # The peak again after the clips: the faster of the two divides (a machine slowed down while one was taken would
    # otherwise flatter every share).
    peak = max(peak, matmul_peak(torch.bfloat16, device, size=4096, repeats=repeats))
    print(f"bf16 peak, the faster of before and after: {peak / 1e12:.2f} TFLOP/s ({load()})")
    print(f"{'bf16, s/clip (share of peak)':<40}{'1 a call':>18}{'2 a call':>18}{'8 a call':>18}{'cosine':>9}")
    for label, times, cosine, at in rows:
        cells = "".join(f"{f'{seconds:.3f} ({flops / seconds / peak:.0%})':>18}" for seconds in times)
        print(f"{label:<40}{cells}{cosine:>9.5f}   ({at})")


def swapped_attention(attention: str | None):
    """A context in which bf16 attention on the CPU takes `attention` ("head-wise" or "sdpa"; None: as it is)."""
    import contextlib
    from unittest import mock

    if attention is None:
        return contextlib.nullcontext()
    return mock.patch.object(cpu_kernels, "CPU_BF16_WITHOUT_AMX", attention == "head-wise")


def build_models(variant: str, device: torch.device):
    """(config, the reference's feature extractor, ours in fp32 on its CPU fast path, as `marlin extract` runs it) of
    one variant, with the same random weights (every tensor random, via the converter)."""
    config = MarlinConfig.from_variant(variant)
    reference = build_reference_model(
        seed=0,
        as_feature_extractor=True,
        encoder_embed_dim=config.hidden_size,
        encoder_depth=config.num_hidden_layers,
        encoder_num_heads=config.num_attention_heads,
    ).to(device)
    return config, reference, enable_cpu_fast_path(convert_state_dict(reference.state_dict()).to(device).eval())


def best_time(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up (allocator, kernels, lazy init)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def clips_per_call(model, dtype: torch.dtype, device: torch.device, repeats: int) -> str:
    """Seconds per clip of `model` in `dtype` on 8 clips, given to it 8, 4, 2 and 1 at a time (best of `repeats`)."""
    clips = torch.rand(8, 16, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    timings = []
    for step in (8, 4, 2, 1):
        seconds = best_time(lambda: [model(chunk) for chunk in clips.split(step)], repeats, device)  # noqa: B023
        timings.append(f"{step}: {seconds / len(clips):.3f}")
    return f"s/clip by clips per call, {str(dtype).removeprefix('torch.')}: " + ", ".join(timings)


def time_onnxruntime(model, clip: torch.Tensor, fp32_features: torch.Tensor, repeats: int):
    """Export `model` to ONNX in a temporary folder and time it in onnxruntime on the CPU: (rows, extra lines)."""
    import tempfile

    import onnxruntime

    from marlin_transformers.extraction.onnx_export import export_onnx

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "marlin.onnx"
        start = time.perf_counter()
        export_onnx(model.cpu(), path, check=False)
        export_seconds = time.perf_counter() - start
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"pixel_values_videos": clip.cpu().numpy()}
        seconds = best_time(lambda: session.run(["pooler_output"], feed), repeats, torch.device("cpu"))
        (pooled,) = session.run(["pooler_output"], feed)
    onnx_diff = (torch.from_numpy(pooled) - fp32_features.cpu()).abs().max().item()
    lines = [
        f"ONNX export time (dynamo exporter): {export_seconds:.1f} s",
        f"onnxruntime fp32 max abs diff to ours (pooled): {onnx_diff:.2e}",
    ]
    return [("onnxruntime fp32 (CPU)", seconds)], lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="base", choices=["small", "base", "large"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--fp32-only", action="store_true", help="skip bf16 (slow where the CPU has no bf16 matrix products)"
    )
    parser.add_argument("--compile", action="store_true", help="also time ours through torch.compile")
    parser.add_argument("--onnx", action="store_true", help="also time ours exported to ONNX, in onnxruntime (CPU)")
    parser.add_argument(
        "--clips-per-call", action="store_true", help="also time ours on 8 clips given 8, 4, 2 and 1 at a time"
    )
    parser.add_argument("--floor", action="store_true", help="only the bf16 peak and the share of it a clip reaches")
    args = parser.parse_args()
    if args.floor:
        floor(args.variant, args.repeats, args.compile)
        return
    device = torch.device(args.device)

    config, reference, ours = build_models(args.variant, device)
    if not args.fp32_only:
        ours_bf16 = enable_cpu_fast_path(convert_state_dict(reference.state_dict()).to(device, torch.bfloat16).eval())

    clip = torch.rand(args.batch_size, 3, 16, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    ours_clip = clip.transpose(1, 2).contiguous()  # ours: (batch, frames, channels, height, width)
    per_clip = args.batch_size
    with torch.inference_mode():
        ref_fp32 = best_time(lambda: reference.extract_features(clip, keep_seq=False), args.repeats, device)
        ours_fp32 = best_time(lambda: ours(ours_clip), args.repeats, device)
        expected = reference.extract_features(clip, keep_seq=False)
        fp32_features = ours(ours_clip).pooler_output
        if not args.fp32_only:
            ours_bf16_time = best_time(lambda: ours_bf16(ours_clip.bfloat16()), args.repeats, device)
            if cpu_kernels.CPU_BF16_WITHOUT_AMX and device.type == "cpu":
                # What this CPU's bf16 attention gives without the head-wise path: PyTorch's fused sdpa.
                ours_bf16.set_attn_implementation("sdpa")
                ours_bf16_sdpa = best_time(lambda: ours_bf16(ours_clip.bfloat16()), args.repeats, device)
                ours_bf16.set_attn_implementation(cpu_kernels.ATTENTION_IMPLEMENTATION)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                ref_bf16 = best_time(lambda: reference.extract_features(clip, keep_seq=False), args.repeats, device)
            bf16_features = ours_bf16(ours_clip.bfloat16()).pooler_output.float()
        compiled_rows, compile_seconds = [], []
        if args.compile:
            variants = [("fp32", ours, ours_clip)]
            if not args.fp32_only:
                variants.append(("bf16", ours_bf16, ours_clip.bfloat16()))
            for label, model, inputs in variants:
                compiled = torch.compile(model)
                start = time.perf_counter()
                compiled(inputs)  # the compile itself
                compile_seconds.append((label, time.perf_counter() - start))
                seconds = best_time(lambda: compiled(inputs), args.repeats, device)  # noqa: B023 (called here)
                compiled_rows.append((f"marlin-transformers {label} compiled", seconds))
        sweep_lines = []
        if args.clips_per_call:
            sweep_lines.append(clips_per_call(ours, torch.float32, device, args.repeats))
            if not args.fp32_only:
                sweep_lines.append(clips_per_call(ours_bf16, torch.bfloat16, device, args.repeats))
    diff = (fp32_features - expected).abs().max().item()
    onnx_rows, onnx_lines = [], []
    if args.onnx:
        onnx_rows, onnx_lines = time_onnxruntime(ours, ours_clip, fp32_features, args.repeats)

    name = f"ViT-{args.variant[0].upper()}"
    print(f"{name}, batch {args.batch_size}, {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print(f"{'':<40}{'s/clip':>8}{'vs ref fp32':>13}")
    rows = [("marlin-pytorch fp32", ref_fp32), ("marlin-transformers fp32 (sdpa)", ours_fp32)]
    if not args.fp32_only:
        attention = "head-wise" if cpu_kernels.CPU_BF16_WITHOUT_AMX and device.type == "cpu" else "sdpa"
        rows += [
            ("marlin-pytorch bf16 autocast", ref_bf16),
            (f"marlin-transformers bf16 ({attention})", ours_bf16_time),
        ]
        if attention == "head-wise":
            rows.append(("marlin-transformers bf16 (sdpa)", ours_bf16_sdpa))
    rows += compiled_rows + onnx_rows
    for label, seconds in rows:
        print(f"{label:<40}{seconds / per_clip:>8.3f}{ref_fp32 / seconds:>12.2f}x")
    for label, seconds in compile_seconds:
        print(f"torch.compile time, {label} (first call, batch {args.batch_size}): {seconds:.1f} s")
    for line in onnx_lines + sweep_lines:
        print(line)
    print(f"fp32 max abs diff to reference: {diff:.2e}")
    # The floor: how much of this machine's own matmul peak each path reaches on a clip's multiply-adds.
    flops = 2 * clip_macs(config) * per_clip
    peaks = {"fp32": matmul_peak(torch.float32, device)}
    if not args.fp32_only:
        peaks["bf16"] = matmul_peak(torch.bfloat16, device)
    print(
        f"clip: {clip_macs(config) / 1e9:.0f} G multiply-adds; matmul peak (2048^2): "
        + ", ".join(f"{name} {peak / 1e12:.2f} TFLOP/s" for name, peak in peaks.items())
    )
    for label, seconds in rows:
        if "marlin-transformers" in label or "onnxruntime" in label:
            precision = "bf16" if "bf16" in label else "fp32"
            if precision in peaks:
                reached = flops / seconds
                print(
                    f"{label}: {reached / 1e12:.3f} TFLOP/s, {reached / peaks[precision]:.0%} of the {precision} floor"
                )
    if not args.fp32_only:
        # No code can beat the floor: how far ahead of the reference's fp32 a clip at 100% of the bf16 peak would be.
        floor_seconds = flops / peaks["bf16"]
        print(
            f"a clip at 100% of the bf16 floor: {floor_seconds / per_clip:.3f} s, "
            f"{ref_fp32 / floor_seconds:.1f}x marlin-pytorch fp32 (the most any bf16 path can reach on this machine)"
        )
        cosine = torch.nn.functional.cosine_similarity(bf16_features, fp32_features).min().item()
        print(f"bf16 cosine similarity to fp32 (min over batch): {cosine:.5f}")


if __name__ == "__main__":
    main()
