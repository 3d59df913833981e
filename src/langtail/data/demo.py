"""The offline demo dataset: generated, deterministic, no downloads.

24 classes = 4 colours x 3 shapes x 2 fill patterns ("red striped triangle"), rendered
as 32x32 RGB images with random position, scale, rotation, colour jitter, a random
low-contrast background and pixel noise. The training split is long-tailed with the
exponential profile (``data.max_train_per_class`` = 300 down to 300 / IF = 6 images at
IF = 50); the test split is balanced (``data.test_per_class``, default 50).
Many/medium/few groups with the standard thresholds come out as 7 / 9 / 8 classes.

Each class also gets one encyclopedia-style page in the plain-text layout the MediaWiki
API returns (``prop=extracts&explaintext&exsectionformat=wiki``): a summary, ``== ... ==``
sections, ``== References ==`` and ``== External links ==``. Pages mix sentences that
describe the visual attributes with irrelevant noise sentences, so that section
cleaning, sentence splitting and anchor selection all have real work to do. The corpus
stage receives them through :meth:`DemoDataset.pages` in its raw-page cache format.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from langtail.config import DataConfig
from langtail.data.longtail import exp_profile
from langtail.data.manifest import ManifestBuild
from langtail.data.registry import register

COLOURS = {  # name -> RGB
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (45, 80, 220),
    "yellow": (230, 210, 40),
}
SHAPES = ("circle", "square", "triangle")
FILLS = ("solid", "striped")

# attribute sentences: the useful text ({} is the class name)
COLOUR_TEXT = {
    "red": ["Its colour is a bright red, like a ripe tomato or a fire engine.",
            "The {} is painted in a strong crimson red hue."],
    "green": ["Its colour is a fresh green, like grass or a lime.",
              "The {} is painted in a leafy green hue."],
    "blue": ["Its colour is a deep blue, like the sea or a clear sky.",
             "The {} is painted in a cobalt blue hue."],
    "yellow": ["Its colour is a vivid yellow, like a lemon or a sunflower.",
               "The {} is painted in a golden yellow hue."],
}
SHAPE_TEXT = {
    "circle": ["It is perfectly round, with a single curved edge and no corners.",
               "Its outline is a circle, like a coin or a wheel."],
    "square": ["It has four equal straight sides and four right-angled corners.",
               "Its outline is a square, like a tile or a window pane."],
    "triangle": ["It has three straight sides and three pointed corners.",
                 "Its outline is a triangle, like a road sign or a slice of pizza."],
}
FILL_TEXT = {
    "solid": ["Its surface is filled with one uniform, flat colour without any pattern.",
              "The inside of the {} is plain and solid."],
    "striped": ["Its surface is covered with parallel stripes that alternate with the background.",
                "The inside of the {} shows a pattern of thin lines, like a zebra."],
}
NOISE = [
    "The first written record of the {} dates from a trade register of 1887.",
    "Several museums hold collections of historical examples.",
    "In 1923 a committee in Geneva published a standard for its manufacture.",
    "The word is sometimes used as a nickname in sports journalism.",
    "Its popularity declined during the economic crisis of the 1930s, e.g. in rural areas.",
    "Dr. Helen Marsh of St. Andrews wrote a monograph on its social history.",
    "Prices rose by approx. 3.5 percent per year during the following decade.",
    "A festival dedicated to the {} is held every summer in a small village.",
    "Critics have argued that its cultural importance is often overstated.",
    "The national archive lists more than 2,400 documents that mention it.",
    "Collectors trade rare editions at auctions in London and New York.",
    "A popular song from 1964 refers to it in the second verse.",
]


def class_attributes() -> list[tuple[str, str, str]]:
    """(colour, fill, shape) per class, in label order."""
    return [(c, f, s) for c in COLOURS for s in SHAPES for f in FILLS]


def class_names() -> list[str]:
    return [f"{c} {f} {s}" for c, f, s in class_attributes()]


def _render(rng: np.random.Generator, colour: str, fill: str, shape: str, size: int = 32) -> np.ndarray:
    """One image, ``uint8 [size, size, 3]``."""
    from PIL import Image, ImageDraw

    S = size * 4  # draw at 4x, downsample for anti-aliasing
    bg = rng.integers(60, 200, size=3)
    base = np.full((S, S, 3), bg, dtype=np.float32)
    # low-frequency background texture
    yy, xx = np.mgrid[0:S, 0:S] / S
    for _ in range(2):
        fx, fy, ph = rng.uniform(0.5, 3, 2).tolist() + [rng.uniform(0, 2 * math.pi)]
        base += rng.uniform(5, 25) * np.sin(2 * math.pi * (fx * xx + fy * yy) + ph)[..., None]
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))

    rgb = np.asarray(COLOURS[colour], dtype=np.float32)
    rgb = np.clip(rgb * rng.uniform(0.8, 1.15) + rng.normal(0, 12, 3), 0, 255).astype(int)
    r = rng.uniform(0.22, 0.38) * S
    cx, cy = rng.uniform(r + 2, S - r - 2, 2)
    ang = rng.uniform(0, 2 * math.pi)
    mask = Image.new("L", (S, S), 0)
    d = ImageDraw.Draw(mask)
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        k = 4 if shape == "square" else 3
        rr = r * (1.2 if shape == "triangle" else 1.0)
        pts = [(cx + rr * math.cos(ang + 2 * math.pi * i / k), cy + rr * math.sin(ang + 2 * math.pi * i / k))
               for i in range(k)]
        d.polygon(pts, fill=255)
    m = np.asarray(mask, dtype=np.float32) / 255.0
    if fill == "striped":
        period = rng.uniform(0.14, 0.22) * S
        t = rng.uniform(0, math.pi)
        coord = (xx * S) * math.cos(t) + (yy * S) * math.sin(t)
        stripes = ((coord / period) % 1.0) < 0.5
        m = m * stripes
    arr = np.asarray(img, dtype=np.float32)
    arr = arr * (1 - m[..., None]) + rgb[None, None, :] * m[..., None]
    small = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    out = np.asarray(small, dtype=np.float32) + rng.normal(0, 8, (size, size, 3))
    return np.clip(out, 0, 255).astype(np.uint8)


def render_split(counts: list[int], seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Render ``counts[c]`` images of each class; returns (``uint8 [N,H,W,3]``, ``int64 [N]``)."""
    attrs = class_attributes()
    imgs, labels = [], []
    for c, n in enumerate(counts):
        rng = np.random.default_rng([seed, c])
        col, fill, shape = attrs[c]
        for _ in range(n):
            imgs.append(_render(rng, col, fill, shape, size))
            labels.append(c)
    return np.stack(imgs), np.asarray(labels, dtype=np.int64)


