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
file to refetch.
"""
from __future__ import annotations

import dataclasses

import datetime as _dt
import json
import logging
import re
import threading
import time
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


def stale_by_overrides(cache_dir: str | Path, class_names: Iterable[str], overrides: Mapping[str, str]) -> list[str]:
    """Cached classes whose page disagrees with the override file (refetched by :func:`crawl`).

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
RESOLUTION_COLUMNS = ("page_status", "resolved_by", "redirect_from", "disambiguation_page")


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


#: MediaWiki's limit of titles per query for ordinary (non-bot) clients
BATCH_SIZE = 50
#: and a bound on the joined titles, so the GET URL stays short
BATCH_CHARS = 4000
#: longest wait honoured from a Retry-After header or a maxlag answer (seconds)
MAX_WAIT_S = 120.0
_WIKIMEDIA_HOST = re.compile(r"^https?://([^/]*\.)?(wikipedia|wikimedia|wikidata|wiktionary|wikibooks|wikiquote|"
                             r"wikisource|wikinews|wikiversity|wikivoyage|mediawiki)\.org(:\d+)?(/|$)")
_EMAIL = re.compile(r"^(mailto:)?[^@\s]+@[^@\s]+\.[^@\s]+$")
_URL = re.compile(r"^https?://\S+$")
_BAD_TITLE_CHARS = set("|[]{}<>")
_warned_no_contact = False
_warn_lock = threading.Lock()


class RetryLater(RuntimeError):
    """The server asked to come back later; ``.wait`` = seconds it named (``None``: not said)."""

    def __init__(self, message: str, wait: float | None):
        self.wait = wait
        super().__init__(message)


class MaxLagError(RetryLater):
    """A MediaWiki ``maxlag`` answer; ``.wait`` = its ``Retry-After`` seconds, else its ``lag``."""

    def __init__(self, url: str, wait: float | None, info: str):
        super().__init__(f"{url}: maxlag: {info}", wait)


def build_user_agent(cfg: CorpusConfig) -> str:
    """``corpus.user_agent`` with ``corpus.contact`` added inside its final parentheses.

    ``"bot/1 (https://x; crawler)"`` + ``me@example.org`` ->
    ``"bot/1 (https://x; crawler; me@example.org)"``; without parentheses the contact is
    appended as ``" (me@example.org)"``. The contact must be an email address or an
    http(s) URL (Wikimedia User-Agent policy).
    """
    ua = cfg.user_agent.strip()
    contact = cfg.contact.strip()
    if not contact:
        return ua
    if not (_EMAIL.match(contact) or _URL.match(contact)):
        raise ValueError(f"corpus.contact: {contact!r} is neither an email address nor an http(s) URL; "
                         "set it to where Wikimedia operators can reach you (e.g. you@example.org)")
    if ua.endswith(")") and "(" in ua:
        return f"{ua[:-1]}; {contact})"
    return f"{ua} ({contact})"


def is_wikimedia(api_url: str) -> bool:
    """``api_url`` is a live Wikimedia site (Wikipedia and its sister projects)."""
    return bool(_WIKIMEDIA_HOST.match(api_url))


def _warn_no_contact(cfg: CorpusConfig, api_url: str) -> None:
    global _warned_no_contact
    if cfg.contact.strip() or "@" in cfg.user_agent or not is_wikimedia(api_url):
        return  # an email in a custom user_agent is contact information too
    with _warn_lock:
        if _warned_no_contact:
            return
        _warned_no_contact = True
    log.warning("crawling %s without corpus.contact: Wikimedia's User-Agent policy asks for contact "
                "information (https://foundation.wikimedia.org/wiki/Policy:User-Agent_policy); set "
                "corpus.contact to your email or URL (it is added to the User-Agent %r)", api_url, cfg.user_agent)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    v = (headers.get("Retry-After") or "").strip()
    try:
        return float(v) if v else None
    except ValueError:  # an HTTP date: not worth parsing, fall back to the lag / backoff
        return None


