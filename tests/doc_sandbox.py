"""The folder the code in the Markdown pages runs in (`tests/test_doc_snippets.py`): what its names are and how
they are made.

Every page runs in its own copy (hard links) of one folder built once per session, with `HF_HUB_OFFLINE=1`, an
`HF_HOME` whose Hub cache holds the few repos the pages name, the repository's `examples/` linked in, and a `pip`
first on the PATH that checks instead of installing. `NAMES` lists what a page may use; `docs/architecture.md`
("Code in the docs is executed") says the same for writers. The models are the real widths, heads and input (so the
shapes the pages print are the real ones) with one layer and random weights, so every page runs in seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from reference_utils import AUTHORS_HUB_CONFIG

REPO = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = REPO.parent / "shared" / "videos"  # the sample videos, read in place (CI: ../shared/videos)
VARIANTS = ("small", "base", "large")

# name in the page's folder -> what it is. Keep docs/architecture.md's list in step.
NAMES = {
    "marlin-vit-small, marlin-vit-base, marlin-vit-large": "converted folders (`marlin convert` output) of the real "
    "widths, heads and 16 x 224 input, one encoder layer, random weights",
    "marlin_vit_{small,base,large}_ytf.encoder.pt": "the same encoders as official-format state dicts",
    "marlin_vit_{small,base,large}_ytf.full.pt": "official-format encoder + decoder (one layer each), for reconstruct "
    "and app",
    "ControlNet/marlin_vit_base_ytf": "in the offline Hub cache ($HF_HOME), in the authors' Hub layout; so "
    "`marlin_vit_base_ytf` and `marlin demo` load it",
    "MCG-NJU/videomae-base": "in the offline Hub cache: a one-layer VideoMAE-B, for `--init-from`",
    "video.mp4, interview.mp4": "in-the-wild face videos, 1.6 s (cut from ../shared/videos)",
    "videos/": "alice_01.mp4, alice_02.mp4, bob_07.mp4, bob_08.mp4: 224 x 224 face clips, about 1 s each",
    "train.csv, val.csv, test.csv, labels.csv": "labels of videos/ (`path,label`: smile / neutral; labels.csv as "
    "train.csv)",
    "faces/, held_out/": "face-crop clips for pretraining",
    "my_videos/": "alice/talk1.mp4, bob/talk1.mp4: face videos for `marlin prepare-faces`",
    "YouTubeFaces/, train_set.csv, val_set.csv": "a YouTube-Faces-like `frame_images_DB` of two persons and the "
    "paper's split files over it",
    "CelebV-HQ/": "celebvhq_info.json and downloaded/<clip id>.mp4, ten square clips",
    "marlin-transformers/marlin-vit-{small,base,large}": "in the offline Hub cache: the converted folders above, as "
    "the model cards load them (`model_card.RELEASE_REPO_ID`)",
    "examples/": "the repository's examples, linked",
    "model_cards/": "an empty folder (the cards' regeneration command writes there)",
}

# marlin-transformers' names -> the reference's (marlin-pytorch), the inverse of modeling_marlin.REFERENCE_KEY_MAPPING
_TO_REFERENCE = [
    (r"^marlin\.embeddings\.patch_embeddings\.projection\.", "encoder.patch_embedding.projection."),
    (r"^marlin\.encoder\.layer\.", "encoder.blocks."),
    (r"^marlin\.layernorm\.", "encoder.norm."),
    (r"^decoder\.layer\.", "decoder.blocks."),
    (r"^decoder\.layernorm\.", "decoder.norm."),
    (r"^encoder_to_decoder\.", "enc_dec_proj."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.", ".attn."),
    (r"\.mlp\.fc1\.", ".mlp.layers.0.linear."),
    (r"\.mlp\.fc2\.", ".mlp.layers.1.linear."),
]


def reference_state_dict(model, with_decoder: bool) -> dict[str, torch.Tensor]:
    """A `MarlinForPreTraining`'s weights as an official `.encoder.pt` / `.full.pt` holds them (no critic)."""
    from marlin_transformers.modeling_marlin import get_sinusoid_encoding_table

    state_dict = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("discriminator.") or (not with_decoder and not key.startswith("marlin.")):
            continue
        for pattern, replacement in _TO_REFERENCE:
            key = re.sub(pattern, replacement, key)
        state_dict[key] = tensor.clone()
    config = model.config
    state_dict["encoder.pos_embedding.emb"] = get_sinusoid_encoding_table(config.num_patches, config.hidden_size)
    if with_decoder:
        table = get_sinusoid_encoding_table(config.num_patches, config.decoder_hidden_size)
        state_dict["decoder.pos_embedding.emb"] = table
    return state_dict


