"""Dataset registry: name -> builder.

A builder knows its class list (needed by the corpus stage, without images) and how to
build a manifest (:class:`~langtail.data.manifest.ManifestBuild`) for every split.
Register new datasets with :func:`register`; look them up with :func:`get_dataset`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from langtail.config import DataConfig
from langtail.data.manifest import ManifestBuild


class DatasetBuilder(Protocol):
    name: str

    def class_names(self, cfg: DataConfig) -> list[str]:
        """Class names, index = label."""

    def build(self, cfg: DataConfig, out_dir: Path) -> ManifestBuild:
        """Build all splits; array-backed datasets write ``*.npy`` files into ``out_dir``."""


_REGISTRY: dict[str, Callable[[], DatasetBuilder]] = {}


def register(name: str) -> Callable:
    """Class decorator: ``@register("cifar10_lt")`` makes ``get_dataset("cifar10_lt")`` work."""

    def deco(factory: Callable[[], DatasetBuilder]):
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def _load_builtin() -> None:
    # importing the modules registers their datasets
    import importlib

    for mod in ("demo", "cifar", "imagenet_lt", "inat", "folder", "tiny_imagenet"):
        try:
            importlib.import_module(f"langtail.data.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"langtail.data.{mod}":
                raise


def available() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_dataset(name: str) -> DatasetBuilder:
    _load_builtin()
    if name not in _REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()


def check_class_subset(builder: DatasetBuilder, cfg: DataConfig) -> None:
    """``data.classes`` is honoured only by builders with ``supports_class_subset = True``
    (imagenet_lt, places_lt); for any other dataset it is an error, never ignored."""
    if cfg.classes and not getattr(builder, "supports_class_subset", False):
        raise ValueError(f"data.classes is set but dataset {builder.name!r} cannot be restricted to a class "
                         "subset (supported: imagenet_lt, places_lt); remove data.classes")
