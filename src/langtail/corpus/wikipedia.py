"""Wikipedia pages per class: crawl the MediaWiki API, cache raw pages, resume, offline.

Transport: :mod:`wikipediaapi` (the ``wikipedia-api`` package, >= 0.16). Its client
builds the endpoint in ``_build_url(language)`` (``https://<lang>.wikipedia.org/w/api.php``);
:class:`MediaWikiClient` subclasses :class:`wikipediaapi.Wikipedia` and overrides that
method to return ``CorpusConfig.api_url`` instead, so mirrors and offline replays work,
and ``_process_response`` to turn a MediaWiki ``maxlag`` answer into :class:`MaxLagError`.
Requests go through the client's ``_get(language, params)`` (its ``httpx`` client and
typed errors) with our own query parameters (the library's page objects cannot ask for
``pageprops``) and the library's own retries switched off: version 0.16 retries only
errors raised while connecting, not a connection dropped mid-response.
:meth:`WikipediaFetcher.api` retries instead, at most ``max_retries`` times per request:
connection errors (refused, reset, closed mid-body), timeouts (``timeout_s`` per connect
or read, so a response that stalls counts), HTTP 429 and 5xx, invalid JSON bodies and
``maxlag`` answers; it waits the ``Retry-After`` seconds (429, 502-504, maxlag) or the reported
``lag`` (maxlag), capped at ``MAX_WAIT_S``, else ``retry_wait * 2**(attempt-1)``. API
error bodies and other 4xx are raised at once. Every request carries
``maxlag=<corpus.maxlag>`` (unless 0) and the User-Agent :func:`build_user_agent`
(``corpus.user_agent`` + ``corpus.contact``); crawling a Wikimedia site without a contact
logs one warning per process.

Requests (``format=json``, formatversion 1, ``redirects=1``):

1. ``action=query&prop=info|pageprops&ppprop=disambiguation&inprop=url&titles=<t1>|...|<t50>``
   for all classes of a crawl, ``BATCH_SIZE`` (50) titles per request, continuations
   merged: normalisation (``query.normalized``), redirects (``query.redirects``), missing
   pages (``"missing"``), disambiguation (``pageprops.disambiguation``), revision
   (``lastrevid``).
2. Only for a disambiguation page: ``list=search&srsearch=<name>&srnamespace=0&srlimit=10``,
   then request 1 for the hits (batched): the first hit, in search order, that exists,
   is not a disambiguation page and does not have "(disambiguation)" in its title is
   taken (``resolved_by = "search"``). If none qualifies: status
   ``disambiguation_unresolved`` (no text).
3. ``action=query&prop=extracts&explaintext=1&exsectionformat=wiki&titles=<title>``:
   the plain-text article (one per class with a page).

Override file (``CorpusConfig.overrides_file``), consulted before step 1: TSV lines
``class name<TAB>Page title`` (``#`` comments and a ``class<TAB>title`` header allowed)
or a JSON object ``{class name: title}``; class names are matched by
:func:`~langtail.corpus.classes.normalize_name`. A title of ``""`` or ``"-"`` means "this
class has no page" (status ``missing``, no request). A cached page that disagrees with
the file (other override title, or an override since removed) is refetched
(:func:`stale_by_overrides`).

Cache layout (``cache_dir``): one JSON file per class, ``<slug>-<hash>.json`` where slug
is the lower-cased name with runs of non-alphanumerics replaced by ``_`` (at most 60
chars) and hash the first 10 hex digits of SHA-1 of the exact class name (UTF-8)
(:func:`langtail.io.safe_filename`: no name can leave ``cache_dir``). Fields:
``query`` (class name), ``title``, ``pageid`` (int, -1 if none), ``revid`` (int, -1 if
none), ``fetched_at`` (ISO-8601 UTC), ``language``, ``api_url``, ``status`` (``ok`` |
``missing`` | ``disambiguation_unresolved``), ``text`` (the extract, see
:mod:`langtail.corpus.clean`), and, for crawled pages, ``resolved_by`` (``direct`` |
``normalized`` | ``redirect`` | ``override`` | ``search``, see :func:`resolution_of`),
``redirect_from``, ``disambiguation_page`` (the disambiguation page a search started
from) and, for overridden classes, ``override`` (the override title, ``-`` = no page).
Every file is written atomically as soon as its page arrives, so an interrupted crawl
resumes where it stopped: a rerun requests only classes without a cache file. Delete a
file to refet

Code: the cache and override file in :mod:`langtail.corpus.wiki_cache`, the HTTP client
and its retries in :mod:`langtail.corpus.wiki_client`, the requests and their answers
in :mod:`langtail.corpus.wiki_fetch`; the crawl (:func:`crawl`, :func:`ensure_pages`) here.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Mapping

from langtail.config import CorpusConfig
from langtail.corpus.wiki_cache import (OfflineCacheMiss, cache_path, load_overrides, missing_from_cache, read_cached,
                                        seed_cache, stale_by_overrides, write_cached)
from langtail.corpus.wiki_fetch import PageInfo, WikipediaFetcher, title_batches

log = logging.getLogger(__name__)


class CrawlError(RuntimeError):
    """Some classes could not be fetched; the others are cached. ``.failed``: name -> error."""

    def __init__(self, failed: dict[str, str]):
        self.failed = dict(failed)
        super().__init__(f"{len(failed)} class(es) could not be fetched (rerun to retry only these): "
                         + "; ".join(f"{k!r}: {v}" for k, v in failed.items()))


# ----------------------------------------------------------------------------- crawl


def crawl(class_names: list[str], cfg: CorpusConfig, cache_dir: str | Path, *, retry_wait: float = 1.0,
          progress: bool = True, on_page: Callable[[str, dict], None] | None = None) -> dict[str, str]:
    """Fetch every class without a cache file; write each page atomically as it arrives.

    First the page look-up (request 1) of all these classes, ``BATCH_SIZE`` (50) titles
    per request (1,000 classes: 20 requests); then, per class, the disambiguation search
    where needed and the extract. At most ``cfg.max_concurrency`` requests are in flight
    (one worker thread per request slot, each handling one batch or class at a time). Returns ``{class: status}`` for
    the classes fetched now. Classes that fail after all retries do not stop the others;
    a :class:`CrawlError` listing them is raised at the end (rerun to retry only them).
    ``on_page(name, page)`` is called after each page is written (progress hooks,
    tests). A ``KeyboardInterrupt`` stops the crawl; finished pages stay cached.
    """
    from tqdm.auto import tqdm

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    todo = _to_fetch(class_names, cfg, cache_dir)
    if not todo:
        return {}
    fetcher = WikipediaFetcher(cfg, retry_wait=retry_wait)
    bar = tqdm(total=len(todo), desc=f"wikipedia ({cfg.language})", unit="page", disable=not progress)
    run = _CrawlRun(fetcher, cache_dir, bar, on_page)
    try:
        run.run(todo, max(1, cfg.max_concurrency))
    finally:
        bar.close()
        fetcher.close()
    if run.failed:
        raise CrawlError({n: run.failed[n] for n in todo if n in run.failed})
    return run.done


def _to_fetch(class_names: list[str], cfg: CorpusConfig, cache_dir: Path) -> list[str]:
    """The classes :func:`crawl` fetches: those without a cache file, then those stale by the overrides."""
    todo = missing_from_cache(cache_dir, class_names)
    if cfg.overrides_file:
        stale = stale_by_overrides(cache_dir, class_names, load_overrides(cfg.overrides_file))
        if stale:
            log.info("refetching %d class(es) whose cached page disagrees with %s: %s", len(stale),
                     cfg.overrides_file, ", ".join(map(repr, stale)))
        todo += [n for n in stale if n not in todo]
    return todo


class _CrawlRun:
    """One crawl's shared state: look-up results, pages done (name -> status) and failed (name -> error)."""

    def __init__(self, fetcher: WikipediaFetcher, cache_dir: Path, bar: Any,
                 on_page: Callable[[str, dict], None] | None):
        self.fetcher = fetcher
        self.cache_dir = cache_dir
        self.bar = bar
        self.on_page = on_page
        self.done: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.infos: dict[str, PageInfo] = {}
        self.lookup_failed: dict[str, str] = {}  # title -> error of its batch

    def look_up(self, batch: list[str]) -> None:
        """Request 1 for one batch of titles; a failed batch fails its classes only."""
        if self.stop.is_set():
            return
        try:
            res = self.fetcher.info_batched(batch)
        except Exception as e:  # noqa: BLE001 - the classes of this batch fail, the others go on
            with self.lock:
                self.lookup_failed.update(dict.fromkeys(batch, f"{type(e).__name__}: {e}"))
            log.error("page look-up of %d titles failed: %s", len(batch), e)
            return
        with self.lock:
            self.infos.update(res)

    def work(self, name: str) -> None:
        """Fetch one class and write its cache file."""
        if self.stop.is_set():  # interrupted: do not start new classes
            return
        title = self.fetcher.lookup_title(name)
        if title is not None and title in self.lookup_failed:
            raise RuntimeError(f"page look-up failed: {self.lookup_failed[title]}")
        page = self.fetcher.fetch(name, self.infos.get(title) if title is not None else None)
        write_cached(self.cache_dir, name, page)
        with self.lock:
            self.done[name] = page["status"]
            self.bar.update(1)
        if self.on_page is not None:
            try:
                self.on_page(name, page)
            except (KeyboardInterrupt, SystemExit):
                self.stop.set()  # at once: the other workers start no new class before run() sees it
                raise

    def run(self, todo: list[str], max_workers: int) -> None:
        """Look up all titles, then fetch every class, ``max_workers`` requests in flight."""
        pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="wiki")
        try:
            # step 1 for all classes, BATCH_SIZE titles per request
            titles = [t for t in dict.fromkeys(self.fetcher.lookup_title(n) for n in todo) if t is not None]
            for fut in [pool.submit(self.look_up, b) for b in title_batches(titles)]:
                fut.result()
            futures = {pool.submit(self.work, n): n for n in todo}
            for fut in as_completed(futures):
                exc = fut.exception()
                if exc is None:
                    continue
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise exc
                self.failed[futures[fut]] = f"{type(exc).__name__}: {exc}"
                log.error("could not fetch %r: %s", futures[fut], exc)
        except BaseException:
            self.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)


