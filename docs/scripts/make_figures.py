"""Draw the pictures of docs/pretraining.md: the masks `marlin show-mask` shows, on the clip `marlin demo` renders.

    PYTHONPATH=src python docs/scripts/make_figures.py          # writes docs/figures/mask_<strategy>.png

Runs offline on a CPU in under a minute: the clip is drawn from scikit-image's astronaut photo
(`demo.render_demo_clip`), MTCNN's weights come with facenet-pytorch, and the face parsing is the built-in landmark
approximation (`LandmarkFaceParser`), as `marlin show-mask` does without `--farl-model`. Each picture is the command's
own output, reduced to a 128-colour palette so that it stays well under 200 KB.
"""

import argparse
import tempfile
from pathlib import Path

from PIL import Image

from marlin_transformers.cli import main as marlin
from marlin_transformers.demo import render_demo_clip

STRATEGIES = ("fasking", "fasking_opp", "random", "tube", "frame")


def make_figures(out_dir: Path, strategies=STRATEGIES) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "astronaut.mp4"
        render_demo_clip(clip)
        for strategy in strategies:
            path = out_dir / f"mask_{strategy}.png"
            status = marlin(["show-mask", str(clip), "--out", str(path), "--mask-strategy", strategy, "--seed", "0"])
            if status != 0:
                raise SystemExit(f"marlin show-mask --mask-strategy {strategy} failed")
            Image.open(path).convert("RGB").quantize(colors=128).save(path, optimize=True)
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "figures")
    args = parser.parse_args()
    for path in make_figures(args.out):
        print(f"{path}: {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
