"""Model folders on disk and on the Hub: saving a folder that also loads as remote code,
writing one whole or not at all, file modes, and the upload.

Reading a folder or a Hub id is the converter's (`convert_marlin`); loading a model from one is `loading`'s.
"""

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .exceptions import CheckpointError, MarlinError

PROCESSOR_AUTO_MAP = "video_processing_marlin.MarlinVideoProcessor"
# The three files a saved folder carries so that it loads with `trust_remote_code=True` without this package.
REMOTE_CODE_FILES = ("configuration_marlin.py", "modeling_marlin.py", "video_processing_marlin.py")


def honour_umask(folder: str | Path) -> None:
    """Give `folder`, and everything in it, the modes a plain `mkdir`/`open` would under this process's umask.

    safetensors writes its files 0600 and `tempfile.mkdtemp` makes folders 0700, so a saved model folder would be
    unreadable to the colleagues a umask of 022 means to share it with.
    """
    umask = os.umask(0)
    os.umask(umask)
    folder = Path(folder)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def save_marlin_folder(model, folder: str | Path) -> None:
    """`save_pretrained` plus the processor; `auto_map` (in `config.json` and the processor's JSON) names every MARLIN
    class, models and processor, and their three files are copied beside the weights, for remote code."""
    folder = Path(folder)
    model.save_pretrained(folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_marlin.MarlinConfig",
        "AutoModel": "modeling_marlin.MarlinModel",
        "AutoModelForPreTraining": "modeling_marlin.MarlinForPreTraining",
        "AutoModelForVideoClassification": "modeling_marlin.MarlinForVideoClassification",
        "AutoVideoProcessor": PROCESSOR_AUTO_MAP,
    }
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    package = Path(__file__).parent
    for module in REMOTE_CODE_FILES:
        shutil.copyfile(package / module, folder / module)
    from .video_processing_marlin import MarlinVideoProcessor

    size = model.config.image_size
    processor = MarlinVideoProcessor(size={"height": size, "width": size}, num_frames=model.config.num_frames)
    processor.save_pretrained(folder)
    processor_path = folder / "video_preprocessor_config.json"
    processor_config = json.loads(processor_path.read_text())
    processor_config["auto_map"] = {"AutoVideoProcessor": PROCESSOR_AUTO_MAP}
    processor_path.write_text(json.dumps(processor_config, indent=2, sort_keys=True) + "\n")
    honour_umask(folder)


@contextmanager
def staged_folder(output_dir: str | Path) -> Iterator[Path]:
    """Write a folder whole or not at all: yields a hidden staging folder beside `output_dir`
    (`.<name>.<pid>.<random>.partial`), renamed into place when the block ends, removed if it raises.

    Raises:
        CheckpointError: `output_dir` exists and is not empty.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise CheckpointError(f"{output_dir}: output folder exists and is not empty; choose another or remove it.")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(output_dir)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{output_dir.name}.{os.getpid()}.", suffix=".partial", dir=output_dir.parent)
    )
    try:
        yield staging
        honour_umask(staging)
        if output_dir.exists():
            output_dir.rmdir()
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_stale_staging(output_dir: Path) -> None:
    """Remove the staging folders (`.<name>.<pid>.<random>.partial` beside `output_dir`) of writers whose process is
    gone: a killed `marlin convert` leaves its half-written folder hidden there."""
    for staging in output_dir.parent.glob(f".{glob.escape(output_dir.name)}.*.partial"):
        pid = staging.name[len(output_dir.name) + 2 :].split(".")[0]
        if staging.is_dir() and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    commit_message: str = "MARLIN from marlin-transformers",
    private: bool | None = None,
) -> str:
    """Upload a model folder (not Trainer's checkpoints or logs) to the Hub repo `repo_id`, made if missing (private
    if `private`; None: the Hub's default for the account); returns its URL. The token is `token`, else
    huggingface_hub's own (`HF_TOKEN`, `hf auth login`).

    Raises:
        MarlinError: the upload failed (no network, no or wrong token, a bad repo id...), in one line; the folder is
            left as it is.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import httpx

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=url.repo_id,
            ignore_patterns=["checkpoint-*", "checkpoint-*/**", "runs/**", "*.partial"],
            commit_message=commit_message,
        )
    except (httpx.HTTPError, OSError, HFValidationError) as error:  # HfHubHTTPError is both of the first two
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise MarlinError(
            f"{folder}: upload to the Hub repo {repo_id} failed ({type(error).__name__}: {reason}); the folder is "
            "complete: check the network and token (HF_TOKEN or `hf auth login`), then push it again."
        ) from None
    return str(url)
