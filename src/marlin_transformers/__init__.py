"""MARLIN (Cai et al., CVPR 2023) as a native Hugging Face Transformers model.

Importing the package registers `MarlinConfig` and the models with the Auto classes. Video decoding, face detection
and the CLI import their heavy dependencies (PyAV, facenet-pytorch) only when used.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForVideoClassification,
    AutoVideoProcessor,
)

from .configuration_marlin import MARLIN_VARIANTS, MarlinConfig
from .exceptions import CheckpointError, MarlinError, NoFaceError, VideoError
from .modeling_marlin import (
    MarlinDiscriminator,
    MarlinForPreTraining,
    MarlinForVideoClassification,
    MarlinModel,
    MarlinPreTrainedModel,
    paint_predictions,
    patchify_video,
    unpatchify_video,
)
from .video_processing_marlin import MarlinVideoProcessor

__version__ = "0.1.0"

AutoConfig.register("marlin", MarlinConfig, exist_ok=True)
AutoModel.register(MarlinConfig, MarlinModel, exist_ok=True)
AutoModelForPreTraining.register(MarlinConfig, MarlinForPreTraining, exist_ok=True)
AutoModelForVideoClassification.register(MarlinConfig, MarlinForVideoClassification, exist_ok=True)
AutoVideoProcessor.register(MarlinConfig, MarlinVideoProcessor, exist_ok=True)

__all__ = [
    "MARLIN_VARIANTS",
    "CheckpointError",
    "MarlinConfig",
    "MarlinDiscriminator",
    "MarlinError",
    "MarlinForPreTraining",
    "MarlinForVideoClassification",
    "MarlinModel",
    "MarlinPreTrainedModel",
    "MarlinVideoProcessor",
    "NoFaceError",
    "VideoError",
    "paint_predictions",
    "patchify_video",
    "unpatchify_video",
]
