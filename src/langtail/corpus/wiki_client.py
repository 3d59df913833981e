"""The MediaWiki HTTP client: endpoint, User-Agent, ``maxlag`` and which errors are retried.

See :mod:`langtail.corpus.wikipedia` for the transport and the retry policy;
:meth:`langtail.corpus.wiki_fetch.WikipediaFetcher.api` runs the retries.
"""
from __future__ import annotations

import logging
import re
import threading
from typing import Any, Mapping

from langtail.config import CorpusConfig

log = logging.getLogger(__name__)


class MediaWikiApiError(RuntimeError):
    """An API ``{"error": {...}}`` body (HTTP 200); not retried."""


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

#: longest wait honoured from a Retry-After header or a maxlag answer (seconds)
MAX_WAIT_S = 120.0
_WIKIMEDIA_HOST = re.compile(r"^https?://([^/]*\.)?(wikipedia|wikimedia|wikidata|wiktionary|wikibooks|wikiquote|"
                             r"wikisource|wikinews|wikiversity|wikivoyage|mediawiki)\.org(:\d+)?(/|$)")
_EMAIL = re.compile(r"^(mailto:)?[^@\s]+@[^@\s]+\.[^@\s]+$")
_URL = re.compile(r"^https?://\S+$")
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


def warn_no_contact(cfg: CorpusConfig, api_url: str) -> None:
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


def make_client(cfg: CorpusConfig, retry_wait: float) -> tuple[Any, str]:
    """``(the wikipediaapi client for cfg, its endpoint)``: endpoint, User-Agent, timeout; no retries
    of its own (:meth:`~langtail.corpus.wiki_fetch.WikipediaFetcher.api` retries, see
    :mod:`langtail.corpus.wikipedia`)."""
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


def is_transient(exc: BaseException) -> bool:
    import httpx
    import wikipediaapi

    if isinstance(exc, (RetryLater, wikipediaapi.WikiRateLimitError, wikipediaapi.WikiHttpTimeoutError,
                        wikipediaapi.WikiConnectionError, wikipediaapi.WikiInvalidJsonError, httpx.TransportError)):
        return True
    return isinstance(exc, wikipediaapi.WikiHttpError) and exc.status_code >= 500
