"""User-facing errors: they survive a trip through a worker process, and the extra an error names is the one
pyproject.toml declares."""

import importlib.metadata
import pickle
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from marlin_transformers.exceptions import EXTRA_MODULES, CheckpointError, DatasetError, VideoError, missing_extra

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.mark.parametrize("kind", [DatasetError, VideoError, CheckpointError])
def test_errors_keep_their_parameter_through_pickle(kind):
    error = kind("out: cannot write in this folder", parameter="out_dir")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is kind
    assert str(copy) == str(error)
    assert copy.parameter == "out_dir"


def test_extra_modules_match_the_extras_of_pyproject():
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    distributions = importlib.metadata.packages_distributions()
    for extra, modules in EXTRA_MODULES.items():
        declared = {canonicalize_name(Requirement(r).name) for r in extras[extra]}
        for module in modules:
            if module not in distributions:  # not installed here: nothing to map it to
                continue
            names = {canonicalize_name(d) for d in distributions[module]}
            assert names & declared, f"{module} ({names}) is not a requirement of the {extra!r} extra: {declared}"


def test_missing_extra_names_the_extra_and_the_install_line():
    message = missing_extra(ModuleNotFoundError("No module named 'sklearn.metrics'", name="sklearn.metrics"))
    assert message == "sklearn is not installed: install the 'train' extra (pip install -e \".[train]\" in a clone)"
    assert missing_extra(ModuleNotFoundError("x", name="numpy")) is None
