"""Pretraining checkpoints `checkpoints/step_N/`: written whole or not at all, resumed without unpickling code.

A checkpoint holds what `accelerator.save_state` writes (the generator's `model.safetensors`, the two optimizers'
`optimizer.bin` / `optimizer_1.bin`, one `random_states_P.pkl` per process, `scaler.pt` under fp16) and our own
files: the critic's weights `critic.safetensors`, and `progress.json`, `{"step": N, "files": {path: bytes}}`,
written last. Everything goes into the hidden sibling `.step_N.partial/`, renamed to `step_N/` only once complete:
a run killed while saving leaves no `step_N/`, and the next run removes the partial folder. A `step_N/` without a
readable `progress.json`, or whose files are not the ones it lists with their sizes (a half copy, a folder of an
older version, a power cut before the data reached the disk), is not complete: `latest_checkpoint` skips it and
resuming from it is refused. `save_final_model` writes the model a run ends with.

How `load_checkpoint` reads each file:

- `model.safetensors`, `critic.safetensors`: safetensors (tensors only; nothing runs).
- `progress.json`: JSON.
- `optimizer*.bin`: Accelerate's `torch.load(weights_only=True)`, which builds only tensors, numbers, strings and
  containers; a file holding anything else is refused, unless `trust=True` (`--trust-checkpoint`), which loads them
  with `weights_only=False`: a full unpickling, which can run code.
- `scaler.pt` (fp16 runs): Accelerate's `torch.load(weights_only=True)` whatever `trust` says; refused if that fails.
- `random_states_P.pkl`: Accelerate's `torch.load(weights_only=True)` with numpy arrays and dtypes allowed. Accelerate
  skips this file silently when it does not load that way (the resumed run would then not be exact), so it is
  checked first and refused unless `trust=True` (then skipped, as Accelerate does; it is never fully unpickled).
- `custom_checkpoint_*.pkl` (what `accelerator.register_for_checkpointing` writes, and Accelerate loads with
  `weights_only=False`): never written nor read here; a folder holding one is refused.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

from accelerate import Accelerator, DistributedType
from accelerate.utils import load as accelerate_load
from safetensors.torch import load_file, save_file
from torch import nn

from ..exceptions import CheckpointError
from ..hub_folders import honour_umask, save_marlin_folder
from ..modeling_marlin import MarlinForPreTraining
from .losses import attach_critic, detach_critic

PROGRESS_FILENAME = "progress.json"  # written last: a checkpoint without it is not complete
CRITIC_FILENAME = "critic.safetensors"
PARTIAL_SUFFIX = ".partial"  # `.step_N.partial`: a checkpoint being written
REPLACED_SUFFIX = ".replaced"  # `.step_N.replaced`: an older `step_N` on its way out


def checkpoint_step(folder: Path) -> int | None:
    """N of a `step_N` folder name, or None for any other name."""
    prefix, _, number = folder.name.partition("_")
    return int(number) if prefix == "step" and number.isdigit() else None


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why `folder` is not a complete pretraining checkpoint (a few words), or None when it is one."""
    folder = Path(folder)
    if not folder.is_dir():
        return "no such folder"
    try:
        progress = json.loads((folder / PROGRESS_FILENAME).read_text())
        int(progress["step"])
        files = dict(progress["files"])
    except FileNotFoundError:
        return f"no {PROGRESS_FILENAME}: its save was interrupted, or an older version or another program wrote it"
    except (OSError, ValueError, KeyError, TypeError):
        return f"unreadable {PROGRESS_FILENAME}"
    if CRITIC_FILENAME not in files:
        return f"{PROGRESS_FILENAME} lists no {CRITIC_FILENAME}"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {PROGRESS_FILENAME} says {size}"
    return None


