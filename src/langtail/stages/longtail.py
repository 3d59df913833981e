"""Stage ``longtail`` (rule ``longtail``, ``langtail longtail``): the long-tailed manifest.

Reads the dataset named by ``data.name`` (:mod:`langtail.data.registry`); writes
``manifest.parquet`` (schema: :mod:`langtail.data.manifest`, ``docs/artifacts.md``), plus
``images_<split>.npy`` beside it for array-backed datasets.
"""
from __future__ import annotations

import logging
from pathlib import Path

from langtail.config import DatasetConfig
from langtail.data.manifest import ImageStore, make_manifest, write_manifest
from langtail.data.registry import get_dataset

log = logging.getLogger(__name__)


#: config keys this stage reads (its rule's params are built from them)
KEYS = {"data": ("name", "root", "imbalance_factor", "profile", "seed", "max_train_per_class", "test_per_class",
                 "verify_checksums", "allow_download", "many_threshold", "few_threshold", "shot_bounds", "image_size")}


def run(cfg: DatasetConfig, out: Path) -> None:
    """Build, check and write ``manifest.parquet`` (plus ``images_<split>.npy`` if array-backed)."""
    out = Path(out)
    cfg = cfg.data
    builder = get_dataset(cfg.name)
    build = builder.build(cfg, out.parent)
    store = ImageStore(out.parent, build.image_root)
    n_missing, first = store.missing(build.images)
    if n_missing:
        raise FileNotFoundError(f"{n_missing} image file(s) listed by dataset {cfg.name!r} do not exist; "
                                f"first: {first}")
    df = make_manifest(build, cfg.many_threshold, cfg.few_threshold, cfg.shot_bounds == "inclusive")
    meta = {"dataset": cfg.name, "class_names": build.class_names, "image_root": build.image_root,
            "seed": cfg.seed, "imbalance_factor": cfg.imbalance_factor, "profile": cfg.profile,
            "many_threshold": cfg.many_threshold, "few_threshold": cfg.few_threshold,
            "shot_bounds": cfg.shot_bounds, **build.meta}
    write_manifest(out, df, meta)
    tr = df[df["split"] == "train"]
    groups = tr.drop_duplicates("label")["group"].value_counts().to_dict()
    log.info("%s: %d train / %d val / %d test images, %d classes, groups %s", cfg.name, len(tr),
             int((df["split"] == "val").sum()), int((df["split"] == "test").sum()), len(build.class_names), groups)
