"""Seconds per pretraining step and peak memory: marlin-transformers against the MARLIN reference, in one run.

    python tests/benchmarks/bench_pretrain.py [--variant base] [--batch-size 1] [--repeats 3] [--device cpu]
        [--mixed-precision no|bf16|fp16] [--attn-implementation sdpa|eager]

A step is one critic update and one generator update on the same batch (16 frames of 224x224, Fasking-sized mask:
156 visible tokens of 1568), adv_weight 0.01, gp_weight 0, AdamW (0.9, 0.95): the released configs.

- ours: `train_step` of `examples/pretrain.py` (the step the example runs, over `pretraining.losses`) under
  Accelerate: the generator runs forward once; the critic trains on the detached prediction; the generator's loss
  reuses the prediction, scored by the updated critic.
- reference: the authors' Lightning module (`model/marlin.py`, `training_step` with d_steps = g_steps = 1),
  rebuilt here from marlin-pytorch's encoder, decoder and MLP classes because pytorch_lightning is not installed.
  Its critic step calls the whole generator and back-propagates the critic loss through it (the prediction is not
  detached, the generator's gradients are then thrown away); its generator step runs the generator forward again.

Each implementation runs in its own subprocess, so that peak memory is its own: on CPU the growth of the resident set
over the size before the first step (peak RSS - RSS after building the model and optimizers), on CUDA
`torch.cuda.max_memory_allocated`. Timings are the best of `--repeats` steps after one warm-up step; machines are
noisy, so nothing is asserted.
"""

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_utils import REFERENCE_VIT_BASE  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pretrain.py"

# Encoder width, depth, heads; decoder width, depth, heads (config/pretrain/marlin_vit_*.yaml).
REFERENCE_SIZES = {
    "small": (384, 12, 6, 192, 4, 3),
    "base": (768, 12, 12, 384, 4, 6),
    "large": (1024, 24, 16, 512, 12, 8),
}


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def make_batch(batch_size: int, device: torch.device):
    from marlin_transformers.pretraining.masking import generate_masks

    generator = torch.Generator().manual_seed(0)
    pixel_values_videos = torch.rand(batch_size, 16, 3, 224, 224, generator=generator)
    bool_masked_pos = generate_masks("random", batch_size, 16, 224, 16, 2, 0.9, 0)  # True = masked
    return pixel_values_videos.to(device), bool_masked_pos.to(device)


def build_ours(args, device):
    from accelerate import Accelerator

    from marlin_transformers import MarlinConfig, MarlinForPreTraining
    from marlin_transformers.pretraining import detach_critic

    spec = importlib.util.spec_from_file_location("pretrain_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    train_step = example.train_step

    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=args.mixed_precision)
    config = MarlinConfig.from_variant(args.variant)
    config._attn_implementation = args.attn_implementation
    model, critic = detach_critic(MarlinForPreTraining(config).train())
    critic.to(accelerator.device)
    kwargs = dict(lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)
    g_optimizer = torch.optim.AdamW(model.parameters(), **kwargs)
    d_optimizer = torch.optim.AdamW(critic.parameters(), **kwargs)
    model, g_optimizer, d_optimizer = accelerator.prepare(model, g_optimizer, d_optimizer)
    pixel_values_videos, bool_masked_pos = make_batch(args.batch_size, accelerator.device)
    batch = {"pixel_values_videos": pixel_values_videos, "bool_masked_pos": bool_masked_pos}

    def step():
        losses = train_step(batch, model, critic, g_optimizer, d_optimizer, accelerator, config.adv_weight, 0.0, None)
        return losses["rec_loss"]

    return step


def build_reference(args, device):
    """The reference's `training_step` (d_steps = g_steps = 1, gp_weight = 0) on marlin-pytorch's modules."""
    from einops import rearrange
    from marlin_pytorch.model.decoder import MarlinDecoder
    from marlin_pytorch.model.encoder import MarlinEncoder
    from marlin_pytorch.model.modules import MLP
    from torch import nn

    encoder_dim, encoder_depth, encoder_heads, decoder_dim, decoder_depth, decoder_heads = REFERENCE_SIZES[
        args.variant
    ]
    sizes = ("encoder_", "decoder_")  # the variant's; the rest is the released ViT-B's
    common = {k: v for k, v in REFERENCE_VIT_BASE.items() if not k.startswith(sizes)}
    encoder = MarlinEncoder(embed_dim=encoder_dim, depth=encoder_depth, num_heads=encoder_heads, **common)
    decoder = MarlinDecoder(embed_dim=decoder_dim, depth=decoder_depth, num_heads=decoder_heads, **common)
    projection = nn.Linear(encoder_dim, decoder_dim, bias=False)
    discriminator = MLP([16 * 16 * 3 * 2, decoder_dim * 4, 1], build_activation=nn.LeakyReLU)
    for module in (encoder, decoder, projection, discriminator):
        module.to(device).train()
    kwargs = dict(lr=1e-4, eps=1e-8, betas=(0.9, 0.95), weight_decay=0.0)
    generator_params = [*encoder.parameters(), *decoder.parameters(), *projection.parameters()]
    g_optimizer = torch.optim.AdamW(generator_params, **kwargs)
    d_optimizer = torch.optim.AdamW(discriminator.parameters(), **kwargs)
    adv_weight = 0.01

    pixel_values_videos, bool_masked_pos = make_batch(args.batch_size, device)
    x = pixel_values_videos.permute(0, 2, 1, 3, 4).contiguous()  # (b, c, t, h, w), the reference's layout
    visible = ~bool_masked_pos  # the reference's masks are True where visible
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.mixed_precision == "bf16")

    def forward():
        """The reference's `step`: prediction and the real masked tubelets."""
        pred = decoder(projection(encoder(x, visible)), visible)
        y = x.unfold(2, 2, 2).unfold(3, 16, 16).unfold(4, 16, 16)
        y = rearrange(y, "b c nt nh nw pt ph pw -> b (nt nh nw) (c pt ph pw)")
        return pred, y[~visible].view(y.shape[0], -1, y.shape[-1])

    def step():
        # critic: a full generator forward, and the critic loss back-propagated through the generator too
        d_optimizer.zero_grad()
        with autocast:
            pred, y = forward()
            scores = discriminator(torch.cat([pred, y]))
            d_loss = scores[: len(pred)].mean() - scores[len(pred) :].mean()
        d_loss.backward()
        d_optimizer.step()
        # generator: a second forward pass
        g_optimizer.zero_grad()
        with autocast:
            pred, y = forward()
            rec_loss = nn.functional.mse_loss(pred, y)
            g_loss = rec_loss + adv_weight * -discriminator(pred).mean()
        g_loss.backward()
        g_optimizer.step()
        return rec_loss

    return step


def measure(args) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    step = (build_ours if args.impl == "ours" else build_reference)(args, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = current_rss_bytes()
    times = []
    for _ in range(args.repeats + 1):
        start = time.perf_counter()
        loss = step()
        loss.item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    return {"impl": args.impl, "seconds_per_step": min(times[1:]), "all_seconds": times, "peak_bytes": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="base", choices=["small", "base", "large"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    parser.add_argument("--impl", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.impl:  # child process: measure one implementation, print JSON
        print(json.dumps(measure(args)))
        return

    print(
        f"MARLIN ViT-{args.variant[0].upper()} pretraining step, batch {args.batch_size}, device {args.device}, "
        f"mixed precision {args.mixed_precision}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    results = {}
    for impl in ("reference", "ours"):
        command = [sys.executable, __file__, *sys.argv[1:], "--impl", impl]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[impl] = json.loads(output.strip().splitlines()[-1])
        r = results[impl]
        memory = "peak GPU memory" if args.device.startswith("cuda") else "peak RSS growth"
        times = ", ".join(f"{t:.2f}" for t in r["all_seconds"])
        print(
            f"{impl:>9}: {r['seconds_per_step']:.2f} s/step (all: {times}), {memory} {r['peak_bytes'] / 2**30:.2f} GiB"
        )
    ratio = results["reference"]["seconds_per_step"] / results["ours"]["seconds_per_step"]
    memory_ratio = results["reference"]["peak_bytes"] / max(results["ours"]["peak_bytes"], 1)
    print(f"speed-up (reference / ours): {ratio:.2f}x; memory (reference / ours): {memory_ratio:.2f}x")


if __name__ == "__main__":
    main()
