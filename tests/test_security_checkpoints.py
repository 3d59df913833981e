"""Issue #16: checkpoints cannot run code; cache names cannot leave their cache directory.

A checkpoint whose pickle carries a payload (``__reduce__`` -> ``exec`` writing a marker
file) is refused by every loader unless the user opts in (``--trust-checkpoint`` /
``LANGTAIL_TRUST_CHECKPOINTS=1``), and checkpoints written by the current code
(train -> resume -> evaluate) load with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY, run_chain
from langtail import io
from langtail.config import Ca4ltrConfig, ModelConfig
from langtail.data.manifest import read_manifest


class Payload:
    """Unpickling this object runs code: it writes ``marker``."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.fixture(autouse=True)
def _no_trust(monkeypatch):
    """No test inherits an opt-in, and one set by ``cli.main`` is undone afterwards (setenv
    records the original state for teardown; a bare delenv of an absent variable would not)."""
    monkeypatch.setenv(io.TRUST_ENV, "")
    monkeypatch.delenv(io.TRUST_ENV)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """The tiny demo chain (pretrain.pt, lgr.pt) written by the current code."""
    from langtail.config import from_dict

    cfg = from_dict(TINY)
    out = tmp_path_factory.mktemp("sec_chain")
    metrics = run_chain(cfg, out)
    return cfg, out, metrics


def _poison(src: Path, dst: Path, marker: Path) -> Path:
    """A copy of a genuine checkpoint with a code-running object in its ``extra``."""
    ck = torch.load(src, weights_only=True)
    ck.setdefault("extra", {})["note"] = Payload(marker)
    torch.save(ck, dst)
    return dst


def _ca4ltr_checkpoint(path: Path) -> Path:
    from langtail.models.ca4ltr import build_ca4ltr, save_ca4ltr
    from langtail.models.classifier import fresh_image_encoder

    torch.manual_seed(0)
    mcfg = ModelConfig(image_encoder="demo_cnn", embed_dim=16)
    cfg = Ca4ltrConfig(width=16, heads=2, depth=1, ffn_mult=2, dropout=0.0)
    model = build_ca4ltr(fresh_image_encoder(mcfg), 3, cfg, 12, torch.randn(6, 12))
    save_ca4ltr(path, model.eval(), "label", mcfg, dataclasses.asdict(cfg), {"epochs": 1})
    return path


def _tiny_fit(resume: Path, epochs: int = 2, kill_after: int | None = None):
    """A 2-epoch fit of a linear model on random data; optionally killed after an epoch."""
    from langtail.runtime import seed_everything
    from langtail.train.loop import fit

    seed_everything(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    batches = [{"image": torch.randn(5, 4, generator=g), "label": torch.randint(0, 3, (5,), generator=g)}
               for _ in range(3)]
    seen = {"n": 0}

    def step(b):
        seen["n"] += 1
        if kill_after is not None and seen["n"] == kill_after * len(batches) + 1:
            raise KeyboardInterrupt("simulated kill")
        # randomness from all three generators, restored from the resume file
        noise = torch.rand(1).item() + random.random() + float(np.random.rand())
        return torch.nn.functional.cross_entropy(model(b["image"]) * (1 + 1e-3 * noise), b["label"])

    res = fit(model, opt, batches, step, epochs=epochs, resume_path=resume, fingerprint="fp",
              device=torch.device("cpu"))
    return model, res


# ----------------------------------------------------------------------------- writing


def test_torch_save_writes_only_what_the_safe_loader_reads(tmp_path):
    marker = tmp_path / "marker"
    with pytest.raises(TypeError, match=r"\['extra'\]\['note'\].*Payload"):
        io.torch_save(tmp_path / "a.pt", {"extra": {"note": Payload(marker)}})
    with pytest.raises(TypeError, match="numpy.ndarray"):
        io.torch_save(tmp_path / "a.pt", {"x": np.zeros(3)})
    assert not (tmp_path / "a.pt").exists()
    # lossless conversions: numpy scalars -> Python, Path -> str; state_dict metadata kept
    sd = torch.nn.BatchNorm1d(2).state_dict()
    io.torch_save(tmp_path / "b.pt", {"acc": np.float32(0.5), "n": np.int64(3), "p": Path("x/y"),
                                      "t": (1, [2.0, None]), "sd": sd})
    got = torch.load(tmp_path / "b.pt", weights_only=True)
    assert got["acc"] == 0.5 and type(got["acc"]) is float and type(got["n"]) is int and got["p"] == "x/y"
    assert got["t"] == (1, [2.0, None]) and got["sd"]._metadata == sd._metadata
    assert not marker.exists()


def test_rng_state_round_trips_exactly_through_the_safe_loader(tmp_path):
    from langtail.runtime import rng_state, set_rng_state

    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    random.gauss(0, 1)  # leaves gauss_next set
    np.random.standard_normal()  # leaves a cached gaussian (has_gauss=1)
    io.torch_save(tmp_path / "rng.pt", {"rng": rng_state()})
    want = (random.random(), random.gauss(0, 1), np.random.standard_normal(), np.random.rand(3).tolist(),
            torch.rand(3).tolist())
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.standard_normal(), np.random.rand(3).tolist(),
           torch.rand(3).tolist())
    assert got == want


