"""MARLIN's pretraining loop, with Accelerate: `train(PretrainingArguments(...))`.

Masked reconstruction of Fasking-masked face clips plus a WGAN critic on the reconstructed tubelets, as in the paper
(Cai et al., CVPR 2023): AdamW (0.9, 0.95) without weight decay, lr = 1.5e-4 * total batch / 256 with a linear
warm-up and a cosine decay applied per optimizer step, one critic step per generator step. The generator's prediction
is computed once per step: the critic trains on it detached, then the generator's loss reuses it (`train_step`).

Outputs under `output_dir`: `checkpoints/step_N/` (see `checkpointing`: written whole or not at all, resumable with
`resume`, read without unpickling code unless `trust_checkpoint`), TensorBoard
logs (`tensorboard --logdir OUTPUT_DIR`) of every loss term and the learning rate, `train_log.csv`, `eval.csv` (the
reconstruction MSE on a fixed held-out batch, rows `step,mse`) and its plot `eval_curve.png`, reconstruction pictures
`reconstructions/step_N.png` (per clip: original / masked input / reconstruction), `train_config.json` (the
arguments), and the final model in `model/` (a `save_pretrained` folder that `AutoModel` and
`AutoModelForPreTraining` load, with the critic). `examples/pretrain.py` is the command line around `train`.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from accelerate import Accelerator, DistributedType
from accelerate.utils import DataLoaderConfiguration, broadcast, set_seed
from huggingface_hub.errors import StrictDataclassError
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..configuration_marlin import MarlinConfig
from ..constants import FARL_CHANNEL_ORDERS, SAMPLE_RATE
from ..convert_marlin import config_error_reason, resolve_checkpoint_folder
from ..data.youtube_faces import youtube_faces_clips
from ..exceptions import CheckpointError, ConfigError, DatasetError
from ..hub_folders import save_marlin_folder
from ..loading import load_marlin
from ..modeling_marlin import MarlinForPreTraining, masked_patch_targets, reconstruction_loss
from ..video.decoding import find_videos
from ..visualization import reconstruction_grid, write_curve_png
from .checkpointing import (
    checkpoint_problem,
    latest_checkpoint,
    load_checkpoint,
    remove_unfinished_checkpoints,
    save_checkpoint,
)
from .clips import EpochShuffleSampler, FaceClipDataset
from .losses import (
    attach_critic,
    critic_loss,
    detach_critic,
    generator_adversarial_loss,
    gradient_penalty,
    penalty_interpolates,
)
from .schedule import (
    BASE_LEARNING_RATE,
    BASE_MIN_LEARNING_RATE,
    LR_SCHEDULES,
    learning_rate_at,
    reference_learning_rate_at,
    scaled_learning_rates,
)
from .videomae import (
    VIDEOMAE_HEAD_LAYOUTS,
    load_videomae_release,
    load_videomae_weights,
    marlin_config_from_videomae,
    read_videomae_release,
)


@dataclass
class PretrainingArguments:
    """Everything a pretraining run is configured by; `examples/pretrain.py` derives its flags from these fields.

    The training hyper-parameters default to the released configs' (`config/pretrain/marlin_vit_*.yaml` in the
    authors' repository). Give `train_data` or `youtube_faces`.
    """

    output_dir: str = field(metadata={"help": "checkpoints, logs, pictures and the final model go here"})

    # data
    train_data: list[str] = field(default_factory=list, metadata={"help": "face video files or folders of them"})
    youtube_faces: str | None = field(
        default=None,
        metadata={
            "metavar": "ROOT",
            "help": "instead of --train-data: YouTube Faces as the reference prepares it (train_set.csv, "
            "val_set.csv, crop_images_DB/, optionally face_parsing_images_DB/); the eval batch comes from the val "
            "split",
        },
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "metavar": "PATH_OR_REPO_ID",
            "help": "instead of --train-data: a prepared face-video dataset (a folder of marlin prepare-ytf / "
            "prepare-faces, a folder of its Parquet shards, or a Hub dataset id); the eval batch comes from its "
            "validation split",
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "with --dataset: stream its train split (a datasets.IterableDataset, rows shuffled in a seeded "
            "buffer reseeded every epoch) instead of loading it; an epoch's length comes from the split sizes in "
            "the dataset card (push-dataset writes them), else give --max-steps, which then spans the schedule"
        },
    )
    shuffle_buffer: int = field(default=64, metadata={"help": "with --streaming: rows in the shuffle buffer"})
    eval_data: list[str] = field(default_factory=list, metadata={"help": "held-out videos for the fixed eval batch"})
    holdout_fraction: float = field(
        default=0.0,
        metadata={
            "help": "without --eval-data: evaluate on the last fraction of every training video, train on the rest"
        },
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "crop and parse every video once into this folder (recommended)"}
    )
    crop: Literal["auto", "always", "never"] = field(default="auto", metadata={"help": "see FacePreparer"})
    sample_rate: int = field(default=SAMPLE_RATE, metadata={"help": "take every n-th frame"})
    farl_parser: str | None = field(
        default=None,
        metadata={
            "metavar": "PATH",
            "help": "FaRL LaPa TorchScript file (face_parsing.FARL_LAPA_FILENAME) for Fasking, as in the paper; "
            "default: the built-in landmark parser",
        },
    )
    farl_channel_order: str = field(
        default=FARL_CHANNEL_ORDERS[0],
        metadata={
            "help": "channel order fed to the FaRL parser: rgb (FaRL's own, right maps) or bgr (the paper code's, the "
            "maps the released models were pretrained with)",
            "choices": list(FARL_CHANNEL_ORDERS),
        },
    )
    num_workers: int = field(default=2, metadata={"help": "dataloader workers"})

    # model
    model_config: str = field(default="base", metadata={"help": "small/base/large, a config JSON or a model folder"})
    config_override: list[str] = field(
        default_factory=list,
        metadata={
            "action": "extend",  # repeatable: --config-override a=1 --config-override b=2
            "metavar": "KEY=VALUE",
            "help": "a MarlinConfig field (VALUE read as JSON, else as a string)",
        },
    )
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "VideoMAE (Transformers format, e.g. MCG-NJU/videomae-base, or an original VideoMAE .pth), a "
            "MARLIN folder, or a released MARLIN .full.pt/.ckpt"
        },
    )
    videomae_head: str = field(
        default=VIDEOMAE_HEAD_LAYOUTS[0],
        metadata={
            "help": "an original VideoMAE .pth's decoder head: marlin (re-ordered to MARLIN's (c, t, y, x) pixels) or "
            "reference (loaded unchanged, as the paper code: its (t, y, x, c) outputs land on the wrong pixels)",
            "choices": list(VIDEOMAE_HEAD_LAYOUTS),
        },
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute each layer in the backward"})

    # training
    seed: int = field(default=42, metadata={"help": "seeds the model init, every clip, mask and shuffle"})
    batch_size: int = field(default=16, metadata={"help": "clips per process per micro-step"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-steps per optimizer step"})
    num_epochs: int = field(default=2000, metadata={"help": "the schedule's length"})
    warmup_epochs: int = field(default=40, metadata={"help": "linear warm-up from lr 0"})
    max_steps: int | None = field(default=None, metadata={"help": "stop early (the schedule still spans num_epochs)"})
    lr_schedule: str = field(
        default=LR_SCHEDULES[0],
        metadata={
            "help": "step: a new lr every optimizer step; reference: one per epoch as the paper code steps it (the "
            "first step at lr 0, then each epoch's value from its second step on)",
            "choices": list(LR_SCHEDULES),
        },
    )
    base_learning_rate: float = field(default=BASE_LEARNING_RATE, metadata={"help": "peak lr per 256 clips"})
    base_min_learning_rate: float = field(default=BASE_MIN_LEARNING_RATE, metadata={"help": "final lr per 256 clips"})
    learning_rate: float | None = field(default=None, metadata={"help": "absolute peak lr, overriding the scaled one"})
    min_learning_rate: float | None = field(default=None, metadata={"help": "absolute final lr"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1, both networks"})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2, both networks"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay, both networks"})
    adv_weight: float | None = field(default=None, metadata={"help": "default: the model config's (0.01)"})
    gp_weight: float = field(default=0.0, metadata={"help": "WGAN-GP gradient penalty weight"})
    clips_per_video: int = field(default=1, metadata={"help": "training clips per video per epoch"})
    eval_batch_size: int = field(default=4, metadata={"help": "clips in the fixed eval batch"})
    mixed_precision: Literal["no", "fp16", "bf16"] = field(default="no", metadata={"help": "autocast dtype (GPU)"})
    cpu: bool = field(default=False, metadata={"help": "train on the CPU even if a GPU is present"})

    # output
    checkpointing_steps: int = field(
        default=1000, metadata={"help": "save a checkpoint (checkpoints/step_N) every N steps (0: never)"}
    )
    keep_checkpoints: int | None = field(
        default=None,
        metadata={
            "metavar": "N",
            "help": "after each save, delete all but the N newest checkpoints (default: keep all)",
        },
    )
    resume: str | None = field(
        default=None,
        metadata={"help": "a checkpoints/step_N folder, or 'latest' (the newest complete one; none: start at step 0)"},
    )
    trust_checkpoint: bool = field(
        default=False,
        metadata={
            "help": "let --resume fully unpickle optimizer files that hold more than tensors and numbers (this can "
            "run code: only for a folder whose origin you trust); this package's own checkpoints never need it"
        },
    )
    logging_steps: int = field(default=1, metadata={"help": "log the losses every N steps"})
    quiet: bool = field(default=False, metadata={"help": "no progress bar and no loss lines on the terminal"})
    eval_steps: int = field(default=500, metadata={"help": "evaluate every N steps (0: never)"})
    image_steps: int = field(default=1000, metadata={"help": "reconstruction picture every N steps (0: never)"})
    tensorboard: bool = field(default=True, metadata={"help": "log to TensorBoard (--no-tensorboard: don't)"})

    def __post_init__(self):
        # ValueErrors: `examples/pretrain.py` prints each as one argparse line, before anything is loaded.
        if not self.train_data and not self.youtube_faces and not self.dataset:
            raise ValueError("give train_data (--train-data), youtube_faces (--youtube-faces) or dataset (--dataset)")
        for name, minimum in ARGUMENT_MINIMUMS.items():
            value = getattr(self, name)
            if value is not None and value < minimum:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{name} ({flag}) is {value}; give at least {minimum}")
        choice_fields = (
            ("lr_schedule", LR_SCHEDULES),
            ("farl_channel_order", FARL_CHANNEL_ORDERS),
            ("videomae_head", VIDEOMAE_HEAD_LAYOUTS),
        )
        for name, choices in choice_fields:
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} is {getattr(self, name)!r}; give one of {', '.join(choices)}")
        if self.streaming and not self.dataset:
            raise ValueError("streaming (--streaming) reads a prepared dataset: give dataset (--dataset)")
        if self.streaming and self.clips_per_video > 1:
            raise ValueError("streaming (--streaming) draws one clip per video per epoch: drop --clips-per-video")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction (--holdout-fraction) is {self.holdout_fraction}; give one in [0, 1)")
        try:
            parse_config_overrides(self.config_override)
        except ConfigError as error:
            raise ValueError(str(error)) from None


# The smallest value of each count of PretrainingArguments (None, where allowed, is always fine).
ARGUMENT_MINIMUMS = {
    "batch_size": 1,
    "gradient_accumulation_steps": 1,
    "num_epochs": 1,
    "warmup_epochs": 0,
    "max_steps": 1,
    "shuffle_buffer": 1,
    "clips_per_video": 1,
    "eval_batch_size": 1,
    "sample_rate": 1,
    "num_workers": 0,
    "checkpointing_steps": 0,
    "keep_checkpoints": 0,
    "logging_steps": 1,
    "eval_steps": 0,
    "image_steps": 0,
}


@dataclass
class PretrainingResult:
    """What `train` did: the optimizer steps, the eval curve [(step, mse)], the logged rows of `train_log.csv`
    (`{"step", "rec_loss", ..., "lr"}`, unrounded), and the final model's folder."""

    steps: int
    eval_curve: list[tuple[int, float]]
    train_log: list[dict[str, float]]
    model_dir: Path


