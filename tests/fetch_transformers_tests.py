"""Fetch the `tests/` folder of the installed transformers release, for `tests/test_transformers_suite.py`.

transformers ships its common model tests (`ModelTesterMixin`, `ConfigTester`) in its source distribution, not in its
wheel. This downloads the sdist of exactly the installed version from the package index (pip, so the machine's index
settings apply) and unpacks only its `tests/` into a cache outside the repository. `.ci/run` calls it; run it once
by hand to run the suite locally:

    python tests/fetch_transformers_tests.py
"""

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers


def transformers_tests_dir() -> Path:
    """Where the installed release's `tests/` lives: `$TRANSFORMERS_TESTS_DIR`, else a per-version user cache."""
    if os.environ.get("TRANSFORMERS_TESTS_DIR"):
        return Path(os.environ["TRANSFORMERS_TESTS_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "marlin-transformers" / f"transformers-{transformers.__version__}" / "tests"


def fetch(destination: Path) -> Path:
    if (destination / "test_modeling_common.py").is_file():
        return destination
    version = transformers.__version__
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
            + ["--no-build-isolation", f"transformers=={version}", "--dest", scratch],
            check=True,
        )
        (archive,) = Path(scratch).glob("transformers-*.tar.gz")
        prefix = f"transformers-{version}/tests/"
        unpacked = Path(scratch) / "unpacked"
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and (m.isfile() or m.isdir())]
            tar.extractall(unpacked, members=members, filter="data")
        destination.parent.mkdir(parents=True, exist_ok=True)
        # Unpacked beside the destination and renamed into place, so a half-fetched folder never looks complete.
        staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=".tests-"))
        os.replace(unpacked / prefix, staging / "tests")
        os.replace(staging / "tests", destination)
        staging.rmdir()
    return destination


if __name__ == "__main__":
    print(fetch(transformers_tests_dir()))
