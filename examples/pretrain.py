"""MARLIN pretraining on a folder of face videos, with Accelerate.

Masked reconstruction of Fasking-masked face clips plus a WGAN critic on the reconstructed tubelets, as in the paper
(Cai et al., CVPR 2023): AdamW (0.9, 0.95) without weight decay, lr = 1.5e-4 * total batch / 256 with a linear
warm-up and a cosine decay applied per optimizer step, one critic step per generator step. The generator's prediction
is computed once per step: the critic trains on it detached, then the generator's loss reuses it.

    # one process (CPU or one GPU)
    python examples/pretrain.py --train-data faces/ --output-dir runs/marlin --cache-dir cache/ \\
        --init-from MCG-NJU/videomae-base --mixed-precision bf16

    # several GPUs (see docs/pretraining.md for FSDP)
    accelerate launch --multi_gpu --num_processes 8 examples/pretrain.py --train-data faces/ ...

Outputs under --output-dir: `checkpoints/step_N/` (`accelerator.save_state`, resumable with --resume), TensorBoard
logs (`tensorboard --logdir OUTPUT_DIR`) of every loss term and the learning rate, `train_log.csv`, `eval.csv` (the
reconstruction MSE on a fixed held-out batch) and its plot `eval_curve.png`, reconstruction pictures
`reconstructions/step_N.png` (per clip: original / masked input / reconstruction), and the final model in `model/`
(a `save_pretrained` folder that `AutoModel` and `AutoModelForPreTraining` load, with the critic).
"""

import argparse
import csv
import json
import math
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedType
from accelerate.utils import DataLoaderConfiguration, broadcast, set_seed
from torch.utils.data import DataLoader

from marlin_transformers import MarlinConfig, MarlinForPreTraining
from marlin_transformers.convert_marlin import load_reference_checkpoint, resolve_checkpoint_folder, save_marlin_folder
from marlin_transformers.data import youtube_faces_clips
from marlin_transformers.pretraining import (
    EpochShuffleSampler,
    FaceClipDataset,
    attach_critic,
    critic_loss,
    detach_critic,
    generator_adversarial_loss,
    gradient_penalty,
    learning_rate_at,
    load_videomae_weights,
    marlin_config_from_videomae,
    masked_patch_targets,
    penalty_interpolates,
    reconstruction_loss,
    scaled_learning_rates,
)
from marlin_transformers.video import find_videos
from marlin_transformers.visualization import reconstruction_grid

# Hyper-parameters of the released configs (config/pretrain/marlin_vit_*.yaml in the authors' repository).
DEFAULT_CONFIG = {
    "seed": 42,
    "batch_size": 16,  # clips per process per micro-step
    "gradient_accumulation_steps": 1,
    "num_epochs": 2000,
    "warmup_epochs": 40,
    "max_steps": None,  # stop early (the schedule still spans num_epochs)
    "base_learning_rate": 1.5e-4,  # per 256 clips
    "base_min_learning_rate": 1e-5,  # per 256 clips
    "learning_rate": None,  # absolute peak lr, overriding the scaled one
    "min_learning_rate": None,
    "betas": (0.9, 0.95),
    "weight_decay": 0.0,
    "adv_weight": None,  # None: the model config's (0.01)
    "gp_weight": 0.0,
    "clips_per_video": 1,
    "eval_batch_size": 4,
}


class TrainingProgress:
    """Optimizer steps done so far, saved with `accelerator.save_state` so that `--resume` knows where it is."""

    def __init__(self):
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


def build_model(args) -> MarlinForPreTraining:
    """A fresh model (`--model-config` and `--config-override`), or one initialized from `--init-from`."""
    overrides = dict(parse_override(item) for item in args.config_override)
    source = args.init_from
    if source is None:
        if Path(args.model_config).is_file():
            config = MarlinConfig(**{**json.loads(Path(args.model_config).read_text()), **overrides})
        elif Path(args.model_config).is_dir():
            config = MarlinConfig.from_pretrained(args.model_config, **overrides)
        else:
            config = MarlinConfig.from_variant(args.model_config, **overrides)
        return MarlinForPreTraining(config)
    if Path(source).is_file():  # a released MARLIN .pt / Lightning .ckpt
        model = load_reference_checkpoint(source)
        if not isinstance(model, MarlinForPreTraining):
            raise SystemExit(
                f"{source}: encoder-only checkpoint; pretraining needs the decoder (a .full.pt or .ckpt)."
            )
        return model.train()
    folder = resolve_checkpoint_folder(source)
    hub_config = json.loads((folder / "config.json").read_text())
    if hub_config.get("model_type") == "videomae":
        config = marlin_config_from_videomae(hub_config, **overrides)
        model = MarlinForPreTraining(config)
        kept = load_videomae_weights(model, folder)
        print(f"initialized from VideoMAE {source}; left at init: {kept}")
        return model
    return MarlinForPreTraining.from_pretrained(folder, **overrides)