# What `--config-override` may set: MarlinConfig's fields (the reference's names, which MarlinConfig also takes, are
# left to config files: one spelling on the command line).
CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(MarlinConfig))


def parse_config_overrides(items: list[str]) -> dict[str, object]:
    """`["KEY=VALUE", ...]` -> `{KEY: VALUE}`, each VALUE read as JSON (`112`, `0.75`, `true`), else kept a string.

    Raises:
        ConfigError: an item without `=`, or a KEY that is not a MarlinConfig field (which the config would keep
            as an unused attribute: a misspelt override would silently do nothing).
    """
    overrides = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals:
            raise ConfigError(f"--config-override {item}: give KEY=VALUE, e.g. image_size=112.")
        if key not in CONFIG_FIELDS:
            close = difflib.get_close_matches(key, sorted(CONFIG_FIELDS), n=1)
            hint = f"did you mean {close[0]}?" if close else "see MarlinConfig's docstring for the fields."
            raise ConfigError(f"--config-override {item}: {key} is not a MarlinConfig field; {hint}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def build_model(
    model_config: str = "base",
    init_from: str | None = None,
    config_overrides: dict | None = None,
    videomae_head: str = VIDEOMAE_HEAD_LAYOUTS[0],
) -> MarlinForPreTraining:
    """A fresh model of `model_config` (a variant name, a config JSON or a model folder), or one initialized from
    `init_from`: a VideoMAE or MARLIN folder / Hub id, an original VideoMAE `.pth` (its decoder head loaded as
    `videomae_head` says, see `videomae.load_videomae_release`), or a released MARLIN `.full.pt` / Lightning `.ckpt`
    file. `config_overrides` (MarlinConfig fields) apply to all but a released MARLIN file.

    Raises:
        ConfigError: `model_config` with the overrides is no buildable config (`MarlinConfig`'s own validation).
        CheckpointError: an `init_from` whose weights do not fit (`load_marlin`).
    """
    overrides = config_overrides or {}
    source = f"model config {model_config if init_from is None else init_from}" + (" with overrides" * bool(overrides))

    def make_config(build) -> MarlinConfig:
        try:
            return build()
        except StrictDataclassError as error:  # the strict dataclass's message spans lines
            raise ConfigError(f"{source}: {config_error_reason(error)}") from None
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{source}: {' '.join(str(error).split())}") from None

    if init_from is None:
        if Path(model_config).is_file():
            config = make_config(lambda: MarlinConfig(**{**json.loads(Path(model_config).read_text()), **overrides}))
        elif Path(model_config).is_dir():
            config = make_config(lambda: MarlinConfig.from_pretrained(model_config, **overrides))
        else:
            config = make_config(lambda: MarlinConfig.from_variant(model_config, **overrides))
        return MarlinForPreTraining(config)
    release = read_videomae_release(init_from) if Path(init_from).is_file() else None
    if release is not None:  # an original VideoMAE .pth
        model, kept = load_videomae_release(init_from, videomae_head, release, **overrides)
        print(f"initialized from VideoMAE {init_from} (decoder head: {videomae_head}); left at init: {kept}")
        return model.train()
    if Path(init_from).is_file():  # a released MARLIN .pt / Lightning .ckpt
        return load_marlin(init_from, "pretraining").train()
    folder = resolve_checkpoint_folder(init_from)
    hub_config = json.loads((folder / "config.json").read_text())
    if hub_config.get("model_type") == "videomae":
        model = MarlinForPreTraining(make_config(lambda: marlin_config_from_videomae(hub_config, **overrides)))
        kept = load_videomae_weights(model, folder)
        print(f"initialized from VideoMAE {init_from}; left at init: {kept}")
        return model
    config = make_config(lambda: MarlinConfig.from_pretrained(folder, **overrides))
    # A folder without a critic (an encoder-and-decoder export) gets a fresh one, as a released .full.pt does.
    return load_marlin(folder, "pretraining", config=config)


