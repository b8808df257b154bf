"""Model cards (README.md) for converted and trained MARLIN folders."""

from .configuration_marlin import MARLIN_VARIANTS, MarlinConfig
from .constants import CITATION


def variant_name(config: MarlinConfig) -> str:
    for name, fields in MARLIN_VARIANTS.items():
        if all(getattr(config, k) == v for k, v in fields.items()):
            return f"ViT-{name[0].upper()}"
    return f"custom ({config.hidden_size} wide, {config.num_hidden_layers} layers)"


def render_model_card(config: MarlinConfig, source: str, kind: str, architecture: str) -> str:
    """A Hub model card for a MARLIN folder: what it is, how it was made, how to use it, licence, citation."""
    variant = variant_name(config)
    return f"""---
license: cc-by-nc-4.0
library_name: transformers
pipeline_tag: feature-extraction
tags:
- marlin
- video
- face
- masked-autoencoder
- feature-extraction
---

# MARLIN {variant} ({architecture})

MARLIN (Cai et al., CVPR 2023) is a masked autoencoder for facial video: 16 RGB frames of
{config.image_size}x{config.image_size} in [0, 1] (no mean/std normalization), cut into
{config.tubelet_size}x{config.patch_size}x{config.patch_size} tubelets ({config.num_patches} tokens), pretrained on
YouTube Faces with *Fasking* (eyes, nose, mouth and hair masked first) and an adversarial loss. Its features
transfer to facial attributes, expression, deepfake detection and lip sync.

This folder was made by marlin-transformers from `{source}` (format: {kind}). Encoder:
{config.hidden_size} wide, {config.num_hidden_layers} layers, {config.num_attention_heads} heads; outputs match the
reference implementation (marlin-pytorch 0.3.4) to 1e-5 in fp32.

## Use

```python
import marlin_transformers  # registers MARLIN with the Auto classes
from transformers import AutoModel

model = AutoModel.from_pretrained("path/to/this/folder")
features = model(pixel_values_videos).pooler_output  # (batch, {config.hidden_size})
```

Without the package installed: `AutoModel.from_pretrained(folder, trust_remote_code=True)`.
From a video file, with face tracking and cropping:
`marlin extract video.mp4 --model path/to/this/folder --crop-face --out features/`.

## Intended use and limitations

Research on facial video: features for attribute, expression, deepfake and lip-sync probes and fine-tuning. The
inputs must be face crops (the `--crop-face` pipeline makes them). The model was pretrained on YouTube Faces
(celebrities, mostly frontal, web video quality); expect weaker features on other populations, poses and capture
conditions, and evaluate before relying on it. Do not use it to identify or surveil people.

## Licence

The official MARLIN weights are released under CC BY-NC 4.0 (non-commercial); the code of marlin-transformers
is Apache-2.0.

## Citation

```bibtex
{CITATION}
```
"""
