"""`langtail predict` and `langtail.load_classifier(path).predict(images)`: checkpoint-only inference."""
from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import langtail
from langtail import io
from langtail.cli import main
from langtail.config import ModelConfig
from langtail.data.dataset import build_transform
from langtail.models.classifier import create_head, fresh_image_encoder, save_classifier
from langtail.models.heads import Classifier, combine_probs
from langtail.predict import MissingCheckpointInfo, read_predictions
from langtail.schemas import PREDICTION_COLUMNS

NAMES = ["red circle", "blue square", "green triangle", "grey star"]


def _checkpoint(path, *, stored=True, kind="lgr"):
    torch.manual_seed(0)
    mc = ModelConfig(image_encoder="demo_cnn", embed_dim=6)
    image = fresh_image_encoder(mc)
    emb, mask = torch.randn(4, 3, 6), torch.ones(4, 3, dtype=torch.bool)
    clf = Classifier(image, create_head(kind, image.embed_dim, 4, emb, mask, 0.1), kind)
    extra = {"num_classes": 4, "tau": 0.1}
    if stored:
        save_classifier(path, clf, mc, extra, class_names=NAMES, preprocess={"image_size": 32, "normalize": "cifar"})
    else:  # as written before class names / preprocessing were stored
        save_classifier(path, clf, mc, extra)
    return clf.eval()