def get_dataloaders(
    args: PretrainingArguments, model_config: MarlinConfig, accelerator: Accelerator
) -> tuple[DataLoader, dict[str, torch.Tensor]]:
    """The training dataloader (shuffled per epoch from the seed, not yet prepared) and one fixed eval batch.

    The eval batch holds `eval_batch_size` clips of `eval_data` (held-out videos), of the YouTube Faces val split,
    or, without either, of the last `holdout_fraction` of every training video (training clips then come from the
    rest; with a fraction of 0, from the training clips themselves, drawn with another seed). Its clips and masks are
    the same at every evaluation: `pixel_values_videos` (eval_batch_size, frames, 3, size, size) in [0, 1] and
    `bool_masked_pos` (eval_batch_size, tokens).
    """
    face_parser = None
    if args.farl_parser:  # the paper's parser; default: the built-in landmark approximation
        from .face_parsing import FarlFaceParser

        face_parser = FarlFaceParser(
            args.farl_parser, device=accelerator.device, channel_order=args.farl_channel_order
        )
    dataset_kwargs = dict(
        cache_dir=args.cache_dir, crop=args.crop, sample_rate=args.sample_rate, face_parser=face_parser
    )
    if args.dataset:  # a prepared face-video dataset: clips and Fasking masks from its stored maps
        from .dataset_clips import PreparedClipCollator, PreparedClipDataset, load_prepared_rows

        with accelerator.main_process_first():  # the main process builds the Arrow cache, the others then read it
            rows = {
                split: load_prepared_rows(args.dataset, split, streaming=args.streaming)
                for split in ("train", "validation")
            }
        if args.streaming:
            eval_rows = list(rows["validation"].take(args.eval_batch_size))
            if not eval_rows:
                raise DatasetError(f"{args.dataset}: its validation split is empty; give a dataset with one.")
            per_video = math.ceil(args.eval_batch_size / len(eval_rows))
            eval_dataset = PreparedClipDataset(eval_rows, model_config, args.sample_rate, args.seed + 1, per_video)
            train_rows = rows["train"].shuffle(seed=args.seed, buffer_size=args.shuffle_buffer)
            # A worker reads whole shards: more workers than shards would idle.
            train_dataloader = DataLoader(
                train_rows,
                batch_size=args.batch_size,
                collate_fn=PreparedClipCollator(model_config, args.sample_rate, args.seed),
                num_workers=min(args.num_workers, train_rows.num_shards),
                drop_last=True,
                pin_memory=torch.cuda.is_available(),
            )
            return train_dataloader, fixed_eval_batch(eval_dataset, args.eval_batch_size)
        train_dataset = PreparedClipDataset(
            rows["train"], model_config, args.sample_rate, args.seed, clips_per_video=args.clips_per_video
        )
        eval_rows = rows["validation"].select(range(min(args.eval_batch_size, len(rows["validation"]))))
        per_video = math.ceil(args.eval_batch_size / len(eval_rows))
        eval_dataset = PreparedClipDataset(eval_rows, model_config, args.sample_rate, args.seed + 1, per_video)
    else:
        if args.youtube_faces:  # the reference's layout: train_set.csv / val_set.csv over crop_images_DB/<clip>/
            train_videos = youtube_faces_clips(args.youtube_faces, "train")
            eval_videos = youtube_faces_clips(args.youtube_faces, "val")[: args.eval_batch_size]
        else:
            train_videos = find_videos(args.train_data)
            eval_videos = find_videos(args.eval_data) if args.eval_data else train_videos
        holdout = 0.0 if args.eval_data or args.youtube_faces else args.holdout_fraction
        with accelerator.main_process_first():  # the main process fills the cache, the others then read it
            train_dataset = FaceClipDataset.from_config(
                model_config,
                train_videos,
                seed=args.seed,
                clips_per_video=args.clips_per_video,
                frame_range=(0.0, 1.0 - holdout),
                **dataset_kwargs,
            )
            eval_dataset = FaceClipDataset.from_config(
                model_config,
                eval_videos,
                seed=args.seed + 1,
                clips_per_video=math.ceil(args.eval_batch_size / len(eval_videos)),
                frame_range=(1.0 - holdout, 1.0) if holdout else (0.0, 1.0),
                **dataset_kwargs,
            )
    train_dataloader = DataLoader(
        train_dataset,
        batch_size=args.batch_size,
        sampler=EpochShuffleSampler(len(train_dataset), args.seed),
        num_workers=args.num_workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
    )
    return train_dataloader, fixed_eval_batch(eval_dataset, args.eval_batch_size)