def parse_override(item: str) -> tuple[str, object]:
    key, _, value = item.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def get_dataloaders(accelerator: Accelerator, model_config: MarlinConfig, config: dict, args):
    """The training dataloader (shuffled per epoch from the seed, sharded by Accelerate) and one fixed eval batch.

    The eval batch holds `eval_batch_size` clips of `--eval-data` (held-out videos), of the YouTube Faces val split,
    or, without either, of the last
    `--holdout-fraction` of every training video (training clips then come from the rest; with a fraction of 0, from
    the training clips themselves, drawn with another seed). Its clips and masks are the same at every evaluation.
    """
    face_parser = None
    if args.farl_parser:  # the paper's parser; default: the built-in landmark approximation
        from marlin_transformers.pretraining.face_parsing import FarlFaceParser

        face_parser = FarlFaceParser(args.farl_parser, device=accelerator.device)
    dataset_kwargs = dict(
        cache_dir=args.cache_dir, crop=args.crop, sample_rate=args.sample_rate, face_parser=face_parser
    )
    if args.youtube_faces:  # the reference's layout: train_set.csv / val_set.csv over crop_images_DB/<clip>/
        train_videos = youtube_faces_clips(args.youtube_faces, "train")
        eval_videos = youtube_faces_clips(args.youtube_faces, "val")[: config["eval_batch_size"]]
    else:
        train_videos = find_videos(args.train_data)
        eval_videos = find_videos(args.eval_data) if args.eval_data else train_videos
    holdout = 0.0 if args.eval_data or args.youtube_faces else args.holdout_fraction
    with accelerator.main_process_first():  # the main process fills the cache, the others then read it
        train_dataset = FaceClipDataset.from_config(
            model_config,
            train_videos,
            seed=config["seed"],
            clips_per_video=config["clips_per_video"],
            frame_range=(0.0, 1.0 - holdout),
            **dataset_kwargs,
        )
        eval_dataset = FaceClipDataset.from_config(
            model_config,
            eval_videos,
            seed=config["seed"] + 1,
            clips_per_video=math.ceil(config["eval_batch_size"] / len(eval_videos)),
            frame_range=(1.0 - holdout, 1.0) if holdout else (0.0, 1.0),
            **dataset_kwargs,
        )
    train_dataloader = DataLoader(
        train_dataset,
        batch_size=config["batch_size"],
        sampler=EpochShuffleSampler(len(train_dataset), config["seed"]),
        num_workers=args.num_workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
    )
    # Spread the eval clips over the videos: item i is clip (i % clips_per_video) of video (i // clips_per_video).
    order = sorted(range(len(eval_dataset)), key=lambda i: (i % eval_dataset.clips_per_video, i))
    items = [eval_dataset[i] for i in order[: config["eval_batch_size"]]]
    eval_batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
    return train_dataloader, eval_batch


