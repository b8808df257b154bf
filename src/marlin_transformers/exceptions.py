"""Errors a user can cause. Each message is one line naming the input and what to do about it."""


class MarlinError(Exception):
    """Base class for user-facing errors; the CLI prints `str(error)` and no traceback.

    The message says what is wrong with a value, not which command-line flag to pass: `parameter` names the argument
    of the library call whose value it is (a message then starts with that value), and the CLI puts the flag that
    sets it in front (`--out OUT: cannot write in this folder ...`).
    """

    def __init__(self, message: str, parameter: str | None = None):
        super().__init__(message)
        self.parameter = parameter


class CheckpointError(MarlinError):
    """A checkpoint file or folder that cannot be read or converted."""


class VideoError(MarlinError):
    """A video that cannot be opened or decoded (missing, empty, not a video, truncated...)."""


class NoFaceError(VideoError):
    """No face was detected anywhere in a video."""


class DatasetError(MarlinError):
    """A dataset folder, info file, labels file or feature folder that does not have the expected layout."""


class ConfigError(MarlinError):
    """A model config (a variant name, a config file or `--config-override` values) no model can be built from."""


# The import names each extra of pyproject.toml brings: what to install when one is missing.
EXTRA_MODULES = {
    "train": ("datasets", "evaluate", "sklearn", "tensorboard"),
    "demo": ("skimage",),
    "app": ("gradio",),
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "docs": ("mkdocs", "mkdocstrings"),
}


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """One line naming the extra that installs the module `error` did not find, or None when no extra brings it."""
    top = (error.name or "").split(".")[0]
    for extra, modules in EXTRA_MODULES.items():
        if top in modules:
            return f'{top} is not installed: install the {extra!r} extra (pip install -e ".[{extra}]" in a clone)'
    return None
