"""Training throughput (images/s) of CVLP and LGR fine-tuning: compute ceiling vs real JPEG loading (issue #11).

For each task, one run measures side by side:

- ``synthetic``: random tensors already on the device (the compute ceiling: no loading);
- ``jpeg_loader``: JPEGs read from a folder through the project's own training loader
  (:func:`langtail.data.dataset.make_loader` with the training transform of
  :func:`~langtail.data.dataset.build_transform`, the sqrt sampler of the stages, PIL decode
  + random-resized-crop + flip + normalise in DataLoader workers), for every combination of
  ``--workers``, ``--pin-memory`` and ``--persistent-workers``;
- ``jpeg_device_decode`` (``--device-decode``): the workers only read the JPEG bytes;
  ``torchvision.io.decode_jpeg`` decodes the batch on the device, and crop / flip / normalise
  run there too.

Tasks (the paper's ImageNet-LT setting, Sec. 4.3): ``cvlp`` = one pre-training step of
:mod:`langtail.stages.pretrain` (open_clip ``RN50`` image and text towers, random init, no
download; class-wise contrastive loss + logit distillation from a frozen random ``RN50``
teacher; one class sentence per image, tokenised per step as the stage does), ``lgr`` = one
fine-tuning step of :mod:`langtail.stages.finetune` (RN50 visual encoder + LGR head over
``[C, M, D]`` = ``[1000, 64, 1024]`` anchors). Both at 224 px, AMP (fp16 autocast + grad
scaler) and channels-last, AdamW.

The folder is a synthetic ImageNet-LT-format tree (:func:`langtail.data.synthetic_lt.write_lt_tree`,
``--jpeg-size`` px JPEGs, quality 90: decode cost close to ImageNet's ~400x350 photos) indexed by
the ``longtail`` stage. Each row times ``--steps`` steps after ``--warmup`` steps; the figure is
images / wall-clock second (device synchronised). The device name is printed with the figures
and written to ``--out`` (JSON) and its ``.md``, with the command.

    python benchmarks/gpu_throughput.py                     # on a GPU node: RN50, 224 px
    python benchmarks/gpu_throughput.py --tiny --out /tmp/t.json   # CPU smoke mode (tests)
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from langtail.config import DataConfig, DatasetConfig, ModelConfig  # noqa: E402
from langtail.data.dataset import MEAN_STD, build_transform, make_loader, store_for  # noqa: E402
from langtail.data.manifest import read_manifest  # noqa: E402
from langtail.losses import (class_contrastive_loss, cosine_matrix, logit_distillation_loss,  # noqa: E402
                             pretrain_loss, recognition_loss)
from langtail.models.encoders import create_teacher, create_vl_model  # noqa: E402
from langtail.models.heads import Classifier, LGRHead  # noqa: E402


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- data

def make_tree(work: Path, classes: int, per_class: int, jpeg_size: int) -> tuple[Path, dict, object]:
    """Synthetic ImageNet-LT-format tree + its manifest (the ``longtail`` stage)."""
    from langtail.data.synthetic_lt import write_lt_tree
    from langtail.stages import longtail

    write_lt_tree(work / "tree", classes, train_counts=[per_class] * classes, val_per_class=1, test_per_class=1,
                  image_size=jpeg_size, quality=90, seed=0)
    man = work / "manifest.parquet"
    longtail.run(DatasetConfig(data=DataConfig(name="imagenet_lt", root=str(work / "tree"), profile="file")), man)
    df, meta = read_manifest(man)
    return man, meta, df[df["split"] == "train"].reset_index(drop=True)


class RawJpegs(torch.utils.data.Dataset):
    """Manifest rows as ``(JPEG file bytes, label)``: decoding is left to the device."""

    def __init__(self, df, store):
        self.paths = [str(store.path(r)) for r in df["image"]]
        self.labels = df["label"].to_numpy().astype(np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with open(self.paths[i], "rb") as f:
            return f.read(), int(self.labels[i])


def _collate_raw(batch):
    """Bytes cross the worker boundary as one pickled list (no per-image shared-memory tensors)."""
    return {"jpeg": [b[0] for b in batch], "label": torch.tensor([b[1] for b in batch])}


def device_decode(jpegs: list[torch.Tensor], size: int, normalize: str, device: torch.device) -> torch.Tensor:
    """``torchvision.io.decode_jpeg`` on ``device``, then random-resized-crop + flip + normalise there."""
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms import v2

    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpegs]
    imgs = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    tf = v2.Compose([v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True), v2.RandomHorizontalFlip()])
    x = torch.stack([tf(im) for im in imgs]).float().div_(255)
    mean, std = MEAN_STD[normalize]
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (x - m) / s


# ----------------------------------------------------------------------------- tasks

class Task:
    """One training step of a stage's model on ``(x [B, 3, S, S], y [B])``."""

    def __init__(self, kind: str, mcfg: ModelConfig, num_classes: int, num_anchors: int, device: torch.device,
                 amp: bool, channels_last: bool):
        self.kind, self.device, self.channels_last = kind, device, channels_last
        self.amp = amp and device.type == "cuda"
        self.teacher = None
        if kind == "cvlp":
            self.model = create_vl_model(mcfg).to(device)
            self.teacher = create_teacher(mcfg)
            if self.teacher is not None:
                self.teacher = self.teacher.to(device)
            per = 4
            self.sentences = [f"a photo of class {c}, view {k}." for c in range(num_classes) for k in range(per)]
            self.per = per
            if getattr(self.model.text, "frozen", False):
                from langtail.models.text_cache import base_features

                self.feats = base_features(self.model.text, self.sentences, None).to(device)
            self.teacher_text = None
            if self.teacher is not None:
                import open_clip

                tok = open_clip.get_tokenizer(mcfg.teacher)
                with torch.no_grad():
                    self.teacher_text = torch.cat([self.teacher.encode_text(tok(self.sentences[i:i + 256]).to(device)).float()
                                                   for i in range(0, len(self.sentences), 256)])
            net = self.model
        else:
            vl = create_vl_model(mcfg)
            D = vl.image.embed_dim
            g = torch.Generator().manual_seed(0)
            emb = torch.nn.functional.normalize(torch.randn(num_classes, num_anchors, D, generator=g), dim=-1)
            net = self.model = Classifier(vl.image, LGRHead(emb), "lgr").to(device)
        if channels_last:
            self.model.image.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-5)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.model.train()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            if self.kind == "cvlp":
                m = self.model
                sid = y * self.per + torch.randint(0, self.per, y.shape, device=self.device)
                img = m.image(x)
                if getattr(m.text, "frozen", False):
                    txt = m.text.project(self.feats[sid])
                else:
                    txt = m.text([self.sentences[i] for i in sid.tolist()])
                sim = cosine_matrix(img.float(), txt.float())
                l_ccl = class_contrastive_loss(sim, y, y, m.tau)
                l_dis = None
                if self.teacher is not None:
                    with torch.no_grad():
                        t_img = self.teacher.encode_image(x).float()
                    l_dis = logit_distillation_loss(sim, cosine_matrix(t_img, self.teacher_text[sid]), m.tau)
                loss = pretrain_loss(l_ccl, l_dis, 0.5 if l_dis is not None else 1.0)
            else:
                out = self.model(x)
                loss = recognition_loss(out["image"].float(), out["text"].float(), y)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return float(loss.detach())


