"""MARLIN pretraining: Fasking masks, face parsing, losses, the paper's schedule, face clips, VideoMAE initialization.

The training loop is `examples/pretrain.py` (Accelerate), the recipe over these pieces: its arguments
(`arguments`), the model it starts from (`model`), its data (`training_data`), each network's loss (`losses`), the
schedule, checkpoints, and what a run reports (`run_log`).
"""

from ..modeling_marlin import masked_patch_targets, reconstruction_loss
from .arguments import PretrainingArguments
from .clips import EpochShuffleSampler, FaceClipDataset
from .losses import (
    attach_critic,
    critic_loss,
    critic_objective,
    detach_critic,
    generator_adversarial_loss,
    generator_objective,
    gradient_penalty,
    penalty_interpolates,
)
from .masking import MASKING_STRATEGIES, generate_mask, generate_masks, seeded_generator
from .preparation import FacePreparer, PreparationSettings, prepare_corpus
from .run_log import PretrainingResult
from .schedule import TrainingSchedule, learning_rate_at, reference_learning_rate_at, scaled_learning_rates
from .videomae import (
    VIDEOMAE_KEY_MAPPING,
    load_videomae_weights,
    marlin_config_from_videomae,
    videomae_to_marlin_state_dict,
)

__all__ = [
    "MASKING_STRATEGIES",
    "VIDEOMAE_KEY_MAPPING",
    "EpochShuffleSampler",
    "FaceClipDataset",
    "FacePreparer",
    "PreparationSettings",
    "PretrainingArguments",
    "PretrainingResult",
    "TrainingSchedule",
    "attach_critic",
    "critic_loss",
    "critic_objective",
    "detach_critic",
    "generate_mask",
    "generate_masks",
    "generator_adversarial_loss",
    "generator_objective",
    "gradient_penalty",
    "learning_rate_at",
    "reference_learning_rate_at",
    "load_videomae_weights",
    "marlin_config_from_videomae",
    "masked_patch_targets",
    "penalty_interpolates",
    "prepare_corpus",
    "reconstruction_loss",
    "scaled_learning_rates",
    "seeded_generator",
    "videomae_to_marlin_state_dict",
]