def train_step(batch, model, critic, g_optimizer, d_optimizer, accelerator, adv_weight, gp_weight, gp_generator):
    """One critic step and one generator step on a batch, with one forward pass of the generator.

    Returns:
        The loss terms (detached): rec_loss, adv_loss, g_loss, d_loss (critic loss with its penalty), d_wasserstein
        (mean D(fake) - mean D(real)), d_real, d_fake, and gp when `gp_weight > 0`.
    """
    pixel_values_videos, bool_masked_pos = batch["pixel_values_videos"], batch["bool_masked_pos"]
    config = accelerator.unwrap_model(model).config
    with accelerator.autocast():
        logits = model(pixel_values_videos, bool_masked_pos, return_loss=False).logits  # (b, masked, c*pt*ph*pw)
        targets = masked_patch_targets(pixel_values_videos, bool_masked_pos, config.patch_size, config.tubelet_size)

        # Critic step on the detached prediction; fake, real (and penalty points) go through the critic together.
        fake = logits.detach()
        real = targets.to(fake.dtype)
        inputs = [fake, real]
        if gp_weight > 0:
            inputs.append(penalty_interpolates(real, fake, gp_generator))
        scores = critic(torch.cat(inputs)).split(len(fake))
        d_wasserstein = critic_loss(scores[0], scores[1])
        gp = gradient_penalty(scores[2], inputs[2]) if gp_weight > 0 else None
        d_loss = d_wasserstein + gp_weight * gp if gp is not None else d_wasserstein
    accelerator.backward(d_loss)
    if accelerator.sync_gradients and accelerator.num_processes > 1:
        # The critic is small and kept whole on every process (no DDP/FSDP wrapper): average its gradients here.
        for param in critic.parameters():
            param.grad = accelerator.reduce(param.grad, reduction="mean")
    d_optimizer.step()
    d_optimizer.zero_grad()

    # Generator step: the same prediction, scored by the updated critic, whose weights get no gradient from it.
    with accelerator.autocast():
        rec_loss = reconstruction_loss(logits, targets)
        if adv_weight:
            critic.requires_grad_(False)
            adv_loss = generator_adversarial_loss(critic(logits), adv_weight)
            critic.requires_grad_(True)
        else:
            adv_loss = torch.zeros((), device=logits.device)
        g_loss = rec_loss + adv_loss
    accelerator.backward(g_loss)
    g_optimizer.step()
    g_optimizer.zero_grad()

    losses = {
        "rec_loss": rec_loss,
        "adv_loss": adv_loss,
        "g_loss": g_loss,
        "d_loss": d_loss,
        "d_wasserstein": d_wasserstein,
        "d_real": scores[1].float().mean(),
        "d_fake": scores[0].float().mean(),
    }
    if gp is not None:
        losses["gp"] = gp
    return {name: value.detach() for name, value in losses.items()}


@torch.no_grad()
def evaluate(model, eval_batch, accelerator) -> tuple[float, torch.Tensor]:
    """Reconstruction MSE on the fixed eval batch, and the predictions (for pictures)."""
    model.eval()
    pixel_values_videos = eval_batch["pixel_values_videos"].to(accelerator.device)
    bool_masked_pos = eval_batch["bool_masked_pos"].to(accelerator.device)
    config = accelerator.unwrap_model(model).config
    with accelerator.autocast():
        logits = model(pixel_values_videos, bool_masked_pos, return_loss=False).logits
    targets = masked_patch_targets(pixel_values_videos, bool_masked_pos, config.patch_size, config.tubelet_size)
    model.train()
    return reconstruction_loss(logits, targets).item(), logits