def fixed_eval_batch(eval_dataset, eval_batch_size: int) -> dict[str, torch.Tensor]:
    """`eval_batch_size` clips of a dataset of `clips_per_video` clips per video, spread over the videos: item i is
    clip (i % clips_per_video) of video (i // clips_per_video)."""
    order = sorted(range(len(eval_dataset)), key=lambda i: (i % eval_dataset.clips_per_video, i))
    items = [eval_dataset[i] for i in order[:eval_batch_size]]
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def streaming_train_size(train_dataloader) -> int | None:
    """The rows of the streaming train split behind a dataloader, as its dataset card states them (None: unstated)."""
    from .dataset_clips import split_size

    return split_size(train_dataloader.dataset, "train")


def train_step(batch, model, critic, g_optimizer, d_optimizer, accelerator, adv_weight, gp_weight, gp_generator):
    """One critic step and one generator step on a batch, with one forward pass of the generator.

    Args:
        batch: `pixel_values_videos` (batch, frames, 3, size, size) in [0, 1] and `bool_masked_pos` (batch, tokens).
        model: the generator (`MarlinForPreTraining` without its critic, see `detach_critic`), prepared.
        critic: the `MarlinDiscriminator`, kept whole on every process.
        adv_weight: the adversarial term's weight.
        gp_weight: the gradient penalty's weight.
        gp_generator: CPU generator of the penalty's interpolation (unused when `gp_weight` is 0).

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
def evaluate(model, eval_batch: dict[str, torch.Tensor], accelerator: Accelerator) -> tuple[float, torch.Tensor]:
    """Reconstruction MSE on the fixed eval batch, and the predictions (batch, masked, c*pt*ph*pw), for pictures."""
    model.eval()
    pixel_values_videos = eval_batch["pixel_values_videos"].to(accelerator.device)
    bool_masked_pos = eval_batch["bool_masked_pos"].to(accelerator.device)
    config = accelerator.unwrap_model(model).config
    with accelerator.autocast():
        logits = model(pixel_values_videos, bool_masked_pos, return_loss=False).logits
    targets = masked_patch_targets(pixel_values_videos, bool_masked_pos, config.patch_size, config.tubelet_size)
    model.train()
    return reconstruction_loss(logits, targets).item(), logits


def save_reconstruction(
    eval_batch: dict[str, torch.Tensor],
    logits: torch.Tensor,
    config: MarlinConfig,
    path: Path,
    accelerator: Accelerator,
    step: int,
) -> None:
    """The eval batch's reconstruction picture (`visualization.reconstruction_grid`) to `path` and TensorBoard."""
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


