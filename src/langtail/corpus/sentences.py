"""Sentence splitting (Punkt-style rules, shipped per-language lists) and CLIP token filtering.

Splitting (:func:`split_sentences`, :func:`split_blocks`) follows the Punkt idea (Kiss &
Strunk 2006): a period ends a sentence unless it belongs to an abbreviation, and after an
abbreviation it ends one only with *sentence-start evidence* for the next word. NLTK's
trained ``punkt`` models are not used (they cannot be downloaded here); the lists come
from ``langtail/resources/languages/<language>.txt`` (:mod:`langtail.corpus.language`,
``corpus.language`` selects them). Paragraphs are split separately: a sentence never
spans a newline. Candidate boundaries are only after ``.``, ``!``, ``?`` or an ellipsis
followed by a space (closing quotes/brackets may sit between), so ``3.5``, ``U.S.A`` and
URLs are never cut. For a candidate after word ``w`` followed by word ``n``:

1. ``n`` starts with a lower-case letter -> no split (``approx. five``, ``z. B. in``).
2. ``!``/``?`` -> split.
3. ``w`` is a number: split, except in languages with ordinal periods (``de``: ``19. Jh.``,
   ``3. Oktober``) where it needs evidence (below).
4. ``w`` is a *prefix* abbreviation (``Dr.``, ``St.``, ``c.``, ``ca.``, ``e.g.``, ``z. B.``,
   ``M.``) -> no split.
5. (checked before 4) ``w`` is a *unit* (``t``, ``g``, ``ft``) after a number -> split when ``n`` is
   capitalised and not known as a mid-sentence capitalised word (``2.5 t. Mass ...``,
   ``about 2 g. The ...``); in languages that capitalise nouns (``de``) -> rule 6.
6. ``w`` is a listed abbreviation (``etc.``, ``U.S.``, ``Jh.``, ``Mio.``), a dotted
   abbreviation (letters and periods: ``R.M.S.``, ``U.S.``, ``J.-C.``), a single letter
   (an initial: ``J.``) or an ellipsis -> split only with **sentence-start evidence**:
   ``n`` is capitalised, is not itself an initial or abbreviation, and either is a
   sentence starter of the language (``The``, ``Die``, ``Les``, ``Los``, ``L'...``) or is
   a word the same page writes in lower case and never capitalises mid-sentence (Punkt's
   orthographic heuristic: ``... in the U.S. Newspapers ...`` splits when the page says
   "newspapers" elsewhere; ``R.M.S. Titanic`` and ``2 Mio. Einwohner`` do not split).
7. any other word -> split.

The orthographic context (:class:`OrthoContext`) is collected from the whole page
(:func:`split_blocks`) or, for :func:`split_sentences` without one, from the text given.

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
from pathlib import Path
from typing import Iterable, Sequence

from langtail.corpus.language import LanguageRules, language_rules

_WS = re.compile(r"\s+")
_CLOSERS = "\"')]}\u201d\u2019\u00bb"
_OPENERS = "\"'([{\u201c\u2018\u00ab\u00bf\u00a1"
_TRAIL = ".,;:!?\u2026" + _CLOSERS
_END = re.compile(r"(?:[.!?]|\u2026)$")
_NUMBER = re.compile(r"^[+-]?\d[\d.,\u2009\u00a0]*$")
_DOTTED = re.compile(r"^(?:[^\W\d_]{1,3}\.-?)+[^\W\d_]{1,3}$")
_INITIAL = re.compile(r"^[^\W\d_]\.$")


def _core(word: str) -> str:
    """``word`` without trailing closing quotes/brackets (``end.)`` -> ``end.``)."""
    return word.rstrip(_CLOSERS)


def _bare(word: str) -> str:
    """``word`` without leading openers and trailing punctuation (``("Les,`` -> ``Les``)."""
    return word.lstrip(_OPENERS).rstrip(_TRAIL)


@dataclass
class OrthoContext:
    """Where a page writes words in lower case, and which it capitalises mid-sentence.

    ``lower``: lower-cased words seen starting with a lower-case letter; ``mid_upper``:
    lower-cased words seen capitalised after a word that does not end a clause
    (``.``/``!``/``?``/``:``/ellipsis), i.e. names and (in German) nouns.
    """

    lower: set[str] = field(default_factory=set)
    mid_upper: set[str] = field(default_factory=set)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "OrthoContext":
        ctx = cls()
        for text in texts:
            for para in text.split("\n"):
                after_end = True
                for w in para.split():
                    b = _bare(w)
                    if b[:1].isalpha():
                        if b[0].islower():
                            ctx.lower.add(b.lower())
                        elif b[0].isupper() and not after_end:
                            ctx.mid_upper.add(b.lower())
                    after_end = bool(re.search(r"[.!?:\u2026]$", _core(w)))
        return ctx


def _evidence(nxt: str, rules: LanguageRules, ctx: OrthoContext) -> bool:
    """Sentence-start evidence for the word ``nxt`` after an abbreviation (rule 6)."""
    word = _bare(nxt)
    if not word[:1].isupper():
        return False
    core = _core(nxt.lstrip(_OPENERS))
    if _INITIAL.match(core) or (core.endswith(".") and (_DOTTED.match(core[:-1]) or rules.is_prefix(core[:-1])
                                                       or rules.is_abbreviation(core[:-1]))):
        return False
    if rules.is_starter(word):
        return True
    low = word.lower()
    return low in ctx.lower and low not in ctx.mid_upper


def _is_boundary(prev2: str, word: str, nxt: str, rules: LanguageRules, ctx: OrthoContext) -> bool:
    """Does a sentence end between ``word`` and ``nxt`` (``prev2`` = the word before ``word``)?"""
    core = _core(word)
    if not _END.search(core):
        return False
    n = nxt.lstrip(_OPENERS)
    if n[:1].islower():
        return False  # rule 1
    if core.endswith(("!", "?")):
        return True  # rule 2
    if core.endswith(("...", "\u2026")):
        return _evidence(nxt, rules, ctx)
    stem = core[:-1].lstrip(_OPENERS)
    if not stem:
        return True
    if _NUMBER.match(stem):  # rule 3
        return _evidence(nxt, rules, ctx) if rules.ordinal_period and stem.isdigit() else True
    if rules.is_unit(stem) and _NUMBER.match(_core(prev2).rstrip(".")) and not rules.capitalized_nouns:
        word_n = _bare(nxt)  # rule 5 (before rule 4: "60 ft. The" is a unit, "Ft. Worth" a prefix)
        return word_n[:1].isupper() and word_n.lower() not in ctx.mid_upper and not _INITIAL.match(_core(n))
    if rules.is_prefix(stem):  # rule 4
        return False
    if rules.is_abbreviation(stem) or _DOTTED.match(stem) or (len(stem) == 1 and stem.isalpha()):
        return _evidence(nxt, rules, ctx)  # rule 6
    return True  # rule 7


def _split_paragraph(para: str, rules: LanguageRules, ctx: OrthoContext) -> list[str]:
    words = para.split(" ")
    out: list[str] = []
    start = 0
    for i in range(len(words) - 1):
        if _is_boundary(words[i - 1] if i else "", words[i], words[i + 1], rules, ctx):
            out.append(" ".join(words[start:i + 1]))
            start = i + 1
    out.append(" ".join(words[start:]))
    return [s for s in out if s]


def split_sentences(text: str, language: str = "en", context: OrthoContext | None = None) -> list[str]:
    """Sentences of ``text``; each paragraph (line) is split on its own; spaces collapsed.

    ``language`` selects the rules (:func:`langtail.corpus.language.language_rules`);
    ``context`` is the page's :class:`OrthoContext` (default: built from ``text``).
    """
    rules = language_rules(language)
    paras = [_WS.sub(" ", p).strip() for p in text.split("\n")]
    paras = [p for p in paras if p]
    ctx = context if context is not None else OrthoContext.from_texts(paras)
    out: list[str] = []
    for para in paras:
        out.extend(_split_paragraph(para, rules, ctx))
    return out


def split_blocks(texts: Sequence[str], language: str = "en") -> list[list[str]]:
    """Sentences of each text of one page (its cleaned paragraphs), with a page-wide context.

    Returns one list of sentences per input text, in order.
    """
    ctx = OrthoContext.from_texts(texts)
    return [split_sentences(t, language, ctx) for t in texts]


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
