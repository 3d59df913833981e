"""Command ``langtail prefetch`` (command only, no rule): fill every cache a dataset's run downloads from.

Run once where there is internet (HPC login node), with the same cache folders (``HF_HOME``,
``results/``) as the offline compute nodes: open_clip weights, BLIP-2, Wikipedia pages are
fetched (:func:`langtail.offline.prefetch`) and ``results/<dataset>/prefetch.json`` records what
was fetched or found (schema: ``docs/artifacts.md``). Jobs started with ``LANGTAIL_OFFLINE=1``
then check, before they start, that everything they will load is present.
"""
from __future__ import annotations

from pathlib import Path

#: reads a whole workflow config file itself (``--config``), no rule params
KEYS: dict[str, tuple[str, ...]] = {}


def run(config_path: Path, dataset: str, out: Path | None = None) -> dict:
    from langtail.config import dataset_config, load_yaml, split_variant, validate_config
    from langtail.offline import prefetch

    raw = load_yaml(config_path)
    validate_config(raw)
    cfg = dataset_config(raw, dataset)
    results = Path(raw.get("results_dir", "results"))
    wiki = Path(cfg.corpus.cache_dir) if cfg.corpus.cache_dir else results / split_variant(dataset)[0] / "wiki_cache"
    out = Path(out) if out else results / dataset / "prefetch.json"
    rec = prefetch(cfg, dataset, wiki, out)
    for it in rec["items"]:
        print(f"{it['status']:8s} {it['name']}: {it['location']}")
    print(f"record: {out}")
    return rec