def ensure_pages(class_names: list[str], cfg: CorpusConfig, cache_dir: str | Path,
                 builtin_pages: Mapping[str, Mapping[str, Any]] | None = None, *,
                 retry_wait: float = 1.0, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Make sure every class has a cached page and return ``{class name: page}``.

    ``builtin_pages`` are written into the cache first (where absent); with them, or
    with ``cfg.offline`` (implied by ``LANGTAIL_OFFLINE=1``), nothing is requested and classes without a cache file raise
    :class:`OfflineCacheMiss` naming exactly those classes.
    """
    from langtail.runtime import env_offline

    if env_offline() and not cfg.offline:  # an offline node: never re-fetch a stale or missing page
        log.info("%s=1: corpus.offline on (cached pages only)", "LANGTAIL_OFFLINE")
        cfg = dataclasses.replace(cfg, offline=True)
    cache_dir = Path(cache_dir)
    if builtin_pages:
        seed_cache(cache_dir, builtin_pages, cfg)
    missing = missing_from_cache(cache_dir, class_names)
    stale = stale_by_overrides(cache_dir, class_names, load_overrides(cfg.overrides_file)) \
        if cfg.overrides_file and builtin_pages is None else []
    if missing and (cfg.offline or builtin_pages is not None):
        raise OfflineCacheMiss(missing, cache_dir)
    if stale and cfg.offline:
        log.warning("offline: %d cached page(s) disagree with %s and cannot be refetched: %s", len(stale),
                    cfg.overrides_file, ", ".join(map(repr, stale)))
    elif missing or stale:
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
