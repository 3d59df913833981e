"""Sentence splitting (NLTK Punkt, no downloaded data) and CLIP token-length filtering.

Splitting: :class:`nltk.tokenize.punkt.PunktSentenceTokenizer` built from shipped
:class:`~nltk.tokenize.punkt.PunktParameters` -- the abbreviation list
``langtail/resources/punkt_abbreviations_en.txt`` (one abbreviation per line, lower
case, without its final period). No ``punkt``/``punkt_tab`` model is loaded, so nothing
is downloaded. Punkt never splits inside a number (``3.5``), after a listed abbreviation
(``e.g.``, ``i.e.``, ``Dr.``, ``St.``, ``approx.``) or after a single-letter initial
followed by a capitalised word (``J. R. R. Tolkien``). Paragraphs are split separately:
a sentence never spans a newline.

Token counts: CLIP BPE tokens of open_clip's bundled tokenizer
(:class:`open_clip.tokenizer.SimpleTokenizer`, vocabulary shipped in the wheel, works
offline), **including** the start and end tokens, i.e. ``len(encode(s)) + 2``. This is
the number compared with ``CorpusConfig.min_tokens`` / ``max_tokens`` (77 = CLIP context).

Length filter (:func:`fit_sentence`): fewer than ``min_tokens`` -> dropped (counted);
more than ``max_tokens`` -> split at word boundaries into near-equal chunks that each fit
(counted); chunks of a split sentence are kept even if short. A single "word" longer
than the context (a URL, a chemical name) is cut between characters.
"""
from __future__ import annotations

import functools
import math
import re
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

_WS = re.compile(r"\s+")


@functools.lru_cache(maxsize=1)
def load_abbreviations() -> frozenset[str]:
    """The shipped Punkt abbreviation list (lower case, no final period)."""
    text = resources.files("langtail").joinpath("resources").joinpath("punkt_abbreviations_en.txt").read_text("utf-8")
    return frozenset(ln.strip().lower() for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))


@functools.lru_cache(maxsize=1)
def get_splitter() -> PunktSentenceTokenizer:
    """A Punkt tokenizer with the shipped abbreviations and no trained statistics."""
    params = PunktParameters()
    params.abbrev_types = set(load_abbreviations())
    return PunktSentenceTokenizer(params)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``; each paragraph (line) is split on its own; spaces collapsed."""
    splitter = get_splitter()
    out: list[str] = []
    for para in text.split("\n"):
        para = _WS.sub(" ", para).strip()
        if para:
            out.extend(s.strip() for s in splitter.tokenize(para) if s.strip())
    return out


# ----------------------------------------------------------------------------- tokens

_tok_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _tokenizer():
    """open_clip's ``SimpleTokenizer`` (bundled BPE vocabulary).

    ``import open_clip`` pulls in every model definition (~10 s on a small CPU); when
    open_clip is not imported yet, its ``tokenizer.py`` is loaded on its own from the
    installed package (same file, same vocabulary, found without running the package
    ``__init__``).
    """
    import importlib.util
    import sys

    if "open_clip" not in sys.modules:
        try:
            spec = importlib.util.find_spec("open_clip")
            locs = list(spec.submodule_search_locations or []) if spec else []
            path = Path(locs[0]) / "tokenizer.py" if locs else None
            if path is not None and path.exists():
                mspec = importlib.util.spec_from_file_location("langtail._open_clip_tokenizer", path)
                mod = importlib.util.module_from_spec(mspec)
                mspec.loader.exec_module(mod)  # type: ignore[union-attr]
                return mod.SimpleTokenizer()
        except Exception:  # pragma: no cover - fall back to the normal import
            pass
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def count_tokens(text: str) -> int:
    """CLIP BPE tokens of ``text`` including SOS and EOS."""
    tok = _tokenizer()
    with _tok_lock:  # the BPE cache is a plain dict
        return len(tok.encode(text)) + 2


def _word_tokens(word: str) -> int:
    tok = _tokenizer()
    with _tok_lock:
        return len(tok.encode(word))


def _cut_word(word: str, budget: int) -> list[str]:
    """Cut one over-long word into character pieces of at most ``budget`` tokens each."""
    pieces: list[str] = []
    rest = word
    while rest:
        if _word_tokens(rest) <= budget:
            pieces.append(rest)
            break
        lo, hi = 1, len(rest)  # longest prefix that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _word_tokens(rest[:mid]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        pieces.append(rest[:lo])
        rest = rest[lo:]
    return pieces


def split_long(sentence: str, max_tokens: int) -> list[str]:
    """Split ``sentence`` at word boundaries into near-equal chunks of <= ``max_tokens``.

    ``max_tokens`` includes SOS/EOS. Returns ``[sentence]`` if it already fits.
    """
    budget = max_tokens - 2
    if budget < 1:
        raise ValueError(f"max_tokens must be >= 3, got {max_tokens}")
    words: list[str] = []
    for w in sentence.split():
        if _word_tokens(w) > budget:
            words.extend(_cut_word(w, budget))
        else:
            words.append(w)
    costs = [_word_tokens(w) for w in words]
    total = sum(costs)
    if total <= budget:
        return [" ".join(words)]
    chunks: list[str] = []
    remaining = total
    k = math.ceil(total / budget)
    i = 0
    while i < len(words):
        left = max(k - len(chunks), 1)
        target = math.ceil(remaining / left)
        cur: list[str] = []
        used = 0
        while i < len(words) and used + costs[i] <= budget and (used + costs[i] <= target or not cur):
            cur.append(words[i])
            used += costs[i]
            i += 1
        chunks.append(" ".join(cur))
        remaining -= used
    # the per-word sum can differ from encoding the joined text only through ftfy/html
    # unescaping across words; re-check and split again if needed
    out: list[str] = []
    for c in chunks:
        if count_tokens(c) > max_tokens and len(c.split()) > 1:
            words_c = c.split()
            half = len(words_c) // 2
            out.extend(split_long(" ".join(words_c[:half]), max_tokens))
            out.extend(split_long(" ".join(words_c[half:]), max_tokens))
        else:
            out.append(c)
    return out


@dataclass
class FilterCounts:
    """Counters of the length filter and dedup (summed over a corpus)."""

    split_too_long: int = 0  #: sentences longer than max_tokens that were split
    chunks_from_split: int = 0  #: pieces those sentences became
    dropped_too_short: int = 0  #: sentences with fewer than min_tokens tokens
    duplicates_removed: int = 0  #: repeated sentences within a class
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, source: str, key: str, n: int = 1) -> None:
        setattr(self, key, getattr(self, key) + n)
        d = self.per_source.setdefault(source, {})
        d[key] = d.get(key, 0) + n


def fit_sentence(sentence: str, min_tokens: int, max_tokens: int,
                 counts: FilterCounts | None = None, source: str = "") -> list[tuple[str, int]]:
    """Apply the length filter to one sentence -> ``[(text, n_tokens), ...]`` (maybe empty)."""
    s = _WS.sub(" ", sentence).strip()
    if not s:
        return []
    n = count_tokens(s)
    if n > max_tokens:
        pieces = [(p, count_tokens(p)) for p in split_long(s, max_tokens)]
        if counts is not None:
            counts.add(source, "split_too_long")
            counts.add(source, "chunks_from_split", len(pieces))
        return pieces
    if n < min_tokens:
        if counts is not None:
            counts.add(source, "dropped_too_short")
        return []
    return [(s, n)]