def append_train_log(path: Path, row: dict[str, float]) -> None:
    """One row of `train_log.csv` (the header first, when the file is new): the step, then 6 significant digits."""
    new_file = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new_file:
            writer.writeheader()
        writer.writerow({"step": row["step"], **{k: f"{v:.6g}" for k, v in row.items() if k != "step"}})


def append_eval_log(path: Path, step: int, mse: float) -> None:
    """One row `step,mse` of `eval.csv` (no header)."""
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow([step, f"{mse:.6f}"])


def save_final_model(accelerator: Accelerator, model, critic, folder: Path) -> None:
    """The generator (gathered from every process) with its critic, as a `save_marlin_folder` folder."""
    state_dict = accelerator.get_state_dict(model)  # a collective: every process calls it
    if not accelerator.is_main_process:
        return
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.distributed_type == DistributedType.FSDP:  # sharded weights: rebuild a whole model
        unwrapped = MarlinForPreTraining(unwrapped.config)
        unwrapped.discriminator = None
        unwrapped.load_state_dict(state_dict)
    save_marlin_folder(attach_critic(unwrapped, critic), folder)
    detach_critic(unwrapped)


def train(args: PretrainingArguments) -> PretrainingResult:
    """Pretrain MARLIN as `args` says, writing the outputs listed in the module docstring under `args.output_dir`."""
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with="tensorboard" if args.tensorboard else None,
        project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=False),
        cpu=args.cpu,
    )
    output_dir = Path(args.output_dir)
    checkpoints_dir = output_dir / "checkpoints"
    # Which checkpoint to resume from is settled before anything is built, so that a wrong --resume fails at once.
    resume = None
    if args.resume == "latest":
        resume = latest_checkpoint(output_dir, report=accelerator.print)
        if resume is None:
            accelerator.print(f"--resume latest: no complete checkpoint in {checkpoints_dir}; starting at step 0.")
    elif args.resume:
        resume = Path(args.resume)
        problem = checkpoint_problem(resume)
        if problem is not None:
            raise CheckpointError(
                f"--resume {resume}: not a complete pretraining checkpoint ({problem}); give a checkpoints/step_N "
                "folder a run saved whole, or 'latest'."
            )
    set_seed(args.seed)
    model = build_model(
        args.model_config, args.init_from, parse_config_overrides(args.config_override), args.videomae_head
    )
    if args.adv_weight is not None:
        model.config.adv_weight = args.adv_weight
    adv_weight = model.config.adv_weight
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    model, critic = detach_critic(model)
    critic.to(accelerator.device)
    if accelerator.num_processes > 1:  # identical critics everywhere, whatever each process initialized
        for param in critic.parameters():
            param.data = broadcast(param.data)

    train_dataloader, eval_batch = get_dataloaders(args, model.config, accelerator)
    data = " ".join(args.train_data) or args.youtube_faces or args.dataset
    num_clips = len(train_dataloader.dataset) if not args.streaming else streaming_train_size(train_dataloader)
    if num_clips is not None and num_clips < args.batch_size:  # the loader drops the partial batch
        raise DatasetError(
            f"{data}: {num_clips} training clips, fewer than one batch of {args.batch_size}; "
            "lower --batch-size or add videos."
        )
    # The schedule counts optimizer steps: epochs of (batches per process / accumulation) steps.
    if num_clips is not None:
        micro_batches = num_clips // args.batch_size / accelerator.num_processes  # per process, per epoch
        steps_per_epoch = math.ceil(micro_batches / accelerator.gradient_accumulation_steps)
    elif args.max_steps is None:
        raise DatasetError(
            f"{data}: a streaming split of unstated size (no split sizes in its dataset card); give --max-steps."
        )
    else:  # a stream of unknown length: --max-steps spans the schedule, in num_epochs nominal epochs
        steps_per_epoch = max(1, args.max_steps // args.num_epochs)
    total_steps = args.num_epochs * steps_per_epoch if num_clips is not None else args.max_steps
    warmup_steps = args.warmup_epochs * steps_per_epoch
    max_steps = min(args.max_steps or total_steps, total_steps)
    total_batch_size = args.batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    learning_rate, min_learning_rate = scaled_learning_rates(
        total_batch_size, args.base_learning_rate, args.base_min_learning_rate
    )
    if args.learning_rate is not None:
        learning_rate = args.learning_rate
    if args.min_learning_rate is not None:
        min_learning_rate = args.min_learning_rate

    optimizer_kwargs = dict(lr=learning_rate, betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.weight_decay)
    g_optimizer = torch.optim.AdamW(model.parameters(), **optimizer_kwargs)
    d_optimizer = torch.optim.AdamW(critic.parameters(), **optimizer_kwargs)
    model, g_optimizer, d_optimizer, train_dataloader = accelerator.prepare(
        model, g_optimizer, d_optimizer, train_dataloader
    )
    step = 0  # optimizer steps done
    if resume is not None:
        step = load_checkpoint(accelerator, resume, critic, trust=args.trust_checkpoint)
        accelerator.print(f"resumed from {resume} at step {step}")
    micro_batches_done = step * accelerator.gradient_accumulation_steps
    epoch_micro_batches = (
        steps_per_epoch * accelerator.gradient_accumulation_steps if args.streaming else len(train_dataloader)
    )
    first_epoch, skip_batches = divmod(micro_batches_done, epoch_micro_batches)

    if args.tensorboard:
        hparams = {k: v for k, v in asdict(args).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("marlin_pretrain", config=hparams)
    is_main = accelerator.is_main_process
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        for leftover in remove_unfinished_checkpoints(checkpoints_dir) if checkpoints_dir.is_dir() else []:
            accelerator.print(f"removed {leftover}, an unfinished checkpoint of an interrupted run")
        (output_dir / "train_config.json").write_text(json.dumps(asdict(args), indent=2, default=str))
    eval_curve, train_log = [], []

    # The terminal: a bar over optimizer steps with the latest losses, and one line per evaluation (main process).
    bar = tqdm(total=max_steps, initial=step, desc="pretraining", unit="step", disable=args.quiet or not is_main)

    def run_eval(step: int) -> None:
        mse, logits = evaluate(model, eval_batch, accelerator)
        eval_curve.append((step, mse))
        if not is_main:
            return
        if not args.quiet:
            latest = train_log[-1] if train_log else None
            losses = (
                f"rec_loss {latest['rec_loss']:.5f}, d_loss {latest['d_loss']:.4g}, lr {latest['lr']:.2e}; "
                if latest
                else ""
            )
            bar.write(f"step {step}/{max_steps}: {losses}held-out reconstruction MSE {mse:.5f}")
        accelerator.log({"eval/rec_loss": mse}, step=step)
        append_eval_log(output_dir / "eval.csv", step, mse)
        if args.image_steps and (step % args.image_steps == 0 or step == max_steps):
            picture = output_dir / "reconstructions" / f"step_{step:06d}.png"
            save_reconstruction(eval_batch, logits, accelerator.unwrap_model(model).config, picture, accelerator, step)

    if step == 0 and args.eval_steps:
        run_eval(0)
    for epoch in range(first_epoch, args.num_epochs):
        if step >= max_steps:
            break
        train_dataloader.set_epoch(epoch)
        train_dataloader.dataset.set_epoch(epoch)  # Accelerate forwards it only in some layouts
        if hasattr(train_dataloader.collate_fn, "set_epoch"):  # streaming: the collator draws the clips
            train_dataloader.collate_fn.set_epoch(epoch)
        batches = train_dataloader
        if epoch == first_epoch and skip_batches:
            batches = accelerator.skip_first_batches(train_dataloader, skip_batches)
        for batch in batches:
            if args.lr_schedule == "reference":
                lr = reference_learning_rate_at(
                    step, steps_per_epoch, learning_rate, min_learning_rate, args.warmup_epochs, args.num_epochs
                )
            else:
                lr = learning_rate_at(step, learning_rate, min_learning_rate, warmup_steps, total_steps)
            for optimizer in (g_optimizer, d_optimizer):
                for group in optimizer.param_groups:
                    group["lr"] = lr
            gp_generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
            with accelerator.accumulate(model):
                losses = train_step(
                    batch,
                    model,
                    critic,
                    g_optimizer,
                    d_optimizer,
                    accelerator,
                    adv_weight,
                    args.gp_weight,
                    gp_generator,
                )
            if not accelerator.sync_gradients:
                continue
            step += 1
            bar.update(1)
            if step % args.logging_steps == 0 or step == max_steps:
                logged = {name: accelerator.reduce(value, "mean").item() for name, value in losses.items()}
                logged["lr"] = lr
                train_log.append({"step": step, **logged})
                bar.set_postfix(rec=f"{logged['rec_loss']:.4f}", d=f"{logged['d_loss']:.3g}", lr=f"{lr:.2e}")
                accelerator.log({f"train/{k}": v for k, v in logged.items()}, step=step)
                if is_main:
                    append_train_log(output_dir / "train_log.csv", train_log[-1])
            if args.eval_steps and (step % args.eval_steps == 0 or step == max_steps):
                run_eval(step)
            if args.checkpointing_steps and step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, critic, step, checkpoints_dir, keep=args.keep_checkpoints)
            if step >= max_steps:
                break

    bar.close()
    accelerator.wait_for_everyone()
    save_final_model(accelerator, model, critic, output_dir / "model")
    if is_main and len(eval_curve) > 1:
        write_curve_png(eval_curve, output_dir / "eval_curve.png", "reconstruction MSE, held-out batch")
    accelerator.end_training()
    return PretrainingResult(step, eval_curve, train_log, output_dir / "model")
