"""Stage ``longtail`` (rule ``longtail``, ``langtail longtail``): the long-tailed manifest.

Reads the dataset named by ``data.name`` (:mod:`langtail.data.registry`); writes
``manifest.parquet`` (schema: :mod:`langtail.data.manifest`, ``docs/artifacts.md``), plus
``images_<split>.npy`` beside it for array-backed datasets. ``data.val_from_train`` moves a
fraction of every class's train images to the ``val`` split (:func:`~langtail.data.manifest.carve_val`;
the class counts and shot groups are those of the remaining train images).
With ``data.verify_images``
every image is decoded first (:mod:`langtail.data.verify`): unreadable ones are left out and
listed in ``skipped_images.parquet`` beside the manifest.
"""
from __future__ import annotations

import logging
from pathlib import Path

from langtail.config import DatasetConfig
from langtail.data.manifest import ARRAYS_DIR, carve_val, ImageStore, check_image_refs, make_manifest, write_manifest
from langtail.data.registry import check_class_subset, get_dataset
from langtail.data.skipped import skipped_path, write_skipped
from langtail.data.verify import drop_unreadable, verify_images

log = logging.getLogger(__name__)


#: config keys this stage reads (its rule's params are built from them)
KEYS = {"data": ("name", "root", "classes", "allow_symlinks_outside_root", "imbalance_factor", "profile", "seed",
                 "max_train_per_class", "test_per_class", "verify_checksums", "allow_download", "many_threshold",
                 "few_threshold", "shot_bounds", "image_size", "val_from_train", "verify_images")}


def run(cfg: DatasetConfig, out: Path) -> None:
    """Build, check and write ``manifest.parquet`` and the folder ``arrays/`` beside it (always
    created; holds ``images_<split>.npy`` for array-backed datasets)."""
    out = Path(out)
    cfg = cfg.data
    builder = get_dataset(cfg.name)
    check_class_subset(builder, cfg)
    (out.parent / ARRAYS_DIR).mkdir(parents=True, exist_ok=True)
    build = carve_val(builder.build(cfg, out.parent / ARRAYS_DIR), cfg.val_from_train, cfg.seed)
    store = ImageStore(out.parent, build.image_root, cfg.allow_symlinks_outside_root, ARRAYS_DIR)
    check_image_refs(store, build.images, f"dataset {cfg.name!r}")
    verified = {}
    if cfg.verify_images:  # decode everything now: unreadable files never reach a GPU job
        skips = verify_images(store, build.images, build.splits)
        build = drop_unreadable(build, skips)
        write_skipped(skipped_path(out), skips, "longtail")
        verified = {"verified_images": True, "unreadable_images": skips.n_images}
    df = make_manifest(build, cfg.many_threshold, cfg.few_threshold, cfg.shot_bounds == "inclusive")
    meta = {"dataset": cfg.name, "class_names": build.class_names, "image_root": build.image_root,
            "seed": cfg.seed, "imbalance_factor": cfg.imbalance_factor, "profile": cfg.profile,
            "many_threshold": cfg.many_threshold, "few_threshold": cfg.few_threshold,
            "shot_bounds": cfg.shot_bounds, "allow_symlinks_outside_root": cfg.allow_symlinks_outside_root,
            "arrays_dir": ARRAYS_DIR, **verified, **build.meta}
    write_manifest(out, df, meta)
    tr = df[df["split"] == "train"]
    groups = tr.drop_duplicates("label")["group"].value_counts().to_dict()
    log.info("%s: %d train / %d val / %d test images, %d classes, groups %s", cfg.name, len(tr),
             int((df["split"] == "val").sum()), int((df["split"] == "test").sum()), len(build.class_names), groups)
