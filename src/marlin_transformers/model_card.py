"""Model cards (README.md) for converted and trained MARLIN folders."""

import re

from .configuration_marlin import MARLIN_VARIANTS, MarlinConfig
from .constants import CITATION


def variant_name(config: MarlinConfig) -> str:
    for name, fields in MARLIN_VARIANTS.items():
        if all(getattr(config, k) == v for k, v in fields.items()):
            return f"ViT-{name[0].upper()}"
    return f"custom ({config.hidden_size} wide, {config.num_hidden_layers} layers)"


# The authors' released checkpoints, by the name they ship under (file stem or Hub id).
OFFICIAL_NAME = re.compile(r"(?:^|/)(marlin_vit_(?:small|base|large)_ytf)(?:\.(?:encoder|full)\.pt|\.ckpt)?$")


def official_release(source: str) -> str | None:
    """The release `source` is named as (`marlin_vit_base_ytf`...), or None. A name only: nothing is checksummed."""
    match = OFFICIAL_NAME.search(str(source).rstrip("/"))
    return match.group(1) if match else None


def origin_paragraph(source: str, kind: str, config: MarlinConfig) -> str:
    """What the converter can say of where the weights come from, and no more."""
    release = official_release(source)
    if release is None:
        return (
            f"This folder was made by marlin-transformers from `{source}` (format: {kind}). **The weights are of "
            "random or unknown origin**: the file is not named as one of the authors' releases, so nothing here says "
            "what, if anything, they were trained on."
        )
    variant = release.split("_")[2]
    matches = all(getattr(config, k) == v for k, v in MARLIN_VARIANTS[variant].items())
    shape = "its shapes are those of that variant" if matches else "**its shapes are not those of that variant**"
    return (
        f"This folder was made by marlin-transformers from `{source}` (format: {kind}), named as the authors' "
        f"release `{release}` (pretrained on YouTube Faces); {shape}. The file's contents were not checksummed "
        "against the release."
    )


def render_model_card(config: MarlinConfig, source: str, kind: str, architecture: str) -> str:
    """A Hub model card for a converted MARLIN folder: what it is, where its weights come from (as far as the
    converter can tell), how to use it, licence, citation."""
    variant = variant_name(config)
    datasets = "datasets:\n- youtube_faces\n" if official_release(source) else ""
    return f"""---
license: cc-by-nc-4.0
library_name: transformers
pipeline_tag: feature-extraction
{datasets}tags:
- marlin
- video
- face
- masked-autoencoder
- feature-extraction
---

# MARLIN {variant} ({architecture})

MARLIN (Cai et al., CVPR 2023) is a masked autoencoder for facial video: {config.num_frames} RGB frames of
{config.image_size}x{config.image_size} in [0, 1] (no mean/std normalization), cut into
{config.tubelet_size}x{config.patch_size}x{config.patch_size} tubelets ({config.num_patches} tokens). The authors
pretrained it on YouTube Faces with *Fasking* (eyes, nose, mouth and hair masked first) and an adversarial loss;
their features transfer to facial attributes, expression, deepfake detection and lip sync.

{origin_paragraph(source, kind, config)} Encoder: {config.hidden_size} wide, {config.num_hidden_layers} layers,
{config.num_attention_heads} heads. The converter is tested to reproduce the reference implementation
(marlin-pytorch 0.3.4) to 1e-5 in fp32 on checkpoints of every official format; that was not re-checked on this file.

## Use

```python
import torch
import marlin_transformers  # registers MARLIN with the Auto classes
from transformers import AutoModel

model = AutoModel.from_pretrained("path/to/this/folder")
pixel_values_videos = torch.rand(1, {config.num_frames}, 3, {config.image_size}, {config.image_size})  # RGB in [0, 1]
features = model(pixel_values_videos).pooler_output  # (1, {config.hidden_size})
```

Without the package installed: `AutoModel.from_pretrained(folder, trust_remote_code=True)`.
From a video file, with face tracking and cropping:
`marlin extract video.mp4 --model path/to/this/folder --crop-face --out features/`.

## Intended use and limitations

Research on facial video: features for attribute, expression, deepfake and lip-sync probes and fine-tuning. The
inputs must be face crops (the `--crop-face` pipeline makes them). The released models were pretrained on YouTube
Faces (celebrities, mostly frontal, web video quality); expect weaker features on other populations, poses and
capture conditions, and evaluate before relying on it. Do not use it to identify or surveil people.

## Licence

The official MARLIN weights are released under CC BY-NC 4.0 (non-commercial); the code of marlin-transformers
is Apache-2.0.

## Citation

```bibtex
{CITATION}
```
"""


# Trainer's evaluation keys that are timings or counters, not results.
_NOT_RESULTS = ("runtime", "per_second", "epoch", "steps")


def render_finetuned_card(
    config: MarlinConfig,
    base_model: str,
    train_data: str,
    eval_data: str,
    metrics: dict,
    trainable_parameters: int | None = None,
) -> str:
    """The model card `examples/finetune.py` writes: base model, data, the evaluation's metrics (also as `model-index`
    results, which the Hub shows), labels, how to load it."""
    import math

    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from .convert_marlin import HUB_CHECKPOINTS, HUB_ID

    release = official_release(base_model)
    hub_base = HUB_CHECKPOINTS[release] if release else base_model if HUB_ID.fullmatch(base_model) else None
    results = {
        name.removeprefix("eval_"): float(value)
        for name, value in metrics.items()
        if isinstance(value, (int, float)) and not math.isnan(value) and not any(k in name for k in _NOT_RESULTS)
    }
    dataset = eval_data.rstrip("/").rsplit("/", 1)[-1]
    data = ModelCardData(
        license="cc-by-nc-4.0",
        library_name="transformers",
        pipeline_tag="video-classification",
        base_model=hub_base,
        tags=["marlin", "video", "face", "video-classification"],
        model_name=f"MARLIN {variant_name(config)} fine-tuned ({config.problem_type})",
        eval_results=[
            EvalResult(
                task_type="video-classification",
                dataset_type="custom",
                dataset_name=dataset,
                metric_type=name,
                metric_value=value,
            )
            for name, value in results.items()
        ],
    )
    labels = ", ".join(config.id2label[i] for i in sorted(config.id2label))
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in results.items())
    trained = f" ({trainable_parameters:,} parameters trained)" if trainable_parameters else ""
    text = f"""
# {data.model_name}

MARLIN (Cai et al., CVPR 2023) with a linear head, fine-tuned by marlin-transformers' `examples/finetune.py`{trained}.

- Base model: `{base_model}`{"" if hub_base else " (a local checkpoint)"}
- Training data: `{train_data}`
- Evaluation data: `{eval_data}` (the checkpoint kept is the best on it)
- Problem type: {config.problem_type}; labels: {labels}

## Results on the evaluation data

| metric | value |
| --- | --- |
{rows}

## Use

```python
import torch
import marlin_transformers  # registers MARLIN with the Auto classes
from transformers import AutoModelForVideoClassification

model = AutoModelForVideoClassification.from_pretrained("path/to/this/folder")
pixel_values_videos = torch.rand(1, {config.num_frames}, 3, {config.image_size}, {config.image_size})  # RGB in [0, 1]
logits = model(pixel_values_videos).logits  # (1, {config.num_labels})
```

## Licence

Weights derived from the official MARLIN release are under CC BY-NC 4.0 (non-commercial).

## Citation

```bibtex
{CITATION}
```
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{text}"))
