"""MARLIN pretraining: Fasking masks, face parsing, losses, the paper's schedule, face clips, VideoMAE initialization.

The training loop is `pretraining.training` (`train(PretrainingArguments(...))`), which `examples/pretrain.py` drives;
everything else is a plain function or class it (and the tests) call.
"""

from ..modeling_marlin import masked_patch_targets, reconstruction_loss
from .clips import EpochShuffleSampler, FaceClipDataset, FacePreparer, prepare_video_cache
from .losses import (
    attach_critic,
    critic_loss,
    detach_critic,
    generator_adversarial_loss,
    gradient_penalty,
    penalty_interpolates,
)
from .masking import MASKING_STRATEGIES, generate_mask, generate_masks, seeded_generator
from .schedule import learning_rate_at, reference_learning_rate_at, scaled_learning_rates
from .training import PretrainingArguments, PretrainingResult, train, train_step
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
    "PretrainingArguments",
    "PretrainingResult",
    "attach_critic",
    "critic_loss",
    "detach_critic",
    "generate_mask",
    "generate_masks",
    "generator_adversarial_loss",
    "gradient_penalty",
    "learning_rate_at",
    "reference_learning_rate_at",
    "load_videomae_weights",
    "marlin_config_from_videomae",
    "masked_patch_targets",
    "penalty_interpolates",
    "prepare_video_cache",
    "reconstruction_loss",
    "scaled_learning_rates",
    "seeded_generator",
    "train",
    "train_step",
    "videomae_to_marlin_state_dict",
]