def one_layer_model(variant: str, seed: int = 0):
    """A `MarlinForPreTraining` of `variant`'s widths with one encoder and one decoder layer, random weights."""
    from marlin_transformers import MarlinConfig
    from marlin_transformers.modeling_marlin import MarlinForPreTraining

    config = MarlinConfig.from_variant(variant, num_hidden_layers=1, decoder_num_hidden_layers=1)
    torch.manual_seed(seed)
    return MarlinForPreTraining(config).eval()


def _write_hub_cache(hf_home: Path, repo_id: str, files: dict[str, Path]) -> None:
    """Put `files` into the Hub cache as a download of `repo_id` would leave them (refs/main -> one snapshot)."""
    commit = "0" * 40
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name, source in files.items():
        shutil.copyfile(source, snapshot / name)


def _authors_hub_folder(model, folder: Path) -> None:
    """The encoder of `model` in the layout of the authors' Hub repos (`ControlNet/marlin_vit_*_ytf`): their
    config field names, `as_feature_extractor`, and keys `marlin.` + the reference's names."""
    from safetensors.torch import save_file

    config = model.config
    folder.mkdir(parents=True)
    fields = {
        **AUTHORS_HUB_CONFIG,
        "img_size": config.image_size,
        "patch_size": config.patch_size,
        "n_frames": config.num_frames,
        "encoder_embed_dim": config.hidden_size,
        "encoder_depth": config.num_hidden_layers,
        "encoder_num_heads": config.num_attention_heads,
        "decoder_embed_dim": config.decoder_hidden_size,
        "decoder_depth": config.decoder_num_hidden_layers,
        "decoder_num_heads": config.decoder_num_attention_heads,
        "tubelet_size": config.tubelet_size,
    }
    (folder / "config.json").write_text(json.dumps(fields, indent=2))
    encoder = reference_state_dict(model, with_decoder=False)
    save_file({f"marlin.{k}": v.contiguous() for k, v in encoder.items()}, str(folder / "model.safetensors"))


def _videomae_folder(folder: Path) -> None:
    """A one-layer VideoMAE-B pretraining model, saved as `MCG-NJU/videomae-base` would download."""
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    config = VideoMAEConfig(num_hidden_layers=1, decoder_num_hidden_layers=1, norm_pix_loss=True)
    torch.manual_seed(0)
    VideoMAEForPreTraining(config).save_pretrained(folder)


