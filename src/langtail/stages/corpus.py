"""Stage ``corpus`` (rule ``corpus``, ``langtail corpus``): the class-level text corpus.

Class names come from the dataset (``data.name``); ``wiki`` pages from the raw-page cache
(crawled where missing unless ``corpus.offline``; the demo's generated pages are seeded
into the cache); captions from ``captions.parquet`` when ``caption`` is a source. Writes
``corpus.parquet`` and ``corpus_stats.parquet`` (schemas: :mod:`langtail.corpus.build`).
"""
from __future__ import annotations

import logging
from pathlib import Path

from langtail.config import CorpusConfig, DatasetConfig
from langtail.corpus.build import build_corpus, load_caption_text
from langtail.schemas import CORPUS_SCHEMA, STATS_SCHEMA
from langtail.corpus.descriptions import descriptions_for
from langtail.data.registry import get_dataset
from langtail.io import write_parquet

log = logging.getLogger(__name__)

#: config keys this stage reads (its rule's params are built from them)
KEYS = {
    "data": ("name", "root", "classes", "seed"),  # the class list (split files + data.classes; the demo's generated pages)
    "corpus": ("sources", "api_url", "language", "user_agent", "offline", "cache_dir", "overrides_file",
               "descriptions_file", "drop_sections", "min_tokens", "max_tokens", "dedup", "prompt_templates",
               "max_concurrency", "max_retries", "timeout_s", "contact", "maxlag", "description_aliases"),
}


def run(cfg: DatasetConfig, out: Path, stats_out: Path, cache_dir: Path, captions_path: Path | None = None) -> None:
    """Build corpus.parquet (``out``) and corpus_stats.parquet (``stats_out``) for the dataset's
    classes; ``cache_dir`` is the raw-page cache (``corpus.cache_dir`` wins when set)."""
    builder = get_dataset(cfg.data.name)
    builtin_pages = builder.pages(cfg.data) if hasattr(builder, "pages") else None
    cache = Path(cfg.corpus.cache_dir) if cfg.corpus.cache_dir else Path(cache_dir)
    write_corpus(builder.class_names(cfg.data), cfg.corpus, out, stats_out, cache, builtin_pages, captions_path)


def write_corpus(class_names: list[str], cfg: CorpusConfig, out: Path, stats_out: Path, cache_dir: Path,
                 builtin_pages: dict[str, dict] | None = None, captions_path: Path | None = None) -> None:
    """The corpus of ``class_names`` (any class list).

    ``builtin_pages`` (class name -> raw-page dict in the cache format of
    :mod:`langtail.corpus.wikipedia`) are written into ``cache_dir`` where absent and then
    read back through the cache like crawled pages; with them no request is made. Without
    them, ``wiki`` pages missing from the cache are crawled unless ``cfg.offline`` (then
    :class:`~langtail.corpus.wiki_cache.OfflineCacheMiss` names the uncached classes).
    ``captions_path`` is required when ``caption`` is a source.
    """
    from langtail.corpus.wikipedia import ensure_pages

    class_names = [str(n) for n in class_names]
    if not class_names:
        raise ValueError("corpus: empty class list")
    pages = None
    if "wiki" in cfg.sources:
        pages = ensure_pages(class_names, cfg, Path(cache_dir), builtin_pages)
    descriptions = None
    if "descriptions" in cfg.sources:
        if not cfg.descriptions_file:
            raise ValueError("corpus.sources has 'descriptions' but corpus.descriptions_file is empty")
        descriptions = descriptions_for(cfg.descriptions_file, class_names, dedup=cfg.dedup,
                                        aliases=cfg.description_aliases)
    captions = None
    if "caption" in cfg.sources:
        if captions_path is None:
            raise ValueError("corpus.sources has 'caption' but no captions file was given (enable the captions stage)")
        captions = load_caption_text(Path(captions_path), len(class_names))
    corpus, stats, summary = build_corpus(class_names, cfg, pages, descriptions, captions)
    for name in summary["classes_without_page"]:
        log.info("no Wikipedia page for class %r", name)
    log.info("corpus: %d sentences for %d classes (M min/median/max %d/%s/%d, L_avg %.1f tokens)",
             summary["n_sentences"], summary["n_classes"], summary["M_min"], summary["M_median"],
             summary["M_max"], summary["L_avg"])
    write_parquet(out, corpus, metadata=summary, schema=CORPUS_SCHEMA)
    write_parquet(stats_out, stats, metadata=summary, schema=STATS_SCHEMA)
