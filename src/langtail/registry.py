"""Registries of the parts that describe themselves (timm / open_clip style).

Six kinds of part are picked by name from config: image encoders, text encoders, heads,
losses, dataset formats and backbone tuning modes (``model.backbone_mode``). Each part is registered once, next to its code, with what it
declares about itself::

    from langtail.registry import IMAGE_ENCODERS

    @IMAGE_ENCODERS.register("efficientnet_lite0", keys={"model": ("pretrained",)},
                             info={"image_size": 224, "normalize": "imagenet"})
    def efficientnet_lite0(cfg: ModelConfig) -> ImageTower: ...

A :class:`Part` carries

- ``name``: the config value that selects it;
- ``factory``: the callable that builds it (its signature is fixed per registry, see the
  registry's ``signature``);
- ``keys``: the config keys it reads, ``{section: (key, ...)}`` (stages add them to their
  declared keys, so a rule's params and the rerun logic follow the chosen part);
- ``inputs``: the upstream artifacts it may need besides the manifest (``"text_emb"`` the
  ``[C, M, D]`` anchor cache, ``"pretrain"`` the CVLP checkpoint, ``"priors"`` the train
  class counts); when what it needs depends on the config, ``info["needs"]`` is a function
  ``cfg -> tuple`` of the ones one run reads (:meth:`Part.needs`; it must be a subset of
  ``inputs``);
- ``info``: free-form facts for stages, the report and the offline checks (checkpoint
  contents, labels, native image size, normalisation, weights package, ...).

Discovery is automatic: the first lookup imports every built-in module listed by the
registry, then every entry point of the group ``langtail.<registry>`` (installed plugins:
``langtail.image_encoders``, ``langtail.text_encoders``, ``langtail.heads``, ``langtail.losses``,
``langtail.datasets``, ``langtail.tuning_modes``), then
every module or ``.py`` file named in the ``LANGTAIL_PLUGINS`` environment variable
(``os.pathsep``-separated; how a file outside the package plugs into the CLI and the
workflow without being installed). Nothing is a hand-kept list outside the registry itself.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

log = logging.getLogger(__name__)

#: environment variable naming plugin modules / files loaded by every registry
PLUGINS_ENV = "LANGTAIL_PLUGINS"

Keys = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Part:
    """One registered part: its name, factory and self-description."""

    name: str
    factory: Callable[..., Any]
    kind: str
    keys: Keys = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    info: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.factory(*args, **kwargs)

    def needs(self, cfg: Any) -> tuple[str, ...]:
        """The inputs one run with config ``cfg`` reads: ``info["needs"](cfg)`` when declared,
        else every declared input; an undeclared name is an error naming the part."""
        fn = self.info.get("needs")
        got = tuple(fn(cfg)) if fn is not None else self.inputs
        extra = set(got) - set(self.inputs)
        if extra:
            raise ValueError(f"{self.kind} {self.name!r}: info['needs'] returned {sorted(extra)}, which are not "
                             f"in its declared inputs {self.inputs}")
        return got


class Registry:
    """Name -> :class:`Part` for one kind of part, with automatic discovery."""

    def __init__(self, kind: str, const: str, builtin: tuple[str, ...], signature: str):
        self.kind = kind
        self.const = const  # the module-level name of this registry, for messages
        self.group = f"langtail.{const.lower()}"  # entry-point group, e.g. langtail.image_encoders
        self.builtin = builtin
        self.signature = signature
        self._parts: dict[str, Part] = {}
        self._discovered = False

    # -- registration
    def register(self, name: str, *, keys: Keys | None = None, inputs: tuple[str, ...] = (),
                 info: Mapping[str, Any] | None = None, replace: bool = False) -> Callable:
        """Decorator registering ``factory`` under ``name`` (a second name is an error unless ``replace``)."""

        def deco(factory: Callable) -> Callable:
            self.add(Part(name, factory, self.kind, dict(keys or {}), tuple(inputs), dict(info or {})), replace)
            return factory

        return deco

    def add(self, part: Part, replace: bool = False) -> None:
        known = self._parts.get(part.name)
        if known is not None and not replace and known.factory is not part.factory:
            raise ValueError(f"{self.kind} {part.name!r} registered twice ({_where(known.factory)} and "
                             f"{_where(part.factory)}); pass replace=True to override it on purpose")
        self._parts[part.name] = part

    # -- lookup
    def get(self, name: str) -> Part:
        self.discover()
        if name not in self._parts:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._parts))} "
                           f"(add one with langtail.registry.{self.const}.register, an entry point of "
                           f"group {self.group!r}, or a file in ${PLUGINS_ENV}; see docs/extending.md)")
        return self._parts[name]

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._parts)

    def parts(self) -> Iterator[Part]:
        self.discover()
        return iter([self._parts[n] for n in sorted(self._parts)])

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._parts

    # -- discovery
    def discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # set first: built-in modules register while being imported
        for mod in self.builtin:
            importlib.import_module(mod)
        for ep in metadata.entry_points(group=self.group):
            try:
                ep.load()
            except Exception as e:
                raise RuntimeError(f"plugin entry point {ep.name!r} ({ep.value}) of group {self.group!r} "
                                   f"failed to load: {e}") from e
        load_plugins()


_LOADED_PLUGINS: set[str] = set()


def load_plugins(spec: str | None = None) -> list[str]:
    """Import the modules / ``.py`` files of ``$LANGTAIL_PLUGINS`` (or ``spec``) once each."""
    spec = os.environ.get(PLUGINS_ENV, "") if spec is None else spec
    loaded = []
    for item in filter(None, (s.strip() for s in spec.split(os.pathsep))):
        if item in _LOADED_PLUGINS:
            continue
        _LOADED_PLUGINS.add(item)
        if item.endswith(".py"):
            path = Path(item).expanduser().resolve()
            if not path.is_file():
                raise FileNotFoundError(f"${PLUGINS_ENV} names {item!r}, which is not a file")
            name = f"langtail_plugin_{path.stem}_{abs(hash(str(path))) % 10**8}"
            spec_ = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec_)
            sys.modules[name] = module
            spec_.loader.exec_module(module)
        else:
            importlib.import_module(item)
        loaded.append(item)
        log.debug("loaded langtail plugin %s", item)
    return loaded


def _where(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"


#: ``factory(cfg: ModelConfig) -> ImageTower``; info: ``image_size``, ``normalize``, ``weights``
IMAGE_ENCODERS = Registry("image encoder", "IMAGE_ENCODERS", ("langtail.models.encoders", "langtail.models.efficientnet"),
                          "factory(cfg: ModelConfig) -> ImageTower")
#: ``factory(cfg: ModelConfig, clip_model) -> text tower`` (``encode_base``, ``project``, ``identity``)
TEXT_ENCODERS = Registry("text encoder", "TEXT_ENCODERS", ("langtail.models.encoders",),
                         "factory(cfg: ModelConfig, clip_model: nn.Module | None) -> nn.Module")
#: ``factory(dim, num_classes, text_emb, mask, **options) -> nn.Module``
HEADS = Registry("head", "HEADS", ("langtail.models.heads",),
                 "factory(dim: int, num_classes: int, text_emb [C, M, D] | None, mask [C, M] | None, **opts)")
#: ``factory(counts [C], **keys) -> loss module``
LOSSES = Registry("loss", "LOSSES", ("langtail.losses",), "factory(counts: Sequence[int], **keys) -> nn.Module")
#: ``factory() -> DatasetBuilder`` (``class_names(cfg)``, ``build(cfg, out_dir)``)
DATASETS = Registry("dataset", "DATASETS", ("langtail.data.demo", "langtail.data.cifar", "langtail.data.imagenet_lt",
                                "langtail.data.inat", "langtail.data.folder", "langtail.data.tiny_imagenet"),
                    "factory() -> DatasetBuilder")
#: ``factory(tower: ImageTower, cfg: ModelConfig) -> ImageTower``: which backbone parameters train
TUNING_MODES = Registry("backbone mode", "TUNING_MODES", ("langtail.models.tuning", "langtail.models.peft"),
                        "factory(tower: ImageTower, cfg: ModelConfig) -> ImageTower")
