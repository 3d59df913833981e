"""Sentence splitting (Punkt-style rules, shipped per-language lists) and CLIP token filtering.

Splitting (:func:`split_sentences`, :func:`split_blocks`) follows the Punkt idea (Kiss &
Strunk 2006): a period ends a sentence unless it belongs to an abbreviation, and after an
abbreviation the next word decides, by the abbreviation's class (rules 4-6). NLTK's
trained ``punkt`` models are not used (they cannot be downloaded here); the lists come
from ``langtail/resources/languages/<language>.txt`` (:mod:`langtail.corpus.language`,
``corpus.language`` selects them). Paragraphs are split separately: a sentence never
spans a newline. Candidate boundaries are only after ``.``, ``!``, ``?`` or an ellipsis
followed by a space (closing quotes/brackets may sit between), so ``3.5``, ``U.S.A`` and
URLs are never cut. A word of only quote marks/brackets (``»``, ``"`` written apart) is
joined to the word before it when it closes an open mark (or has none to close:
``”``), else to the word after it (``«``): ``il dort. » Puis`` -> ``… il dort. »`` |
``Puis …``, German ``„…“`` and ``»…«`` are paired too. For a candidate after word ``w``
(the word before it: ``p``) followed by word ``n``:

1. ``n`` starts with a lower-case letter -> no split (``approx. five``, ``z. B. in``,
   ``EE. UU. durante``).
2. ``!``/``?`` -> split.
3. ``w`` is a number: split, except in languages with ordinal periods (``de``: ``19. Jh.``,
   ``3. Oktober``) where it needs evidence (below).
5. (checked before 4) ``w`` is a *final* abbreviation (``[final]``: ``etc.``, ``U.S.``,
   ``usw.``; two-word entries with ``p``: ``EE. UU.``, ``v. Chr.``, ``av. J.-C.``), or a
   *unit* / *after-number* marker after a number or range ``p`` (``3,2 kg.``, ``20–30 m.``,
   ``44 B.C.``, ``9 a.m.``) -> split when ``n`` is capitalised, unless ``n`` is a listed
   continuation of that entry (``[continuations]``: ``U.S. Army``, ``U.S. President``), an
   initial or abbreviation, or, in languages that do not capitalise nouns, a word the page
   capitalises mid-sentence and never writes in lower case (a name: ``U.S. Bancorp``).
4. ``w`` is a *prefix* abbreviation (``Dr.``, ``St.``, ``Ft.``, ``c.``, ``e.g.``, ``No.``,
   ``z. B.``, ``M.``) -> no split.
6. ``w`` is a listed abbreviation (``Jh.``, ``Mio.``, ``Co.``; units and after-number
   markers elsewhere: ``B.C. Forbes``), a dotted abbreviation (letters and periods:
   ``R.M.S.``, ``W.P.A.``), a single letter (an initial: ``J.``) or an ellipsis -> split
   only with **sentence-start evidence**: ``n`` is capitalised, is not itself an initial
   or abbreviation, and either is a sentence starter of the language (``The``, ``Die``,
   ``Les``, ``Los``, ``L'...``) or is a word the same page writes in lower case and never
   capitalises mid-sentence (Punkt's orthographic heuristic: ``... under the W.P.A.
   Newspapers ...`` splits when the page says "newspapers" elsewhere; ``R.M.S. Titanic``
   and ``2 Mio. Einwohner`` do not split).
7. any other word -> split.

The orthographic context (:class:`OrthoContext`) is collected from the whole page
(:func:`split_blocks`) or, for :func:`split_sentences` without one, from the text given.

Token counts: CLIP BPE tokens of open_clip's bundled tokenizer
(:class:`open_clip.tokenizer.SimpleTokenizer`, vocabulary shipped in the wheel, works
offline), **including** the start and end tokens, i.e. ``len(encode(s)) + 2``. This is
the number compared with ``CorpusConfig.min_tokens`` / ``max_tokens`` (77 = CLIP context).

Length filter (:func:`fit_sentence`): fewer than ``min_tokens`` -> dropped (counted);
more than ``max_tokens`` -> split into chunks that each fit (counted; :func:`split_long`:
first where a period/``!``/``?`` is followed by a capitalised word, so a pair of sentences
kept joined is cut where the first ends, then packed; a piece too long alone is cut at
word boundaries into near-equal chunks); chunks of a split sentence are kept even if short. A single "word" longer
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
from langtail.corpus.quotes import words_of as _tokens

_WS = re.compile(r"\s+")
# quotes/brackets that close (at a word's end: German "schläft.“" and "»schläft.«" too) and open
_CLOSERS = "\"')]}\u201d\u2019\u00bb\u203a\u201c\u2018\u00ab\u2039 "
_OPENERS = "\"'([{\u201c\u2018\u00ab\u2039\u201e\u201a\u00bb\u203a\u00bf\u00a1 "
_TRAIL = ".,;:!?\u2026" + _CLOSERS
_END = re.compile(r"(?:[.!?]|\u2026)$")
_SENT_END = (".", "!", "?", "\u2026")  # what _END matches, for str.endswith
_CLAUSE_END = _SENT_END + (":",)
_NUMBER = re.compile(r"^[+-]?\d[\d.,\u2009\u00a0]*$")
_NUMBER_OR_RANGE = re.compile(r"^[+-]?\d[\d.,\u2009\u00a0]*(?:[-\u2013\u2212/][\d.,]*\d)?$")
_DOTTED = re.compile(r"^(?:[^\W\d_]{1,3}\.-?)+[^\W\d_]{1,3}$")
_INITIAL = re.compile(r"^[^\W\d_]\.$")
def _core(word: str) -> str:
    """``word`` without trailing closing quotes/brackets (``end.)`` -> ``end.``, ``dort. »`` -> ``dort.``)."""
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
                    core = w.rstrip(_CLOSERS)
                    if not core:
                        continue  # a lone closing/opening quote ("dort. » Puis") keeps after_end
                    b = core.lstrip(_OPENERS).rstrip(_TRAIL)
                    if b[:1].isalpha():
                        if b[0].islower():
                            ctx.lower.add(b.lower())
                        elif b[0].isupper() and not after_end:
                            ctx.mid_upper.add(b.lower())
                    after_end = core.endswith(_CLAUSE_END)
        return ctx


def _abbreviation_like(nxt: str, rules: LanguageRules) -> bool:
    """``nxt`` is an initial (``J.``) or an abbreviation (``Dr.``, ``R.M.S.``): no sentence start."""
    core = _core(nxt.lstrip(_OPENERS))
    return bool(_INITIAL.match(core) or (core.endswith(".") and (
        _DOTTED.match(core[:-1]) or rules.is_prefix(core[:-1]) or rules.is_abbreviation(core[:-1]))))


def _evidence(nxt: str, rules: LanguageRules, ctx: OrthoContext) -> bool:
    """Sentence-start evidence for the word ``nxt`` after an abbreviation (rule 6)."""
    word = _bare(nxt)
    if not word[:1].isupper() or _abbreviation_like(nxt, rules):
        return False
    if rules.is_starter(word):
        return True
    low = word.lower()
    return low in ctx.lower and low not in ctx.mid_upper


def _intro_date(head: Sequence[str], rules: LanguageRules) -> bool:
    """``head`` (the sentence so far, up to the abbreviation) is only an opening phrase, a
    starter and a number as its 2nd or 3rd word: ``In 44 B.C.``, ``En el 44 a. C.``,
    ``At 9 a.m.`` (then a name may follow in the same sentence)."""
    return (len(head) <= 5 and rules.is_starter(_bare(head[0]))
            and any(_NUMBER_OR_RANGE.match(_core(w).rstrip(".,")) for w in head[1:3]))


def _final_split(key: str, nxt: str, head: Sequence[str], rules: LanguageRules, ctx: OrthoContext) -> bool:
    """After a sentence-final-capable abbreviation ``key`` (``etc``, ``u.s``, ``kg`` after a
    number) that ends ``head`` (the sentence so far): does the word ``nxt`` start a new
    sentence (rule 5)?"""
    word = _bare(nxt)
    if not word[:1].isupper() or rules.is_continuation(key, word) or _abbreviation_like(nxt, rules):
        return False
    if rules.capitalized_nouns or rules.is_starter(word):
        return True  # German is verb-second: "Im Jahr 50 v. Chr. eroberte ..." goes on in lower case
    if _intro_date(head, rules):
        return False  # "In 44 B.C. Caesar was killed." is one sentence
    low = word.lower()  # a name the page capitalises mid-sentence and never writes in lower case
    return not (low in ctx.mid_upper and low not in ctx.lower)


def _is_boundary(words: Sequence[str], i: int, rules: LanguageRules, ctx: OrthoContext, start: int = 0) -> bool:
    """Does a sentence end between ``words[i]`` and ``words[i + 1]`` (the sentence so far
    starts at ``words[start]``)?"""
    word, nxt = words[i], words[i + 1]
    core = word.rstrip(_CLOSERS)
    if not core.endswith(_SENT_END):
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
    prev = _core(words[i - 1]).lstrip(_OPENERS) if i else ""
    key = rules.final_key(prev, stem)
    if key is None and _NUMBER_OR_RANGE.match(prev.rstrip(".")):
        key = rules.after_number_key(stem)  # "3,2 kg." / "44 B.C." (before rule 4: "Ft. Worth" is a prefix)
    if key is not None:
        return _final_split(key, nxt, words[start:i + 1], rules, ctx)  # rule 5
    if rules.is_prefix(stem) or (prev.endswith(".") and rules.is_prefix(f"{prev} {stem}")):  # rule 4
        return False  # two-word prefixes: "d. h.", "z. B." (the "h." or "B." after "d."/"z.")
    if rules.is_abbreviation(stem) or _DOTTED.match(stem) or (len(stem) == 1 and stem.isalpha()):
        return _evidence(nxt, rules, ctx)  # rule 6
    return True  # rule 7


def _split_paragraph(para: str, rules: LanguageRules, ctx: OrthoContext) -> list[str]:
    words = _tokens(para)
    out: list[str] = []
    start = 0
    for i in range(len(words) - 1):
        if _is_boundary(words, i, rules, ctx, start):
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


def _soft_segments(sentence: str, rules: LanguageRules) -> list[str]:
    """``sentence`` cut wherever a period/``!``/``?`` is followed by a capitalised word, except
    after an initial or a ``[prefix]`` abbreviation and before an abbreviation: the places
    where a pair of sentences the splitter kept joined (``... the U.S. Farmers ...``) can meet."""
    words = _tokens(_WS.sub(" ", sentence).strip())
    out: list[str] = []
    start = 0
    for i in range(len(words) - 1):
        core = _core(words[i])
        stem = core[:-1].lstrip(_OPENERS)
        if (_END.search(core) and _bare(words[i + 1])[:1].isupper() and not _INITIAL.match(core)
                and not rules.is_prefix(stem) and not _abbreviation_like(words[i + 1], rules)):
            out.append(" ".join(words[start:i + 1]))
            start = i + 1
    out.append(" ".join(words[start:]))
    return out


def split_long(sentence: str, max_tokens: int, language: str = "en") -> list[str]:
    """Split ``sentence`` into chunks of <= ``max_tokens`` (SOS/EOS included).

    Returns ``[sentence]`` if it already fits. Otherwise it is first cut at its
    :func:`_soft_segments` (so two sentences kept joined are cut where one ends, never in
    the middle of the next); consecutive segments are packed into one chunk while they
    fit, and a segment that does not fit alone is cut at word boundaries into near-equal
    chunks (:func:`_split_even`).
    """
    if max_tokens - 2 < 1:
        raise ValueError(f"max_tokens must be >= 3, got {max_tokens}")
    if count_tokens(sentence) <= max_tokens:
        return [" ".join(sentence.split())]
    segments = _soft_segments(sentence, language_rules(language))
    if len(segments) == 1:
        return _split_even(sentence, max_tokens)
    out: list[str] = []
    cur = ""
    for seg in segments:
        if cur and count_tokens(f"{cur} {seg}") <= max_tokens:
            cur = f"{cur} {seg}"
            continue
        if cur:
            out.append(cur)
        cur = ""
        if count_tokens(seg) <= max_tokens:
            cur = seg
        else:
            out.extend(_split_even(seg, max_tokens))
    return out + ([cur] if cur else [])


def _split_even(sentence: str, max_tokens: int) -> list[str]:
    """Split ``sentence`` at word boundaries into near-equal chunks of <= ``max_tokens``."""
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
            out.extend(_split_even(" ".join(words_c[:half]), max_tokens))
            out.extend(_split_even(" ".join(words_c[half:]), max_tokens))
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


def fit_sentence(sentence: str, min_tokens: int, max_tokens: int, counts: FilterCounts | None = None,
                 source: str = "", language: str = "en") -> list[tuple[str, int]]:
    """Apply the length filter to one sentence -> ``[(text, n_tokens), ...]`` (maybe empty).

    ``language``: the rules :func:`split_long` cuts an over-long sentence with.
    """
    s = _WS.sub(" ", sentence).strip()
    if not s:
        return []
    n = count_tokens(s)
    if n > max_tokens:
        pieces = [(p, count_tokens(p)) for p in split_long(s, max_tokens, language)]
        if counts is not None:
            counts.add(source, "split_too_long")
            counts.add(source, "chunks_from_split", len(pieces))
        return pieces
    if n < min_tokens:
        if counts is not None:
            counts.add(source, "dropped_too_short")
        return []
    return [(s, n)]
