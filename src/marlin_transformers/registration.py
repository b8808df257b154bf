"""MARLIN in transformers' Auto classes, registered as soon as those classes are imported.

transformers' auto modules import torch (2-4 s): registering at `import marlin_transformers` would make every
import, `marlin --help` included, that slow. So the package registers lazily: `register_with_auto_classes` (run by
`import marlin_transformers`) registers at once with the auto modules already imported, and watches the imports of
transformers and of this package for the others. Once an auto module has been imported, and no module of either is
half-imported (MARLIN's model classes import transformers' modeling modules, which import `AutoModel` in turn), MARLIN
is registered with its Auto classes, before the import statement that brought them returns.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from collections.abc import Callable
from types import ModuleType


def register_config(auto: ModuleType) -> None:
    """`AutoConfig` (and `AutoConfig.from_pretrained` of a folder whose `model_type` is "marlin")."""
    from .configuration_marlin import MarlinConfig

    auto.AutoConfig.register("marlin", MarlinConfig, exist_ok=True)


def register_models(auto: ModuleType) -> None:
    """`AutoModel`, `AutoModelForPreTraining` and `AutoModelForVideoClassification`."""
    from .configuration_marlin import MarlinConfig
    from .modeling_marlin import MarlinForPreTraining, MarlinForVideoClassification, MarlinModel

    auto.AutoModel.register(MarlinConfig, MarlinModel, exist_ok=True)
    auto.AutoModelForPreTraining.register(MarlinConfig, MarlinForPreTraining, exist_ok=True)
    auto.AutoModelForVideoClassification.register(MarlinConfig, MarlinForVideoClassification, exist_ok=True)


def register_video_processor(auto: ModuleType) -> None:
    """`AutoVideoProcessor`."""
    from .configuration_marlin import MarlinConfig
    from .video_processing_marlin import MarlinVideoProcessor

    auto.AutoVideoProcessor.register(MarlinConfig, MarlinVideoProcessor, exist_ok=True)


# transformers' auto module -> what registers MARLIN with its classes.
REGISTRATIONS: dict[str, Callable[[ModuleType], None]] = {
    "transformers.models.auto.configuration_auto": register_config,
    "transformers.models.auto.modeling_auto": register_models,
    "transformers.models.auto.video_processing_auto": register_video_processor,
}
WATCHED = ("transformers", __name__.rpartition(".")[0])  # the packages whose imports are watched


class _Loader(importlib.abc.Loader):
    """A module's own loader, telling the watcher when the module has run."""

    def __init__(self, loader: importlib.abc.Loader, watcher: _AutoClassWatcher):
        self.loader, self.watcher = loader, watcher

    def __getattr__(self, name: str):  # get_source, get_resource_reader, is_package...: the module's own loader's
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with self.watcher.running:
            self.watcher.depth += 1
        try:
            self.loader.exec_module(module)
        finally:
            with self.watcher.running:
                self.watcher.depth -= 1
        self.watcher.register_ready()


class _AutoClassWatcher(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loaders of watched modules so that registration follows their import."""

    def __init__(self, pending: dict[str, Callable[[ModuleType], None]]):
        self.pending = pending
        self.depth = 0  # watched modules being imported right now: while any is, none is registered
        self.running = threading.RLock()
        self.registering = False

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname.partition(".")[0] not in WATCHED or self.registering:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, self)
                return spec
        return None

    def register_ready(self) -> None:
        """Register with every auto module imported in full, unless a watched import is still under way."""
        with self.running:
            if self.depth or self.registering:
                return
            self.registering = True
            try:
                for name in [name for name in self.pending if name in sys.modules]:
                    self.pending.pop(name)(sys.modules[name])
            finally:
                self.registering = False
            if not self.pending and self in sys.meta_path:
                sys.meta_path.remove(self)


def register_with_auto_classes() -> None:
    """Register MARLIN with transformers' Auto classes: now where imported, else as soon as they are."""
    if any(isinstance(finder, _AutoClassWatcher) for finder in sys.meta_path):
        return
    watcher = _AutoClassWatcher(dict(REGISTRATIONS))
    sys.meta_path.insert(0, watcher)
    watcher.register_ready()
