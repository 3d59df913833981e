"""Live tracking (TensorBoard event files), per-epoch validation, checkpoint selection, sweeps."""
import numpy as np
import pytest
import torch

from conftest import TINY, staged


def _accumulator(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(path))
    ea.Reload()
    return ea


def _toy_fit(tmp_path, val_scores, select, tracker=None, epochs=None):
    """fit() of a linear model on 4 fixed batches; validate() returns the scripted scores and
    remembers the weights of each epoch."""
    from langtail.train.loop import fit

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    batches = [{"image": torch.randn(8, 3), "label": torch.randint(0, 2, (8,)), "skipped": 0} for _ in range(4)]
    seen = []

    def validate():
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        v = val_scores[len(seen) - 1]
        return {"overall": v, "many": v + 1, "medium": v - 1, "few": None}

    res = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), batches,
              lambda b: torch.nn.functional.cross_entropy(model(b["image"]), b["label"]),
              epochs=epochs or len(val_scores), resume_path=tmp_path / "r.pt", fingerprint="x",
              device=torch.device("cpu"), validate=validate, select=select, tracker=tracker)
    return model, res, seen


def test_best_val_keeps_the_epoch_with_the_best_validation_accuracy(tmp_path):
    model, res, seen = _toy_fit(tmp_path, [50.0, 70.0, 60.0], "best_val")
    assert res.selected == {"rule": "best_val", "epoch": 2, "val_overall": 70.0}
    for k, v in model.state_dict().items():
        assert torch.equal(v, seen[1][k]), k  # the weights validated after epoch 2, not the last ones
    assert not torch.equal(seen[1]["weight"], seen[2]["weight"])
    assert [r["val_overall"] for r in res.history] == [50.0, 70.0, 60.0]
    assert res.history[0]["val_few"] is None and "images_per_s" not in res.history[0]  # (tracked only)
    model, res, seen = _toy_fit(tmp_path / "last", [50.0, 70.0, 60.0], "last")
    assert res.selected == {"rule": "last", "epoch": 3, "val_overall": 60.0}
    assert torch.equal(model.state_dict()["weight"], seen[2]["weight"])


def test_best_val_survives_a_resume(tmp_path):
    """Killed after epoch 2 (best so far: epoch 1), resumed: the best weights come from the resume file."""
    _toy_fit(tmp_path, [80.0, 70.0], "best_val")  # the resume file stays until the stage's finish()
    assert (tmp_path / "r.pt").exists()
    model, res, seen = _toy_fit(tmp_path, [60.0, 65.0], "best_val", epochs=4)
    assert res.resumed_from == 2 and len(seen) == 2  # only epochs 3, 4 ran
    assert res.selected["epoch"] == 1 and res.selected["val_overall"] == 80.0


def test_best_val_without_a_val_split_is_refused(tmp_path):
    from langtail.train.loop import fit

    m = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="best_val needs a validation split"):
        fit(m, torch.optim.SGD(m.parameters(), lr=0.1), [], lambda b: b, epochs=1, resume_path=tmp_path / "r",
            fingerprint="x", device=torch.device("cpu"), select="best_val")


def test_tensorboard_events_per_epoch_and_replayed_on_resume(tmp_path):
    from langtail.config import TrackingConfig
    from langtail.train.tracking import Tracker

    tb = tmp_path / "tb"
    _toy_fit(tmp_path, [10.0, 20.0], "last", tracker=Tracker(TrackingConfig(), tb, "toy"))
    ea = _accumulator(tb)
    assert {"train/loss", "train/lr", "train/images_per_s", "val/overall", "val/many"} <= set(ea.Tags()["scalars"])
    assert "val/few" not in ea.Tags()["scalars"]  # None (empty group) is not a scalar
    assert [(e.step, e.value) for e in ea.Scalars("val/overall")] == [(1, 10.0), (2, 20.0)]
    # resumed to 3 epochs: one event file, one value per epoch (the first two replayed)
    _toy_fit(tmp_path, [30.0], "last", tracker=Tracker(TrackingConfig(), tb, "toy"), epochs=3)
    assert len(list(tb.glob("events.out.tfevents.*"))) == 1
    assert [(e.step, e.value) for e in _accumulator(tb).Scalars("val/overall")] == [(1, 10.0), (2, 20.0), (3, 30.0)]


