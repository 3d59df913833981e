"""Parts added from outside the package: a head, a loss, an image encoder and a dataset format
defined in a file in a temporary directory, registered through the public API
(:mod:`langtail.registry`) and loaded via ``$LANGTAIL_PLUGINS``, run through the Snakemake
workflow (every job is a ``langtail`` command) to a report and then through ``langtail predict``;
a loss installed as an entry point (a ``.dist-info`` on the path). Nothing in ``src/`` is edited.
The example is the one docs/extending.md walks through."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT

PLUGIN = '''
"""my_parts.py: one head, one loss, one image encoder, one dataset format (docs/extending.md)."""
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from langtail.data.manifest import ManifestBuild
from langtail.io import atomic_path
from langtail.models.encoders import ImageTower
from langtail.registry import DATASETS, HEADS, IMAGE_ENCODERS, LOSSES


# -- an image encoder: factory(cfg: ModelConfig) -> ImageTower
class PooledMLP(nn.Module):
    """[B, 3, H, W] -> 8x8 average pool -> MLP -> [B, 64]."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(8), nn.Flatten(), nn.Linear(3 * 64, 64), nn.ReLU())
        self.out_dim = 64

    def forward(self, x):
        return self.net(x)


@IMAGE_ENCODERS.register("pooled_mlp", keys={"model": ("embed_dim",)}, info={"image_size": 32, "weights": "scratch"})
def pooled_mlp(cfg):
    backbone = PooledMLP()
    return ImageTower(backbone, backbone.out_dim, cfg.embed_dim, "pooled_mlp")


# -- a head: factory(dim, num_classes, text_emb, mask, **options) -> module returning {"image": [B, C]}
class CosinePrototypes(nn.Module):
    def __init__(self, dim, num_classes, tau):
        super().__init__()
        self.proto = nn.Parameter(torch.randn(num_classes, dim) * 0.02)
        self.tau = tau

    def forward(self, e_img):
        return {"image": F.normalize(e_img, dim=-1) @ F.normalize(self.proto, dim=-1).t() / self.tau}


@HEADS.register("cosine_proto", keys={"finetune": ("epochs", "init_from_pretrain", "freeze_visual",
                                                   "visual_eval_mode", "tau")},
                inputs=("pretrain",),
                info={"needs": lambda cfg: ("pretrain",) if cfg.finetune.init_from_pretrain else (),
                      "options": lambda cfg, pretrain_path: {"tau": cfg.finetune.tau},
                      "encoder": "cvlp", "anchors": None, "label": "CVLP + cosine prototypes (plugin)",
                      "checkpoint": "prototypes [C, D]; extra: tau"})
def cosine_proto(dim, num_classes, text_emb, mask, tau=0.07):
    return CosinePrototypes(dim, num_classes, tau)


# -- a loss: factory(counts [C], **keys) -> module (logits [B, C], y [B], cosine_tau) -> []
@LOSSES.register("focal", info={"uses_priors": False, "doc": "Lin et al. 2017, gamma 2"})
class Focal(nn.Module):
    def __init__(self, counts=None, gamma=2.0):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits, y, cosine_tau=None):
        logp = F.log_softmax(logits.float(), dim=-1).gather(1, y[:, None]).squeeze(1)
        return (-(1 - logp.exp()) ** self.gamma * logp).mean()