def _images(n=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def _expected(clf, arrays, alpha=0.5, normalize="cifar"):
    t = build_transform(False, 32, normalize)
    with torch.no_grad():
        return combine_probs(clf(torch.stack([t(a) for a in arrays])), alpha).numpy()


def test_checkpoint_stores_class_names_and_preprocess(tmp_path):
    _checkpoint(tmp_path / "m.pt")
    ck = torch.load(tmp_path / "m.pt", weights_only=True)  # the safe loader reads it
    assert ck["class_names"] == NAMES
    assert ck["preprocess"] == {"image_size": 32, "normalize": "cifar", "interpolation": "bilinear"}


def test_predict_paths_pil_and_arrays_match_the_model(tmp_path):
    path = tmp_path / "m.pt"
    clf = _checkpoint(path)
    arrays = _images(3)
    png = tmp_path / "a.png"
    Image.fromarray(arrays[0]).save(png)
    pred = langtail.load_classifier(path, device="cpu")
    df = pred.predict([png, Image.fromarray(arrays[1]), arrays[2]], top_k=3, batch_size=2)
    assert list(df.columns) == list(PREDICTION_COLUMNS)
    assert len(df) == 9 and df["rank"].tolist() == [1, 2, 3] * 3 and df["input"].tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert df["image"].iloc[0] == str(png) and df["image"].iloc[3] == "<input 1>"
    want = _expected(clf, arrays)
    for i in range(3):
        rows = df[df["input"] == i]
        order = np.argsort(-want[i])[:3]
        assert rows["class_id"].tolist() == order.tolist()
        assert rows["class_name"].tolist() == [NAMES[c] for c in order]
        np.testing.assert_allclose(rows["probability"].to_numpy(), want[i][order], rtol=1e-5, atol=1e-6)
    assert (df["error"] == "").all()


def test_alpha_weighs_the_image_branch(tmp_path):
    path = tmp_path / "m.pt"
    clf = _checkpoint(path)
    arr = _images(1)
    df = langtail.load_classifier(path, "cpu", alpha=0.2).predict(arr, top_k=4)
    want = _expected(clf, arr, alpha=0.2)[0]
    got = dict(zip(df["class_id"], df["probability"]))
    np.testing.assert_allclose([got[c] for c in range(4)], want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(want, _expected(clf, arr, alpha=0.5)[0])
    with pytest.raises(ValueError, match="alpha"):
        langtail.load_classifier(path, "cpu", alpha=1.5)


def test_unreadable_files_are_listed_not_dropped(tmp_path):
    path = tmp_path / "m.pt"
    _checkpoint(path)
    good = tmp_path / "good.png"
    Image.fromarray(_images(1)[0]).save(good)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    missing = tmp_path / "missing.png"
    df = langtail.load_classifier(path, "cpu").predict([bad, good, missing], top_k=2)
    assert df["input"].tolist() == [0, 1, 1, 2]
    failed = df[df["rank"] == 0]
    assert failed["image"].tolist() == [str(bad), str(missing)]
    assert (failed["class_id"] == -1).all() and failed["probability"].isna().all()
    assert all(e for e in failed["error"]) and "missing.png" in failed["error"].iloc[1]


def test_old_checkpoint_names_what_to_pass(tmp_path):
    path = tmp_path / "old.pt"
    clf = _checkpoint(path, stored=False)
    with pytest.raises(MissingCheckpointInfo, match="--manifest"):
        langtail.load_classifier(path, "cpu")
    with pytest.raises(MissingCheckpointInfo, match="--image-size and --normalize"):
        langtail.load_classifier(path, "cpu", class_names=NAMES)
    with pytest.raises(ValueError, match="3 class names"):
        langtail.load_classifier(path, "cpu", class_names=NAMES[:3], image_size=32, normalize="cifar")
    arr = _images(1)
    df = langtail.load_classifier(path, "cpu", class_names=NAMES, image_size=32, normalize="cifar").predict(arr, top_k=1)
    assert df["class_id"].iloc[0] == int(np.argmax(_expected(clf, arr)[0]))
    # the command: a clear one-line error naming the option (exit 1, no traceback)
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", str(path), str(tmp_path / "x.png"), "--out", str(out)]) == 1
    assert not out.exists()


def test_not_a_classifier_checkpoint(tmp_path):
    io.torch_save(tmp_path / "x.pt", {"state_dict": {}})
    with pytest.raises(ValueError, match="not a fine-tuned classifier checkpoint"):
        langtail.load_classifier(tmp_path / "x.pt", "cpu")
    io.torch_save(tmp_path / "c.pt", {"kind": "ca4ltr", "state_dict": {}, "extra": {}, "model_cfg": {}})
    with pytest.raises(ValueError, match="'ca4ltr' checkpoint; langtail predict takes the fine-tuned heads"):
        langtail.load_classifier(tmp_path / "c.pt", "cpu")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_command_on_a_folder_writes_a_table_that_reads_back(tmp_path, fmt, caplog):
    caplog.set_level(logging.INFO)
    path = tmp_path / "m.pt"
    clf = _checkpoint(path, kind="fc")
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    arrays = _images(3)
    Image.fromarray(arrays[0]).save(d / "b.png")
    Image.fromarray(arrays[1]).save(d / "sub" / "a.jpg", quality=100)
    Image.fromarray(arrays[2]).save(d / "c.bmp")
    (d / "notes.txt").write_text("not an image")
    (d / "z.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / f"pred.{fmt}"
    assert main(["predict", "--model", str(path), "--folder", str(d), "--top-k", "2", "--batch-size", "2",
                 "--device", "cpu", "--out", str(out)]) == 0
    df, meta = read_predictions(out)
    assert list(df.columns) == list(PREDICTION_COLUMNS)
    assert df["image"].drop_duplicates().tolist() == [str(d / n) for n in ("b.png", "c.bmp", "sub/a.jpg", "z.png")]
    assert (df.groupby("input").size().tolist()) == [2, 2, 2, 1]
    assert meta["n_inputs"] == 4 and meta["n_predicted"] == 3 and meta["n_unreadable"] == 1
    assert meta["alpha"] == 0.5 and meta["top_k"] == 2 and meta["kind"] == "fc" and meta["device"] == "cpu"
    top1 = df[df["rank"] == 1].set_index("image")["class_id"]
    want = _expected(clf, [arrays[0], arrays[2]])
    assert top1[str(d / "b.png")] == int(np.argmax(want[0])) and top1[str(d / "c.bmp")] == int(np.argmax(want[1]))
    assert "1 unreadable" in caplog.text
    if fmt == "parquet":  # the same rows in both formats
        main(["predict", "--model", str(path), "--folder", str(d), "--top-k", "2", "--device", "cpu",
              "--out", str(tmp_path / "pred.csv")])
        csv, _ = read_predictions(tmp_path / "pred.csv")
        pd.testing.assert_frame_equal(df, csv, check_dtype=False)
        assert csv.dtypes.astype(str).to_dict() == df.dtypes.astype(str).to_dict()


def test_folder_scan_refuses_symlinks_out_of_the_folder(tmp_path):
    path = tmp_path / "m.pt"
    _checkpoint(path)
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.fromarray(_images(1)[0]).save(outside / "secret.png")
    d = tmp_path / "photos"
    d.mkdir()
    Image.fromarray(_images(1, seed=1)[0]).save(d / "ok.png")
    os.symlink(outside / "secret.png", d / "link.png")
    os.symlink(outside, d / "linkdir")
    os.symlink(d / "ok.png", d / "inside_link.png")  # inside the folder: fine
    out = tmp_path / "p.parquet"
    assert main(["predict", "--model", str(path), "--folder", str(d), "--device", "cpu", "--out", str(out)]) == 0
    df, meta = read_predictions(out)
    refused = df[df["rank"] == 0]
    assert sorted(refused["image"]) == [str(d / "link.png"), str(d / "linkdir")]
    assert all("outside" in e for e in refused["error"])
    assert "secret" not in " ".join(df["image"])
    assert sorted(df[df["rank"] > 0]["image"].unique()) == [str(d / "inside_link.png"), str(d / "ok.png")]
    assert meta["n_unreadable"] == 2


def test_command_needs_images_and_a_known_format(tmp_path):
    path = tmp_path / "m.pt"
    _checkpoint(path)
    assert main(["predict", "--model", str(path), "--out", str(tmp_path / "p.csv")]) == 2
    png = tmp_path / "a.png"
    Image.fromarray(_images(1)[0]).save(png)
    assert main(["predict", "--model", str(path), str(png), "--out", str(tmp_path / "p.json")]) == 1
    assert not (tmp_path / "p.json").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", "--model", str(path), "--folder", str(empty), "--out", str(tmp_path / "p.csv")]) == 1


def test_finetune_checkpoint_predicts_like_evaluate(tmp_path):
    """End to end: the fc head trained by the finetune stage, on the demo's test images (arrays),
    gives the evaluate stage's accuracy with nothing but the checkpoint."""
    from conftest import TINY, staged

    from langtail.config import from_dict
    from langtail.data.manifest import read_manifest
    from langtail.stages import evaluate, finetune, longtail

    # evaluated with a post-hoc logit adjustment: predict finds that evaluation of the checkpoint
    cfg = from_dict({**TINY, "evaluate": {**TINY["evaluate"], "posthoc_la_tau": 1.5}})
    man = tmp_path / "manifest.parquet"
    ckpt = tmp_path / "finetune" / "fc" / "model.pt"  # the workflow's layout: results/<ds>/{finetune,eval}/fc
    longtail.run(staged(cfg, "longtail"), man)
    finetune.run(staged(cfg, "finetune", head="fc"), "fc", man, ckpt)
    metrics = evaluate.run(staged(cfg, "evaluate"), "fc", man, ckpt, tmp_path / "eval" / "fc")
    df, meta = read_manifest(man)
    test = df[df["split"] == "test"]
    arrays = np.load(tmp_path / meta["arrays_dir"] / "images_test.npy")
    rows = [int(r.split("#")[1]) for r in test["image"]]
    pred = langtail.load_classifier(ckpt, "cpu")
    assert pred.class_names == meta["class_names"] and pred.image_size == cfg.data.image_size
    assert (pred.posthoc_la_tau, pred.alpha) == (metrics["posthoc_la_tau"], metrics["alpha"]) == (1.5, 0.5)
    out = pred.predict(list(arrays[rows]), top_k=1)
    acc = 100.0 * float((out["class_id"].to_numpy() == test["label"].to_numpy()).mean())
    assert acc == pytest.approx(metrics["overall"], abs=1e-9)
    per = pd.read_parquet(tmp_path / "eval" / "fc" / "per_class.parquet")
    hit = out["class_id"].to_numpy() == test["label"].to_numpy()
    assert np.bincount(test["label"].to_numpy()[hit], minlength=len(per)).tolist() == \
        per.sort_values("class_id")["correct"].tolist()  # class by class
    plain = langtail.load_classifier(ckpt, "cpu", posthoc_la_tau=0.0).predict(list(arrays[rows]), top_k=1)
    assert not np.allclose(plain["probability"], out["probability"])  # the evaluation's setting is not a no-op
    # the command ranks the same way; another evaluation of the checkpoint can be named
    assert main(["predict", "--model", str(ckpt), "--out", str(tmp_path / "cmd.csv"),
                 *[str(tmp_path / f"{i}.png") for i in _save_pngs(tmp_path, arrays[rows[:6]])]]) == 0
    cmd, cmd_meta = read_predictions(tmp_path / "cmd.csv")
    assert cmd_meta["posthoc_la_tau"] == 1.5 and \
        cmd[cmd["rank"] == 1]["class_id"].tolist() == out["class_id"].tolist()[:6]
    other = tmp_path / "other.json"
    io.write_json(other, {**metrics, "posthoc_la_tau": 0.0})
    assert langtail.load_classifier(ckpt, "cpu", eval_metrics=other).posthoc_la_tau == 0.0
    io.write_json(other, {**metrics, "posthoc_la_tau": 0.0, "checkpoint_id": "another run"})
    assert langtail.load_classifier(ckpt, "cpu", eval_metrics=other).posthoc_la_tau == 0.0  # ignored: default
    with pytest.raises(FileNotFoundError):
        langtail.load_classifier(ckpt, "cpu", eval_metrics=tmp_path / "missing.json")
    io.torch_save(tmp_path / "fc.pt", torch.load(ckpt, weights_only=True))
    # the same checkpoint as an older langtail wrote it (no class names / preprocessing): the
    # command asks for them, and with --manifest --image-size --normalize predicts the same
    ck = torch.load(tmp_path / "fc.pt", weights_only=True)
    del ck["class_names"], ck["preprocess"]
    io.torch_save(tmp_path / "old.pt", ck)
    pngs = tmp_path / "png"
    pngs.mkdir()
    for i in rows[:5]:
        Image.fromarray(arrays[i]).save(pngs / f"{i:04d}.png")
    assert main(["predict", "--model", str(tmp_path / "old.pt"), "--folder", str(pngs), "--out",
                 str(tmp_path / "old.csv")]) == 1
    assert main(["predict", "--model", str(tmp_path / "old.pt"), "--folder", str(pngs), "--manifest", str(man),
                 "--image-size", str(cfg.data.image_size), "--normalize", cfg.data.normalize, "--top-k", "1",
                 "--out", str(tmp_path / "old.csv")]) == 0
    old, _ = read_predictions(tmp_path / "old.csv")
    assert old["class_name"].tolist() == plain["class_name"].iloc[:5].tolist()  # no evaluation found: no LA


def _save_pngs(folder, arrays) -> list[int]:
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i}.png")
    return list(range(len(arrays)))


def test_a_code_running_checkpoint_is_refused(tmp_path):
    """The safe loader (weights_only) guards inference too: no pickle beyond tensors and plain values."""
    import argparse

    path = tmp_path / "m.pt"
    _checkpoint(path)
    ck = torch.load(path, weights_only=True)
    ck["extra"]["obj"] = argparse.Namespace(a=1)  # any object needing the full unpickler
    torch.save(ck, path)
    with pytest.raises(io.UnsafeCheckpointError, match="--trust-checkpoint"):
        langtail.load_classifier(path, "cpu")
    assert main(["predict", "--model", str(path), str(tmp_path / "a.png"), "--out", str(tmp_path / "p.csv")]) == 2


def test_lgr_checkpoint_ranks_with_the_alpha_of_its_evaluation(tmp_path):
    """Predict's defaults are those the evaluate stage ranked the checkpoint with."""
    path = tmp_path / "finetune" / "lgr" / "model.pt"
    path.parent.mkdir(parents=True)
    clf = _checkpoint(path)
    ck = torch.load(path, weights_only=True)
    ck["extra"].update(run_id="fp123", class_counts=[40, 20, 10, 5])
    io.torch_save(path, ck)
    arrays = _images(4)
    assert langtail.load_classifier(path, device="cpu").alpha == 0.5  # not evaluated yet
    io.write_json(tmp_path / "eval" / "lgr" / "metrics.json", {"checkpoint_id": "fp123", "alpha": 0.2,
                                                               "posthoc_la_tau": 0.0})
    pred = langtail.load_classifier(path, device="cpu")
    assert pred.alpha == 0.2
    df = pred.predict(arrays, top_k=4)
    want = _expected(clf, arrays, alpha=0.2)
    for i in range(4):
        got = df[df["input"] == i].sort_values("class_id")["probability"].to_numpy()
        np.testing.assert_allclose(got, want[i], rtol=1e-5, atol=1e-6)
    assert langtail.load_classifier(path, device="cpu", alpha=0.9).alpha == 0.9  # an explicit value wins
    adj = langtail.load_classifier(path, device="cpu", posthoc_la_tau=1.0)
    assert adj.priors is not None and not np.allclose(adj.predict(arrays, top_k=4)["probability"], df["probability"])
