"""Multi-process training that cannot hang or drift (issue #21), gloo on CPU.

- Unreadable training images (truncated JPEG, zero bytes, an HTML page, and one rank's whole
  batch) are replaced by a deterministic substitute, so every rank's batch has the same shape
  and no rank skips a step's collectives; every rank's skips are recorded once, and a
  2-rank run over the tree ends with the weights and the skip record of the 1-rank run.
- Augmentation: each draw has its own seed (per position of the global epoch sequence), so
  ranks augment differently, the 2-rank run equals the 1-rank run even with augmentation on,
  and a resumed epoch continues the stream.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from test_ddp import _free_port

C, PER_CLASS, SIDE, B, EPOCHS = 4, 12, 8, 8, 2  #: classes, images per class, image side, global batch


def _rank1_first_batch(labels: np.ndarray) -> list[int]:
    from langtail.data.dataset import EpochSampler

    return list(EpochSampler(labels, "sqrt", seed=0, rank=1, world=2, batch_size=B // 2))[:B // 2]


def _tree(root: Path) -> pd.DataFrame:
    """``C`` classes of 8 px JPEGs; rows 3, 10, 17 and rank 1's first batch are unreadable."""
    root.mkdir(parents=True, exist_ok=True)
    labels = np.repeat(np.arange(C), PER_CLASS)
    rng = np.random.default_rng(0)
    bad = {3: "truncated", 10: "empty", 17: "html"}
    bad.update({i: "empty" for i in _rank1_first_batch(labels) if i not in bad})
    refs = []
    for i, y in enumerate(labels):
        p = root / f"{i:03d}.jpg"
        img = np.clip(rng.normal(60 * y, 40, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(p, quality=95)
        kind = bad.get(i)
        if kind == "truncated":
            p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2])
        elif kind == "empty":
            p.write_bytes(b"")
        elif kind == "html":
            p.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
        refs.append(p.name)
    return pd.DataFrame({"image": refs, "label": labels, "split": ["train"] * len(refs)})


def _train(out: Path, root: Path) -> None:
    from langtail import distributed
    from langtail.data.dataset import build_transform, make_loader
    from langtail.data.manifest import ImageStore
    from langtail.losses import class_contrastive_loss, cosine_matrix
    from langtail.runtime import seed_everything
    from langtail.train.loop import fit

    device = distributed.setup("cpu")
    seed_everything(0)
    df = pd.read_parquet(root / "manifest.parquet")
    loader = make_loader(df, ImageStore(root, root), build_transform(True, SIDE, "none", augment=True), B,
                         train=True, sampler="sqrt", seed=0)
    model = torch.nn.Module()
    model.image = torch.nn.Linear(3 * SIDE * SIDE, 6)
    model.text = torch.nn.Embedding(C, 6)
    shapes = []

    def step(batch):
        shapes.append(tuple(batch["image"].shape))
        img, txt = model.image(batch["image"].flatten(1)), model.text(batch["label"])
        img, txt, y = distributed.gather(img), distributed.gather(txt), distributed.gather(batch["label"])
        return class_contrastive_loss(cosine_matrix(img, txt), y, y, 0.1)

    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    res = fit(model, opt, loader, step, epochs=EPOCHS, resume_path=out / "model.resume", fingerprint="fp",
              device=device, desc="tree")
    torch.save({"shapes": shapes}, out / f"shapes{distributed.rank()}.pt")
    if distributed.is_main():
        torch.save({"state": model.state_dict(), "history": res.history, "skips": res.skips.to_list(),
                    "skipped": res.skipped}, out / "result.pt")