# -- a dataset format: data.root/images.npz with x [N, H, W, 3] uint8, y [N], split [N], names [C]
@DATASETS.register("npz")
class NpzDataset:
    name = "npz"

    def _load(self, cfg):
        path = Path(cfg.root) / "images.npz"
        if not path.is_file():
            raise FileNotFoundError(f"dataset npz: {path} does not exist; set data.root to the folder holding it")
        return np.load(path)

    def class_names(self, cfg):
        return [str(n) for n in self._load(cfg)["names"]]

    def build(self, cfg, out_dir):
        z = self._load(cfg)
        images = []
        for split in ("train", "test"):
            idx = np.flatnonzero(z["split"] == split)
            with atomic_path(Path(out_dir) / f"images_{split}.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, z["x"][idx])
            images += [(f"images_{split}.npy#{i}", int(z["y"][j]), split) for i, j in enumerate(idx)]
        return ManifestBuild(images=[r[0] for r in images], labels=[r[1] for r in images],
                             splits=[r[2] for r in images], class_names=self.class_names(cfg),
                             meta={"generator": "my_parts.npz"})
'''

EP_MODULE = '''
import torch.nn as nn
import torch.nn.functional as F

from langtail.registry import LOSSES


@LOSSES.register("smoothed_ce", info={"uses_priors": False})
class SmoothedCE(nn.Module):
    def __init__(self, counts=None):
        super().__init__()

    def forward(self, logits, y, cosine_tau=None):
        return F.cross_entropy(logits, y, label_smoothing=0.1)
'''

NAMES = ["red square", "green circle", "blue triangle", "yellow star", "purple ring", "orange cross"]


def _npz(root: Path) -> None:
    """6 classes of coloured noise, long-tailed train split (20 -> 4), 4 test images each."""
    rng = np.random.default_rng(0)
    colours = rng.uniform(40, 215, size=(len(NAMES), 3))
    xs, ys, splits = [], [], []
    for c, n_train in enumerate([20, 14, 10, 7, 5, 4]):
        for split, n in (("train", n_train), ("test", 4)):
            x = colours[c] + rng.normal(0, 30, size=(n, 32, 32, 3))
            xs.append(np.clip(x, 0, 255).astype(np.uint8))
            ys += [c] * n
            splits += [split] * n
    root.mkdir(parents=True)
    np.savez(root / "images.npz", x=np.concatenate(xs), y=np.array(ys), split=np.array(splits),
             names=np.array(NAMES))


def _env(tmp: Path, plugin: Path) -> dict[str, str]:
    env = dict(os.environ, LANGTAIL_PLUGINS=str(plugin))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.fixture(scope="module")
def plugged(tmp_path_factory):
    """The workflow run on a config that uses every plugin part (tiny sizes)."""
    wd = tmp_path_factory.mktemp("plug")
    plugin = wd / "outside" / "my_parts.py"
    plugin.parent.mkdir()
    plugin.write_text(PLUGIN)
    _npz(wd / "npzdata")
    ds = {
        "data": {"name": "npz", "root": str(wd / "npzdata"), "many_threshold": 15, "few_threshold": 5},
        "corpus": {"sources": ["prompt"]},
        "model": {"image_encoder": "pooled_mlp", "text_encoder": "minilm", "embed_dim": 16},
        "pretrain": {"epochs": 1, "batch_size": 32, "device": "cpu"},
        "anchors": {"num_anchors": 4, "images_per_class": 4},
        "finetune": {"epochs": 1, "batch_size": 32, "device": "cpu", "heads": ["cosine_proto"],
                     "loss": "focal"},
        "evaluate": {"device": "cpu"},
    }
    (wd / "config.yaml").write_text(yaml.safe_dump({"results_dir": "results", "datasets": {"plug": ds}}))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(wd),
           "--cores", "2", "results/plug/report.md"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=_env(wd, plugin))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    return wd, plugin


def test_the_workflow_runs_plugin_parts_to_a_report(plugged):
    wd, _ = plugged
    res = wd / "results" / "plug"
    report = (res / "report.md").read_text()
    assert "CVLP + cosine prototypes (plugin)" in report  # the head's declared label
    m = json.loads((res / "eval" / "cosine_proto" / "metrics.json").read_text())
    assert m["model"] == "cosine_proto" and m["train_loss"] == "focal" and 0.0 <= m["overall"] <= 100.0
    assert m["params_m"] > 0  # the plugin encoder + head were built and costed
    from langtail.data.manifest import read_manifest

    df, meta = read_manifest(res / "manifest.parquet")
    assert meta["class_names"] == NAMES and len(df) == 60 + 24  # the plugin dataset built the manifest
    assert (res / "finetune" / "cosine_proto" / "model.pt").is_file()


def test_the_cli_predicts_with_a_plugin_checkpoint(plugged, tmp_path):
    wd, plugin = plugged
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(folder / "a.png")
    out = tmp_path / "pred.csv"
    cmd = [sys.executable, "-m", "langtail.cli", "predict", "--model",
           str(wd / "results/plug/finetune/cosine_proto/model.pt"), "--folder", str(folder), "--out", str(out),
           "--device", "cpu"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(tmp_path, plugin))
    assert p.returncode == 0, p.stderr[-3000:]
    assert out.read_text().count("a.png") >= 1
    # without the plugin, the checkpoint's head is unknown, and the error says how to add it
    env = _env(tmp_path, plugin)
    env["LANGTAIL_PLUGINS"] = ""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode != 0 and "cosine_proto" in p.stderr and "LANGTAIL_PLUGINS" in p.stderr


def test_a_plugin_loss_from_an_entry_point(tmp_path):
    """An installed plugin: a dist-info with an entry point of group langtail.losses."""
    (tmp_path / "ep_losses.py").write_text(EP_MODULE)
    dist = tmp_path / "langtail_ep_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: langtail-ep-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[langtail.losses]\nsmoothed_ce = ep_losses\n")
    code = textwrap.dedent("""
        import torch
        from langtail.config import from_dict
        from langtail.losses import LongTailLoss
        from_dict({"finetune": {"loss": "smoothed_ce"}})
        loss = LongTailLoss("smoothed_ce", [3, 2])
        print(round(float(loss(torch.zeros(2, 2), torch.tensor([0, 1]))), 4))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT / "src")]), LANGTAIL_PLUGINS="")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split()[-1] == "0.6931"


def test_an_unknown_part_in_the_config_names_the_registry(tmp_path):
    from langtail.config import ConfigError, dataset_config

    raw = {"datasets": {"d": {"finetune": {"heads": ["lgr", "nope"]}}}}
    with pytest.raises(ConfigError, match=r"finetune.heads: unknown head\(s\) \['nope'\]; known: .*lgr"):
        dataset_config(raw, "d")
    with pytest.raises(ConfigError, match=r"finetune.loss: unknown loss 'nope'; known: .*ldam"):
        dataset_config({"datasets": {"d": {"finetune": {"loss": "nope"}}}}, "d")