def test_a_backend_without_its_package_fails_clearly(tmp_path, monkeypatch):
    import builtins

    from langtail.config import ConfigError, TrackingConfig
    from langtail.train.tracking import Tracker

    real = builtins.__import__

    def no_wandb(name, *a, **kw):
        if name in ("wandb", "mlflow") or name.startswith("torch.utils.tensorboard"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(ConfigError, match=r"tracking.wandb: true, but the 'wandb' package is not installed"):
        Tracker(TrackingConfig(wandb=True), tmp_path / "a", "x")
    with pytest.raises(ConfigError, match=r"tracking.mlflow: true.*pip install mlflow"):
        Tracker(TrackingConfig(mlflow=True), tmp_path / "b", "x")
    t = Tracker(TrackingConfig(), tmp_path / "c", "x")  # the default backend missing: a warning, no crash
    t.log_epoch({"epoch": 1, "loss": 1.0})
    t.close()
    assert (tmp_path / "c").is_dir()


def test_val_from_train_is_per_class_deterministic_and_leaves_test_alone():
    from langtail.data.manifest import ManifestBuild, carve_val

    labels = [0] * 10 + [1] * 2 + [2] * 1 + [0] * 3
    splits = ["train"] * 13 + ["test"] * 3
    b = ManifestBuild([f"i{k}" for k in range(16)], labels, splits, ["a", "b", "c"])
    out = carve_val(b, 0.2, seed=0)
    s = np.asarray(out.splits)
    assert (s[13:] == "test").all()  # the test rows never move
    lab = np.asarray(labels)
    assert ((lab == 0) & (s == "val")).sum() == 2 and ((lab == 1) & (s == "val")).sum() == 1
    assert ((lab == 2) & (s == "val")).sum() == 0  # the class's only image stays in train
    assert carve_val(b, 0.2, seed=0).splits == out.splits and carve_val(b, 0.2, seed=1).splits != out.splits
    with pytest.raises(ValueError, match="already has a val split"):
        carve_val(out, 0.1, 0)


def test_training_never_reads_a_test_image_and_best_val_is_what_evaluate_reads(tmp_path, monkeypatch):
    """fc head (manifest only): val carved from train; every image the finetune stage loads is a
    train or val image (ImageStore.load fails on a test ref); evaluate reports the chosen epoch."""
    from langtail import io
    from langtail.config import from_dict
    from langtail.data.manifest import ImageStore, read_manifest
    from langtail.stages import evaluate, finetune, longtail

    raw = {k: dict(v) for k, v in TINY.items()}
    raw["data"]["val_from_train"] = 0.2
    raw["finetune"].update(select="best_val", epochs=3)
    cfg = from_dict(raw)
    man = tmp_path / "manifest.parquet"
    longtail.run(staged(cfg, "longtail"), man)
    df, _ = read_manifest(man)
    assert set(df.split) == {"train", "val", "test"} and (df[df.split == "val"].groupby("label").size() >= 1).all()
    test_refs = set(df[df.split == "test"].image)
    real = ImageStore.load

    def guarded(self, ref):
        if ref in test_refs:
            raise AssertionError(f"training read test image {ref}")
        return real(self, ref)

    monkeypatch.setattr(ImageStore, "load", guarded)
    finetune.run(staged(cfg, "finetune", head="fc"), "fc", man, tmp_path / "fc.pt", track_dir=tmp_path / "tb")
    monkeypatch.setattr(ImageStore, "load", real)
    extra = io.torch_load(tmp_path / "fc.pt")["extra"]
    vals = [r["val_overall"] for r in extra["history"]]
    best = int(np.argmax(vals)) + 1
    assert extra["selected"] == {"rule": "best_val", "epoch": best, "val_overall": max(vals)}
    m = evaluate.run(staged(cfg, "evaluate"), "fc", man, tmp_path / "fc.pt", tmp_path / "eval")
    assert m["selected"]["epoch"] == best and m["split"] == "test"
    steps = [e.step for e in _accumulator(tmp_path / "tb").Scalars("val/overall")]
    assert steps == [1, 2, 3]


def test_sweep_cells_expand_the_grid_and_check_keys():
    from langtail.config import ConfigError, dataset_config, validate_config
    from langtail.sweeps import sweep_cells

    raw = {"datasets": {"demo": TINY}, "sweeps": {"g": {"finetune.lr": [1e-3, 2e-3], "anchors.num_anchors": [4, 8]}}}
    validate_config(raw)
    cells = sweep_cells(raw, "g")
    assert [c.name for c in cells] == ["g_0", "g_1", "g_2", "g_3"]
    assert cells[1].values == {"finetune.lr": 1e-3, "anchors.num_anchors": 8}
    c = dataset_config(raw, "demo+g_3")
    assert c.finetune.lr == 2e-3 and c.anchors.num_anchors == 8 and c.pretrain.epochs == TINY["pretrain"]["epochs"]
    with pytest.raises(ConfigError, match=r"sweeps.bad.finetune.learning_rate: not a config key"):
        validate_config({"datasets": {"demo": TINY}, "sweeps": {"bad": {"finetune.learning_rate": [1]}}})
    with pytest.raises(ValueError, match="unknown sweep"):
        sweep_cells(raw, "nope")


def test_sweep_table_marks_the_best_cell_on_validation(tmp_path):
    from langtail import io
    from langtail.config import from_dict
    from langtail.stages import sweep_report

    grid = {f"g_{i}": {"finetune.lr": lr, "finetune.weight_decay": wd}
            for i, (lr, wd) in enumerate([(1, 0), (1, 5), (2, 0), (2, 5)])}
    metrics = {}
    for i, cell in enumerate(grid):
        for s, rep in enumerate(["", "/seed1"]):
            p = tmp_path / f"{cell}{s}.json"
            io.write_json(p, {"overall": 50.0 + i + s, "many": 60.0, "medium": 50.0, "few": None,
                              "selected": {"rule": "best_val", "epoch": 2, "val_overall": [40.0, 45.0, 44.0, 30.0][i] + s}})
            metrics[f"{cell}:lgr{rep}"] = p
    out = tmp_path / "s.md"
    sweep_report.run(from_dict({}), "demo", "g", grid, metrics, out)
    text = out.read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "g_" in ln]
    assert len(rows) == 4 and all(" ± " in r for r in rows)
    assert "| **g_1** (best val) | 1 | 5 |" in text and "| g_0 | 1 | 0 | 50.5 ± 0.7 |" in text
    assert "Best on validation: **g_1** (val overall 45.50)" in text