def latest_checkpoint(output_dir: str | Path, report: Callable[[str], None] = print) -> Path | None:
    """The complete `checkpoints/step_N` folder of `output_dir` with the largest N, or None.

    Each incomplete `step_N` with a larger N is skipped with a line to `report` saying why.
    """
    candidates = [(checkpoint_step(p), p) for p in (Path(output_dir) / "checkpoints").glob("step_*") if p.is_dir()]
    for _, folder in sorted(((step, p) for step, p in candidates if step is not None), reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        report(f"skipping {folder}, not a complete checkpoint: {problem}.")
    return None


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """The complete `step_N` folders in `checkpoints_dir`, newest (largest N) first."""
    steps = [(checkpoint_step(p), p) for p in checkpoints_dir.glob("step_*") if p.is_dir()]
    return [p for step, p in sorted(s for s in steps if s[0] is not None)[::-1] if checkpoint_problem(p) is None]


def remove_unfinished_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Delete the `.step_N.partial` / `.step_N.replaced` folders a killed run left in `checkpoints_dir`; return them.

    Call it on the main process before the run saves anything (a partial folder of this run would go too).
    """
    leftovers = [
        p
        for p in sorted(checkpoints_dir.glob(".step_*"))
        if p.is_dir() and p.name.endswith((PARTIAL_SUFFIX, REPLACED_SUFFIX))
    ]
    for folder in leftovers:
        shutil.rmtree(folder)
    return leftovers


def save_checkpoint(
    accelerator: Accelerator, critic: nn.Module, step: int, checkpoints_dir: Path, keep: int | None = None
) -> Path:
    """Write `checkpoints_dir/step_{step}` whole (see the module docstring); every process calls it.

    `keep` (None or 0: all) then leaves that many complete checkpoints, the one just written and the newest others,
    and deletes the rest. Returns the checkpoint folder.
    """
    folder = checkpoints_dir / f"step_{step}"
    partial = checkpoints_dir / f".{folder.name}{PARTIAL_SUFFIX}"
    is_main = accelerator.is_main_process
    if is_main:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))  # a collective (FSDP gathers); each process writes its random states
    if is_main:  # the critic is the same on every process (its gradients are averaged)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in critic.state_dict().items()}
        save_file(state, partial / CRITIC_FILENAME)
    accelerator.wait_for_everyone()  # every process's files are written before the main process lists them
    if is_main:
        files = {
            p.relative_to(partial).as_posix(): p.stat().st_size for p in sorted(partial.rglob("*")) if p.is_file()
        }
        (partial / PROGRESS_FILENAME).write_text(json.dumps({"step": step, "files": files}, indent=2) + "\n")
        honour_umask(partial)  # safetensors writes 0600
        if folder.exists():  # saved before by a run that was resumed from an earlier step: this one replaces it
            replaced = checkpoints_dir / f".{folder.name}{REPLACED_SUFFIX}"
            shutil.rmtree(replaced, ignore_errors=True)
            folder.rename(replaced)
            partial.rename(folder)
            shutil.rmtree(replaced)
        else:
            partial.rename(folder)
        if keep:
            others = [p for p in complete_checkpoints(checkpoints_dir) if p != folder]
            for old in others[keep - 1 :]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return folder


def load_checkpoint(accelerator: Accelerator, folder: Path, critic: nn.Module, trust: bool = False) -> int:
    """Restore the prepared model and optimizers, the random states and `critic` from a complete checkpoint
    `folder`, reading each file as the module docstring says; returns the optimizer steps it was saved at.

    Raises:
        CheckpointError: `folder` is incomplete, or holds pickled objects other than plain data and `trust` is False.
    """
    problem = checkpoint_problem(folder)
    if problem is not None:
        raise CheckpointError(f"{folder}: not a complete pretraining checkpoint ({problem}); resume from another one.")
    custom = sorted(folder.glob("custom_checkpoint_*.pkl"))
    if custom:
        raise CheckpointError(
            f"{custom[0]}: a pickle pretraining checkpoints neither hold nor read (an older version's, or planted); "
            "resume from a checkpoint saved by this version."
        )
    random_states = folder / f"random_states_{accelerator.process_index}.pkl"
    if random_states.exists() and not trust:
        try:
            accelerate_load(random_states)  # as Accelerate will: weights_only, with numpy arrays allowed
        except pickle.UnpicklingError:
            raise CheckpointError(
                f"{random_states}: holds objects other than random states, which resuming does not unpickle; pass "
                "--trust-checkpoint only if you trust the folder's origin."
            ) from None
    try:
        accelerator.load_state(str(folder), load_kwargs={"weights_only": False} if trust else None)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{folder}: an optimizer or scaler file holds objects other than tensors and numbers, which resuming does "
            "not unpickle; pass --trust-checkpoint only if you trust the folder's origin."
        ) from None
    critic.load_state_dict(load_file(folder / CRITIC_FILENAME))
    return int(json.loads((folder / PROGRESS_FILENAME).read_text())["step"])


def save_final_model(accelerator: Accelerator, model, critic: nn.Module, folder: Path) -> None:
    """The generator (gathered from every process) with its critic, as a `save_marlin_folder` folder that
    `AutoModel` and `AutoModelForPreTraining` load. Every process calls it; the main one writes."""
    state_dict = accelerator.get_state_dict(model)  # a collective: every process calls it
    if not accelerator.is_main_process:
        return
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.distributed_type == DistributedType.FSDP:  # sharded weights: rebuild a whole model
        unwrapped = MarlinForPreTraining(unwrapped.config)
        unwrapped.discriminator = None
        unwrapped.load_state_dict(state_dict)
    save_marlin_folder(attach_critic(unwrapped, critic), folder)
    detach_critic(unwrapped)