def make_page(c: int, seed: int = 0) -> str:
    """Encyclopedia-style plain-text page for class ``c`` (MediaWiki ``explaintext`` layout)."""
    col, fill, shape = class_attributes()[c]
    name = class_names()[c]
    rng = np.random.default_rng([seed, 1000 + c])
    noise = [NOISE[i].format(name) for i in rng.permutation(len(NOISE))]
    useful = [s.format(name) for s in COLOUR_TEXT[col] + SHAPE_TEXT[shape] + FILL_TEXT[fill]]
    order = rng.permutation(len(useful))
    useful = [useful[i] for i in order]
    art = "An" if name[0] in "aeiou" else "A"
    lines = [
        f"{art} {name} is a flat geometric figure. {useful[0]} {noise[0]}",
        "",
        "== Appearance ==",
        f"{useful[1]} {useful[2]} {noise[1]}",
        f"{useful[3]}",
        "",
        "=== Variants ===",
        f"{useful[4]} {noise[2]} {useful[5]}",
        "",
        "== History ==",
        f"{noise[3]} {noise[4]} {noise[5]}",
        "",
        "== In culture ==",
        f"{noise[6]} {noise[7]}",
        "",
        "== See also ==",
        "Geometry",
        "Colour theory",
        "",
        "== References ==",
        f"Marsh, H. (1931). The {name}: a social history. Oxford University Press. pp. 12–48.",
        "",
        "== External links ==",
        f"Official site of the {name} society",
    ]
    return "\n".join(lines)


@register("demo")
class DemoDataset:
    name = "demo"

    def class_names(self, cfg: DataConfig) -> list[str]:
        return class_names()

    def build(self, cfg: DataConfig, out_dir: Path) -> ManifestBuild:
        n_max = cfg.max_train_per_class or 300
        counts = exp_profile(n_max, len(class_names()), cfg.imbalance_factor)
        test_n = cfg.test_per_class or 50
        out_dir = Path(out_dir)
        tr_x, tr_y = render_split(counts, cfg.seed, cfg.image_size)
        te_x, te_y = render_split([test_n] * len(counts), cfg.seed + 1_000_003, cfg.image_size)
        from langtail.io import atomic_path

        for split, x in (("train", tr_x), ("test", te_x)):
            with atomic_path(out_dir / f"images_{split}.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, x)
        images = [f"images_train.npy#{i}" for i in range(len(tr_y))] + [f"images_test.npy#{i}" for i in range(len(te_y))]
        return ManifestBuild(
            images=images,
            labels=tr_y.tolist() + te_y.tolist(),
            splits=["train"] * len(tr_y) + ["test"] * len(te_y),
            class_names=class_names(),
            meta={"generator": "langtail.data.demo", "profile": "exp", "n_max": n_max,
                  "imbalance_factor": cfg.imbalance_factor, "test_per_class": test_n},
        )

    def pages(self, cfg: DataConfig | None = None) -> dict[str, dict]:
        """Generated pages in the corpus raw-page cache format (class name -> page)."""
        seed = cfg.seed if cfg else 0
        return {
            name: {"query": name, "title": name.capitalize(), "pageid": 100000 + c, "revid": 1,
                   "fetched_at": "1970-01-01T00:00:00Z", "language": "en", "api_url": "builtin:demo",
                   "status": "ok", "text": make_page(c, seed)}
            for c, name in enumerate(class_names())
        }