def cut_video(source: Path, target: Path, start: int, num_frames: int, size: int | None = None) -> None:
    """Frames `start` .. `start + num_frames` of `source` re-encoded (H.264) to `target`, optionally resized square."""
    import av

    from marlin_transformers.video.decoding import read_video

    frames = read_video(source)[0][start : start + num_frames]
    if size is not None:
        from PIL import Image

        frames = np.stack([np.asarray(Image.fromarray(f).resize((size, size))) for f in frames])
    target.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    with av.open(str(target), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for rgb in frames:
            rgb = np.ascontiguousarray(rgb[: stream.height, : stream.width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


def _youtube_faces(root: Path) -> None:
    """`YouTubeFaces/frame_images_DB/<person>/<video>/<video>.<frame>.jpg` of two persons, and the split files."""
    from PIL import Image

    from marlin_transformers.video.decoding import read_video

    rows = {}
    for person, source in (("Alice_Example", "cropped01.mp4"), ("Bob_Example", "cropped03.mp4")):
        folder = root / "YouTubeFaces" / "frame_images_DB" / person / "0"
        folder.mkdir(parents=True)
        frames = read_video(SHARED_VIDEOS / source)[0][:20]
        for index, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"0.{index + 1}.jpg", quality=90)
        rows[person] = f"{person}/0,{len(frames)}"
    (root / "train_set.csv").write_text(f"path,len\n{rows['Alice_Example']}\n")
    (root / "val_set.csv").write_text(f"path,len\n{rows['Bob_Example']}\n")


def _celebv_hq(root: Path, num_clips: int = 10) -> None:
    """A CelebV-HQ download of `num_clips` square clips (the release script's output) with random attributes."""
    clips = {}
    rng = np.random.default_rng(0)
    sources = ["cropped01.mp4", "cropped03.mp4"]
    for index in range(num_clips):
        clip_id = f"clip{index:02d}abcde_0"
        clips[clip_id] = {
            "ytb_id": f"clip{index:02d}abcde",
            "duration": {"start_sec": 0.0, "end_sec": 1.0},
            "bbox": {"top": 0.0, "bottom": 1.0, "left": 0.0, "right": 1.0},
            "attributes": {
                "appearance": rng.integers(0, 2, 40).tolist(),
                "action": rng.integers(0, 2, 35).tolist(),
                "emotion": {"sep_flag": False, "labels": "neutral"},
            },
        }
        source = SHARED_VIDEOS / sources[index % 2]
        cut_video(
            source, root / "CelebV-HQ" / "downloaded" / f"{clip_id}.mp4", start=4 * index, num_frames=20, size=96
        )
    mapping = {
        "appearance_mapping": [f"appearance_{i}" for i in range(40)],
        "action_mapping": [f"action_{i}" for i in range(35)],
    }
    (root / "CelebV-HQ" / "celebvhq_info.json").write_text(json.dumps({"mete_info": mapping, "clips": clips}))


def build_assets(root: Path) -> Path:
    """Make every name of `NAMES` under `root/assets` (and the Hub cache under `root/hf_home`); returns the folder."""
    from marlin_transformers.convert_marlin import convert_checkpoint
    from marlin_transformers.model_card import RELEASE_REPO_ID

    assets, hf_home = root / "assets", root / "hf_home"
    assets.mkdir(parents=True)
    for variant in VARIANTS:
        model = one_layer_model(variant)
        torch.save(reference_state_dict(model, with_decoder=False), assets / f"marlin_vit_{variant}_ytf.encoder.pt")
        convert_checkpoint(assets / f"marlin_vit_{variant}_ytf.encoder.pt", assets / f"marlin-vit-{variant}")
        # The id each model card loads from (the repo `marlin convert --push-to-hub` would fill)
        folder = assets / f"marlin-vit-{variant}"
        files = {path.name: path for path in folder.iterdir() if path.is_file()}
        _write_hub_cache(hf_home, RELEASE_REPO_ID.format(variant=variant), files)
        torch.save(reference_state_dict(model, with_decoder=True), assets / f"marlin_vit_{variant}_ytf.full.pt")
        if variant == "base":
            _authors_hub_folder(model, root / "hub_folder")
            files = {name: root / "hub_folder" / name for name in ("config.json", "model.safetensors")}
            _write_hub_cache(hf_home, "ControlNet/marlin_vit_base_ytf", files)
    _videomae_folder(root / "videomae")
    files = {path.name: path for path in (root / "videomae").iterdir()}
    _write_hub_cache(hf_home, "MCG-NJU/videomae-base", files)

    cut_video(SHARED_VIDEOS / "video01.mp4", assets / "video.mp4", start=0, num_frames=48)
    cut_video(SHARED_VIDEOS / "video03.mp4", assets / "interview.mp4", start=0, num_frames=48)
    clips = {
        "videos/alice_01.mp4": ("cropped01.mp4", 0),
        "videos/alice_02.mp4": ("cropped01.mp4", 40),
        "videos/bob_07.mp4": ("cropped03.mp4", 0),
        "videos/bob_08.mp4": ("cropped03.mp4", 40),
        "faces/alice.mp4": ("cropped01.mp4", 80),
        "faces/bob.mp4": ("cropped03.mp4", 80),
        "held_out/bob.mp4": ("cropped03.mp4", 120),
        "my_videos/alice/talk1.mp4": ("cropped01.mp4", 100),
        "my_videos/bob/talk1.mp4": ("video01.mp4", 100),
    }
    for name, (source, start) in clips.items():
        cut_video(SHARED_VIDEOS / source, assets / name, start=start, num_frames=32)
    labels = {"alice_01": "smile", "alice_02": "neutral", "bob_07": "neutral", "bob_08": "smile"}
    rows = [f"videos/{stem}.mp4,{label}" for stem, label in labels.items()]
    (assets / "train.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    (assets / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")  # examples/README.md's name
    (assets / "val.csv").write_text("path,label\n" + "\n".join(rows[:2]) + "\n")
    (assets / "test.csv").write_text("path,label\n" + "\n".join(rows[2:]) + "\n")
    _youtube_faces(assets)
    _celebv_hq(assets)
    (assets / "model_cards").mkdir()
    return assets


def page_folder(assets: Path, folder: Path, page: str) -> Path:
    """A fresh copy (hard links) of `assets` for `page`, plus the page's own names; returns it."""
    shutil.copytree(assets, folder, copy_function=os.link)
    (folder / "examples").symlink_to(REPO / "examples")
    return folder


PIP_SHIM = '''#!{python}
"""`pip install ...` in a doc page: check that the environment already satisfies it, install nothing."""
import sys
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from packaging.requirements import Requirement

REPO = Path({repo!r})
project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
NAME = project["name"]

def fail(message):
    sys.exit(f"pip (doc sandbox): {{message}}")

def check(requirement, seen=()):
    requirement = Requirement(requirement) if isinstance(requirement, str) else requirement
    if requirement.name.replace("_", "-").lower() == NAME:
        unknown = set(requirement.extras) - set(project["optional-dependencies"])
        if unknown:
            fail(f"no extra {{sorted(unknown)}} in pyproject.toml")
        deps = list(project["dependencies"])
        for extra in requirement.extras:
            if extra not in seen:
                deps += project["optional-dependencies"][extra]
        for dep in deps:
            check(dep, seen + tuple(requirement.extras))
        return
    if requirement.marker is not None and not requirement.marker.evaluate({{"extra": ""}}):
        return
    try:
        installed = version(requirement.name)
    except PackageNotFoundError:
        fail(f"{{requirement}} is not installed")
    if not requirement.specifier.contains(installed, prereleases=True):
        fail(f"{{requirement}} wanted, {{installed}} installed")

args = sys.argv[1:]
if not args or args[0] != "install":
    fail(f"only `pip install` is checked, not {{args}}")
args = args[1:]
index = 0
while index < len(args):
    arg = args[index]
    if arg in ("--index-url", "--extra-index-url", "-i"):
        index += 2
        continue
    if arg in ("-e", "--editable", "--no-deps", "-U", "--upgrade", "-q"):
        index += 1
        continue
    if arg.startswith("-"):
        fail(f"unknown option {{arg}}")
    path, _, extras = arg.partition("[")
    if path in (".", "./") or path.startswith(("./", "/")):
        if path not in (".", "./") and Path(path).resolve() != REPO:
            fail(f"{{path}} is not this project")
        check(f"{{NAME}}[{{extras}}" if extras else NAME)
    else:
        check(arg)
    index += 1
'''


def environment(root: Path, page_dir: Path) -> dict[str, str]:
    """The environment of a page's commands: offline, the sandbox's Hub cache, the `pip` shim first."""
    bin_dir = root / "bin"
    if not (bin_dir / "pip").exists():
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / "pip").write_text(PIP_SHIM.format(python=sys.executable, repo=str(REPO)))
        (bin_dir / "pip").chmod(0o755)
    env = dict(os.environ)
    path = [str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")]
    pythonpath = [str(REPO / "src"), env.get("PYTHONPATH", "")]
    env.update(
        PATH=os.pathsep.join(path),
        PYTHONPATH=os.pathsep.join(p for p in pythonpath if p),
        HF_HOME=str(root / "hf_home"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
        MPLBACKEND="Agg",
        HOME=str(page_dir),  # nothing a page writes lands in the real home folder
    )
    return env
