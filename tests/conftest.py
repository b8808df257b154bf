"""What the tests share: the tiny configs, and the reference ViT-B config (from `reference_utils`).

Test modules import these names directly (`from conftest import TINY_CLIP`); pytest puts this folder on the path.
"""

import importlib.util
import os

import pytest
import torch

from marlin_transformers import MarlinConfig, MarlinModel
from reference_utils import REFERENCE_VIT_BASE  # noqa: F401  (marlin-pytorch's field names, ViT-B; one copy)


def require_optional(missing: list[str], install: str, require_env: str, allow_module_level: bool = False) -> None:
    """Skip, naming what is missing and how to install it, unless `require_env` is set (`.ci/run` sets it): then fail.

    The README's test command installs the `test` extra only; tools outside it (the reference marlin-pytorch,
    Debian's Chromium, transformers' fetched test suite) make their tests skip with this reason, and CI, which installs
    them, sets `require_env` so that a skip there is an error.
    """
    if not missing:
        return
    message = f"needs {', '.join(missing)}: {install}"
    if os.environ.get(require_env):
        raise RuntimeError(f"{message} ({require_env} is set, so this must run)")
    pytest.skip(message, allow_module_level=allow_module_level)


def require_reference() -> None:
    """The reference implementation marlin-pytorch 0.3.4, which `.ci/run` installs (MARLIN_REQUIRE_REFERENCE)."""
    missing = [] if importlib.util.find_spec("marlin_pytorch") else ["marlin_pytorch"]
    install = "pip install --no-deps marlin-pytorch==0.3.4 && pip install opencv-python-headless ffmpeg-python "
    install += "pyyaml einops"
    require_optional(missing, install, "MARLIN_REQUIRE_REFERENCE")


# A tiny model over real 16-pixel patches (32-pixel frames, 2 x 2 x 2 = 8 tokens), for tests that decode videos.
TINY_CLIP = dict(
    image_size=32,
    patch_size=16,
    num_frames=4,
    tubelet_size=2,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    decoder_hidden_size=16,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=32,
)


# The smallest model: 10-pixel frames of 5-pixel patches (2 x 2 x 2 = 8 tokens), for model-only tests.
TINY_MODEL = {**TINY_CLIP, "image_size": 10, "patch_size": 5, "discriminator_hidden_size": 24}


def tiny_config(**overrides) -> MarlinConfig:
    """`MarlinConfig(**TINY_MODEL)` with `overrides` on top."""
    return MarlinConfig(**{**TINY_MODEL, **overrides})


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A converted folder of a tiny encoder that reads 16 frames of 32 pixels (one layer), for extraction tests."""
    from marlin_transformers.hub_folders import save_marlin_folder

    config = MarlinConfig(**{**TINY_CLIP, "num_frames": 16, "num_hidden_layers": 1})
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny"
    save_marlin_folder(MarlinModel(config), folder)
    return folder


@pytest.fixture(scope="session")
def tiny_pretraining_dir(tmp_path_factory):
    """A converted folder of a tiny MarlinForPreTraining reading 16 frames of 32 pixels (8 x 2 x 2 = 32 tokens), for
    reconstruction and app tests."""
    from marlin_transformers.hub_folders import save_marlin_folder
    from marlin_transformers.modeling_marlin import MarlinForPreTraining

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny-pretraining"
    save_marlin_folder(MarlinForPreTraining(MarlinConfig(**{**TINY_CLIP, "num_frames": 16})), folder)
    return folder


def _library_logging() -> tuple:
    """transformers' verbosity and progress bar, huggingface_hub's progress bars, accelerate's log level."""
    import logging

    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as transformers_logging

    return (
        transformers_logging.get_verbosity(),
        transformers_logging.is_progress_bar_enabled(),
        not are_progress_bars_disabled(),
        logging.getLogger("accelerate").level,
    )


_LIBRARY_LOGGING = _library_logging()  # as the test run found it, before any fixture ran a command


@pytest.fixture(autouse=True)
def library_logging_as_found():
    """Put the libraries' logging back as the run found it after each test: a command run in-process (`marlin ...`'s
    `main`, also from a module-scoped fixture) quiets transformers, huggingface_hub and accelerate process-wide
    (`cli.options.quiet_libraries`), and a later test that reads transformers' warnings (its common suite's
    `CaptureLogger`) would otherwise see none."""
    import logging

    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    yield
    verbosity, bars, hub_bars, accelerate_level = _LIBRARY_LOGGING
    transformers_logging.set_verbosity(verbosity)
    (transformers_logging.enable_progress_bar if bars else transformers_logging.disable_progress_bar)()
    (enable_progress_bars if hub_bars else disable_progress_bars)()
    logging.getLogger("accelerate").setLevel(accelerate_level)


def interrupt_crops_on(monkeypatch, call: int) -> list:
    """Make the task preparers' face-clip job (`data.task_preparation.crop_video`) stop the run on its `call`-th
    video as a Ctrl-C or a kill between two videos would (KeyboardInterrupt); returns the videos it was called with.
    `monkeypatch.undo()` puts the real one back."""
    from marlin_transformers.data import task_preparation

    real_crop_video, calls = task_preparation.crop_video, []

    def interrupted(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == call:
            raise KeyboardInterrupt
        return real_crop_video(*args, **kwargs)

    monkeypatch.setattr(task_preparation, "crop_video", interrupted)
    return calls


# One epoch of `examples/finetune.py` on a tiny model, small batches, no workers (test_tasks.py, the preparers' tests).
ONE_EPOCH = ["--sample-rate", "1", "--dataloader-num-workers", "0", "--per-device-train-batch-size", "4"]
ONE_EPOCH += ["--num-train-epochs", "1", "--logging-steps", "1", "--learning-rate", "1e-3", "--save-total-limit", "1"]


def finetuned_test_metrics(finetune, tiny_model, prepared, task: str, out) -> dict:
    """One epoch of `examples/finetune.py --task TASK --data PREPARED` on a tiny model (`finetune`, `tiny_model`: the
    fixtures of tests/test_finetune.py), the prepared folder fed as a preparer wrote it; the test split's metrics."""
    import json

    argv = ["--model", str(tiny_model), "--task", task, "--data", str(prepared), "--output-dir", str(out)]
    assert finetune.main([*argv, *ONE_EPOCH]) == 0
    return json.loads((out / "test_results.json").read_text())
