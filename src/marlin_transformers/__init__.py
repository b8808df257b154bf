"""MARLIN (Cai et al., CVPR 2023) as a native Hugging Face Transformers model.

Importing the package registers `MarlinConfig` and the models with the Auto classes (`registration`: done as soon
as transformers' auto modules are imported, so that `import marlin_transformers` itself does not import torch). The
public names below load their module on first use; video decoding, face detection and the CLI import their heavy
dependencies (PyAV, facenet-pytorch) only when used.
"""

from importlib import import_module
from typing import TYPE_CHECKING

from .exceptions import CheckpointError, MarlinError, NoFaceError, VideoError
from .registration import register_with_auto_classes

if TYPE_CHECKING:
    from .configuration_marlin import MARLIN_VARIANTS, MarlinConfig
    from .modeling_marlin import (
        MarlinDiscriminator,
        MarlinForPreTraining,
        MarlinForVideoClassification,
        MarlinModel,
        MarlinPreTrainedModel,
        patchify_video,
        unpatchify_video,
    )
    from .video_processing_marlin import MarlinVideoProcessor
    from .visualization import paint_predictions

__version__ = "0.1.0"

# Public name -> the module defining it, imported when the name is first asked for.
LAZY_NAMES = {
    "MARLIN_VARIANTS": "configuration_marlin",
    "MarlinConfig": "configuration_marlin",
    "MarlinDiscriminator": "modeling_marlin",
    "MarlinForPreTraining": "modeling_marlin",
    "MarlinForVideoClassification": "modeling_marlin",
    "MarlinModel": "modeling_marlin",
    "MarlinPreTrainedModel": "modeling_marlin",
    "paint_predictions": "visualization",
    "patchify_video": "modeling_marlin",
    "unpatchify_video": "modeling_marlin",
    "MarlinVideoProcessor": "video_processing_marlin",
}


def __getattr__(name: str):
    if name not in LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{LAZY_NAMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(LAZY_NAMES))


register_with_auto_classes()

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
