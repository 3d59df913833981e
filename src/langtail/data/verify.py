"""Manifest-time image verification (``data.verify_images``): decode every image once, in
parallel, before any training job starts.

The longtail stage calls :func:`verify_images` on the dataset's rows and leaves the
unreadable ones out of the manifest (:func:`drop_unreadable`), recording each as a counted
skip in ``skipped_images.parquet`` beside the manifest (stage ``longtail``; schema in
:mod:`langtail.data.skipped`). Without it, an unreadable file is found (and skipped or
substituted) by the stage that loads it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from tqdm.auto import tqdm

from langtail.data.manifest import ImageStore, ManifestBuild, UnreadableImage
from langtail.data.skipped import SkipLog

log = logging.getLogger(__name__)


def _problem(store: ImageStore, ref: str) -> str | None:
    try:
        store.load(ref)
    except UnreadableImage as e:
        return str(e)
    return None


def verify_images(store: ImageStore, refs: Sequence[str], splits: Sequence[str], workers: int = 0,
                  progress: bool | None = None) -> SkipLog:
    """Decode every image of ``refs`` (``workers`` threads; 0 = the cores this process may use;
    PIL releases the GIL while decoding) with a progress bar; the unreadable ones, with the
    decoder's reason, in a :class:`SkipLog` (once each, in ``refs`` order)."""
    if workers <= 0:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    skips = SkipLog()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = pool.map(lambda r: _problem(store, r), refs, chunksize=64)
        for ref, split, why in tqdm(zip(refs, splits, found), total=len(refs), desc="verify images", unit="img",
                                    mininterval=2.0, disable=None if progress is None else not progress):
            if why is not None:
                skips.add(ref, split, why)
    log.info("verified %d image(s): %d unreadable", len(refs), skips.n_images)
    return skips


def drop_unreadable(build: ManifestBuild, skips: SkipLog) -> ManifestBuild:
    """``build`` without the rows of the images in ``skips``."""
    if not skips.n_images:
        return build
    bad = {image for image, *_ in skips.to_list()}
    keep = [i for i, r in enumerate(build.images) if r not in bad]
    return dataclasses.replace(build, images=[build.images[i] for i in keep], labels=[build.labels[i] for i in keep],
                               splits=[build.splits[i] for i in keep])
