"""Corpus library: class-level sentences from Wikipedia, prompts, descriptions and captions.

:func:`build_corpus` makes the two tables that the stage :mod:`langtail.stages.corpus` writes
(atomically, :func:`langtail.io.write_parquet`).

``corpus.parquet`` -- one row per sentence, in this order: by ``class_id``, then by
source in ``cfg.sources`` order, then by position in the page / template list / file:

================  =======  ==========================================================
column            dtype    meaning
================  =======  ==========================================================
``sentence_id``   int32    0..N-1 in file order
``class_id``      int32    index into the class list
``class_name``    string   the class name as given
``source``        string   ``wiki`` | ``prompt`` | ``descriptions`` | ``caption``
``page_title``    string   Wikipedia title (``""`` for other sources)
``section``       string   heading path (``"History / Early years"``; ``""`` = summary
                           or not a page)
``sentence``      string   the sentence (spaces collapsed)
``n_tokens``      int32    CLIP BPE tokens incl. SOS/EOS (<= ``cfg.max_tokens``)
``page_id``       int64    MediaWiki page id (-1 when none)
``revision_id``   int64    MediaWiki revision id (-1 when none)
================  =======  ==========================================================

``corpus_stats.parquet`` -- one row per class: ``class_id``, ``class_name``,
``page_title``, ``has_page`` (bool: ``wiki`` requested and a page with status ``ok``),
``n_wiki``, ``n_prompt``, ``n_descriptions``, ``n_caption``, ``n_total`` (int32), and how the
page was found: ``page_status``, ``resolved_by``, ``redirect_from``, ``disambiguation_page``
(strings, :func:`langtail.corpus.wiki_cache.page_resolution`).

Both files carry the same summary dict under the ``langtail`` metadata key
(:func:`langtail.io.read_parquet_metadata`); the paper's Table-7 statistics are
``M_min``/``M_max``/``M_mean``/``M_median`` (sentences per class) and ``L_avg`` (mean
tokens per sentence), plus ``classes_without_page``, the filter counters
``n_split_too_long``, ``n_chunks_from_split``, ``n_dropped_too_short``,
``n_duplicates_removed``, the descriptions report ``descriptions_unmatched_keys`` /
``classes_without_description`` (with ``n_...`` counts), ``classes_prompt_fallback``
and ``pages_by_status``. The output is deterministic: no timestamps; the same inputs
give byte-identical files.

Per source:

* ``wiki`` -- the page of each class from the raw-page cache
  (:mod:`langtail.corpus.wikipedia`; ``builtin_pages`` are seeded into the cache first),
  cleaned by :func:`langtail.corpus.clean.clean_extract` (``cfg.drop_sections``, default
  the list of ``cfg.language``) and split by :func:`langtail.corpus.sentences.split_blocks`
  (rules of ``cfg.language``).
* ``prompt`` -- :func:`langtail.corpus.prompts.prompts_for` (``cfg.prompt_templates``).
* ``descriptions`` -- ``cfg.descriptions_file`` (:mod:`langtail.corpus.descriptions`).
* ``caption`` -- ``captions_path``: ``captions.parquet`` of the captions stage, i.e. an
  int ``class_id`` (or ``label``) column and a string ``caption`` (or ``text``) column,
  rows in file order; if it has a ``split`` column only ``train`` rows are used (captions
  of test images never become class text).

Every sentence then goes through the token filter
(:func:`langtail.corpus.sentences.fit_sentence`) and, if ``cfg.dedup``, exact repeats
within a class (compared case-insensitively after collapsing spaces) are removed,
keeping the first (source order). A class left with no sentence at all (no page and
no other source) gets the prompt sentences as a fallback (``classes_prompt_fallback``),
unless ``cfg.prompt_templates`` is ``none``.
"""
from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from langtail.config import CorpusConfig
from langtail.corpus.clean import clean_extract
from langtail.corpus.descriptions import DescriptionMatch
from langtail.corpus.prompts import prompts_for
from langtail.corpus.language import drop_sections_for
from langtail.corpus.sentences import FilterCounts, fit_sentence, split_blocks
from langtail.corpus.wiki_cache import page_resolution
from langtail.schemas import STATS_SCHEMA

log = logging.getLogger(__name__)