@pytest.mark.parametrize("source", ["label", "nonsense"])
def test_ca4ltr_validates_tracks_and_selects(tmp_path, monkeypatch, source):
    """CA4LTR (class-level and per-image text): val accuracy every epoch, TensorBoard events,
    ca4ltr.select: best_val keeps the best epoch."""
    import dataclasses

    from test_ca4ltr_e2e import _cfg, _files, _hash_encoder
    from langtail import io
    from langtail.data.manifest import ManifestBuild, carve_val, make_manifest, read_manifest, write_manifest
    from langtail.stages import ca4ltr_finetune

    _hash_encoder(monkeypatch)
    manifest, anchors, captions = _files(tmp_path)
    df, meta = read_manifest(manifest)
    build = carve_val(ManifestBuild(df.image.tolist(), df.label.tolist(), df.split.tolist(), meta["class_names"]), 0.3, 0)
    write_manifest(manifest, make_manifest(build, 8, 3), meta)
    cfg = _cfg()
    cfg = dataclasses.replace(cfg, ca4ltr=dataclasses.replace(cfg.ca4ltr, select="best_val", epochs=3))
    out = tmp_path / "ca4ltr" / source / "model.pt"
    ca4ltr_finetune.run(cfg, source, manifest, out, tmp_path / "cache", anchors, captions, track_dir=out.parent / "tb")
    extra = io.torch_load(out)["extra"]
    vals = [r["val_overall"] for r in extra["history"]]
    assert len(vals) == 3 and extra["selected"]["rule"] == "best_val"
    assert extra["selected"]["val_overall"] == max(vals) and extra["selected"]["epoch"] == vals.index(max(vals)) + 1
    ea = _accumulator(out.parent / "tb")
    assert [e.step for e in ea.Scalars("train/loss")] == [1, 2, 3] and len(ea.Scalars("val/overall")) == 3
    from langtail.stages import ca4ltr_evaluate

    m = ca4ltr_evaluate.run(cfg, manifest, out, tmp_path / "eval", tmp_path / "cache", anchors, captions)
    assert m["selected"] == extra["selected"] and m["split"] == "test"


def test_report_shows_validation_curves_and_which_checkpoint_was_evaluated(tmp_path):
    from langtail.report.curves import curves_section, selection_lines

    hist = [{"epoch": e, "loss": 1.0 / e, "lr": 1e-3, "val_overall": v, "val_few": None}
            for e, v in ((1, 40.0), (2, 55.5), (3, 50.0))]
    text = "\n".join(curves_section({"finetune/lgr": hist, "finetune/fc": [{"epoch": 1, "loss": 1.0, "lr": 1e-3}]},
                                    tmp_path, "."))
    assert "| finetune/lgr | 3 | 1.0000 | 0.3333 | 55.50 (2) |" in text
    assert "| finetune/fc | 1 | 1.0000 | 1.0000 | no val split |" in text
    assert (tmp_path / "training_curves.png").stat().st_size > 1000
    sel = "\n".join(selection_lines({"lgr": {"rule": "best_val", "epoch": 2, "val_overall": 55.5},
                                     "fc": {"rule": "last", "epoch": 1}}))
    assert "- lgr: best_val, epoch 2, val overall 55.50" in sel and "- fc: last, epoch 1" in sel
