"""Unreadable images are recorded (image, split, stage, reason) and reported (issue #12)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image

from langtail.data.dataset import build_transform, make_loader
from langtail.data.manifest import ImageStore
from langtail.data.skipped import SkipLog, read_skipped, skipped_path, write_skipped
from langtail.inference import run_batches
from langtail.io import read_parquet_metadata
from langtail.report.skipped import skipped_images_section
from langtail.train.loop import fit


def _tree(tmp_path):
    root = tmp_path / "img"
    root.mkdir()
    refs = []
    for k in range(6):
        p = root / f"{k}.jpg"
        if k in (1, 4):
            p.write_bytes(b"not a jpeg at all")
        else:
            Image.fromarray(np.full((8, 8, 3), 30 * k, np.uint8)).save(p)
        refs.append(p.name)
    df = pd.DataFrame({"image": refs, "label": [0, 1, 0, 1, 0, 1], "split": ["train"] * 6})
    return ImageStore(tmp_path, root), df


def test_evaluation_and_training_skips_are_recorded(tmp_path):
    store, df = _tree(tmp_path)
    tf = build_transform(False, 8, "none")
    skips = SkipLog()
    out, labels, rows, n = run_batches(lambda x: x.flatten(1)[:, :2], make_loader(df, store, tf, 4, train=False),
                                       torch.device("cpu"), skips=skips)
    assert n == 2 and sorted(rows.tolist()) == [0, 2, 3, 5]
    assert [r[:2] for r in skips.to_list()] == [["1.jpg", "train"], ["4.jpg", "train"]]
    assert all("cannot identify image file" in r[2] and r[2].startswith(str(tmp_path)) for r in skips.to_list())

    model = torch.nn.Linear(8 * 8 * 3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = make_loader(df, store, build_transform(True, 8, "none", augment=False), 2, train=True,
                         sampler="instance", seed=0)
    res = fit(model, opt, loader, lambda b: torch.nn.functional.cross_entropy(model(b["image"].flatten(1)), b["label"]),
              epochs=3, resume_path=tmp_path / "r.pt", fingerprint="x", device=torch.device("cpu"))
    assert res.skipped == 6 and res.skips.n_images == 2 and res.skips.n_skips == 6  # once per epoch each

    path = skipped_path(tmp_path / "finetune" / "lgr" / "model.pt")
    write_skipped(path, res.skips, "finetune/lgr")
    back = read_skipped(path)
    assert sorted(back[["image", "split", "stage", "times"]].values.tolist()) == [
        ["1.jpg", "train", "finetune/lgr", 3], ["4.jpg", "train", "finetune/lgr", 3]]
    assert read_parquet_metadata(path) == {"stage": "finetune/lgr", "n_images": 2, "n_skips": 6}
    empty = tmp_path / "eval" / "fc" / "skipped_images.parquet"
    write_skipped(empty, SkipLog(), "evaluate/fc")
    assert len(read_skipped(empty)) == 0

    text = "\n".join(skipped_images_section({"finetune/lgr": path, "evaluate/fc": empty,
                                             "pretrain": tmp_path / "absent.parquet"}))
    assert "2 unreadable image(s) were skipped" in text
    assert "| finetune/lgr | 2 | 6 | `" in text and "cannot identify image file" in text
    assert "evaluate/fc |" not in text
    assert "Not recorded (no `skipped_images.parquet`; rerun these stages): pretrain." in text
    assert "No unreadable image" in "\n".join(skipped_images_section({"evaluate/fc": empty}))