SOURCES = ("wiki", "prompt", "descriptions", "caption")



def load_caption_text(path: Path, n_classes: int) -> list[list[str]]:
    import pyarrow.parquet as pq

    df = pq.read_table(path).to_pandas()
    cid = "class_id" if "class_id" in df.columns else "label" if "label" in df.columns else None
    txt = "caption" if "caption" in df.columns else "text" if "text" in df.columns else None
    if cid is None or txt is None:
        raise ValueError(f"{path}: captions need a class_id (or label) and a caption (or text) column; "
                         f"have {list(df.columns)}")
    if "split" in df.columns:  # only training-image captions are class text (no test leakage)
        n_other = int((df["split"] != "train").sum())
        if n_other:
            log.info("%s: ignoring %d captions of non-train images", path, n_other)
        df = df[df["split"] == "train"]
    out: list[list[str]] = [[] for _ in range(n_classes)]
    for c, t in zip(df[cid].tolist(), df[txt].tolist()):
        if not 0 <= int(c) < n_classes:
            raise ValueError(f"{path}: class id {c} outside 0..{n_classes - 1}")
        if isinstance(t, str) and t.strip():
            out[int(c)].append(t)
    return out


def _summary(stats: pd.DataFrame, corpus: pd.DataFrame) -> dict[str, Any]:
    m = stats["n_total"].tolist()
    return {
        "n_classes": len(m),
        "n_sentences": int(len(corpus)),
        "M_min": int(min(m)) if m else 0,
        "M_max": int(max(m)) if m else 0,
        "M_mean": round(float(statistics.fmean(m)), 4) if m else 0.0,
        "M_median": float(statistics.median(m)) if m else 0.0,
        "L_avg": round(float(corpus["n_tokens"].mean()), 4) if len(corpus) else 0.0,
        "sentences_per_source": {s: int((corpus["source"] == s).sum()) for s in SOURCES},
    }


def check_sources(sources: list[str]) -> None:
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"corpus.sources: unknown source(s) {unknown}; allowed: {list(SOURCES)}")
    if len(set(sources)) != len(sources):
        raise ValueError(f"corpus.sources lists a source twice: {sources}")


