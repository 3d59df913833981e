"""MediaWiki requests 1-3 and their answers: page look-up, disambiguation search, extract.

:class:`WikipediaFetcher` resolves one class name to its page (raw-page dict in the cache
format); the requests are described in :mod:`langtail.corpus.wikipedia`.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from langtail.config import CorpusConfig
from langtail.corpus.classes import display_name, normalize_name
from langtail.corpus.wiki_cache import load_overrides, now_iso
from langtail.corpus.wiki_client import MAX_WAIT_S, MediaWikiApiError, RetryLater, is_transient, make_client, \
    warn_no_contact

log = logging.getLogger(__name__)

#: MediaWiki's limit of titles per query for ordinary (non-bot) clients
BATCH_SIZE = 50
#: and a bound on the joined titles, so the GET URL stays short
BATCH_CHARS = 4000
_BAD_TITLE_CHARS = set("|[]{}<>")


@dataclass
class PageInfo:
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


def resolution_of(query: str, info: PageInfo) -> str:
    """How a looked-up title reached its page: ``redirect`` | ``normalized`` | ``direct``.

    ``normalized``: MediaWiki changed the title beyond the trivial first-letter / underscore
    normalisation (namespace or interwiki prefix, Unicode form, ...).
    """
    if info.redirect_from:
        return "redirect"
    if info.normalized and info.normalized != _title_key(query):
        return "normalized"
    return "direct"


def title_batches(titles: list[str]) -> list[list[str]]:
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


class WikipediaFetcher:
    """Resolve class names to pages and fetch their plain-text extracts."""

    def __init__(self, cfg: CorpusConfig, retry_wait: float = 1.0):
        self.cfg = cfg
        self.retry_wait = retry_wait
        self.client, self.api_url = make_client(cfg, retry_wait)
        warn_no_contact(cfg, self.api_url)
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
            except Exception as e:  # noqa: BLE001 - sorted by is_transient
                if not is_transient(e) or attempt >= self.cfg.max_retries:
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

    def info(self, titles: list[str]) -> dict[str, PageInfo]:
        """Request 1 for up to ``BATCH_SIZE`` titles (one request + continuations)
        -> {requested title: PageInfo}."""
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
            out[t] = PageInfo(title=cur, pageid=-1 if missing else int(p["pageid"]),
                           revid=int(p.get("lastrevid", -1) or -1) if not missing else -1,
                           missing=missing, disambiguation="disambiguation" in (p.get("pageprops") or {}),
                           redirect_from=redirect_from, normalized=normalized)
        return out

    def info_batched(self, titles: Iterable[str]) -> dict[str, PageInfo]:
        """Request 1 for any number of titles, ``BATCH_SIZE`` per request (1,000 titles: 20
        requests). A title MediaWiki cannot hold (``|``, ``[]{}<>``) is reported missing
        without a request (logged)."""
        uniq = list(dict.fromkeys(titles))
        out: dict[str, PageInfo] = {}
        ok = []
        for t in uniq:
            if _BAD_TITLE_CHARS & set(t) or not t.strip():
                log.warning("%r cannot be a MediaWiki title (characters %s are not allowed): no page; "
                            "map the class to a title in corpus.overrides_file", t, "".join(sorted(_BAD_TITLE_CHARS)))
                out[t] = PageInfo(title=t, pageid=-1, revid=-1, missing=True, disambiguation=False,
                               redirect_from="", normalized=t)
            else:
                ok.append(t)
        for batch in title_batches(ok):
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
    def _resolve_disambiguation(self, query: str, disamb_title: str) -> PageInfo | None:
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

    def fetch(self, class_name: str, info: PageInfo | None = None) -> dict[str, Any]:
        """Resolve and fetch one class -> raw-page dict (cache format).

        ``info``: the result of request 1 for :meth:`lookup_title` when it was already
        made in a batch (:func:`~langtail.corpus.wikipedia.crawl`); otherwise it is requested here.
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