def _make_client(cfg: CorpusConfig, retry_wait: float):
    """The ``wikipediaapi`` client for ``cfg`` (endpoint, User-Agent, timeout; no retries of
    its own: :meth:`WikipediaFetcher.api` retries, see the module docstring)."""
    import wikipediaapi

    if not (hasattr(wikipediaapi.Wikipedia, "_build_url") and hasattr(wikipediaapi.Wikipedia, "_get")):
        raise RuntimeError("langtail needs wikipedia-api >= 0.16 (Wikipedia._build_url / _get); "
                           f"installed: {getattr(wikipediaapi, '__version__', '?')}")
    api_url = resolve_api_url(cfg)

    class MediaWikiClient(wikipediaapi.Wikipedia):
        """``wikipediaapi.Wikipedia`` whose endpoint is ``api_url`` (any MediaWiki) and that
        turns ``maxlag`` answers into :class:`MaxLagError`."""

        def _build_url(self, language: str) -> str:  # type: ignore[override]
            return api_url

        def _process_response(self, r: Any, url: str) -> dict[str, Any]:  # type: ignore[override]
            if r.status_code in (502, 503, 504) and _retry_after(r.headers) is not None:
                raise RetryLater(f"{url}: HTTP {r.status_code} (Retry-After {r.headers.get('Retry-After')})",
                                 _retry_after(r.headers))
            body = super()._process_response(r, url)
            err = body.get("error") if isinstance(body, dict) else None
            if isinstance(err, dict) and err.get("code") == "maxlag":
                wait = _retry_after(r.headers)
                if wait is None:
                    try:
                        wait = float(err.get("lag"))
                    except (TypeError, ValueError):
                        wait = None
                raise MaxLagError(url, wait, str(err.get("info", "")))
            return body

    client = MediaWikiClient(user_agent=build_user_agent(cfg), language=cfg.language,
                             max_retries=0, retry_wait=retry_wait, timeout=cfg.timeout_s)
    return client, api_url


@dataclass
class _Info:
    title: str  #: final title after normalisation and redirects
    pageid: int
    revid: int
    missing: bool
    disambiguation: bool
    redirect_from: str
    normalized: str = ""  #: the title after MediaWiki's normalisation, before redirects


def _pages_of(resp: Mapping[str, Any]) -> list[dict[str, Any]]:
    pages = resp.get("query", {}).get("pages", {})
    return list(pages.values()) if isinstance(pages, dict) else list(pages)


def _title_key(t: str) -> str:
    """Our guess of MediaWiki's trivial normalisation: ``_`` -> space, spaces collapsed,
    first letter upper case."""
    t = " ".join(t.replace("_", " ").split())
    return t[:1].upper() + t[1:]


def resolution_of(query: str, info: _Info) -> str:
    """How a looked-up title reached its page: ``redirect`` | ``normalized`` | ``direct``.

    ``normalized``: MediaWiki changed the title beyond the trivial first-letter / underscore
    normalisation (namespace or interwiki prefix, Unicode form, ...).
    """
    if info.redirect_from:
        return "redirect"
    if info.normalized and info.normalized != _title_key(query):
        return "normalized"
    return "direct"


