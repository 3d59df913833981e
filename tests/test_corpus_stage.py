"""Corpus stage end to end (offline): built-in pages, descriptions, captions, stats, determinism."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from langtail.config import CorpusConfig
from langtail.corpus import wiki_cache, wiki_fetch, wikipedia
from langtail.corpus.classes import get_class_list
from langtail.schemas import CORPUS_SCHEMA, STATS_SCHEMA
from langtail.stages.corpus import write_corpus as run_corpus
from langtail.io import file_sha256, read_parquet, read_parquet_metadata
from langtail.schemas import CORPUS_COLUMNS

SHARED = Path(__file__).resolve().parents[2] / "shared"
TEXT = SHARED / "data" / "text"


def _page(name: str, text: str, pageid: int = 7, status: str = "ok") -> dict:
    return {"query": name, "title": name.capitalize(), "pageid": pageid, "revid": 1000 + pageid,
            "fetched_at": "1970-01-01T00:00:00Z", "language": "en", "api_url": "builtin:test",
            "status": status, "text": text}


PAGES = {
    "tench": _page("tench", "The tench is a fish. It lives in lakes, e.g. in Europe.\n\n\n== Description ==\n"
                   "The tench is olive green. It has small scales.\nThe tench is olive green.\n\n"
                   "== References ==\nSmith, J. (1990). Fishes.\n", 1),
    "goldfish": _page("goldfish", "The goldfish is a freshwater fish. It is orange.\n\n== History ==\n"
                      "It was domesticated in China approx. 1,000 years ago.\n", 2),
    "nopage": _page("nopage", "", -1, "missing"),
}


@pytest.fixture()
def no_network(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the network must not be touched")

    monkeypatch.setattr(wikipedia, "crawl", boom)
    monkeypatch.setattr(wiki_fetch.WikipediaFetcher, "__init__", boom)


def _run(tmp_path, names, cfg, **kw):
    out, stats = tmp_path / "corpus.parquet", tmp_path / "corpus_stats.parquet"
    run_corpus(names, cfg, out, stats, tmp_path / "cache", **kw)
    return out, stats


def test_builtin_pages_schema_order_stats(tmp_path, no_network):
    names = ["tench", "goldfish", "nopage"]
    cfg = CorpusConfig(sources=["wiki", "prompt"])
    out, stats = _run(tmp_path, names, cfg, builtin_pages=PAGES)
    # cache seeded with one file per class, in the documented format
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files == sorted(wiki_cache.cache_filename(n) for n in names)
    cached = json.loads(wiki_cache.cache_path(tmp_path / "cache", "tench").read_text())
    assert set(wiki_cache.CACHE_FIELDS) <= set(cached) and cached["status"] == "ok"

    assert pq.read_schema(out).remove_metadata() == CORPUS_SCHEMA
    assert pq.read_schema(stats).remove_metadata() == STATS_SCHEMA
    df = read_parquet(out, CORPUS_COLUMNS)
    assert df["sentence_id"].tolist() == list(range(len(df)))
    # order: class id, then source order of cfg.sources
    key = list(zip(df["class_id"], df["source"].map({"wiki": 0, "prompt": 1})))
    assert key == sorted(key)
    tench_wiki = df[(df.class_name == "tench") & (df.source == "wiki")]
    assert tench_wiki["sentence"].tolist() == [
        "The tench is a fish.", "It lives in lakes, e.g. in Europe.", "The tench is olive green.",
        "It has small scales."]  # references dropped, duplicate removed
    assert tench_wiki["section"].tolist() == ["", "", "Description", "Description"]
    assert set(tench_wiki["page_title"]) == {"Tench"} and set(tench_wiki["page_id"]) == {1}
    assert set(tench_wiki["revision_id"]) == {1001}
    prompts = df[df.source == "prompt"]
    assert (prompts["page_title"] == "").all() and (prompts["page_id"] == -1).all()
    assert (prompts["section"] == "").all()
    assert (df.groupby("class_name").size()[["tench", "goldfish", "nopage"]] > 80).iloc[:2].all()

    st = read_parquet(stats)
    assert st["has_page"].tolist() == [True, True, False]
    assert st["n_prompt"].tolist() == [80, 80, 80]
    assert st["n_wiki"].tolist() == [4, 3, 0]
    assert (st["n_total"] == st[["n_wiki", "n_prompt", "n_descriptions", "n_caption"]].sum(axis=1)).all()
    meta = read_parquet_metadata(stats)
    assert meta["classes_without_page"] == ["nopage"]
    assert meta["M_min"] == 80 and meta["M_max"] == 84 and meta["M_median"] == 83
    assert meta["n_duplicates_removed"] == 1
    assert meta["L_avg"] == pytest.approx(df["n_tokens"].mean(), abs=1e-3)
    assert meta == read_parquet_metadata(out)


def test_deterministic_bytes(tmp_path, no_network):
    cfg = CorpusConfig(sources=["wiki", "prompt"])
    a = tmp_path / "a"
    b = tmp_path / "b"
    _run(a, list(PAGES), cfg, builtin_pages=PAGES)
    _run(b, list(PAGES), cfg, builtin_pages=PAGES)
    assert file_sha256(a / "corpus.parquet") == file_sha256(b / "corpus.parquet")
    assert file_sha256(a / "corpus_stats.parquet") == file_sha256(b / "corpus_stats.parquet")


def test_missing_page_falls_back_to_prompts(tmp_path, no_network):
    cfg = CorpusConfig(sources=["wiki"])
    out, stats = _run(tmp_path, ["tench", "nopage"], cfg, builtin_pages=PAGES)
    df = read_parquet(out)
    assert set(df[df.class_name == "tench"].source) == {"wiki"}
    assert set(df[df.class_name == "nopage"].source) == {"prompt"}
    assert read_parquet_metadata(out)["classes_prompt_fallback"] == ["nopage"]


def test_offline_lists_exactly_the_missing_classes(tmp_path, no_network):
    cache = tmp_path / "cache"
    wiki_cache.write_cached(cache, "tench", PAGES["tench"])
    cfg = CorpusConfig(sources=["wiki"], offline=True)
    with pytest.raises(wiki_cache.OfflineCacheMiss) as e:
        run_corpus(["tench", "zebra", "okapi", "zebra"], cfg, tmp_path / "c.parquet", tmp_path / "s.parquet", cache)
    assert e.value.missing == ["zebra", "okapi"]
    assert "'zebra'" in str(e.value) and "'okapi'" in str(e.value) and "'tench'" not in str(e.value)
    assert not (tmp_path / "c.parquet").exists()


def test_builtin_pages_incomplete_is_an_error_not_a_crawl(tmp_path, no_network):
    with pytest.raises(wiki_cache.OfflineCacheMiss) as e:
        _run(tmp_path, ["tench", "zebra"], CorpusConfig(sources=["wiki"]), builtin_pages={"tench": PAGES["tench"]})
    assert e.value.missing == ["zebra"]


def test_too_long_split_and_short_dropped_counted(tmp_path, no_network):
    long = " ".join(["The tench swims slowly through the weeds of the lake"] * 12) + "."
    pages = {"tench": _page("tench", f"Ok.\n{long}\nThe tench is a fish.")}
    cfg = CorpusConfig(sources=["wiki"], min_tokens=5)
    out, _ = _run(tmp_path, ["tench"], cfg, builtin_pages=pages)
    df = read_parquet(out)
    meta = read_parquet_metadata(out)
    assert meta["n_split_too_long"] == 1 and meta["n_chunks_from_split"] >= 2
    assert meta["n_dropped_too_short"] == 1  # "Ok." = ok . + SOS/EOS = 4 tokens < 5
    assert (df["n_tokens"] <= 77).all() and "Ok." not in df["sentence"].tolist()


def test_captions_source(tmp_path, no_network):
    cap = tmp_path / "captions.parquet"
    pd.DataFrame({"class_id": [1, 0, 1, 0], "split": ["train", "train", "train", "test"],
                  "caption": ["a gold fish in a bowl", "a green fish", "a gold fish in a bowl", "a test image"]}
                 ).to_parquet(cap)
    cfg = CorpusConfig(sources=["prompt", "caption"], prompt_templates="none")
    out, stats = _run(tmp_path, ["tench", "goldfish"], cfg, captions_path=cap)
    df = read_parquet(out)
    assert df["sentence"].tolist() == ["a green fish", "a gold fish in a bowl"]
    assert read_parquet(stats)["n_caption"].tolist() == [1, 1]


def test_unknown_source_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown source"):
        _run(tmp_path, ["a"], CorpusConfig(sources=["prompt", "tweets"]))


# ----------------------------------------------------------------------------- real descriptions

CUPL = TEXT / "susx_cupl"


@pytest.mark.shared_data
@pytest.mark.skipif(not CUPL.exists(), reason=f"shared CuPL files not found at {CUPL}")
def test_shipped_cifar10_lt_config_gives_descriptions_to_all_classes(tmp_path, caplog):
    """CuPL's CIFAR-10 file says ``car``; the class is ``automobile`` (built-in synonym).
    The corpus section of the shipped config, with the real file put where it points."""
    import yaml

    from langtail.config import dataset_config

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    cfg = dataset_config(raw, "cifar10_lt").corpus
    assert "descriptions" in cfg.sources and not cfg.descriptions_file.startswith("..")
    cfg.descriptions_file = str(CUPL / "CuPL_prompts_cifar10.json")
    with caplog.at_level("WARNING"):
        out, stats = _run(tmp_path, get_class_list("cifar10"), cfg)
    meta = read_parquet_metadata(stats)
    assert meta["descriptions_unmatched_keys"] == [] and meta["classes_without_description"] == []
    assert meta["descriptions_mapped_keys"] == {"car": "automobile"}
    st = read_parquet(stats).set_index("class_name")
    assert (st["n_descriptions"] > 30).all() and st.loc["automobile", "n_prompt"] == 80
    assert "match no class" not in caplog.text
    df = read_parquet(out)
    d = df[df.source == "descriptions"]["sentence"]
    assert (d == d.str.strip()).all() and not d.str.contains("\n").any()
    assert d[df.class_name == "automobile"].str.contains("car", case=False).any()
    # 500 sentences, 462 unique within class
    assert meta["descriptions_duplicates_removed"] + meta["descriptions_empty_dropped"] >= 1


@pytest.mark.shared_data
@pytest.mark.skipif(not CUPL.exists(), reason=f"shared CuPL files not found at {CUPL}")
def test_cifar100_cupl_descriptions_cra_key_mapped(tmp_path):
    cfg = CorpusConfig(sources=["descriptions"], descriptions_file=str(CUPL / "CuPL_prompts_cifar100.json"),
                       prompt_templates="none")
    out, stats = _run(tmp_path, get_class_list("cifar100"), cfg)
    meta = read_parquet_metadata(stats)
    assert meta["descriptions_unmatched_keys"] == [] and meta["descriptions_mapped_keys"] == {"cra": "crab"}
    st = read_parquet(stats).set_index("class_name")
    assert st.loc["crab", "n_descriptions"] > 30 and st.loc["aquarium_fish", "n_descriptions"] > 0
    assert meta["M_min"] > 0 and meta["n_sentences"] == int(st["n_total"].sum())


def test_description_aliases_and_loose_keys():
    from langtail.corpus.descriptions import match_descriptions

    raw = {"car": ["a car."], "apartment_building-outdoor": ["tall."], "arcade (passageway)": ["arches."],
           "crane": ["a bird."], "zzz": ["nothing."]}
    names = ["automobile", "apartment building, outdoor", "arcade", "crane (bird)"]
    m = match_descriptions(raw, names, aliases={"crane": "crane (bird)", "car": "automobile"})
    assert m.per_class == [["a car."], ["tall."], ["arches."], ["a bird."]]
    assert m.unmatched_keys == ["zzz"] and m.classes_without_entry == []
    assert m.mapped_keys == {"car": "automobile", "apartment_building-outdoor": "apartment building, outdoor",
                             "arcade (passageway)": "arcade", "crane": "crane (bird)"}
    with pytest.raises(ValueError, match="description_aliases: target"):
        match_descriptions(raw, names, aliases={"car": "truck"})
