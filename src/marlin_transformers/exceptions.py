"""Errors a user can cause. Each message is one line naming the input and what to do about it."""

import re


class MarlinError(Exception):
    """Base class for user-facing errors; the CLI prints `str(error)` and no traceback.

    The message says what is wrong with a value, not which command-line flag to pass: `parameter` names the argument
    of the library call whose value it is (a message then starts with that value), and the CLI puts the flag that
    sets it in front (`--out OUT: cannot write in this folder ...`); a message may instead name the parameter to
    change, which a script then follows with its flag (`with_flags`).
    """

    def __init__(self, message: str, parameter: str | None = None):
        super().__init__(message)
        self.parameter = parameter


class ArgumentValueError(ValueError):
    """A value of an arguments dataclass no run can use (raised from its `__post_init__`, as `TrainingArguments`
    raises `ValueError`): the message says what is wrong, `fields` names the fields (the script adds their flags)."""

    def __init__(self, message: str, *fields: str):
        super().__init__(message)
        self.fields = fields


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


class SqueezedVideoWarning(UserWarning):
    """A video whose frames are far from square, read whole (no face cropping): each frame is squeezed to the model's
    square. `source`, `width`, `height` and `size` let a command line say it with its own flag."""

    def __init__(self, source: str, width: int, height: int, size: int):
        self.source, self.width, self.height, self.size = source, width, height, size
        super().__init__(
            f"{source} is {width}x{height}; without crop_face it is squeezed to {size}x{size}; "
            "pass crop_face=True for in-the-wild video"
        )


def with_flags(message: str, flags: dict[str, str]) -> str:
    """`message` with each parameter of `flags` (parameter -> its flag) it names followed by the flag
    (`batch_size (--batch-size) is 0`), and the flag in front for one it does not name (`--out OUT: cannot write...`):
    how a script that owns the flags says a library error."""
    for name, flag in flags.items():
        named = re.search(rf"\b{name}\b", message)
        message = f"{message[: named.end()]} ({flag}){message[named.end() :]}" if named else f"{flag} {message}"
    return message


# The import names each extra of pyproject.toml brings: what to install when one is missing.
EXTRA_MODULES = {
    "train": ("datasets", "evaluate", "sklearn", "tensorboard", "matplotlib", "h5py"),
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