def _batches(titles: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    cur: list[str] = []
    size = 0
    for t in titles:
        if cur and (len(cur) >= BATCH_SIZE or size + len(t) + 1 > BATCH_CHARS):
            out.append(cur)
            cur, size = [], 0
        cur.append(t)
        size += len(t) + 1
    if cur:
        out.append(cur)
    return out


def _is_transient(exc: BaseException) -> bool:
    import httpx
    import wikipediaapi

    if isinstance(exc, (RetryLater, wikipediaapi.WikiRateLimitError, wikipediaapi.WikiHttpTimeoutError,
                        wikipediaapi.WikiConnectionError, wikipediaapi.WikiInvalidJsonError, httpx.TransportError)):
        return True
    return isinstance(exc, wikipediaapi.WikiHttpError) and exc.status_code >= 500


class WikipediaFetcher:
    """Resolve class names to pages and fetch their plain-text extracts."""

    def __init__(self, cfg: CorpusConfig, retry_wait: float = 1.0):
        self.cfg = cfg
        self.retry_wait = retry_wait
        self.client, self.api_url = _make_client(cfg, retry_wait)
        _warn_no_contact(cfg, self.api_url)
        self.overrides: dict[str, str] = load_overrides(cfg.overrides_file) if cfg.overrides_file else {}
        self.language = cfg.language

    def close(self) -> None:
        try:
            self.client._client.close()
        except Exception:  # pragma: no cover
            pass

    # -- raw API -------------------------------------------------------------
    def _wait_before_retry(self, exc: BaseException, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based) after ``exc``."""
        import wikipediaapi

        told = None
        if isinstance(exc, RetryLater):
            told = exc.wait
        elif isinstance(exc, wikipediaapi.WikiRateLimitError) and exc.retry_after is not None:
            told = float(exc.retry_after)
        if told is not None:
            return min(max(told, 0.0), MAX_WAIT_S)
        return self.retry_wait * 2 ** (attempt - 1)

    def api(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """One API call with retries; raises :class:`MediaWikiApiError` on an error body.

        Transient failures -- the connection refused, reset or dropped mid-response, a
        connect/read timeout (``corpus.timeout_s``, also a body that stalls), HTTP 429 and
        5xx, a truncated/invalid JSON body, a ``maxlag`` answer -- are retried up to
        ``corpus.max_retries`` times: after the ``Retry-After`` seconds (429, maxlag) or the
        reported ``lag`` (maxlag without the header), capped at ``MAX_WAIT_S``, else
        after ``retry_wait * 2**(attempt-1)``. Other errors are raised at once.
        """
        p = {"format": "json", **params}
        if self.cfg.maxlag > 0:
            p["maxlag"] = self.cfg.maxlag
        attempt = 0
        while True:
            try:
                resp = self.client._get(self.language, p)
                break
            except Exception as e:  # noqa: BLE001 - sorted by _is_transient
                if not _is_transient(e) or attempt >= self.cfg.max_retries:
                    raise
                attempt += 1
                wait = self._wait_before_retry(e, attempt)
                log.info("%s: %s: %s; retry %d/%d in %.2f s", self.api_url, type(e).__name__, e, attempt,
                         self.cfg.max_retries, wait)
                time.sleep(wait)
        if isinstance(resp, dict) and "error" in resp:
            err = resp["error"]
            raise MediaWikiApiError(f"{self.api_url}: {err.get('code')}: {err.get('info')}")
        return resp

    def _query_all(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A ``prop=`` query with its continuations (``continue``) merged into one answer."""
        resp = self.api(params)
        merged = json.loads(json.dumps(resp))
        seen: list[Any] = []
        for _ in range(100):
            cont = resp.get("continue")
            if not cont or cont in seen:  # done (or a server repeating itself)
                break
            seen.append(cont)
            resp = self.api({**params, **cont})
            q = merged.setdefault("query", {})
            pages = q.setdefault("pages", {})
            for key, page in (resp.get("query", {}).get("pages") or {}).items():
                old = pages.setdefault(key, {})
                for k, v in page.items():
                    if isinstance(v, dict) and isinstance(old.get(k), dict):
                        old[k].update(v)
                    else:
                        old.setdefault(k, v)
        merged.pop("continue", None)
        return merged

    def info(self, titles: list[str]) -> dict[str, _Info]:
        """Request 1 for up to ``BATCH_SIZE`` titles (one request + continuations)
        -> {requested title: _Info}."""
        if len(titles) > BATCH_SIZE:
            raise ValueError(f"info: {len(titles)} titles, MediaWiki accepts at most {BATCH_SIZE}; "
                             "use info_batched")
        resp = self._query_all({"action": "query", "prop": "info|pageprops", "ppprop": "disambiguation",
                                "inprop": "url", "redirects": 1, "titles": "|".join(titles)})
        q = resp.get("query", {})
        norm = {n["from"]: n["to"] for n in q.get("normalized", [])}
        redir = {r["from"]: r["to"] for r in q.get("redirects", [])}
        by_title = {p.get("title", ""): p for p in _pages_of(resp)}
        out = {}
        for t in titles:
            cur = norm.get(t, t)
            normalized = cur
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
                           redirect_from=redirect_from, normalized=normalized)
        return out

    def info_batched(self, titles: Iterable[str]) -> dict[str, _Info]:
        """Request 1 for any number of titles, ``BATCH_SIZE`` per request (1,000 titles: 20
        requests). A title MediaWiki cannot hold (``|``, ``[]{}<>``) is reported missing
        without a request (logged)."""
        uniq = list(dict.fromkeys(titles))
        out: dict[str, _Info] = {}
        ok = []
        for t in uniq:
            if _BAD_TITLE_CHARS & set(t) or not t.strip():
                log.warning("%r cannot be a MediaWiki title (characters %s are not allowed): no page; "
                            "map the class to a title in corpus.overrides_file", t, "".join(sorted(_BAD_TITLE_CHARS)))
                out[t] = _Info(title=t, pageid=-1, revid=-1, missing=True, disambiguation=False,
                               redirect_from="", normalized=t)
            else:
                ok.append(t)
        for batch in _batches(ok):
            out.update(self.info(batch))
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
        infos = self.info_batched(hits)
        for t in hits:
            i = infos[t]
            if not i.missing and not i.disambiguation and i.title != disamb_title:
                return i
        return None

    def lookup_title(self, class_name: str) -> str | None:
        """The title request 1 asks for: the override's title, else the display name;
        ``None`` when an override says the class has no page."""
        key = normalize_name(class_name)
        if key in self.overrides:
            title = self.overrides[key]
            return None if title in ("", "-") else title
        return display_name(class_name)

    def fetch(self, class_name: str, info: _Info | None = None) -> dict[str, Any]:
        """Resolve and fetch one class -> raw-page dict (cache format).

        ``info``: the result of request 1 for :meth:`lookup_title` when it was already
        made in a batch (:func:`crawl`); otherwise it is requested here.
        """
        query = self.lookup_title(class_name)
        page: dict[str, Any] = {"query": class_name, "title": "", "pageid": -1, "revid": -1,
                                "fetched_at": now_iso(), "language": self.language, "api_url": self.api_url,
                                "status": "missing", "text": "", "resolved_by": "", "redirect_from": "",
                                "disambiguation_page": ""}
        overridden = normalize_name(class_name) in self.overrides
        if overridden:
            page["override"] = self.overrides[normalize_name(class_name)] or "-"
        if query is None:
            page["resolved_by"] = "override"
            return page
        if info is None:
            info = self.info_batched([query])[query]
        if overridden:
            page["resolved_by"] = "override"
            if info.disambiguation:
                log.warning("override for %r points at a disambiguation page %r; using it", class_name, info.title)
        else:
            page["resolved_by"] = resolution_of(query, info)
            if not info.missing and info.disambiguation:
                page["disambiguation_page"] = info.title
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
    todo = missing_from_cache(cache_dir, class_names)
    if cfg.overrides_file:
        stale = stale_by_overrides(cache_dir, class_names, load_overrides(cfg.overrides_file))
        if stale:
            log.info("refetching %d class(es) whose cached page disagrees with %s: %s", len(stale),
                     cfg.overrides_file, ", ".join(map(repr, stale)))
        todo += [n for n in stale if n not in todo]
    if not todo:
        return {}
    fetcher = WikipediaFetcher(cfg, retry_wait=retry_wait)
    done: dict[str, str] = {}
    failed: dict[str, str] = {}
    lock = threading.Lock()
    bar = tqdm(total=len(todo), desc=f"wikipedia ({cfg.language})", unit="page", disable=not progress)

    stop = threading.Event()
    infos: dict[str, _Info] = {}
    lookup_failed: dict[str, str] = {}  # title -> error of its batch

    def look_up(batch: list[str]) -> None:
        if stop.is_set():
            return
        try:
            res = fetcher.info_batched(batch)
        except Exception as e:  # noqa: BLE001 - the classes of this batch fail, the others go on
            with lock:
                lookup_failed.update(dict.fromkeys(batch, f"{type(e).__name__}: {e}"))
            log.error("page look-up of %d titles failed: %s", len(batch), e)
            return
        with lock:
            infos.update(res)

    def work(name: str) -> None:
        if stop.is_set():  # interrupted: do not start new classes
            return
        title = fetcher.lookup_title(name)
        if title is not None and title in lookup_failed:
            raise RuntimeError(f"page look-up failed: {lookup_failed[title]}")
        page = fetcher.fetch(name, infos.get(title) if title is not None else None)
        write_cached(cache_dir, name, page)
        with lock:
            done[name] = page["status"]
            bar.update(1)
        if on_page is not None:
            on_page(name, page)

    pool = ThreadPoolExecutor(max_workers=max(1, cfg.max_concurrency), thread_name_prefix="wiki")
    try:
        # step 1 for all classes, BATCH_SIZE titles per request
        titles = [t for t in dict.fromkeys(fetcher.lookup_title(n) for n in todo) if t is not None]
        for fut in [pool.submit(look_up, b) for b in _batches(titles)]:
            fut.result()
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