def save_reconstruction(eval_batch, logits, config, path: Path, accelerator, step: int) -> None:
    from PIL import Image

    grid = reconstruction_grid(
        eval_batch["pixel_values_videos"],
        logits,
        eval_batch["bool_masked_pos"],
        config.patch_size,
        config.tubelet_size,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("reconstruction", grid, step, dataformats="HWC")


def write_curve_png(points: list[tuple[int, float]], path: Path, title: str) -> None:
    """A line plot of (step, value) points, drawn with PIL (no plotting library needed)."""
    from PIL import Image, ImageDraw

    width, height, margin = 640, 400, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    steps, values = [p[0] for p in points], [p[1] for p in points]
    low, high = min(values), max(values)
    span_x, span_y = max(max(steps) - min(steps), 1), max(high - low, 1e-12)

    def xy(step, value):
        x = margin + (step - min(steps)) / span_x * (width - 2 * margin)
        return x, height - margin - (value - low) / span_y * (height - 2 * margin)

    draw.rectangle([margin, margin, width - margin, height - margin], outline="black")
    for i in range(5):
        value = low + span_y * i / 4
        draw.text((2, xy(min(steps), value)[1] - 5), f"{value:.4f}", fill="black")
        step = min(steps) + span_x * i / 4
        draw.text((xy(step, low)[0] - 10, height - margin + 5), f"{step:.0f}", fill="black")
    draw.line([xy(s, v) for s, v in points], fill=(200, 30, 30), width=2)
    draw.text((margin, 15), title, fill="black")
    image.save(path)


def training_function(config: dict, args) -> dict:
    """Train; returns {"steps": ..., "eval": [(step, mse), ...], "losses": [per-step loss dicts]}."""
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=config["gradient_accumulation_steps"],
        log_with="tensorboard" if args.tensorboard else None,
        project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=False),
        cpu=args.cpu,
    )
    output_dir = Path(args.output_dir)
    set_seed(config["seed"])
    model = build_model(args)
    if config["adv_weight"] is not None:
        model.config.adv_weight = config["adv_weight"]
    adv_weight = model.config.adv_weight
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    model, critic = detach_critic(model)
    critic.to(accelerator.device)
    if accelerator.num_processes > 1:  # identical critics everywhere, whatever each process initialized
        for param in critic.parameters():
            param.data = broadcast(param.data)

    train_dataloader, eval_batch = get_dataloaders(accelerator, model.config, config, args)
    micro_batches = len(train_dataloader) / accelerator.num_processes  # per process, per epoch
    steps_per_epoch = math.ceil(micro_batches / accelerator.gradient_accumulation_steps)
    total_steps = config["num_epochs"] * steps_per_epoch
    warmup_steps = config["warmup_epochs"] * steps_per_epoch
    max_steps = min(config["max_steps"] or total_steps, total_steps)
    total_batch_size = config["batch_size"] * accelerator.num_processes * config["gradient_accumulation_steps"]
    learning_rate, min_learning_rate = scaled_learning_rates(
        total_batch_size, config["base_learning_rate"], config["base_min_learning_rate"]
    )
    learning_rate = config["learning_rate"] or learning_rate
    min_learning_rate = config["min_learning_rate"] if config["min_learning_rate"] is not None else min_learning_rate

    optimizer_kwargs = dict(lr=learning_rate, betas=tuple(config["betas"]), weight_decay=config["weight_decay"])
    g_optimizer = torch.optim.AdamW(model.parameters(), **optimizer_kwargs)
    d_optimizer = torch.optim.AdamW(critic.parameters(), **optimizer_kwargs)
    model, g_optimizer, d_optimizer, train_dataloader = accelerator.prepare(
        model, g_optimizer, d_optimizer, train_dataloader
    )
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(critic, progress)

    if args.resume:
        resume = Path(args.resume)
        if args.resume == "latest":
            checkpoints = sorted((output_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name[5:]))
            resume = checkpoints[-1] if checkpoints else None
        if resume is not None:
            accelerator.load_state(str(resume))
            accelerator.print(f"resumed from {resume} at step {progress.step}")
    micro_batches_done = progress.step * accelerator.gradient_accumulation_steps
    batches_per_epoch = len(train_dataloader)
    first_epoch, skip_batches = divmod(micro_batches_done, batches_per_epoch)

    if args.tensorboard:
        hparams = {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("marlin_pretrain", config=hparams)
    is_main = accelerator.is_main_process
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "train_config.json").write_text(json.dumps({**config, **vars(args)}, indent=2, default=str))
    eval_points, history = [], []

    def run_eval(step: int) -> None:
        mse, logits = evaluate(model, eval_batch, accelerator)
        eval_points.append((step, mse))
        if is_main:
            accelerator.log({"eval/rec_loss": mse}, step=step)
            with open(output_dir / "eval.csv", "a", newline="") as f:
                csv.writer(f).writerow([step, f"{mse:.6f}"])
            if args.image_steps and (step % args.image_steps == 0 or step == max_steps):
                unwrapped = accelerator.unwrap_model(model).config
                save_reconstruction(
                    eval_batch, logits, unwrapped, output_dir / "reconstructions" / f"step_{step:06d}.png",
                    accelerator, step,
                )  # fmt: skip

    if progress.step == 0 and args.eval_steps:
        run_eval(0)
    for epoch in range(first_epoch, config["num_epochs"]):
        if progress.step >= max_steps:
            break
        train_dataloader.set_epoch(epoch)
        train_dataloader.dataset.set_epoch(epoch)  # Accelerate forwards it only in some layouts
        batches = train_dataloader
        if epoch == first_epoch and skip_batches:
            batches = accelerator.skip_first_batches(train_dataloader, skip_batches)
        for batch in batches:
            lr = learning_rate_at(progress.step, learning_rate, min_learning_rate, warmup_steps, total_steps)
            for optimizer in (g_optimizer, d_optimizer):
                for group in optimizer.param_groups:
                    group["lr"] = lr
            with accelerator.accumulate(model):
                losses = train_step(
                    batch,
                    model,
                    critic,
                    g_optimizer,
                    d_optimizer,
                    accelerator,
                    adv_weight,
                    config["gp_weight"],
                    torch.Generator().manual_seed(config["seed"] * 1_000_003 + progress.step),
                )
            if not accelerator.sync_gradients:
                continue
            progress.step += 1
            step = progress.step
            if step % args.logging_steps == 0 or step == max_steps:
                logged = {name: accelerator.reduce(value, "mean").item() for name, value in losses.items()}
                logged["lr"] = lr
                history.append({"step": step, **logged})
                accelerator.log({f"train/{k}": v for k, v in logged.items()}, step=step)
                if is_main:
                    new_file = not (output_dir / "train_log.csv").exists()
                    with open(output_dir / "train_log.csv", "a", newline="") as f:
                        writer = csv.DictWriter(f, fieldnames=["step", *logged])
                        if new_file:
                            writer.writeheader()
                        writer.writerow({"step": step, **{k: f"{v:.6g}" for k, v in logged.items()}})
            if args.eval_steps and (step % args.eval_steps == 0 or step == max_steps):
                run_eval(step)
            if args.checkpointing_steps and step % args.checkpointing_steps == 0:
                accelerator.save_state(str(output_dir / "checkpoints" / f"step_{step}"))
            if step >= max_steps:
                break

    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)
    if is_main:
        unwrapped = accelerator.unwrap_model(model)
        if accelerator.distributed_type == DistributedType.FSDP:  # sharded weights: rebuild a whole model
            unwrapped = MarlinForPreTraining(unwrapped.config)
            unwrapped.discriminator = None
            unwrapped.load_state_dict(state_dict)
        save_marlin_folder(attach_critic(unwrapped, critic), output_dir / "model")
        detach_critic(unwrapped)
        if len(eval_points) > 1:
            write_curve_png(eval_points, output_dir / "eval_curve.png", "reconstruction MSE, held-out batch")
    accelerator.end_training()
    return {"steps": progress.step, "eval": eval_points, "losses": history}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="MARLIN pretraining (masked reconstruction + WGAN critic).")
    data = parser.add_argument_group("data")
    data.add_argument("--train-data", nargs="+", help="face video files or folders of them")
    data.add_argument(
        "--youtube-faces",
        metavar="ROOT",
        help="instead of --train-data: YouTube Faces as the reference prepares it (train_set.csv, val_set.csv, "
        "crop_images_DB/, optionally face_parsing_images_DB/); the eval batch comes from the val split",
    )
    data.add_argument("--eval-data", nargs="+", help="held-out videos for the fixed eval batch")
    data.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.0,
        help="without --eval-data: evaluate on the last fraction of every training video, train on the rest",
    )
    data.add_argument("--cache-dir", help="crop and parse every video once into this folder (recommended)")
    data.add_argument("--crop", default="auto", choices=["auto", "always", "never"], help="see FacePreparer")
    data.add_argument("--sample-rate", type=int, default=2, help="take every n-th frame")
    data.add_argument(
        "--farl-parser",
        metavar="PATH",
        help="FaRL LaPa TorchScript file (face_parsing.FARL_LAPA_FILENAME) for Fasking, as in the paper; "
        "default: the built-in landmark parser",
    )
    data.add_argument("--num-workers", type=int, default=2)
    model = parser.add_argument_group("model")
    model.add_argument("--model-config", default="base", help="small/base/large, a config JSON or a model folder")
    model.add_argument("--config-override", action="append", default=[], metavar="KEY=VALUE")
    model.add_argument("--init-from", help="VideoMAE (Transformers format, e.g. MCG-NJU/videomae-base), a MARLIN "
                       "folder, or a released MARLIN .full.pt/.ckpt")  # fmt: skip
    model.add_argument("--gradient-checkpointing", action="store_true")
    train = parser.add_argument_group("training")
    for name, value in DEFAULT_CONFIG.items():
        if name == "betas":
            continue
        kind = float if isinstance(value, float) or "learning_rate" in name or "weight" in name else int
        train.add_argument("--" + name.replace("_", "-"), type=kind, default=value)
    train.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    train.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    output = parser.add_argument_group("output")
    output.add_argument("--output-dir", required=True)
    output.add_argument("--checkpointing-steps", type=int, default=1000)
    output.add_argument("--resume", help="a checkpoints/step_N folder, or 'latest'")
    output.add_argument("--logging-steps", type=int, default=1)
    output.add_argument("--eval-steps", type=int, default=500, help="evaluate every N steps (0: never)")
    output.add_argument("--image-steps", type=int, default=1000, help="reconstruction picture every N steps")
    output.add_argument("--no-tensorboard", dest="tensorboard", action="store_false")
    args = parser.parse_args(argv)
    if not args.train_data and not args.youtube_faces:
        parser.error("give --train-data or --youtube-faces")

    config = {name: getattr(args, name) for name in DEFAULT_CONFIG if name != "betas"}
    config["betas"] = DEFAULT_CONFIG["betas"]
    result = training_function(config, args)
    if result["eval"]:
        first, last = result["eval"][0], result["eval"][-1]
        print(f"eval reconstruction MSE: step {first[0]} {first[1]:.5f} -> step {last[0]} {last[1]:.5f}")
    return result


if __name__ == "__main__":
    main()
