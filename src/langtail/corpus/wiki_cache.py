"""The Wikipedia page cache and the override file (layout and fields: :mod:`langtail.corpus.wikipedia`).

One JSON file per class in ``cache_dir`` (:func:`cache_path`), written atomically
(:func:`write_cached`), read back with defaults filled and types checked
(:func:`normalize_page`); :func:`load_overrides` reads ``CorpusConfig.overrides_file``.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

from langtail.config import CorpusConfig
from langtail.corpus.classes import normalize_name
from langtail.io import cache_file, safe_filename, write_json

log = logging.getLogger(__name__)

STATUSES = ("ok", "missing", "disambiguation_unresolved")
CACHE_FIELDS = ("query", "title", "pageid", "revid", "fetched_at", "language", "api_url", "status", "text")


class OfflineCacheMiss(RuntimeError):
    """Offline mode, but some classes have no cached page; ``.missing`` lists them."""

    def __init__(self, missing: list[str], cache_dir: Path):
        self.missing = list(missing)
        super().__init__(
            f"offline mode: {len(missing)} class(es) have no cached page in {cache_dir}: "
            + ", ".join(repr(m) for m in missing)
            + " (run once with corpus.offline: false, or add their JSON files)")


# ----------------------------------------------------------------------------- cache


def cache_filename(class_name: str) -> str:
    """``<slug>-<sha1[:10]>.json`` for a class name (see :mod:`langtail.corpus.wikipedia`;
    :func:`langtail.io.safe_filename`)."""
    return safe_filename(class_name, ".json", label=normalize_name(class_name), fallback="class")


def cache_path(cache_dir: str | Path, class_name: str) -> Path:
    """The cache file of a class; always inside ``cache_dir`` (:func:`langtail.io.cache_file`)."""
    return cache_file(cache_dir, class_name, ".json", label=normalize_name(class_name), fallback="class")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def normalize_page(page: Mapping[str, Any], class_name: str, cfg: CorpusConfig | None = None) -> dict[str, Any]:
    """Fill defaults of a raw-page dict and check its types; raise ``ValueError`` if bad."""
    p = dict(page)
    p.setdefault("query", class_name)
    p.setdefault("title", "")
    p.setdefault("pageid", -1)
    p.setdefault("revid", -1)
    p.setdefault("fetched_at", "")
    p.setdefault("language", cfg.language if cfg else "en")
    p.setdefault("api_url", "")
    p.setdefault("status", "ok" if p.get("text") else "missing")
    p.setdefault("text", "")
    p["pageid"] = -1 if p["pageid"] is None else int(p["pageid"])
    p["revid"] = -1 if p["revid"] is None else int(p["revid"])
    if p["status"] not in STATUSES:
        raise ValueError(f"page for {class_name!r}: status {p['status']!r} not in {STATUSES}")
    for k in ("query", "title", "fetched_at", "language", "api_url", "text"):
        if not isinstance(p[k], str):
            raise ValueError(f"page for {class_name!r}: field {k!r} must be a string")
    return p


def read_cached(cache_dir: str | Path, class_name: str) -> dict[str, Any] | None:
    """The cached page of a class, or ``None`` if absent or unreadable (logged)."""
    path = cache_path(cache_dir, class_name)
    if not path.exists():
        return None
    try:
        return normalize_page(json.loads(path.read_text(encoding="utf-8")), class_name)
    except (ValueError, TypeError) as e:
        log.warning("ignoring unreadable cache file %s (%s); it will be refetched", path, e)
        return None


def write_cached(cache_dir: str | Path, class_name: str, page: Mapping[str, Any]) -> Path:
    """Write one page atomically; returns its path."""
    path = cache_path(cache_dir, class_name)
    write_json(path, normalize_page(page, class_name))
    return path


def seed_cache(cache_dir: str | Path, pages: Mapping[str, Mapping[str, Any]], cfg: CorpusConfig | None = None) -> int:
    """Write built-in pages (class name -> page dict) into the cache unless a file exists."""
    n = 0
    for name, page in pages.items():
        if not cache_path(cache_dir, name).exists():
            write_cached(cache_dir, name, normalize_page(page, name, cfg))
            n += 1
    return n


def missing_from_cache(cache_dir: str | Path, class_names: Iterable[str]) -> list[str]:
    """Unique class names (first-occurrence order) with no usable cache file."""
    out, seen = [], set()
    for n in class_names:
        if n in seen:
            continue
        seen.add(n)
        if read_cached(cache_dir, n) is None:
            out.append(n)
    return out


def stale_by_overrides(cache_dir: str | Path, class_names: Iterable[str], overrides: Mapping[str, str]) -> list[str]:
    """Cached classes whose page disagrees with the override file (refetched by
    :func:`~langtail.corpus.wikipedia.crawl`).

    A class is stale when the override file maps it to a title other than the one its
    cached page was fetched for (cache field ``override``; ``-`` = "no page"), or when
    its page came from an override that the file no longer has. Uncached classes are
    not listed (they are fetched anyway).
    """
    out, seen = [], set()
    for n in class_names:
        if n in seen:
            continue
        seen.add(n)
        p = read_cached(cache_dir, n)
        if p is None:
            continue
        cached = p.get("override")
        if cached is None and p.get("resolved_by") == "override":
            cached = p.get("title") or "-"  # a cache file written before the field existed
        want = overrides.get(normalize_name(n))
        if (want is not None and (want or "-") != cached) or (want is None and cached):
            out.append(n)
    return out


#: columns :func:`page_resolution` adds to ``corpus_stats.parquet`` (all strings)


def page_resolution(page: Mapping[str, Any] | None, wiki_used: bool = True) -> tuple[str, str, str, str]:
    """How a class got its page, as the ``RESOLUTION_COLUMNS`` of ``corpus_stats.parquet``.

    ``page_status``: ``ok`` | ``missing`` | ``disambiguation_unresolved`` (``""`` when
    ``wiki`` is not a source); ``resolved_by``: ``direct`` | ``normalized`` | ``redirect`` |
    ``search`` | ``override`` (``""`` for built-in pages and caches written without it);
    ``redirect_from``: the redirect's source title; ``disambiguation_page``: the
    disambiguation page a ``search`` resolution started from.
    """
    if not wiki_used:
        return ("", "", "", "")
    if not page:
        return ("missing", "", "", "")
    return (str(page.get("status") or "missing"), str(page.get("resolved_by") or ""),
            str(page.get("redirect_from") or ""), str(page.get("disambiguation_page") or ""))


# ----------------------------------------------------------------------------- overrides


def load_overrides(path: str | Path) -> dict[str, str]:
    """Override file -> ``{normalised class name: title}`` (see :mod:`langtail.corpus.wikipedia`)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    out: dict[str, str] = {}
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object {{class name: page title}}")
        for k, v in raw.items():
            out[normalize_name(str(k))] = "" if v is None else str(v).strip()
        return out
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" not in line:
            raise ValueError(f"{path}:{i}: expected 'class name<TAB>page title', got {line!r}")
        k, v = line.split("\t", 1)
        if i == 1 and k.strip().lower() in ("class", "class_name", "name") and v.strip().lower() in ("title", "page", "page_title"):
            continue  # header
        out[normalize_name(k)] = v.strip()
    return out