# ----------------------------------------------------------------------------- every loader refuses


def _loaders(chain, tmp_path):
    """(name, genuine checkpoint, loader) for every checkpoint loader of the project."""
    from langtail.models.ca4ltr import load_ca4ltr
    from langtail.models.classifier import read_classifier
    from langtail.models.encoders import load_vl_checkpoint

    _, out, _ = chain
    return {
        "io.torch_load": (out / "lgr.pt", io.torch_load),
        "read_classifier": (out / "lgr.pt", read_classifier),
        "load_vl_checkpoint": (out / "pretrain.pt", load_vl_checkpoint),
        "load_vl_checkpoint(image_only)": (out / "pretrain.pt", lambda p: load_vl_checkpoint(p, image_only=True)),
        "load_ca4ltr": (_ca4ltr_checkpoint(tmp_path / "ca4ltr.pt"), load_ca4ltr),
    }


@pytest.mark.parametrize("name", ["io.torch_load", "read_classifier", "load_vl_checkpoint",
                                  "load_vl_checkpoint(image_only)", "load_ca4ltr"])
def test_every_loader_refuses_a_code_running_checkpoint(chain, tmp_path, name, monkeypatch, caplog):
    genuine, load = _loaders(chain, tmp_path)[name]
    load(genuine)  # the current code's checkpoint loads with the safe loader
    marker = tmp_path / "marker"
    evil = _poison(genuine, tmp_path / "evil.pt", marker)
    with pytest.raises(io.UnsafeCheckpointError) as e:
        load(evil)
    msg = str(e.value)
    assert str(evil) in msg and "--trust-checkpoint" in msg and "LANGTAIL_TRUST_CHECKPOINTS=1" in msg
    assert not marker.exists()
    # an opt-in of "0" is no opt-in
    monkeypatch.setenv(io.TRUST_ENV, "0")
    with pytest.raises(io.UnsafeCheckpointError):
        load(evil)
    assert not marker.exists()
    # opting in loads it with the unsafe loader, loudly (and the payload is real: it runs)
    monkeypatch.setenv(io.TRUST_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="langtail.io"):
        load(evil)
    assert marker.read_text() == "pwned"
    assert any("UNSAFE" in r.getMessage() and str(evil) in r.getMessage() for r in caplog.records)