def _rank_main(rank: int, world: int, port: int, out: str, root: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    _train(Path(out), Path(root))


def _run(out: Path, root: Path, world: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    mp.start_processes(_rank_main, args=(world, _free_port(), str(out), str(root)), nprocs=world, join=True,
                       start_method="spawn")
    res = torch.load(out / "result.pt")
    res["shapes"] = [torch.load(out / f"shapes{r}.pt")["shapes"] for r in range(world)]
    return res


def test_corrupt_images_two_ranks_equal_one_process(tmp_path):
    root = tmp_path / "img"
    df = _tree(root)
    df.to_parquet(root / "manifest.parquet")
    one = _run(tmp_path / "one", root, world=1)
    two = _run(tmp_path / "two", root, world=2)
    steps = EPOCHS * (len(df) // B)
    assert one["shapes"] == [[(B, 3, SIDE, SIDE)] * steps]
    assert two["shapes"] == [[(B // 2, 3, SIDE, SIDE)] * steps] * 2  # equal on every rank, every step
    for k in one["state"]:
        torch.testing.assert_close(two["state"][k], one["state"][k], rtol=1e-4, atol=1e-6, msg=f"weights {k}")
    np.testing.assert_allclose([h["loss"] for h in two["history"]], [h["loss"] for h in one["history"]], rtol=1e-5)
    # every skip of every rank recorded once: the same record as the single process
    assert sorted(map(tuple, two["skips"])) == sorted(map(tuple, one["skips"]))
    assert two["skipped"] == one["skipped"] == sum(t for *_, t in one["skips"])
    skipped = {image for image, *_ in two["skips"]}
    first_rank1 = {f"{i:03d}.jpg" for i in _rank1_first_batch(df["label"].to_numpy())}
    assert first_rank1 <= skipped  # rank 1's whole first batch was unreadable, and its skips were written
    reasons = {image: reason for image, _, reason, _ in two["skips"]}
    assert "Truncated" in reasons.get("003.jpg", "Truncated") and all(r.startswith(str(root)) for r in reasons.values())


def _store_df(tmp_path, n=12, bad=(2,)):
    from langtail.data.manifest import ImageStore

    root = tmp_path / "img"
    root.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        p = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(p)
        if i in bad:
            p.write_bytes(b"<html>")
    labels = np.arange(n) % 3
    return ImageStore(tmp_path, root), pd.DataFrame({"image": [f"{i}.png" for i in range(n)], "label": labels,
                                                     "split": "train"})


def test_substitute_is_same_class_deterministic_and_counted(tmp_path):
    from langtail.data.dataset import ManifestDataset, build_transform, collate_skip
    from langtail.data.manifest import UnreadableImage

    store, df = _store_df(tmp_path, bad=(2, 5))
    ds = ManifestDataset(df, store, build_transform(False, 16, "none"), substitute=True)
    x, y, row, skip = ds[2]  # class 2: rows 2, 5, 8, 11; 5 is unreadable too -> 8
    assert (y, row, skip.image) == (2, 8, "2.png")
    torch.testing.assert_close(x, ds[8][0])
    assert ManifestDataset(df, store, build_transform(False, 16, "none"), substitute=True)[5][2] == 8
    batch = collate_skip([ds[0], ds[2], ds[5]])
    assert batch["image"].shape == (3, 3, 16, 16) and batch["skipped"] == 2
    assert [s[0] for s in batch["skipped_images"]] == ["2.png", "5.png"]
    only_bad = ManifestDataset(df.iloc[[2, 5]].reset_index(drop=True), store, None, substitute=True)
    with pytest.raises(UnreadableImage, match="no readable image"):
        only_bad[0]


def test_decompression_bomb_is_a_counted_skip(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    from langtail.data.dataset import ManifestDataset, collate_skip
    from langtail.data.skipped import Skip

    store, df = _store_df(tmp_path, bad=())
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 60)  # 16 x 16 = 256 > 2 * 60: an error, not a warning
    item = ManifestDataset(df, store, None)[0]
    assert isinstance(item, Skip) and "decompression bomb" in item.reason.lower()
    assert collate_skip([item])["skipped"] == 1


def test_augmentation_streams_differ_per_rank_match_one_process_and_resume(tmp_path):
    from langtail.data.dataset import Draw, EpochSampler, ManifestDataset, build_transform

    labels = np.repeat(np.arange(3), [20, 8, 4])
    one = list(EpochSampler(labels, "sqrt", seed=5, batch_size=8, with_seeds=True))
    parts = [list(EpochSampler(labels, "sqrt", seed=5, rank=r, world=2, batch_size=4, with_seeds=True))
             for r in range(2)]
    assert all(isinstance(d, Draw) for d in one)
    merged = [d for b in range(len(labels) // 8) for r in range(2) for d in parts[r][b * 4:(b + 1) * 4]]
    assert merged == one[:len(merged)]  # same (image, seed) draws as one process, whatever the ranks
    assert not {d.seed for d in parts[0]} & {d.seed for d in parts[1]}  # ranks' streams are distinct
    s = EpochSampler(labels, "sqrt", seed=5, rank=1, world=2, batch_size=4, with_seeds=True)
    s.set_epoch(1)
    full = list(s)
    assert {d.seed for d in full}.isdisjoint(d.seed for d in parts[1])  # a new epoch, a new stream
    s.set_epoch(1, start=8)
    assert list(s) == full[8:]  # a run resumed after 2 steps continues the stream

    store, df = _store_df(tmp_path, bad=())
    ds = ManifestDataset(df, store, build_transform(True, 16, "none", augment=True))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a, b = ds[Draw(0, 11)][0], ds[Draw(0, 11)][0]
    torch.testing.assert_close(a, b)  # a draw's augmentation depends on its seed only
    assert torch.equal(torch.get_rng_state(), before)  # and leaves the global stream alone
    crops = {ds[Draw(0, k)][0].numpy().tobytes() for k in range(8)}
    assert len(crops) > 1