def timed(task: Task, batches, warmup: int, steps: int) -> dict:
    """Images/s over ``steps`` steps after ``warmup`` (``batches``: an iterator of ``(x, y)``)."""
    it = iter(batches)
    for _ in range(warmup):
        task.step(*next(it))
    sync(task.device)
    n, t0 = 0, time.perf_counter()
    for _ in range(steps):
        x, y = next(it)
        task.step(x, y)
        n += len(y)
    sync(task.device)
    dt = time.perf_counter() - t0
    return {"images": n, "seconds": round(dt, 3), "images_per_s": round(n / dt, 1)}


def synthetic_batches(batch: int, size: int, classes: int, device: torch.device):
    g = torch.Generator(device=device).manual_seed(0) if device.type == "cuda" else torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device, generator=g)
    while True:
        yield x, torch.randint(0, classes, (batch,), device=device)


def loader_batches(loader, device: torch.device, size: int, normalize: str, raw: bool):
    while True:  # epochs repeat (persistent workers or not, as configured)
        for b in loader:
            if raw:
                yield device_decode(b["jpeg"], size, normalize, device), b["label"]
            else:
                yield b["image"], b["label"]


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke mode: demo_cnn + frozen MiniLM, 32 px, few steps")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tasks", nargs="+", default=["cvlp", "lgr"], choices=["cvlp", "lgr"])
    ap.add_argument("--image-size", type=int, default=None, help="network input (default 224; tiny 32)")
    ap.add_argument("--batch-cvlp", type=int, default=None, help="default 256 (the paper's); tiny 8")
    ap.add_argument("--batch-lgr", type=int, default=None, help="default 128; tiny 8")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per row (default 30; tiny 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per row (default 5; tiny 1)")
    ap.add_argument("--classes", type=int, default=None, help="classes C (default 1000; tiny 6)")
    ap.add_argument("--anchors", type=int, default=None, help="LGR anchors per class M (default 64; tiny 4)")
    ap.add_argument("--jpeg-size", type=int, default=None, help="JPEG side in px (default 384; tiny 48)")
    ap.add_argument("--images-per-class", type=int, default=None, help="JPEGs per class in the folder (default 12; tiny 4)")
    ap.add_argument("--workers", type=int, nargs="+", default=None, help="DataLoader workers (default 8 16; tiny 0 1)")
    ap.add_argument("--pin-memory", type=int, nargs="+", default=[1], choices=[0, 1])
    ap.add_argument("--persistent-workers", type=int, nargs="+", default=[1], choices=[0, 1])
    ap.add_argument("--device-decode", action="store_true", help="also measure torchvision.io.decode_jpeg on the device")
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--work", default=None, help="folder for the JPEG tree (default: a temporary one)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_throughput.json"))
    a = ap.parse_args(argv)
    t = a.tiny
    size = a.image_size or (32 if t else 224)
    steps, warmup = a.steps or (2 if t else 30), a.warmup if a.warmup is not None else (1 if t else 5)
    C, M = a.classes or (6 if t else 1000), a.anchors or (4 if t else 64)
    workers = a.workers if a.workers is not None else ([0, 1] if t else [8, 16])
    batch = {"cvlp": a.batch_cvlp or (8 if t else 256), "lgr": a.batch_lgr or (8 if t else 128)}
    jpeg_size, per_class = a.jpeg_size or (48 if t else 384), a.images_per_class or (4 if t else 12)
    if a.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(a.device)
    if t:
        mcfg = ModelConfig(image_encoder="demo_cnn", text_encoder="minilm", embed_dim=32)
        normalize = "cifar"
    else:
        mcfg = ModelConfig(image_encoder="RN50", text_encoder="clip", pretrained="", train_text_encoder=True,
                           embed_dim=1024, teacher="RN50", teacher_pretrained="")
        normalize = "clip"
    amp, cl = not a.no_amp, not a.no_channels_last
    name = device_name(device)
    command = "python benchmarks/gpu_throughput.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    print(f"device: {name}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work) if a.work else Path(tmp)
        t0 = time.perf_counter()
        man, meta, train_df = make_tree(work, C, per_class, jpeg_size)
        print(f"JPEG folder: {len(train_df)} images of {jpeg_size} px ({time.perf_counter() - t0:.1f} s)", flush=True)
        store = store_for(man, meta)
        for kind in a.tasks:
            B = batch[kind]
            task = Task(kind, mcfg, C, M, device, amp, cl)
            base = {"task": kind, "batch": B, "image_size": size}
            r = timed(task, synthetic_batches(B, size, C, device), warmup, steps)
            ceiling = r["images_per_s"]
            rows.append({**base, "input": "synthetic", "workers": None, "pin_memory": None,
                         "persistent_workers": None, **r, "fraction_of_synthetic": 1.0})
            print(f"{kind:5s} synthetic on {name}: {ceiling:.1f} images/s", flush=True)
            combos = list(itertools.product(workers, a.pin_memory, a.persistent_workers))
            modes = ["jpeg_loader"] + (["jpeg_device_decode"] if a.device_decode else [])
            for mode, (w, pin, pers) in itertools.product(modes, combos):
                if w == 0 and pers:
                    pers = 0  # persistent workers need workers
                if mode == "jpeg_loader":
                    loader = make_loader(train_df, store, build_transform(True, size, normalize), B, train=True,
                                         sampler="sqrt", seed=0, num_workers=w, pin_memory=bool(pin) and device.type == "cuda",
                                         persistent_workers=bool(pers))
                else:
                    samp = torch.utils.data.RandomSampler(range(len(train_df)), replacement=True,
                                                          num_samples=len(train_df))
                    loader = torch.utils.data.DataLoader(RawJpegs(train_df, store), batch_size=B, sampler=samp,
                                                         num_workers=w, collate_fn=_collate_raw, drop_last=True,
                                                         pin_memory=False, persistent_workers=bool(pers) and w > 0)
                r = timed(task, loader_batches(loader, device, size, normalize, mode != "jpeg_loader"), warmup, steps)
                rows.append({**base, "input": mode, "workers": w, "persistent_workers": bool(pers),
                             "pin_memory": bool(pin) and mode == "jpeg_loader" and device.type == "cuda",  # as applied
                             **r, "fraction_of_synthetic": round(r["images_per_s"] / ceiling, 3)})
                print(f"{kind:5s} {mode} workers={w} pin={pin} persistent={pers} on {name}: "
                      f"{r['images_per_s']:.1f} images/s ({100 * r['images_per_s'] / ceiling:.0f} % of synthetic)", flush=True)
                del loader
            del task
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result = {"command": command, "device": name, "device_type": device.type, "tiny": t,
              "torch": torch.__version__, "cpus": os.cpu_count(),
              "setting": {"model": mcfg.image_encoder, "text": mcfg.text_encoder, "teacher": mcfg.teacher or None,
                          "image_size": size, "amp": amp and device.type == "cuda", "channels_last": cl,
                          "classes": C, "anchors": M, "jpeg_size": jpeg_size, "folder_images": C * per_class,
                          "steps": steps, "warmup": warmup},
              "rows": rows}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# Training throughput: {name}", "", f"Command: `{command}`", "",
          f"Setting: {mcfg.image_encoder} ({'tiny CPU smoke mode' if t else 'random init'}), {size} px, "
          f"AMP {'on' if result['setting']['amp'] else 'off'}, channels-last {'on' if cl else 'off'}, "
          f"C = {C}, M = {M}; JPEG folder {C * per_class} images of {jpeg_size} px.", "",
          "| task | input | workers | pin memory | persistent | batch | images/s | % of synthetic |",
          "|---|---|---:|---|---|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['task']} | {r['input']} | {'' if r['workers'] is None else r['workers']} | "
                  f"{'' if r['pin_memory'] is None else r['pin_memory']} | "
                  f"{'' if r['persistent_workers'] is None else r['persistent_workers']} | {r['batch']} | "
                  f"{r['images_per_s']:.1f} | {100 * r['fraction_of_synthetic']:.0f} |")
    for kind in a.tasks:
        best = max((r for r in rows if r["task"] == kind and r["input"] != "synthetic"),
                   key=lambda r: r["fraction_of_synthetic"], default=None)
        if best is not None:
            md.append("")
            md.append(f"{kind}: best JPEG path {best['input']} (workers {best['workers']}, pinned {best['pin_memory']}, "
                      f"persistent {best['persistent_workers']}) = {100 * best['fraction_of_synthetic']:.0f} % of the "
                      f"synthetic ceiling (issue #11 target: >= 85 % on one GPU with 16 CPU cores).")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
