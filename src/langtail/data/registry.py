"""Dataset registry: name -> builder.

A builder knows its class list (needed by the corpus stage, without images) and how to
build a manifest (:class:`~langtail.data.manifest.ManifestBuild`) for every split.
Register new datasets with :func:`register`; look them up with :func:`get_dataset`. Both
delegate to :data:`langtail.registry.DATASETS`, which discovers the built-in modules (listed
there), entry points and ``$LANGTAIL_PLUGINS`` files: a new format is one decorated module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from langtail.config import DataConfig
from langtail.data.manifest import ManifestBuild
from langtail.registry import DATASETS


class DatasetBuilder(Protocol):
    name: str

    def class_names(self, cfg: DataConfig) -> list[str]:
        """Class names, index = label."""

    def build(self, cfg: DataConfig, out_dir: Path) -> ManifestBuild:
        """Build all splits; array-backed datasets write ``*.npy`` files into ``out_dir``."""


def register(name: str, **declared) -> Callable:
    """Class decorator: ``@register("cifar10_lt")`` makes ``get_dataset("cifar10_lt")`` work; the
    builder lands in :data:`langtail.registry.DATASETS` (``declared``: its ``keys``, ``inputs``,
    ``info``, see :meth:`langtail.registry.Registry.register`)."""
    return DATASETS.register(name, **declared)


def available() -> list[str]:
    """Every registered dataset name (built-ins, entry points, ``$LANGTAIL_PLUGINS``)."""
    return DATASETS.names()


def get_dataset(name: str) -> DatasetBuilder:
    """A new builder of dataset ``name``; unknown names raise a ``KeyError`` listing the known ones."""
    return DATASETS.get(name)()


def check_class_subset(builder: DatasetBuilder, cfg: DataConfig) -> None:
    """``data.classes`` is honoured only by builders with ``supports_class_subset = True``
    (imagenet_lt, places_lt); for any other dataset it is an error, never ignored."""
    if cfg.classes and not getattr(builder, "supports_class_subset", False):
        raise ValueError(f"data.classes is set but dataset {builder.name!r} cannot be restricted to a class "
                         "subset (supported: imagenet_lt, places_lt); remove data.classes")
