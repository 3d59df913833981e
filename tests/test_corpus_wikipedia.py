"""Wikipedia crawling against a loopback MediaWiki API (no internet).

:class:`FakeMediaWiki` is an ``http.server`` on 127.0.0.1 (random port, own thread) that
answers MediaWiki API requests from response files: the real recorded responses in
``shared/data/text/mediawiki_responses/*/index.json`` plus our own
``tests/fixtures/mediawiki/index.json`` (same index format). A request is matched on
its kind (``info`` = ``prop=info...``, ``extracts`` = ``prop=extracts...``, ``search`` =
``list=search``) and its title / search string after MediaWiki title normalisation
(``_`` -> space, first letter upper case); other parameters are ignored. A single
title with a response file gets that file verbatim; several titles (``a|b|c``) get the
per-title responses merged; an unknown title gets a ``"missing"`` page, shaped like
the recorded ``TestVcrPageExistence.test_exists_false_0.json``. Faults can be queued per
request key: an HTTP status + headers, a delay before answering (``("sleep", s)``), half
the body then a closed connection (``("drop",)``), half the body then silence
(``("stall", s)``), or a MediaWiki ``maxlag`` error body (``("maxlag", lag, headers)``);
every request is logged.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from langtail.config import CorpusConfig
from langtail.corpus import wiki_cache, wiki_client, wiki_fetch, wikipedia
from langtail.corpus.classes import display_name
from langtail.stages.corpus import write_corpus as run_corpus
from langtail.io import read_parquet, read_parquet_metadata

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures" / "mediawiki"
SHARED = Path(__file__).resolve().parents[2] / "shared"
RECORDED = SHARED / "data" / "text" / "mediawiki_responses"
needs_recorded = pytest.mark.skipif(
    not (RECORDED / "pymediawiki_2017" / "index.json").exists(),
    reason=f"recorded MediaWiki responses not found at {RECORDED} (clone the repo next to shared/)")


def norm_title(t: str) -> str:
    t = " ".join(t.replace("_", " ").split())
    return t[:1].upper() + t[1:]


def _path_for(api_url: str) -> str:
    u = urlparse(api_url)
    if u.netloc.endswith(".wikipedia.org"):
        return f"/{u.netloc.split('.')[0]}/w/api.php"
    return f"/{u.netloc.split('.')[0]}{u.path}"


def classify(params: dict) -> tuple[str, str] | None:
    if params.get("action") != "query":
        return None
    if params.get("list") == "search":
        return "search", " ".join(str(params.get("srsearch", "")).lower().split())
    prop = str(params.get("prop", ""))
    if "titles" not in params:
        return None
    titles = "|".join(norm_title(t) for t in str(params["titles"]).split("|"))
    if "extracts" in prop.split("|"):
        return "extracts", titles
    if "info" in prop.split("|"):
        return "info", titles
    return None


class FakeMediaWiki:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str, str], dict] = {}
        self.route_limited: set[tuple[str, str, str]] = set()
        self.faults: dict[tuple[str, str], list[tuple]] = {}
        self.log: list[dict] = []
        self.delay = 0.0
        self.inflight = 0
        self.max_inflight = 0
        self._lock = threading.Lock()

    # -- data ----------------------------------------------------------------
    def load_index(self, folder: Path) -> int:
        idx = json.loads((folder / "index.json").read_text())
        n = 0
        for e in idx["responses"]:
            params = e.get("params")
            if params is None:  # wikipedia_api_vcr index: parameters are in the uri
                q = parse_qs(urlparse(e["uri"]).query)
                params = {k: v[0] for k, v in q.items()}
                api = e["uri"].split("?")[0]
            else:
                api = e["api_url"]
            kind = classify(params)
            if kind is None:
                continue
            key = (_path_for(api), *kind)
            limited = any(k in params for k in ("exchars", "exsentences", "exintro"))
            if key in self.routes and limited and key not in self.route_limited:
                continue  # keep the full extract over a truncated one
            self.routes[key] = json.loads((folder / e["file"]).read_text())
            if limited:
                self.route_limited.add(key)
            n += 1
        return n

    # -- answering -----------------------------------------------------------
    def answer(self, path: str, params: dict) -> tuple[int, dict, dict]:
        if params.get("format") != "json":
            return 400, {}, {"error": {"code": "badformat", "info": "format=json expected"}}
        kind = classify(params)
        if kind is None:
            return 200, {}, {"error": {"code": "unsupported", "info": f"fake server cannot answer {params}"}}
        with self._lock:
            queue = self.faults.get(kind)
            fault = queue.pop(0) if queue else None
        if fault is not None:
            if fault[0] == "sleep":
                time.sleep(fault[1])
            elif fault[0] in ("drop", "stall"):
                return 200, {}, self._answer(path, params, kind), fault
            elif fault[0] == "maxlag":  # shape of a real maxlag answer (HTTP 200, error body)
                lag, headers = fault[1], fault[2]
                return 200, headers, {"error": {"code": "maxlag", "info": f"Waiting for 10.64.0.1: {lag} seconds lagged.",
                                                "host": "10.64.0.1", "lag": lag, "type": "db"}}
            else:
                status, headers = fault
                return status, headers, {"error": {"code": "fault", "info": f"HTTP {status}"}}
        return 200, {}, self._answer(path, params, kind)

    def _answer(self, path: str, params: dict, kind: tuple[str, str]) -> dict:
        k, key = kind
        if (path, k, key) in self.routes:
            body = self.routes[(path, k, key)]
            raw = str(params.get("titles", ""))
            norms = body.get("query", {}).get("normalized", [])
            if k != "search" and raw != key and not any(n["from"] == raw for n in norms):
                # the recording asked for the normalised title; a real server reports the step
                body = json.loads(json.dumps(body))
                body["query"]["normalized"] = [{"from": raw, "to": key}]
            return body
        if k == "search":
            return {"batchcomplete": "", "query": {"searchinfo": {"totalhits": 0}, "search": []}}
        # compose several titles / synthesise missing pages (shape of the recorded exists_false)
        raw_titles = str(params["titles"]).split("|")
        out: dict = {"batchcomplete": "", "query": {"pages": {}}}
        q = out["query"]
        for i, (raw, t) in enumerate(zip(raw_titles, key.split("|"))):
            body = self.routes.get((path, k, t))
            if body is None:
                if raw != t:
                    q.setdefault("normalized", []).append({"from": raw, "to": t})
                q["pages"][str(-(i + 1))] = {"ns": 0, "title": t, "missing": ""}
                continue
            bq = body.get("query", {})
            for n in bq.get("normalized", []):
                q.setdefault("normalized", []).append(n)
            if raw != t and not any(n["from"] == raw for n in bq.get("normalized", [])):
                q.setdefault("normalized", []).append({"from": raw, "to": t})  # as a real server does
            for r in bq.get("redirects", []):
                q.setdefault("redirects", []).append(r)
            q["pages"].update(bq.get("pages", {}))
        return out

    def requests(self, kind: str | None = None) -> list[tuple[str, str]]:
        return [(r["kind"], r["key"]) for r in self.log if kind is None or r["kind"] == kind]


@pytest.fixture()
def server():
    fake = FakeMediaWiki()
    fake.load_index(FIXTURES)
    if (RECORDED / "pymediawiki_2017" / "index.json").exists():
        fake.load_index(RECORDED / "pymediawiki_2017")
        fake.load_index(RECORDED / "wikipedia_api_vcr")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def do_GET(self):  # noqa: N802
            u = urlparse(self.path)
            params = {k: v[0] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
            kind = classify(params)
            with fake._lock:
                fake.inflight += 1
                fake.max_inflight = max(fake.max_inflight, fake.inflight)
                fake.log.append({"path": u.path, "params": params, "kind": kind[0] if kind else None,
                                 "key": kind[1] if kind else None, "t": time.monotonic(),
                                 "ua": self.headers.get("User-Agent", "")})
            try:
                if fake.delay:
                    time.sleep(fake.delay)
                status, headers, body, *fault = fake.answer(u.path, params)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for h, v in headers.items():
                    self.send_header(h, v)
                self.end_headers()
                if fault and fault[0][0] == "drop":  # half the body, then the connection is closed
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault and fault[0][0] == "stall":  # half the body, then nothing for a while
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    time.sleep(fault[0][1])
                    self.close_connection = True
                    return
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with fake._lock:
                    fake.inflight -= 1

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    fake.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()


def cfg_for(server, **kw) -> CorpusConfig:
    base = dict(api_url=server.base + "/{lang}/w/api.php", max_concurrency=1, max_retries=3, timeout_s=5.0,
                user_agent="langtail-tests/0.1 (loopback; tests@example.org)")
    base.update(kw)
    return CorpusConfig(**base)


def crawl(names, cfg, cache, **kw):
    kw.setdefault("retry_wait", 0.01)
    kw.setdefault("progress", False)
    return wikipedia.crawl(names, cfg, cache, **kw)


# ----------------------------------------------------------------------------- tests


def test_normal_page_and_cache_format(server, tmp_path):
    cfg = cfg_for(server)
    assert crawl(["tench"], cfg, tmp_path) == {"tench": "ok"}
    page = json.loads(wiki_cache.cache_path(tmp_path, "tench").read_text())
    assert set(wiki_cache.CACHE_FIELDS) <= set(page)
    assert page["query"] == "tench" and page["title"] == "Tench" and page["status"] == "ok"
    assert page["pageid"] == 313389 and page["revid"] == 1221000001
    assert page["language"] == "en" and page["api_url"] == server.base + "/en/w/api.php"
    assert page["text"].startswith("The tench (Tinca tinca)") and "== Description ==" in page["text"]
    assert page["resolved_by"] == "direct" and page["fetched_at"].endswith("+00:00")
    assert server.requests() == [("info", "Tench"), ("extracts", "Tench")]
    assert all(r["ua"].startswith(cfg.user_agent) for r in server.log)
    info = server.log[0]["params"]
    assert info["prop"] == "info|pageprops" and info["ppprop"] == "disambiguation" and info["redirects"] == "1"
    ext = server.log[1]["params"]
    assert ext["explaintext"] == "1" and ext["exsectionformat"] == "wiki"


def test_redirect_followed(server, tmp_path):
    crawl(["aeroplane"], cfg_for(server), tmp_path)
    page = wiki_cache.read_cached(tmp_path, "aeroplane")
    assert page["title"] == "Airplane" and page["status"] == "ok" and page["pageid"] == 9540
    assert page["resolved_by"] == "redirect" and page["redirect_from"] == "Aeroplane"
    assert server.requests("extracts") == [("extracts", "Airplane")]


@needs_recorded
def test_recorded_pages_area_python_and_missing(server, tmp_path):
    names = ["area", "Python_(programming_language)", "NonExistentPage_WikiAPI_Test_12345"]
    done = crawl(names, cfg_for(server), tmp_path)
    assert done == {"area": "ok", "Python_(programming_language)": "ok",
                    "NonExistentPage_WikiAPI_Test_12345": "missing"}
    area = wiki_cache.read_cached(tmp_path, "area")
    assert area["title"] == "Area" and area["pageid"] == 1209 and "== Formal definition ==" in area["text"]
    py = wiki_cache.read_cached(tmp_path, "Python_(programming_language)")
    assert py["title"] == "Python (programming language)" and py["pageid"] == 23862
    assert py["revid"] == 1345336232
    missing = wiki_cache.read_cached(tmp_path, "NonExistentPage_WikiAPI_Test_12345")
    assert missing["pageid"] == -1 and missing["text"] == ""
    assert ("extracts", "NonExistentPage WikiAPI Test 12345") not in server.requests()


@needs_recorded
def test_disambiguation_resolved_by_search(server, tmp_path):
    crawl(["castor"], cfg_for(server), tmp_path)
    page = wiki_cache.read_cached(tmp_path, "castor")
    # the recorded 'castor' response is a disambiguation page; search hits: Castor (itself),
    # Castor (name) (another disambiguation page), Castor (star) -> chosen
    assert page["status"] == "ok" and page["title"] == "Castor (star)" and page["resolved_by"] == "search"
    assert ("search", "castor") in server.requests()
    assert ("info", "Castor (name)|Castor (star)|Castor oil") in server.requests()


@needs_recorded
def test_disambiguation_unresolved_then_override(server, tmp_path):
    cfg = cfg_for(server)
    crawl(["bush"], cfg, tmp_path / "a")
    page = wiki_cache.read_cached(tmp_path / "a", "bush")
    assert page["status"] == "disambiguation_unresolved" and page["title"] == "Bush" and page["text"] == ""
    ov = tmp_path / "overrides.tsv"
    ov.write_text("class\ttitle\n# comment\nBush\tShrub\nnothing_here\t-\n")
    cfg2 = cfg_for(server, overrides_file=str(ov))
    crawl(["bush", "nothing_here"], cfg2, tmp_path / "b")
    page = wiki_cache.read_cached(tmp_path / "b", "bush")
    assert page["status"] == "ok" and page["title"] == "Shrub" and page["resolved_by"] == "override"
    assert wiki_cache.read_cached(tmp_path / "b", "nothing_here")["status"] == "missing"
    assert ("info", "Nothing here") not in server.requests()
    ovj = tmp_path / "overrides.json"
    ovj.write_text(json.dumps({"BUSH": "Shrub"}))
    assert wiki_cache.load_overrides(ovj) == {"bush": "Shrub"}


@needs_recorded
def test_non_wikipedia_mediawiki_normalised_and_redirected(server, tmp_path):
    cfg = cfg_for(server, api_url=server.base + "/awoiaf/api.php")
    crawl(["arya"], cfg, tmp_path)
    page = wiki_cache.read_cached(tmp_path, "arya")
    assert page["title"] == "Arya Stark" and page["pageid"] == 1635 and page["revid"] == 193079
    assert page["redirect_from"] == "Arya" and page["text"].startswith("Arya Stark is")


def test_other_language(server, tmp_path):
    cfg = cfg_for(server, language="de", drop_sections=["literatur", "weblinks", "einzelnachweise"])
    crawl(["Schleie"], cfg, tmp_path / "cache")
    page = wiki_cache.read_cached(tmp_path / "cache", "Schleie")
    assert page["language"] == "de" and page["api_url"].endswith("/de/w/api.php")
    assert {r["path"] for r in server.log} == {"/de/w/api.php"}
    cfg_off = cfg_for(server, language="de", drop_sections=["literatur", "weblinks"], offline=True,
                      sources=["wiki"])
    run_corpus(["Schleie"], cfg_off, tmp_path / "c.parquet", tmp_path / "s.parquet", tmp_path / "cache")
    df = read_parquet(tmp_path / "c.parquet")
    assert "Die Schleie (Tinca tinca) ist ein kräftiger Süßwasserfisch aus der Familie der Karpfenfische." \
        in df["sentence"].tolist()
    assert not df["section"].isin(["Literatur", "Weblinks"]).any()
    assert any(s.startswith("Sie lebt in Seen") and "z. B. in flachen" in s for s in df["sentence"])


def test_resolve_api_url_language():
    assert wiki_client.resolve_api_url(CorpusConfig(language="de")) == "https://de.wikipedia.org/w/api.php"
    assert wiki_client.resolve_api_url(CorpusConfig(api_url="http://mirror/{lang}/api.php", language="fr")) == \
        "http://mirror/fr/api.php"
    assert wiki_client.resolve_api_url(CorpusConfig(api_url="http://mirror/api.php", language="fr")) == \
        "http://mirror/api.php"


def test_429_retry_after_then_success(server, tmp_path):
    server.faults[("info", "Tench")] = [(429, {"Retry-After": "1"})]
    crawl(["tench"], cfg_for(server), tmp_path, retry_wait=0.01)
    infos = [r for r in server.log if r["kind"] == "info"]
    assert len(infos) == 2
    assert infos[1]["t"] - infos[0]["t"] >= 0.9  # Retry-After: 1 honoured (backoff base is 0.01 s)
    assert wiki_cache.read_cached(tmp_path, "tench")["status"] == "ok"


def test_500_then_success_and_timeout_retry(server, tmp_path):
    server.faults[("extracts", "Tench")] = [(500, {}), (503, {})]
    server.faults[("info", "Tench")] = [("sleep", 1.0)]
    crawl(["tench"], cfg_for(server, timeout_s=0.3), tmp_path)
    assert server.requests().count(("extracts", "Tench")) == 3
    assert server.requests().count(("info", "Tench")) == 2
    assert wiki_cache.read_cached(tmp_path, "tench")["status"] == "ok"


def test_retries_exhausted_others_cached_rerun_fetches_only_failed(server, tmp_path):
    server.faults[("extracts", "Airplane")] = [(500, {})] * 3
    cfg = cfg_for(server, max_retries=2)
    with pytest.raises(wikipedia.CrawlError) as e:
        crawl(["tench", "aeroplane", "Schleie"], cfg, tmp_path)
    assert list(e.value.failed) == ["aeroplane"]
    assert server.requests().count(("extracts", "Airplane")) == 3  # 1 + max_retries
    assert wiki_cache.missing_from_cache(tmp_path, ["tench", "aeroplane", "Schleie"]) == ["aeroplane"]
    server.log.clear()
    crawl(["tench", "aeroplane", "Schleie"], cfg, tmp_path)
    assert server.requests() == [("info", "Aeroplane"), ("extracts", "Airplane")]


def test_interrupted_crawl_resumes(server, tmp_path):
    names = ["tench", "aeroplane", "castor_x", "Schleie", "lonely_y", "unknown_z"]
    cfg = cfg_for(server)
    seen = []

    def stop_after_half(name, page):
        seen.append(name)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        crawl(names, cfg, tmp_path, on_page=stop_after_half)
    left = wiki_cache.missing_from_cache(tmp_path, names)
    assert 1 <= len(left) <= 3 and set(seen) == set(names) - set(left)
    server.log.clear()
    crawl(names, cfg, tmp_path)
    asked = {t for kind, key in server.requests("info") for t in key.split("|")}  # batched look-ups
    assert asked == {display_name(n)[:1].upper() + display_name(n)[1:] for n in left}
    server.log.clear()
    assert crawl(names, cfg, tmp_path) == {}
    assert server.log == []
    # offline mode now works; with a class removed from the cache it names exactly that one
    wiki_cache.cache_path(tmp_path, "Schleie").unlink()
    with pytest.raises(wiki_cache.OfflineCacheMiss) as e:
        wikipedia.ensure_pages(names, cfg_for(server, offline=True), tmp_path)
    assert e.value.missing == ["Schleie"] and server.log == []


def test_max_concurrency(server, tmp_path):
    server.delay = 0.25
    names = ["tench", "aeroplane", "Schleie", "nope_a", "nope_b", "nope_c"]
    crawl(names, cfg_for(server, max_concurrency=2), tmp_path)
    assert server.max_inflight == 2
    server.max_inflight = 0
    crawl(["nope_d", "nope_e", "nope_f"], cfg_for(server, max_concurrency=1), tmp_path)
    assert server.max_inflight == 1


def test_api_error_body_is_not_retried(server, tmp_path):
    cfg = cfg_for(server, api_url=server.base + "/nowhere/api.php")
    fetcher = wiki_fetch.WikipediaFetcher(cfg, retry_wait=0.01)
    try:
        with pytest.raises(wiki_client.MediaWikiApiError, match="unsupported"):
            fetcher.api({"action": "parse", "page": "X"})
    finally:
        fetcher.close()
    assert len(server.log) == 1


@needs_recorded
def test_stage_crawls_then_reuses_cache(server, tmp_path):
    names = ["tench", "area", "bush"]
    cfg = cfg_for(server, sources=["wiki", "prompt"])
    run_corpus(names, cfg, tmp_path / "c.parquet", tmp_path / "s.parquet", tmp_path / "cache")
    n_first = len(server.log)
    assert n_first > 0
    meta = read_parquet_metadata(tmp_path / "s.parquet")
    assert meta["classes_without_page"] == ["bush"]
    assert meta["pages_by_status"] == {"disambiguation_unresolved": 1, "ok": 2}
    st = read_parquet(tmp_path / "s.parquet")
    assert st["has_page"].tolist() == [True, True, False] and st["n_wiki"].iloc[1] > 50
    run_corpus(names, cfg, tmp_path / "c2.parquet", tmp_path / "s2.parquet", tmp_path / "cache")
    assert len(server.log) == n_first  # second build: cache only
    assert (tmp_path / "c.parquet").read_bytes() == (tmp_path / "c2.parquet").read_bytes()


# ----------------------------------------------------------------------------- issue 12


def test_connection_dropped_mid_body_is_retried(server, tmp_path):
    server.faults[("extracts", "Tench")] = [("drop",), ("drop",)]
    server.faults[("info", "Tench")] = [("drop",)]
    crawl(["tench"], cfg_for(server, timeout_s=2.0), tmp_path)
    assert server.requests().count(("info", "Tench")) == 2
    assert server.requests().count(("extracts", "Tench")) == 3
    assert wiki_cache.read_cached(tmp_path, "tench")["status"] == "ok"


def test_stalled_body_past_timeout_is_retried(server, tmp_path):
    server.faults[("extracts", "Tench")] = [("stall", 1.0)]
    server.faults[("info", "Tench")] = [("sleep", 1.0)]
    t0 = time.monotonic()
    crawl(["tench"], cfg_for(server, timeout_s=0.3), tmp_path)
    assert time.monotonic() - t0 < 5
    assert server.requests().count(("extracts", "Tench")) == 2
    assert server.requests().count(("info", "Tench")) == 2
    assert wiki_cache.read_cached(tmp_path, "tench")["status"] == "ok"


def test_transient_failures_stop_after_max_retries(server, tmp_path):
    server.faults[("extracts", "Tench")] = [("drop",)] * 5
    with pytest.raises(wikipedia.CrawlError) as e:
        crawl(["tench"], cfg_for(server, max_retries=2, timeout_s=2.0), tmp_path)
    assert list(e.value.failed) == ["tench"]
    assert server.requests().count(("extracts", "Tench")) == 3  # 1 + max_retries


@pytest.mark.parametrize("headers", [{"Retry-After": "1", "X-Database-Lag": "1"}, {}])
def test_maxlag_retried_after_reported_lag(server, tmp_path, headers):
    server.faults[("info", "Tench")] = [("maxlag", 1, headers)]
    crawl(["tench"], cfg_for(server), tmp_path, retry_wait=0.01)
    infos = [r for r in server.log if r["kind"] == "info"]
    assert len(infos) == 2
    assert infos[1]["t"] - infos[0]["t"] >= 0.9  # waited the reported lag, not the 0.01 s backoff
    assert all(r["params"].get("maxlag") == "5" for r in server.log)
    assert wiki_cache.read_cached(tmp_path, "tench")["status"] == "ok"


def test_503_retry_after_is_honoured(server, tmp_path):
    server.faults[("extracts", "Tench")] = [(503, {"Retry-After": "1"})]
    crawl(["tench"], cfg_for(server), tmp_path, retry_wait=0.01)
    ext = [r for r in server.log if r["kind"] == "extracts"]
    assert len(ext) == 2 and ext[1]["t"] - ext[0]["t"] >= 0.9


def test_maxlag_param_can_be_switched_off(server, tmp_path):
    crawl(["tench"], cfg_for(server, maxlag=0), tmp_path)
    assert all("maxlag" not in r["params"] for r in server.log)


def test_lookups_are_batched_50_titles_per_request(server, tmp_path):
    names = ["tench", "aeroplane"] + [f"unknown class {i}" for i in range(118)]
    done = crawl(names, cfg_for(server, max_concurrency=2), tmp_path)
    assert len(done) == 120
    infos = [r for r in server.log if r["kind"] == "info"]
    assert len(infos) == 3  # ceil(120 / 50)
    assert all(len(r["params"]["titles"].split("|")) <= 50 for r in infos)
    # 2 pages exist -> 2 extracts; missing pages need no second request
    assert sorted(k for _, k in server.requests("extracts")) == ["Airplane", "Tench"]
    tench, aero = wiki_cache.read_cached(tmp_path, "tench"), wiki_cache.read_cached(tmp_path, "aeroplane")
    assert (tench["status"], tench["title"], tench["resolved_by"]) == ("ok", "Tench", "direct")
    assert (aero["title"], aero["resolved_by"], aero["redirect_from"]) == ("Airplane", "redirect", "Aeroplane")
    assert wiki_cache.read_cached(tmp_path, "unknown class 7")["status"] == "missing"


def test_batched_lookup_of_1000_classes_needs_20_requests(server, tmp_path):
    fetcher = wiki_fetch.WikipediaFetcher(cfg_for(server), retry_wait=0.01)
    try:
        infos = fetcher.info_batched([f"class {i}" for i in range(1000)])
    finally:
        fetcher.close()
    assert len(infos) == 1000 and all(i.missing for i in infos.values())
    assert len(server.requests("info")) == 20


def test_resolution_normalized_title(server, tmp_path):
    # MediaWiki normalises more than the first letter: "Tinca_tinca" style or namespace
    # changes are reported as "normalized"; first-letter case alone stays "direct"
    fetcher = wiki_fetch.WikipediaFetcher(cfg_for(server), retry_wait=0.01)
    try:
        assert wiki_fetch.resolution_of("tench", wiki_fetch.PageInfo("Tench", 1, 1, False, False, "", "Tench")) == "direct"
        assert wiki_fetch.resolution_of("en:tench", wiki_fetch.PageInfo("Tench", 1, 1, False, False, "", "Tench")) \
            == "normalized"
    finally:
        fetcher.close()


@needs_recorded
def test_resolution_recorded_in_stats_and_report(server, tmp_path):
    from langtail.report.corpus import resolution_table

    ov = tmp_path / "overrides.tsv"
    ov.write_text("class\ttitle\nbush\tShrub\n")
    names = ["tench", "aeroplane", "castor", "bush", "nothing_here"]
    cfg = cfg_for(server, sources=["wiki", "prompt"], overrides_file=str(ov))
    run_corpus(names, cfg, tmp_path / "c.parquet", tmp_path / "s.parquet", tmp_path / "cache")
    st = read_parquet(tmp_path / "s.parquet")
    assert st["resolved_by"].tolist() == ["direct", "redirect", "search", "override", "direct"]
    assert st["page_status"].tolist() == ["ok", "ok", "ok", "ok", "missing"]
    assert st["page_title"].tolist()[:4] == ["Tench", "Airplane", "Castor (star)", "Shrub"]
    assert st["redirect_from"].tolist()[1] == "Aeroplane"
    assert st["disambiguation_page"].tolist()[2] == "Castor"
    table = resolution_table(st)
    assert "| castor | Castor (star) | search | disambiguation page Castor |" in table
    assert "| aeroplane | Airplane | redirect | redirect from Aeroplane |" in table
    assert "| bush | Shrub | override |" in table
    assert "tench" not in table and "overrides_file" in table


def test_contact_in_user_agent_header(server, tmp_path):
    cfg = cfg_for(server, contact="someone@example.org")
    crawl(["tench"], cfg, tmp_path)
    assert server.log and all("someone@example.org" in r["ua"] for r in server.log)
    assert all(r["ua"].startswith("langtail-tests/0.1 (loopback; tests@example.org; someone@example.org)")
               for r in server.log)


def test_user_agent_and_contact_validation():
    ua = wiki_client.build_user_agent(CorpusConfig(contact="https://example.org/me"))
    assert ua == "langtail/0.1 (https://github.com/langtail/langtail; research crawler; https://example.org/me)"
    assert wiki_client.build_user_agent(CorpusConfig(user_agent="bot/1", contact="a@b.org")) == "bot/1 (a@b.org)"
    assert wiki_client.build_user_agent(CorpusConfig()) == CorpusConfig().user_agent
    with pytest.raises(ValueError, match="corpus.contact"):
        wiki_client.build_user_agent(CorpusConfig(contact="call me"))


def test_warns_once_without_contact_on_live_wikipedia(monkeypatch, caplog, server):
    import logging

    monkeypatch.setattr(wiki_client, "_warned_no_contact", False)
    with caplog.at_level(logging.WARNING, logger="langtail.corpus.wiki_client"):
        for _ in range(2):  # no request is made by building the fetcher
            wiki_fetch.WikipediaFetcher(CorpusConfig(language="de"), retry_wait=0.01).close()
        wiki_fetch.WikipediaFetcher(CorpusConfig(contact="me@example.org"), retry_wait=0.01).close()
        wiki_fetch.WikipediaFetcher(CorpusConfig(user_agent="bot/1 (me@example.org)"), retry_wait=0.01).close()
        wiki_fetch.WikipediaFetcher(cfg_for(server), retry_wait=0.01).close()  # loopback: no warning
    msgs = [r.message for r in caplog.records if "corpus.contact" in r.message]
    assert len(msgs) == 1 and "de.wikipedia.org" in msgs[0]
    monkeypatch.setattr(wiki_client, "_warned_no_contact", False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="langtail.corpus.wiki_client"):
        wiki_fetch.WikipediaFetcher(cfg_for(server), retry_wait=0.01).close()
    assert not [r for r in caplog.records if "corpus.contact" in r.message]


@needs_recorded
def test_changed_override_refetches_only_that_class(server, tmp_path):
    cfg = cfg_for(server)
    crawl(["bush", "tench"], cfg, tmp_path)
    assert wiki_cache.read_cached(tmp_path, "bush")["status"] == "disambiguation_unresolved"
    ov = tmp_path / "overrides.tsv"
    ov.write_text("bush\tShrub\n")
    server.log.clear()
    pages = wikipedia.ensure_pages(["bush", "tench"], cfg_for(server, overrides_file=str(ov)), tmp_path,
                                   retry_wait=0.01, progress=False)
    assert (pages["bush"]["title"], pages["bush"]["resolved_by"], pages["bush"]["override"]) == \
        ("Shrub", "override", "Shrub")
    assert {k for _, k in server.requests()} == {"Shrub"}  # tench comes from the cache
    server.log.clear()
    wikipedia.ensure_pages(["bush", "tench"], cfg_for(server, overrides_file=str(ov)), tmp_path, progress=False)
    assert server.log == []  # override unchanged: nothing to refetch
    ov.write_text("# no overrides\n")  # override removed: back to the search resolution
    wikipedia.ensure_pages(["bush", "tench"], cfg_for(server, overrides_file=str(ov)), tmp_path,
                           retry_wait=0.01, progress=False)
    assert wiki_cache.read_cached(tmp_path, "bush")["resolved_by"] == "search"
