"""What a pretraining run is configured by: `PretrainingArguments`, whose fields are `examples/pretrain.py`'s flags.

Its checks raise `ArgumentValueError`, which names the fields at fault (the example adds their flags when it prints
one); `parse_config_overrides` reads the `KEY=VALUE` overrides of `MarlinConfig` fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from typing import Literal

from ..configuration_marlin import MarlinConfig
from ..constants import FARL_CHANNEL_ORDERS, SAMPLE_RATE
from ..exceptions import ArgumentValueError, ConfigError
from .schedule import BASE_LEARNING_RATE, BASE_MIN_LEARNING_RATE, LR_SCHEDULES
from .videomae import VIDEOMAE_HEAD_LAYOUTS


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
    crop_face: Literal["auto", "always", "never"] = field(
        default="auto",
        metadata={"help": "track the face and crop around it: auto (unless frames are 224x224), always or never"},
    )
    sample_rate: int = field(default=SAMPLE_RATE, metadata={"help": "take every n-th frame"})
    farl_model: str | None = field(
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
    verbose: bool = field(
        default=False, metadata={"help": "also show transformers' and accelerate's own bars and notices"}
    )
    eval_steps: int = field(default=500, metadata={"help": "evaluate every N steps (0: never)"})
    image_steps: int = field(default=1000, metadata={"help": "reconstruction picture every N steps (0: never)"})
    tensorboard: bool = field(default=True, metadata={"help": "log to TensorBoard (--no-tensorboard: don't)"})

    def __post_init__(self):
        # Checked before anything is loaded; `examples/pretrain.py` prints each error as one argparse line.
        if not self.train_data and not self.youtube_faces and not self.dataset:
            raise ArgumentValueError(
                "give train_data, youtube_faces or dataset", "train_data", "youtube_faces", "dataset"
            )
        for name, minimum in ARGUMENT_MINIMUMS.items():
            value = getattr(self, name)
            if value is not None and value < minimum:
                raise ArgumentValueError(f"{name} is {value}; give at least {minimum}", name)
        choice_fields = (
            ("lr_schedule", LR_SCHEDULES),
            ("farl_channel_order", FARL_CHANNEL_ORDERS),
            ("videomae_head", VIDEOMAE_HEAD_LAYOUTS),
        )
        for name, choices in choice_fields:
            if getattr(self, name) not in choices:
                raise ArgumentValueError(f"{name} is {getattr(self, name)!r}; give one of {', '.join(choices)}", name)
        if self.streaming and not self.dataset:
            raise ArgumentValueError("streaming needs dataset: it streams a prepared one", "streaming", "dataset")
        if self.streaming and self.clips_per_video > 1:
            raise ArgumentValueError(
                f"streaming draws one clip per video per epoch: clips_per_video is {self.clips_per_video}",
                "streaming",
                "clips_per_video",
            )
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ArgumentValueError(
                f"holdout_fraction is {self.holdout_fraction}; give one in [0, 1)", "holdout_fraction"
            )
        try:
            parse_config_overrides(self.config_override)
        except ConfigError as error:
            raise ArgumentValueError(str(error), "config_override") from None


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


# What `config_override` may set: MarlinConfig's fields (the reference's names, which MarlinConfig also takes, are
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
            raise ConfigError(f"{item}: give KEY=VALUE, e.g. image_size=112.")
        if key not in CONFIG_FIELDS:
            close = difflib.get_close_matches(key, sorted(CONFIG_FIELDS), n=1)
            hint = f"did you mean {close[0]}?" if close else "see MarlinConfig's docstring for the fields."
            raise ConfigError(f"{item}: {key} is not a MarlinConfig field; {hint}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides
