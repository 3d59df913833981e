"""Wikipedia pages per class: crawl the MediaWiki API, cache raw pages, resume, offline.

Transport: :mod:`wikipediaapi` (the ``wikipedia-api`` package, >= 0.16). Its client
builds the endpoint in ``_build_url(language)`` (``https://<lang>.wikipedia.org/w/api.php``);
:class:`MediaWikiClient` subclasses :class:`wikipediaapi.Wikipedia` and overrides that one
method to return ``CorpusConfig.api_url`` instead, so mirrors and offline replays work,
and calls the client's ``_get(language, params)`` -- the library's request path with its
``httpx`` client, typed errors and ``tenacity`` retries (HTTP 429 honouring
``Retry-After`` in seconds, 5xx, timeouts and connection errors; at most
``max_retries`` retries, exponential backoff ``retry_wait * 2**(attempt-1)``) -- with
our own query parameters (the library's page objects cannot ask for ``pageprops``).

Requests per class (``format=json``, formatversion 1, ``redirects=1``):

1. ``action=query&prop=info|pageprops&ppprop=disambiguation&inprop=url&titles=<name>``:
   normalisation (``query.normalized``), redirects (``query.redirects``), missing pages
   (``"missing"``), disambiguation (``pageprops.disambiguation``), revision
   (``lastrevid``).
2. Only for a disambiguation page: ``list=search&srsearch=<name>&srnamespace=0&srlimit=10``,
   then request 1 for the hits (batched): the first hit, in search order, that exists,
   is not a disambiguation page and does not have "(disambiguation)" in its title is
   taken (``resolved_by = "search"``). If none qualifies: status
   ``disambiguation_unresolved`` (no text).
3. ``action=query&prop=extracts&explaintext=1&exsectionformat=wiki&titles=<title>``:
   the plain-text article.

Override file (``CorpusConfig.overrides_file``), consulted before step 1: TSV lines
``class name<TAB>Page title`` (``#`` comments and a ``class<TAB>title`` header allowed)
or a JSON object ``{class name: title}``; class names are matched by
:func:`~langtail.corpus.classes.normalize_name`. A title of ``""`` or ``"-"`` means "this
class has no page" (status ``missing``, no request).

Cache layout (``cache_dir``): one JSON file per class, ``<slug>-<hash>.json`` where slug
is the lower-cased name with runs of non-alphanumerics replaced by ``_`` (at most 60
chars) and hash the first 10 hex digits of SHA-1 of the exact class name (UTF-8)
(:func:`langtail.io.safe_filename`: no name can leave ``cache_dir``). Fields:
``query`` (class name), ``title``, ``pageid`` (int, -1 if none), ``revid`` (int, -1 if
none), ``fetched_at`` (ISO-8601 UTC), ``language``, ``api_url``, ``status`` (``ok`` |
``missing`` | ``disambiguation_unresolved``), ``text`` (the extract, see
:mod:`langtail.corpus.clean`), and, for crawled pages, ``resolved_by`` (``direct`` |
``redirect`` | ``override`` | ``search``) and ``redirect_from``. Every file is written
atomically as soon as its page arrives, so an interrupted crawl resumes where it
stopped: a rerun requests only classes without a cache file. Delete a file to refetch.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from langtail.config import CorpusConfig
from langtail.corpus.classes import display_name, normalize_name
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


class CrawlError(RuntimeError):
    """Some classes could not be fetched; the others are cached. ``.failed``: name -> error."""

    def __init__(self, failed: dict[str, str]):
        self.failed = dict(failed)
        super().__init__(f"{len(failed)} class(es) could not be fetched (rerun to retry only these): "
                         + "; ".join(f"{k!r}: {v}" for k, v in failed.items()))


class MediaWikiApiError(RuntimeError):
    """An API ``{"error": {...}}`` body (HTTP 200); not retried."""


# ----------------------------------------------------------------------------- cache


def cache_filename(class_name: str) -> str:
    """``<slug>-<sha1[:10]>.json`` for a class name (see the module docstring; :func:`langtail.io.safe_filename`)."""
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


# ----------------------------------------------------------------------------- overrides


def load_overrides(path: str | Path) -> dict[str, str]:
    """Override file -> ``{normalised class name: title}`` (see the module docstring)."""
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


# ----------------------------------------------------------------------------- client


def resolve_api_url(cfg: CorpusConfig) -> str:
    """Endpoint for ``cfg``: ``{lang}`` in ``api_url`` is replaced by ``cfg.language``.

    For a ``https://<xx>.wikipedia.org/...`` URL whose ``xx`` differs from
    ``cfg.language`` the host follows ``cfg.language`` (so setting only ``language: de``
    crawls de.wikipedia.org). Any other URL (mirror, loopback replay) is used as is.
    """
    url = (cfg.api_url or "https://{lang}.wikipedia.org/w/api.php").replace("{lang}", cfg.language)
    m = re.match(r"^(https?://)([a-z\-]+)(\.wikipedia\.org/.*)$", url)
    if m and m.group(2) != cfg.language:
        log.info("api_url %s: using language %r from corpus.language", url, cfg.language)
        url = f"{m.group(1)}{cfg.language}{m.group(3)}"
    return url


def _make_client(cfg: CorpusConfig, retry_wait: float):
    import wikipediaapi

    if not (hasattr(wikipediaapi.Wikipedia, "_build_url") and hasattr(wikipediaapi.Wikipedia, "_get")):
        raise RuntimeError("langtail needs wikipedia-api >= 0.16 (Wikipedia._build_url / _get); "
                           f"installed: {getattr(wikipediaapi, '__version__', '?')}")
    api_url = resolve_api_url(cfg)

    class MediaWikiClient(wikipediaapi.Wikipedia):
        """``wikipediaapi.Wikipedia`` whose endpoint is ``api_url`` (any MediaWiki)."""

        def _build_url(self, language: str) -> str:  # type: ignore[override]
            return api_url

    client = MediaWikiClient(user_agent=cfg.user_agent, language=cfg.language,
                             max_retries=cfg.max_retries, retry_wait=retry_wait, timeout=cfg.timeout_s)
    return client, api_url


@dataclass
class _Info:
    title: str  #: final title after normalisation and redirects
    pageid: int
    revid: int
    missing: bool
    disambiguation: bool
    redirect_from: str


def _pages_of(resp: Mapping[str, Any]) -> list[dict[str, Any]]:
    pages = resp.get("query", {}).get("pages", {})
    return list(pages.values()) if isinstance(pages, dict) else list(pages)


class WikipediaFetcher:
    """Resolve class names to pages and fetch their plain-text extracts."""

    def __init__(self, cfg: CorpusConfig, retry_wait: float = 1.0):
        self.cfg = cfg
        self.client, self.api_url = _make_client(cfg, retry_wait)
        self.overrides: dict[str, str] = load_overrides(cfg.overrides_file) if cfg.overrides_file else {}
        self.language = cfg.language

    def close(self) -> None:
        try:
            self.client._client.close()
        except Exception:  # pragma: no cover
            pass

    # -- raw API -------------------------------------------------------------
    def api(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """One API call (with retries); raises :class:`MediaWikiApiError` on an error body."""
        p = {"format": "json", **params}
        resp = self.client._get(self.language, p)
        if isinstance(resp, dict) and "error" in resp:
            err = resp["error"]
            raise MediaWikiApiError(f"{self.api_url}: {err.get('code')}: {err.get('info')}")
        return resp

    def info(self, titles: list[str]) -> dict[str, _Info]:
        """Request 1 for up to 50 titles -> {requested title: _Info}."""
        resp = self.api({"action": "query", "prop": "info|pageprops", "ppprop": "disambiguation",
                         "inprop": "url", "redirects": 1, "titles": "|".join(titles)})
        q = resp.get("query", {})
        norm = {n["from"]: n["to"] for n in q.get("normalized", [])}
        redir = {r["from"]: r["to"] for r in q.get("redirects", [])}
        by_title = {p.get("title", ""): p for p in _pages_of(resp)}
        out = {}
        for t in titles:
            cur = norm.get(t, t)
            redirect_from = ""
            seen = set()
            while cur in redir and cur not in seen:  # follow (possibly chained) redirects
                seen.add(cur)
                redirect_from = redirect_from or cur
                cur = redir[cur]
            p = by_title.get(cur, {})
            missing = (not p) or "missing" in p or "invalid" in p or int(p.get("pageid", -1) or -1) < 0
            out[t] = _Info(title=cur, pageid=-1 if missing else int(p["pageid"]),
                           revid=int(p.get("lastrevid", -1) or -1) if not missing else -1,
                           missing=missing, disambiguation="disambiguation" in (p.get("pageprops") or {}),
                           redirect_from=redirect_from)
        return out

    def extract(self, title: str) -> tuple[str, int, str]:
        """Request 3 -> (text, pageid, final title)."""
        resp = self.api({"action": "query", "prop": "extracts", "explaintext": 1, "exsectionformat": "wiki",
                         "redirects": 1, "titles": title})
        pages = [p for p in _pages_of(resp) if "missing" not in p]
        if not pages:
            return "", -1, title
        p = pages[0]
        return p.get("extract", "") or "", int(p.get("pageid", -1)), p.get("title", title)

    def search(self, query: str, limit: int = 10) -> list[str]:
        resp = self.api({"action": "query", "list": "search", "srsearch": query, "srnamespace": 0,
                         "srlimit": limit})
        return [h["title"] for h in resp.get("query", {}).get("search", [])]

    # -- one class -----------------------------------------------------------
    def _resolve_disambiguation(self, query: str, disamb_title: str) -> _Info | None:
        hits = [t for t in self.search(query)
                if t != disamb_title and "(disambiguation)" not in t.lower()]
        if not hits:
            return None
        infos = self.info(hits)
        for t in hits:
            i = infos[t]
            if not i.missing and not i.disambiguation and i.title != disamb_title:
                return i
        return None

    def fetch(self, class_name: str) -> dict[str, Any]:
        """Resolve and fetch one class -> raw-page dict (cache format)."""
        query = display_name(class_name)
        page: dict[str, Any] = {"query": class_name, "title": "", "pageid": -1, "revid": -1,
                                "fetched_at": now_iso(), "language": self.language, "api_url": self.api_url,
                                "status": "missing", "text": "", "resolved_by": "", "redirect_from": ""}
        key = normalize_name(class_name)
        if key in self.overrides:
            title = self.overrides[key]
            page["resolved_by"] = "override"
            if title in ("", "-"):
                return page
            info = self.info([title])[title]
            if info.disambiguation:
                log.warning("override for %r points at a disambiguation page %r; using it", class_name, info.title)
        else:
            info = self.info([query])[query]
            page["resolved_by"] = "redirect" if info.redirect_from else "direct"
            if not info.missing and info.disambiguation:
                resolved = self._resolve_disambiguation(query, info.title)
                if resolved is None:
                    log.warning("%r: %r is a disambiguation page and no search hit qualifies "
                                "(add an override)", class_name, info.title)
                    page.update(title=info.title, pageid=info.pageid, revid=info.revid,
                                status="disambiguation_unresolved", resolved_by="search")
                    return page
                log.info("%r: disambiguation page %r resolved to %r by search", class_name, info.title, resolved.title)
                info = resolved
                page["resolved_by"] = "search"
        page["redirect_from"] = info.redirect_from
        if info.missing:
            page["title"] = info.title
            log.warning("%r: no page %r on %s", class_name, info.title, self.api_url)
            return page
        text, pageid, title = self.extract(info.title)
        page.update(title=title or info.title, pageid=pageid if pageid >= 0 else info.pageid,
                    revid=info.revid, status="ok", text=text)
        return page


# ----------------------------------------------------------------------------- crawl


def crawl(class_names: list[str], cfg: CorpusConfig, cache_dir: str | Path, *, retry_wait: float = 1.0,
          progress: bool = True, on_page: Callable[[str, dict], None] | None = None) -> dict[str, str]:
    """Fetch every class without a cache file; write each page atomically as it arrives.

    At most ``cfg.max_concurrency`` requests are in flight (one worker thread per
    request slot, each handling one class at a time). Returns ``{class: status}`` for
    the classes fetched now. Classes that fail after all retries do not stop the others;
    a :class:`CrawlError` listing them is raised at the end (rerun to retry only them).
    ``on_page(name, page)`` is called after each page is written (progress hooks,
    tests). A ``KeyboardInterrupt`` stops the crawl; finished pages stay cached.
    """
    from tqdm.auto import tqdm

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    todo = missing_from_cache(cache_dir, class_names)
    if not todo:
        return {}
    fetcher = WikipediaFetcher(cfg, retry_wait=retry_wait)
    done: dict[str, str] = {}
    failed: dict[str, str] = {}
    lock = threading.Lock()
    bar = tqdm(total=len(todo), desc=f"wikipedia ({cfg.language})", unit="page", disable=not progress)

    stop = threading.Event()

    def work(name: str) -> None:
        if stop.is_set():  # interrupted: do not start new classes
            return
        page = fetcher.fetch(name)
        write_cached(cache_dir, name, page)
        with lock:
            done[name] = page["status"]
            bar.update(1)
        if on_page is not None:
            on_page(name, page)

    pool = ThreadPoolExecutor(max_workers=max(1, cfg.max_concurrency), thread_name_prefix="wiki")
    try:
        futures = {pool.submit(work, n): n for n in todo}
        for fut in as_completed(futures):
            exc = fut.exception()
            if exc is None:
                continue
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise exc
            failed[futures[fut]] = f"{type(exc).__name__}: {exc}"
            log.error("could not fetch %r: %s", futures[fut], exc)
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()
        fetcher.close()
    if failed:
        raise CrawlError({n: failed[n] for n in todo if n in failed})
    return done


def ensure_pages(class_names: list[str], cfg: CorpusConfig, cache_dir: str | Path,
                 builtin_pages: Mapping[str, Mapping[str, Any]] | None = None, *,
                 retry_wait: float = 1.0, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Make sure every class has a cached page and return ``{class name: page}``.

    ``builtin_pages`` are written into the cache first (where absent); with them, or
    with ``cfg.offline``, nothing is requested and classes without a cache file raise
    :class:`OfflineCacheMiss` naming exactly those classes.
    """
    cache_dir = Path(cache_dir)
    if builtin_pages:
        seed_cache(cache_dir, builtin_pages, cfg)
    missing = missing_from_cache(cache_dir, class_names)
    if missing:
        if cfg.offline or builtin_pages is not None:
            raise OfflineCacheMiss(missing, cache_dir)
        crawl(class_names, cfg, cache_dir, retry_wait=retry_wait, progress=progress)
    pages = {}
    for n in class_names:
        p = read_cached(cache_dir, n)
        if p is None:  # pragma: no cover - crawl wrote every page or raised
            raise OfflineCacheMiss([n], cache_dir)
        if p.get("language") and p["language"] != cfg.language:
            log.warning("cached page for %r is in %r, config language is %r (delete %s to refetch)",
                        n, p["language"], cfg.language, cache_path(cache_dir, n))
        pages[n] = p
    return pages