class _CorpusRows:
    """Accumulates the sentence rows and per-class statistics of :func:`build_corpus`."""

    def __init__(self, cfg: CorpusConfig):
        self.cfg = cfg
        self.counts = FilterCounts()
        self.rows: list[tuple] = []
        self.stat_rows: list[tuple] = []
        self.fallback: list[str] = []
        self.without_page: list[str] = []
        self.by_status: dict[str, int] = {}

    def add_class(self, cid: int, name: str, page: Mapping[str, Any] | None, descriptions: DescriptionMatch | None,
                  captions: list[list[str]] | None) -> None:
        """Every sentence of one class, source by source (``cfg.sources`` order), then its stats row."""
        cfg = self.cfg
        seen: set[str] = set()
        n_by: dict[str, int] = dict.fromkeys(SOURCES, 0)
        has_page = bool(page) and page.get("status") == "ok"
        title = page.get("title", "") if page and has_page else ""
        if "wiki" in cfg.sources:
            status = page.get("status", "missing") if page else "missing"
            self.by_status[status] = self.by_status.get(status, 0) + 1
            if not has_page:
                self.without_page.append(name)

        def emit(source: str, sentences, page_title="", section="", page_id=-1, rev=-1) -> None:
            for s in sentences:
                for text, n in fit_sentence(s, cfg.min_tokens, cfg.max_tokens, self.counts, source, cfg.language):
                    if cfg.dedup:
                        key = " ".join(text.split()).casefold()
                        if key in seen:
                            self.counts.add(source, "duplicates_removed")
                            continue
                        seen.add(key)
                    self.rows.append((cid, name, source, page_title, section, text, n, page_id, rev))
                    n_by[source] += 1

        for source in cfg.sources:
            if source == "wiki" and has_page:
                blocks = clean_extract(page.get("text", ""), drop_sections_for(cfg.drop_sections, cfg.language))
                for block, sents in zip(blocks, split_blocks([b.text for b in blocks], cfg.language)):
                    emit("wiki", sents, title, block.section, int(page.get("pageid", -1)), int(page.get("revid", -1)))
            elif source == "prompt":
                emit("prompt", prompts_for(name, cfg.prompt_templates))
            elif source == "descriptions" and descriptions is not None:
                emit("descriptions", descriptions.per_class[cid])
            elif source == "caption" and captions is not None:
                emit("caption", captions[cid])
        if sum(n_by.values()) == 0 and cfg.prompt_templates != "none" and "prompt" not in cfg.sources:
            self.fallback.append(name)
            emit("prompt", prompts_for(name, cfg.prompt_templates))
        self.stat_rows.append((cid, name, title, has_page, n_by["wiki"], n_by["prompt"], n_by["descriptions"],
                               n_by["caption"], sum(n_by.values()), *page_resolution(page, "wiki" in cfg.sources)))

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(corpus, stats)`` with the dtypes of :data:`CORPUS_SCHEMA` / :data:`STATS_SCHEMA`."""
        corpus = pd.DataFrame(self.rows, columns=["class_id", "class_name", "source", "page_title", "section",
                                                  "sentence", "n_tokens", "page_id", "revision_id"])
        corpus.insert(0, "sentence_id", range(len(corpus)))
        corpus = corpus.astype({"sentence_id": "int32", "class_id": "int32", "n_tokens": "int32",
                                "page_id": "int64", "revision_id": "int64"})
        stats = pd.DataFrame(self.stat_rows, columns=[f.name for f in STATS_SCHEMA])
        stats = stats.astype({"class_id": "int32", "has_page": "bool", "n_wiki": "int32", "n_prompt": "int32",
                              "n_descriptions": "int32", "n_caption": "int32", "n_total": "int32"})
        return corpus, stats

    def summary(self, stats: pd.DataFrame, corpus: pd.DataFrame, dsc: DescriptionMatch | None) -> dict[str, Any]:
        """Table-7 statistics plus every counter (the metadata of both files)."""
        cfg, counts = self.cfg, self.counts
        summary = _summary(stats, corpus)
        summary.update({
            "sources": list(cfg.sources),
            "min_tokens": cfg.min_tokens,
            "max_tokens": cfg.max_tokens,
            "dedup": cfg.dedup,
            "tokenizer": "open_clip.tokenizer.SimpleTokenizer (CLIP BPE, incl. SOS/EOS)",
            "classes_without_page": self.without_page,
            "n_classes_without_page": len(self.without_page),
            "pages_by_status": dict(sorted(self.by_status.items())),
            "n_split_too_long": counts.split_too_long,
            "n_chunks_from_split": counts.chunks_from_split,
            "n_dropped_too_short": counts.dropped_too_short,
            "n_duplicates_removed": counts.duplicates_removed + (dsc.duplicates_removed if dsc else 0),
            "filter_per_source": {k: dict(sorted(v.items())) for k, v in sorted(counts.per_source.items())},
            "descriptions_unmatched_keys": list(dsc.unmatched_keys) if dsc else [],
            "descriptions_mapped_keys": dict(dsc.mapped_keys) if dsc else {},
            "n_descriptions_unmatched_keys": len(dsc.unmatched_keys) if dsc else 0,
            "classes_without_description": list(dsc.classes_without_entry) if dsc else [],
            "n_classes_without_description": len(dsc.classes_without_entry) if dsc else 0,
            "descriptions_empty_dropped": dsc.empty_dropped if dsc else 0,
            "descriptions_duplicates_removed": dsc.duplicates_removed if dsc else 0,
            "classes_prompt_fallback": self.fallback,
            "n_classes_prompt_fallback": len(self.fallback),
        })
        return summary


def build_corpus(class_names: list[str], cfg: CorpusConfig, pages: Mapping[str, Mapping[str, Any]] | None = None,
                 descriptions: DescriptionMatch | None = None, captions: list[list[str]] | None = None,
                 ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Pure part of the stage: inputs in memory -> (corpus frame, stats frame, summary)."""
    check_sources(cfg.sources)
    acc = _CorpusRows(cfg)
    for cid, name in enumerate(class_names):
        acc.add_class(cid, name, (pages or {}).get(name) if "wiki" in cfg.sources else None, descriptions, captions)
    corpus, stats = acc.frames()
    return corpus, stats, acc.summary(stats, corpus, descriptions)
