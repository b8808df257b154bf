"""The defaults shared by several stages, each written once.

The model's own sizes (16 frames of 224 pixels, 2x16x16 tubelets) are `MarlinConfig`'s defaults; they are read from
there, so a change to the config is a change everywhere.
"""

import re
from pathlib import Path

from .configuration_marlin import MARLIN_VARIANTS, MarlinConfig

_DEFAULT_CONFIG = MarlinConfig()

# Frames of one clip and side of its face crops: the released models' input.
NUM_FRAMES: int = _DEFAULT_CONFIG.num_frames
MARLIN_CROP_SIZE: int = _DEFAULT_CONFIG.image_size

# The sampling grid of marlin-pytorch's `extract_video`: every 2nd decoded frame, the next window 16 sampled frames on
# (windows of 16 frames spanning 31 decoded frames, one every 32 frames).
SAMPLE_RATE = 2
STRIDE = 16

# Width / height of frames read whole (without face cropping) that pass as square: outside it a video is squeezed to
# the model's square, and the user is told once (`video.cropping.warn_if_squeezed`).
SQUARE_ENOUGH: tuple[float, float] = (0.8, 1.25)


def num_visible_tokens(num_tokens: int, mask_ratio: float) -> int:
    """Tokens left visible by every masking strategy: `int((1 - mask_ratio) * num_tokens)`, 156 of 1568 at 0.9."""
    return int((1 - mask_ratio) * num_tokens)


# The channel orders the FaRL face parser can be fed, the default first: RGB, as FaRL was trained; BGR, as the paper
# code fed it (OpenCV frames), which made the maps the released models were pretrained with.
FARL_CHANNEL_ORDERS = ("rgb", "bgr")

# transformers' `problem_type` values, which pick the loss of a classification head and the downstream metrics.
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")

# The labels of a LaPa face-parsing map (`pretraining.face_parsing`), by value 0..10.
LAPA_LABEL_NAMES = (
    "background",
    "skin",
    "right brow",
    "left brow",
    "right eye",
    "left eye",
    "nose",
    "upper lip",
    "inner mouth",
    "lower lip",
    "hair",
)
# One RGB colour per LaPa label, for pictures (`visualization`).
LAPA_PALETTE = (
    (0, 0, 0),
    (255, 204, 153),
    (0, 153, 255),
    (0, 102, 204),
    (255, 255, 0),
    (204, 204, 0),
    (255, 0, 255),
    (255, 51, 51),
    (102, 0, 0),
    (204, 0, 102),
    (102, 51, 0),
)
# Label sizes of the labelled pictures (`visualization`), pixels, even for H.264's yuv420p: the column of row labels,
# a title line, a caption line.
ROW_LABEL_WIDTH, TITLE_HEIGHT, CAPTION_HEIGHT = 112, 22, 20

# The authors' Hub uploads of the released checkpoints, by release name; what a Hub id looks like.
TEMPLATES = Path(__file__).parent / "templates"  # the model and dataset cards' Jinja templates (package data)
HUB_CHECKPOINTS = {f"marlin_vit_{v}_ytf": f"ControlNet/marlin_vit_{v}_ytf" for v in MARLIN_VARIANTS}
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # owner/name

CITATION = """@inproceedings{cai2023marlin,
  title     = {MARLIN: Masked Autoencoder for facial video Representation LearnINg},
  author    = {Cai, Zhixi and Ghosh, Shreya and Stefanov, Kalin and Dhall, Abhinav and Cai, Jianfei and
               Rezatofighi, Hamid and Haffari, Reza and Hayat, Munawar},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2023},
  pages     = {1493--1504},
}"""