def test_io_torch_load_trust_argument_overrides_the_environment(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    torch.save({"x": Payload(marker)}, tmp_path / "evil.pt")
    monkeypatch.setenv(io.TRUST_ENV, "1")
    with pytest.raises(io.UnsafeCheckpointError):
        io.torch_load(tmp_path / "evil.pt", trust=False)
    assert not marker.exists()
    monkeypatch.delenv(io.TRUST_ENV)
    io.torch_load(tmp_path / "evil.pt", trust=True)
    assert marker.exists()


def test_refusal_names_the_offending_global_and_bad_files_name_the_file(tmp_path):
    torch.save({"acc": np.float32(1.0)}, tmp_path / "old.pt")  # what older code could write
    with pytest.raises(io.UnsafeCheckpointError, match=r"old\.pt.*references numpy") as e:
        io.torch_load(tmp_path / "old.pt")
    assert "add_safe_globals" not in str(e.value)  # one opt-in, the documented one
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")  # a pickle stream the safe loader rejects
    with pytest.raises(io.UnsafeCheckpointError, match=r"junk\.pt: refusing"):
        io.torch_load(tmp_path / "junk.pt")
    io.torch_save(tmp_path / "ok.pt", {"w": torch.zeros(100)})
    (tmp_path / "cut.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:300])  # truncated
    with pytest.raises(ValueError, match=r"cut\.pt: not a readable checkpoint"):
        io.torch_load(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        io.torch_load(tmp_path / "missing.pt")


def test_training_resume_refuses_a_code_running_resume_file(tmp_path, monkeypatch):
    resume = tmp_path / "model.pt.resume"
    marker = tmp_path / "marker"
    torch.save({"fingerprint": "fp", "epoch": 1, "rng": Payload(marker)}, resume)
    with pytest.raises(io.UnsafeCheckpointError, match="delete this resume file") as e:
        _tiny_fit(resume)
    assert str(resume) in str(e.value) and "--trust-checkpoint" in str(e.value)
    assert not marker.exists() and resume.exists()  # nothing run, nothing overwritten


def test_old_resume_file_resumes_only_with_the_opt_in(tmp_path, monkeypatch):
    """A resume file in the old format (numpy RNG state = pickled ndarray) needs the opt-in;
    with it, training resumes and ends with the uninterrupted run's weights."""
    ref, _ = _tiny_fit(tmp_path / "ref.resume")
    resume = tmp_path / "old.resume"
    with pytest.raises(KeyboardInterrupt):
        _tiny_fit(resume, kill_after=1)
    st = torch.load(resume, weights_only=True)
    py, n = st["rng"]["python"], st["rng"]["numpy"]
    st["rng"] = {"python": (py[0], tuple(py[1]), py[2]),  # what random/np.random.get_state() return
                 "numpy": (n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                           n["cached_gaussian"]),
                 "torch": st["rng"]["torch"]}
    torch.save(st, resume)
    with pytest.raises(io.UnsafeCheckpointError):
        _tiny_fit(resume)
    monkeypatch.setenv(io.TRUST_ENV, "1")
    got, res = _tiny_fit(resume)
    assert res.resumed_from == 1
    for k, v in ref.state_dict().items():
        assert torch.equal(v, got.state_dict()[k]), k


# ----------------------------------------------------------------------------- CLI


def _evaluate_args(chain, checkpoint: Path, out_dir: Path) -> list[str]:
    import json

    cfg, out, _ = chain
    params = json.dumps({"data": TINY["data"], "model": TINY["model"], "evaluate": TINY["evaluate"],
                         "finetune": TINY["finetune"]})
    return ["evaluate", "--params", params, "--model", "lgr", "--manifest", str(out / "manifest.parquet"),
            "--checkpoint", str(checkpoint), "--text-emb", str(out / "text_emb.safetensors"),
            "--out-dir", str(out_dir)]


def test_cli_refuses_with_one_clear_message(chain, tmp_path):
    _, out, _ = chain
    marker = tmp_path / "marker"
    evil = _poison(out / "lgr.pt", tmp_path / "evil.pt", marker)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop(io.TRUST_ENV, None)
    r = subprocess.run([sys.executable, "-m", "langtail.cli", *_evaluate_args(chain, evil, tmp_path / "ev")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if " ERROR " in ln]
    assert len(errors) == 1 and str(evil) in errors[0] and "--trust-checkpoint" in errors[0], r.stderr
    assert not marker.exists() and not (tmp_path / "ev" / "metrics.json").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_cli_trust_flag_loads_an_old_checkpoint(chain, tmp_path, where, caplog):
    """An old-style checkpoint (numpy scalars pickled in ``extra``) evaluates with the flag,
    before or after the subcommand; without it, main returns 2."""
    from langtail.cli import main

    _, out, metrics = chain
    ck = torch.load(out / "lgr.pt", weights_only=True)
    ck["extra"]["tau"] = np.float64(ck["extra"]["tau"])
    old = tmp_path / "old.pt"
    torch.save(ck, old)
    args = _evaluate_args(chain, old, tmp_path / "ev")
    assert main(args) == 2 and not (tmp_path / "ev" / "metrics.json").exists()
    args = ["--trust-checkpoint", *args] if where == "before" else [args[0], "--trust-checkpoint", *args[1:]]
    with caplog.at_level(logging.WARNING, logger="langtail.io"):
        assert main(args) == 0
    assert any("UNSAFE" in r.getMessage() for r in caplog.records)
    assert io.read_json(tmp_path / "ev" / "metrics.json")["overall"] == metrics["lgr"]["overall"]
    assert io.trust_checkpoints()  # main() opted in for this process; the fixture undoes it


def test_no_opt_in_leaks_from_the_cli_test():
    assert not io.trust_checkpoints()


# ----------------------------------------------------------------------------- round trip


def test_train_resume_evaluate_round_trip_with_the_safe_loader(chain, tmp_path, monkeypatch):
    """Checkpoints and resume files of the current code load with weights_only=True; a
    killed finetune resumes from its resume file to the uninterrupted weights and metrics."""
    import langtail.stages.finetune as ft
    from langtail.stages.evaluate import run as run_evaluate

    cfg, out, metrics = chain
    for f in ("pretrain.pt", "lgr.pt"):
        torch.load(out / f, weights_only=True)
    man, emb, pre = out / "manifest.parquet", out / "text_emb.safetensors", out / "pretrain.pt"
    model = tmp_path / "lgr.pt"
    real = ft.recognition_loss
    steps = len(read_manifest(man)[0].query("split == 'train'")) // cfg.finetune.batch_size
    calls = {"n": 0}

    def dying(*a, **kw):
        calls["n"] += 1
        if calls["n"] == steps + 1:
            raise KeyboardInterrupt("simulated kill")
        return real(*a, **kw)

    monkeypatch.setattr(ft, "recognition_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        ft.run(cfg, "lgr", man, model, emb, pre)
    st = torch.load(model.with_name("lgr.pt.resume"), weights_only=True)
    assert st["epoch"] == 1 and torch.is_tensor(st["rng"]["numpy"]["key"])
    monkeypatch.setattr(ft, "recognition_loss", real)
    ft.run(cfg, "lgr", man, model, emb, pre)
    got = torch.load(model, weights_only=True)
    assert got["extra"]["resumed_from_epoch"] == 1
    ref = torch.load(out / "lgr.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, got["state_dict"][k]) for k, v in ref.items())
    m = run_evaluate(cfg, "lgr", man, model, tmp_path / "eval", emb)
    assert m["overall"] == metrics["lgr"]["overall"]


# ----------------------------------------------------------------------------- cache names


HOSTILE = ["../../etc/passwd", "/etc/passwd", "..", ".", "", "a/../../b", "nul\0byte", "C:\\windows\\x",
           "x" * 5000, "é" * 300, "\ud800lone surrogate", "~/.ssh/id_rsa", " ", "a\nb"]


@pytest.mark.parametrize("name", HOSTILE)
def test_cache_file_names_stay_in_their_directory(tmp_path, name):
    cache = tmp_path / "cache"
    cache.mkdir()
    p = io.cache_file(cache, name, ".json")
    fname = io.safe_filename(name, ".json")
    assert p == cache / fname and p.resolve().parent == cache.resolve()
    assert "/" not in fname and "\\" not in fname and "\0" not in fname and ".." not in fname
    assert len(fname.encode()) <= 80 and fname.endswith(".json") and not fname.startswith(".")
    io.write_json(p, {"name": "x"})  # writable: a plain file name
    assert [f.name for f in cache.iterdir()] == [fname]


def test_cache_names_are_distinct_and_stable():
    names = ["a/b", "a_b", "a b", "A B", "x" * 5000, "x" * 5001]
    fnames = [io.safe_filename(n) for n in names]
    assert len(set(fnames)) == len(names)
    assert io.safe_filename("Great white shark", ".json") == "great_white_shark-" \
        f"{__import__('hashlib').sha1(b'Great white shark').hexdigest()[:10]}.json"
    with pytest.raises(ValueError, match="suffix"):
        io.safe_filename("a", "/../x")


def test_cache_file_refuses_a_planted_symlink(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / io.safe_filename("tench", ".json")).symlink_to(tmp_path / "outside.json")
    with pytest.raises(ValueError, match="outside its cache directory"):
        io.cache_file(cache, "tench", ".json")


def test_wikipedia_cache_uses_the_safe_names(tmp_path):
    from langtail.corpus import wiki_cache

    name = "../../etc/passwd"
    p = wiki_cache.write_cached(tmp_path, name, {"title": "x", "text": "t"})
    assert p.parent == tmp_path and p.name == wiki_cache.cache_filename(name)
    assert wiki_cache.read_cached(tmp_path, name)["query"] == name
    # the file names of existing caches are unchanged (slug of the normalised name + sha1)
    assert wiki_cache.cache_filename("Great_White  Shark") == io.safe_filename(
        "Great_White  Shark", ".json", label="great white shark")


def test_cifar_pickles_cannot_run_code(tmp_path):
    """CIFAR batches are pickles too: only numpy arrays and bytes are resolved."""
    import pickle

    from langtail.data import cifar

    spec = cifar.CIFAR10
    good = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2]}, protocol=2)
    assert cifar._unpickle(good, "data_batch_1", spec)["labels"] == [1, 2]
    marker = tmp_path / "marker"
    with pytest.raises(ValueError, match=r"data_batch_1 is not a CIFAR pickle.*builtins.exec"):
        cifar._unpickle(pickle.dumps({"data": Payload(marker)}), "data_batch_1", spec)
    assert not marker.exists()
