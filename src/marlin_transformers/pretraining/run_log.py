"""What a pretraining run reports as it goes (`RunLog`): a bar over optimizer steps, the losses in `train_log.csv` and
TensorBoard, the eval batch's reconstruction MSE in `eval.csv` with a line per evaluation and its reconstruction
pictures; and what the run did (`PretrainingResult`)."""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..configuration_marlin import MarlinConfig
from ..exceptions import missing_extra
from ..modeling_marlin import masked_patch_targets, reconstruction_loss
from ..visualization import reconstruction_grid, write_curve_png


@dataclass
class PretrainingResult:
    """What a run did: the optimizer steps, the eval curve [(step, mse)], the logged rows of `train_log.csv`
    (`{"step", "rec_loss", ..., "lr"}`, unrounded), and the final model's folder."""

    steps: int
    eval_curve: list[tuple[int, float]]
    train_log: list[dict[str, float]]
    model_dir: Path


@torch.no_grad()
def evaluate(model, eval_batch: dict[str, torch.Tensor], accelerator: Accelerator) -> tuple[float, torch.Tensor]:
    """Reconstruction MSE on the fixed eval batch, and the predictions (batch, masked, c*pt*ph*pw), for pictures."""
    model.eval()
    pixel_values_videos = eval_batch["pixel_values_videos"].to(accelerator.device)
    bool_masked_pos = eval_batch["bool_masked_pos"].to(accelerator.device)
    config = accelerator.unwrap_model(model).config
    with accelerator.autocast():
        logits = model(pixel_values_videos, bool_masked_pos, return_loss=False).logits
    targets = masked_patch_targets(pixel_values_videos, bool_masked_pos, config.patch_size, config.tubelet_size)
    model.train()
    return reconstruction_loss(logits, targets).item(), logits


def save_eval_picture(
    eval_batch: dict[str, torch.Tensor],
    logits: torch.Tensor,
    config: MarlinConfig,
    path: Path,
    accelerator: Accelerator,
    step: int,
) -> None:
    """The eval batch's reconstruction picture (`visualization.reconstruction_grid`) to `path` and TensorBoard."""
    from PIL import Image

    grid = reconstruction_grid(
        eval_batch["pixel_values_videos"],
        logits,
        eval_batch["bool_masked_pos"],
        config.patch_size,
        config.tubelet_size,
        clip_titles=[f"held-out clip {clip}, step {step}" for clip in range(len(logits))],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("reconstruction", grid, step, dataformats="HWC")


def append_train_log(path: Path, row: dict[str, float]) -> None:
    """One row of `train_log.csv` (the header first, when the file is new): the step, then 6 significant digits."""
    new_file = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new_file:
            writer.writeheader()
        writer.writerow({"step": row["step"], **{k: f"{v:.6g}" for k, v in row.items() if k != "step"}})


def append_eval_log(path: Path, step: int, mse: float) -> None:
    """One row `step,mse` of `eval.csv` (no header)."""
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow([step, f"{mse:.6f}"])


class RunLog:
    """The reports of a run under `output_dir`, on every process (the main one writes): `log_losses` after an
    optimizer step, `log_eval` to evaluate, `close` at the end; `train_log` and `eval_curve` hold what was logged.

    Args:
        accelerator: the run's (its trackers get the losses, the eval MSE and the pictures).
        output_dir: where `train_log.csv`, `eval.csv`, `reconstructions/step_N.png` and `eval_curve.png` go.
        max_steps: where the run stops; `start_step`: where it starts (a resumed run's step).
        image_steps: a reconstruction picture at evaluations every N steps (and at `max_steps`; 0: never).
        quiet: no bar and no lines on the terminal.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        output_dir: Path,
        max_steps: int,
        start_step: int = 0,
        image_steps: int = 0,
        quiet: bool = False,
    ):
        self.accelerator, self.output_dir, self.max_steps = accelerator, Path(output_dir), max_steps
        self.image_steps, self.quiet = image_steps, quiet
        self.is_main = accelerator.is_main_process
        self.train_log: list[dict[str, float]] = []
        self.eval_curve: list[tuple[int, float]] = []
        self.bar = tqdm(
            total=max_steps,
            initial=start_step,
            desc="pretraining",
            unit="step",
            disable=self.quiet or not self.is_main,
        )

    def log_losses(self, step: int, losses: dict[str, torch.Tensor], lr: float) -> None:
        """The losses of a step (averaged over the processes) and its lr: the bar, the trackers, `train_log.csv`."""
        logged = {name: self.accelerator.reduce(value, "mean").item() for name, value in losses.items()}
        logged["lr"] = lr
        self.train_log.append({"step": step, **logged})
        self.bar.set_postfix(rec=f"{logged['rec_loss']:.4f}", d=f"{logged['d_loss']:.3g}", lr=f"{lr:.2e}")
        self.accelerator.log({f"train/{k}": v for k, v in logged.items()}, step=step)
        if self.is_main:
            append_train_log(self.output_dir / "train_log.csv", self.train_log[-1])

    def log_eval(self, step: int, model, eval_batch: dict[str, torch.Tensor]) -> None:
        """Evaluate `model` on the fixed eval batch (`evaluate`, every process) and report it: a terminal line with
        the latest losses, the trackers, `eval.csv`, and the reconstruction picture when one is due."""
        mse, logits = evaluate(model, eval_batch, self.accelerator)
        self.eval_curve.append((step, mse))
        if not self.is_main:
            return
        if not self.quiet:
            latest = self.train_log[-1] if self.train_log else None
            losses = (
                f"rec_loss {latest['rec_loss']:.5f}, d_loss {latest['d_loss']:.4g}, lr {latest['lr']:.2e}; "
                if latest
                else ""
            )
            self.bar.write(f"step {step}/{self.max_steps}: {losses}held-out reconstruction MSE {mse:.5f}")
        self.accelerator.log({"eval/rec_loss": mse}, step=step)
        append_eval_log(self.output_dir / "eval.csv", step, mse)
        if self.image_steps and (step % self.image_steps == 0 or step == self.max_steps):
            picture = self.output_dir / "reconstructions" / f"step_{step:06d}.png"
            config = self.accelerator.unwrap_model(model).config
            save_eval_picture(eval_batch, logits, config, picture, self.accelerator, step)

    def close(self) -> None:
        """Close the bar and plot the eval curve (`eval_curve.png`, main process, with two evaluations or more)."""
        self.bar.close()
        if not (self.is_main and len(self.eval_curve) > 1):
            return
        try:
            path, title = self.output_dir / "eval_curve.png", "Reconstruction MSE of the held-out batch"
            write_curve_png(self.eval_curve, path, title, "optimizer step", "MSE of masked patches")
        except ModuleNotFoundError as error:  # a finished run is not failed for its plot; eval.csv has the numbers
            if missing_extra(error) is None:
                raise
            print(f"eval_curve.png not drawn: {missing_extra(error)}", file=sys.stderr)
