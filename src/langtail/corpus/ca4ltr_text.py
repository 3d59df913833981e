"""Text fed to CA4LTR, per source (its features: :mod:`langtail.models.text_cache`).

Five sources (``ca4ltr.sources``); three are *class-level banks* (the same sentences for every
image, so they cannot leak an image's label), two are *per image*:

===============  ===========  ================================================================
source           kind         text
===============  ===========  ================================================================
``label``        class bank   ``k = ca4ltr.label_templates`` class-name prompts for **every**
                              class: ``"a photo of a {name}."`` first, then the CLIP ImageNet
                              templates in order (``C x k`` sentences).
``description``  class bank   the anchor sentences selected by AnSS (``anchors.parquet``,
                              ``selected``), best rank first, at most
                              ``ca4ltr.description_per_class`` per class (0 = all, i.e. M).
``nonsense_bank`` class bank one nonsense sentence per description sentence, with its word
                              count (seed ``ca4ltr.nonsense_seed``): the control of
                              ``description`` with the same bank size and lengths, not
                              confounded with per-image text.
``caption``      per image    the image's own BLIP-2 caption (``captions.parquet``, matched by
                              ``image_index`` = manifest row). Captions come from the pixels, so
                              they are usable at test time: the eval split must be captioned
                              (``captions.splits: [train, test]``, ``captions.per_class: 0``).
``nonsense``     per image    ``ca4ltr.nonsense_per_image`` fluent but meaningless sentences
                              (:class:`NonsenseGenerator`), generated from
                              ``(ca4ltr.nonsense_seed, image_index, j)`` only: no label input.
                              Word counts are drawn from the word counts of the description
                              text (selected anchors), words from a fixed vocabulary minus
                              every word of every class name.
===============  ===========  ================================================================

Nothing here reads a test image's label to build its text: per-image text is a function of
the image row (caption: of its pixels, through the captioner; nonsense: of its index). The
tests check that no test-time caption/nonsense text contains the ground-truth class name and
that the text does not change when the labels are permuted.

Features: every sentence is embedded once with the frozen MiniLM backbone (mean-pooled,
384-d) by :func:`langtail.models.text_cache.sentence_features` (on-disk cache keyed by
the sentence list); the model's own linear layer maps them to its width.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SOURCES = ("label", "description", "caption", "nonsense", "nonsense_bank")
CLASS_LEVEL = ("label", "description", "nonsense_bank")
PER_IMAGE = ("caption", "nonsense")
#: fraction of a split's rows that may lack a caption (unreadable images); more is an error
MAX_MISSING_CAPTIONS = 0.01

_WORD = re.compile(r"[a-z0-9]+")


# ----------------------------------------------------------------------------- class names


def class_words(class_names: Sequence[str]) -> set[str]:
    """Every word of every class name (lower case), with naive plurals: the nonsense stop list."""
    out: set[str] = set()
    for name in class_names:
        for w in _WORD.findall(name.replace("_", " ").lower()):
            out.update({w, w + "s", w + "es"})
            if w.endswith("y"):
                out.add(w[:-1] + "ies")
    return out


def mentions_class(text: str, class_name: str) -> bool:
    """Whether ``text`` contains the class's display name as whole words (case-insensitive,
    ``_`` = space, plural ``s``/``es`` accepted)."""
    words = _WORD.findall(class_name.replace("_", " ").lower())
    if not words:
        return False
    pat = r"\b" + r"[\s_\-]+".join(map(re.escape, words)) + r"(?:s|es)?\b"
    return re.search(pat, text.lower()) is not None


# ----------------------------------------------------------------------------- class banks


def label_bank(class_names: Sequence[str], k: int = 1) -> tuple[list[str], list[int]]:
    """``k`` prompts per class, class-major: ``"a photo of a {}."``, then the CLIP templates."""
    from langtail.corpus.prompts import CLIP_IMAGENET_TEMPLATES, render

    if k < 1:
        raise ValueError(f"ca4ltr.label_templates must be >= 1, got {k}")
    first = "a photo of a {}."
    templates = [first] + [t for t in CLIP_IMAGENET_TEMPLATES if t != first]
    if k > len(templates):
        raise ValueError(f"ca4ltr.label_templates={k}: only {len(templates)} templates exist")
    sents, cls = [], []
    for c, name in enumerate(class_names):
        for t in templates[:k]:
            sents.append(render(t, name))
            cls.append(c)
    return sents, cls


def description_bank(anchors: pd.DataFrame, num_classes: int, per_class: int = 0) -> tuple[list[str], list[int]]:
    """Selected anchor sentences, by class then rank (at most ``per_class`` each; 0 = all)."""
    sel = anchors[anchors["selected"]].sort_values(["class_id", "rank"], kind="stable")
    if per_class > 0:
        sel = sel.groupby("class_id", sort=False).head(per_class)
    missing = sorted(set(range(num_classes)) - set(sel["class_id"].tolist()))
    if missing:
        raise ValueError(f"description source: classes without a selected anchor sentence: {missing[:10]}")
    return sel["sentence"].astype(str).tolist(), sel["class_id"].astype(int).tolist()


def word_lengths(sentences: Sequence[str]) -> np.ndarray:
    """Whitespace word count of each sentence ``[S]`` int64."""
    return np.array([len(s.split()) for s in sentences], dtype=np.int64)


# ----------------------------------------------------------------------------- nonsense

# Abstract, deliberately un-visual words: fluent syntax, no meaning ("colorless green ideas").
_DET = ("the", "a", "every", "some", "no", "this", "that", "each", "another")
_ADJ = ("colorless", "furious", "quiet", "abstract", "polite", "reluctant", "hollow", "borrowed", "patient",
        "sudden", "oblique", "tidy", "humble", "elastic", "tentative", "dormant", "sincere", "vague", "eager",
        "restless", "curious", "modest", "brittle", "formal", "gradual", "infinite", "ordinary", "careful",
        "solemn", "distant", "hesitant", "nervous", "loyal", "frequent", "silent", "honest", "awkward",
        "fragile", "ancient", "clumsy")
_NOUN = ("idea", "promise", "theory", "opinion", "verdict", "rumour", "habit", "notion", "pretext", "outcome",
         "premise", "remark", "motive", "excuse", "tendency", "aftermath", "preface", "symmetry", "reluctance",
         "silence", "memory", "patience", "suspicion", "ambition", "surplus", "syntax", "logic", "doubt",
         "appetite", "manner", "apology", "dilemma", "nuance", "margin", "sequel", "context", "mood", "treaty",
         "ritual", "custom", "riddle", "proverb", "grammar", "temper", "echo", "hunch", "argument", "question")
_VERB_I = ("sleeps", "hesitates", "wanders", "lingers", "apologizes", "evaporates", "insists", "disagrees",
           "complains", "vanishes", "persists", "improvises", "waits", "wonders", "recovers", "dissolves",
           "argues", "listens", "trembles", "ponders", "objects", "pretends", "agrees", "returns", "collapses",
           "rehearses", "procrastinates")
_VERB_T = ("remembers", "borrows", "ignores", "postpones", "forgives", "imitates", "questions", "contradicts",
           "misplaces", "admires", "resembles", "rearranges", "dismisses", "tolerates", "predicts", "interrupts",
           "accompanies", "negotiates", "rehearses", "memorizes")
_ADV = ("furiously", "quietly", "seldom", "politely", "eventually", "gradually", "reluctantly", "patiently",
        "barely", "hardly", "slowly", "abruptly", "vaguely", "sincerely", "carefully", "rarely", "nervously",
        "briefly", "openly", "never")
_PREP = ("beneath", "beside", "across", "without", "during", "around", "against", "behind", "toward",
         "despite", "among", "within", "after", "before", "beyond")
_CONJ = ("and", "while", "because", "although", "until", "whereas", "unless", "since")
VOCABULARY: dict[str, tuple[str, ...]] = {"det": _DET, "adj": _ADJ, "noun": _NOUN, "verb_i": _VERB_I,
                                          "verb_t": _VERB_T, "adv": _ADV, "prep": _PREP, "conj": _CONJ}


@dataclass
class _NP:
    det: str
    noun: str
    adjs: list[str] = field(default_factory=list)

    def words(self) -> list[str]:
        from langtail.corpus.prompts import article

        ws = [*self.adjs, self.noun]
        det = article(ws[0]) if self.det == "a" else self.det
        return [det, *ws]


@dataclass
class _Clause:
    conj: str | None
    subj: _NP
    verb_i: str
    verb_t: str
    adv: str | None = None
    obj: _NP | None = None
    pps: list[tuple[str, _NP]] = field(default_factory=list)

    def words(self) -> list[str]:
        ws = [self.conj] if self.conj else []
        ws += self.subj.words()
        if self.adv:
            ws.append(self.adv)
        ws.append(self.verb_t if self.obj is not None else self.verb_i)
        if self.obj is not None:
            ws += self.obj.words()
        for prep, np_ in self.pps:
            ws += [prep, *np_.words()]
        return ws

    def nps(self) -> list[_NP]:
        return [self.subj] + ([self.obj] if self.obj is not None else []) + [p for _, p in self.pps]


class NonsenseGenerator:
    """Deterministic fluent nonsense: ``det adj* noun [adv] verb [object] [prep phrase]*
    [conj clause]*``, exactly ``n`` words.

    ``lengths``: reference word counts (the description text); each sentence's length is
    drawn from them. ``forbidden``: words never used (all class-name words,
    :func:`class_words`). Sentence ``j`` of image ``i`` depends only on ``(seed, i, j)``.
    """

    def __init__(self, lengths: Sequence[int], forbidden: set[str] = frozenset(), seed: int = 0):
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.size == 0 or (lengths < 1).any():
            raise ValueError("nonsense: need a non-empty list of positive reference sentence lengths")
        self.lengths = lengths
        self.seed = int(seed)
        bad = {w.lower() for w in forbidden}
        self.vocab = {k: tuple(w for w in ws if w not in bad) for k, ws in VOCABULARY.items()}
        short = [k for k, ws in self.vocab.items() if len(ws) < 2]
        if short:
            raise ValueError(f"nonsense: class names remove (almost) all {short} words of the vocabulary")

    def _pick(self, rng: np.random.Generator, kind: str) -> str:
        ws = self.vocab[kind]
        return ws[int(rng.integers(len(ws)))]

    def _np(self, rng: np.random.Generator) -> _NP:
        return _NP(self._pick(rng, "det"), self._pick(rng, "noun"))

    def _clause(self, rng: np.random.Generator, conj: bool) -> _Clause:
        return _Clause(self._pick(rng, "conj") if conj else None, self._np(rng), self._pick(rng, "verb_i"),
                       self._pick(rng, "verb_t"))

    def sentence(self, rng: np.random.Generator, n: int) -> str:
        """One sentence of exactly ``n`` words (capitalised, full stop)."""
        if n <= 2:
            np_ = self._np(rng)
            ws = [np_.noun] if n == 1 else np_.words()
        else:
            clauses = [self._clause(rng, False)]
            left = n - 3
            while left > 0:
                c = clauses[-1]
                opts: list[str] = []
                if left >= 4:
                    opts += ["clause"] * 2
                if left >= 3 and len(c.pps) < 2:
                    opts += ["pp"] * 2
                if left >= 2 and c.obj is None:
                    opts += ["obj"] * 2
                if c.adv is None:
                    opts.append("adv")
                if any(len(p.adjs) < 2 for p in c.nps()):
                    opts.append("adj")
                op = opts[int(rng.integers(len(opts)))] if opts else "adj!"
                if op == "clause":
                    clauses.append(self._clause(rng, True))
                    left -= 4
                elif op == "pp":
                    c.pps.append((self._pick(rng, "prep"), self._np(rng)))
                    left -= 3
                elif op == "obj":
                    c.obj = self._np(rng)
                    left -= 2
                elif op == "adv":
                    c.adv = self._pick(rng, "adv")
                    left -= 1
                else:  # an adjective (beyond two per noun only when nothing else fits)
                    nps = c.nps() if op == "adj!" else [p for p in c.nps() if len(p.adjs) < 2]
                    target = nps[int(rng.integers(len(nps)))]
                    adj = self._pick(rng, "adj")
                    if adj in target.adjs:
                        adj = next((a for a in self.vocab["adj"] if a not in target.adjs), adj)
                    target.adjs.append(adj)
                    left -= 1
            ws = [w for c in clauses for w in c.words()]
        text = " ".join(ws)
        return text[:1].upper() + text[1:] + "."

    def bank(self, lengths: Sequence[int]) -> list[str]:
        """One sentence of each word count in ``lengths`` (a class-level bank; a function of the seed only)."""
        return [self.sentence(np.random.default_rng([self.seed, 1 << 30, i]), int(n)) for i, n in enumerate(lengths)]

    def for_image(self, image_index: int, k: int = 1) -> list[str]:
        """The ``k`` sentences of image row ``image_index`` (a function of the seed and the index only)."""
        out = []
        for j in range(k):
            rng = np.random.default_rng([self.seed, int(image_index), j])
            out.append(self.sentence(rng, int(self.lengths[int(rng.integers(len(self.lengths)))])))
        return out


# ----------------------------------------------------------------------------- captions


def caption_lookup(captions: pd.DataFrame, manifest: pd.DataFrame) -> dict[int, str]:
    """``image_index -> caption``; fails if captions.parquet was made for another manifest."""
    idx = captions["image_index"].to_numpy()
    if len(idx) and (idx.min() < 0 or idx.max() >= len(manifest)):
        raise ValueError("captions.parquet does not match the manifest (image_index out of range); rerun captions")
    refs = manifest["image"].astype(str).to_numpy()
    bad = np.flatnonzero(refs[idx] != captions["image"].astype(str).to_numpy()) if len(idx) else []
    if len(bad):
        raise ValueError(f"captions.parquet does not match the manifest ({len(bad)} image references differ, "
                         f"e.g. row {int(idx[bad[0]])}); rerun the captions stage")
    return dict(zip(idx.tolist(), captions["caption"].fillna("").astype(str).tolist()))


# ----------------------------------------------------------------------------- sources


@dataclass
class TextSource:
    """The text of one source. Class-level: :attr:`bank` (+ :attr:`bank_class`, for
    inspection only; the model never sees it). Per image: :meth:`for_images`."""

    source: str
    bank: list[str] = field(default_factory=list)
    bank_class: list[int] = field(default_factory=list)
    captions: dict[int, str] | None = None
    nonsense: NonsenseGenerator | None = None
    per_image: int = 1
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def class_level(self) -> bool:
        return self.source in CLASS_LEVEL

    def for_images(self, image_index: Sequence[int], split: str = "") -> list[list[str]]:
        """Sentences of each manifest row (``[]`` = no text: a caption is missing)."""
        if self.source == "nonsense":
            return [self.nonsense.for_image(i, self.per_image) for i in image_index]
        if self.source == "caption":
            # an image without a row in captions.parquet was not captioned (not selected, or
            # unreadable); an empty caption is what the captioner produced. Both: no text token.
            missing = [i for i in image_index if i not in self.captions]
            n = max(1, len(image_index))
            where = split or "selected"
            if missing:
                msg = f"caption source: {len(missing)}/{len(image_index)} {where} images are not captioned"
                if len(missing) / n > MAX_MISSING_CAPTIONS:
                    raise ValueError(msg + "; CA4LTR needs every train and test image captioned: set "
                                     "captions.enabled: true, captions.splits: [train, test], captions.per_class: 0")
                log.warning("%s (unreadable images?); their text tokens are masked", msg)
            out = [[c] if (c := self.captions.get(i, "")).strip() else [] for i in image_index]
            n_empty = sum(1 for t in out if not t) - len(missing)
            if n_empty:
                log.info("caption source: %d/%d %s captions are empty (masked: no text token)", n_empty,
                         len(image_index), where)
            return out
        raise ValueError(f"{self.source!r} is a class-level source; use .bank")


def make_source(source: str, cfg, manifest: pd.DataFrame, class_names: Sequence[str],
                anchors: pd.DataFrame | None = None, captions: pd.DataFrame | None = None,
                caption_info: dict | None = None) -> TextSource:
    """The :class:`TextSource` of ``source`` under ``cfg`` (a ``Ca4ltrConfig``) from already read
    inputs: ``anchors`` (the anchors.parquet frame: description, nonsense), ``captions`` (the
    captions.parquet frame: caption) and ``caption_info`` (its model facts). The files are read
    by :func:`langtail.train.ca4ltr.build_source`."""
    if source not in SOURCES:
        raise ValueError(f"unknown CA4LTR text source {source!r}; known: {', '.join(SOURCES)}")

    def need_anchors() -> pd.DataFrame:
        if anchors is None:
            raise ValueError(f"text source {source!r} needs anchors.parquet (--anchors)")
        return anchors

    C = len(class_names)
    if source == "label":
        sents, cls = label_bank(class_names, cfg.label_templates)
        return TextSource(source, sents, cls, info={"bank_size": len(sents)})
    if source == "description":
        sents, cls = description_bank(need_anchors(), C, cfg.description_per_class)
        return TextSource(source, sents, cls, info={"bank_size": len(sents)})
    if source == "nonsense_bank":
        desc, cls = description_bank(need_anchors(), C, cfg.description_per_class)
        lengths = word_lengths(desc)
        sents = NonsenseGenerator(lengths, class_words(class_names), cfg.nonsense_seed).bank(lengths)
        return TextSource(source, sents, cls, info={"bank_size": len(sents), "reference_mean_words": float(lengths.mean())})
    if source == "nonsense":
        a = need_anchors()
        lengths = word_lengths(a.loc[a["selected"], "sentence"].astype(str).tolist())
        gen = NonsenseGenerator(lengths, class_words(class_names), cfg.nonsense_seed)
        return TextSource(source, nonsense=gen, per_image=cfg.nonsense_per_image,
                          info={"reference_mean_words": float(lengths.mean())})
    if captions is None:
        raise ValueError("text source 'caption' needs captions.parquet (--captions)")
    return TextSource(source, captions=caption_lookup(captions, manifest), info=dict(caption_info or {}))
