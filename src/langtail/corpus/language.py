"""Per-language text rules: abbreviations, sentence starters, non-content sections.

Shipped for ``en``, ``de``, ``fr``, ``es`` as ``langtail/resources/languages/<code>.txt``
(``corpus.language`` picks the file). File format (``#`` comments, blank lines ignored):

* ``[settings]`` -- ``ordinal_period = true|false`` (a period after a number is usually an
  ordinal, German ``19. Jahrhundert``: it ends a sentence only with sentence-start
  evidence) and ``capitalized_nouns = true|false`` (all nouns are capitalised, German: a
  capitalised word is no sentence-start evidence by itself);
* ``[prefix]`` -- abbreviations that never end a sentence (``Dr.``, ``St.``, ``c.``,
  ``e.g.``, ``z. B.``): one per line without the final period; a two-word entry
  (``d. h``) matches the word and the one before it;
* ``[abbreviations]`` -- abbreviations that may end a sentence (``etc.``, ``U.S.``,
  ``Jh.``, ``Mio.``): a period after them ends a sentence only with sentence-start
  evidence (see :mod:`langtail.corpus.sentences`);
* ``[final]`` -- abbreviations that commonly end a sentence (``etc.``, ``usw.``, ``U.S.``,
  ``EE. UU.``, ``av. J.-C.``): a capitalised word after them starts a new sentence
  unless it is a listed continuation (``[continuations]``), an initial or abbreviation,
  or (languages without ``capitalized_nouns``) a word the page only writes capitalised
  mid-sentence (a name: ``U.S. Steel``). An entry of two words (``ee. uu``,
  ``v. chr``) matches the word and the one before it;
* ``[units]`` -- measurement units, ``[after_number]`` -- era and time markers that are
  initials elsewhere (``B.C.``, ``a.m.``): after a number (``3,2 kg.``, ``2-3 kg.``,
  ``44 B.C.``) they behave as ``[final]``, elsewhere as ``[abbreviations]``;
* ``[continuations]`` -- ``key, key: word word ...``: capitalised words that continue a name
  after the ``[final]``/``[units]``/``[after_number]`` entry ``key`` (``u.s: army navy
  senate``), ``*`` for every entry; matched case-insensitively;
* ``[starters]`` -- words that, capitalised, show that a sentence starts (articles,
  pronouns, prepositions, conjunctions: ``The``, ``Die``, ``Les``, ``Los``); an entry
  ending in an apostrophe (``l'``) matches elided words (``L'espèce``);
* ``[drop_sections]`` -- non-content section headings (``See also``, ``Weblinks``,
  ``Voir aussi``, ``Véase también``), the default of ``corpus.drop_sections``.

Abbreviation entries in lower case match any capitalisation; an entry with a capital
letter (French ``M`` = Monsieur) or of a single letter (English ``c`` = circa) matches
only that spelling (so ``c. 1850`` is a prefix but ``vitamin C. This`` is an initial).

Another language: a warning is logged (once) and only the language-neutral rules apply
(dotted abbreviations, initials, numbers); add a file to support it.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from importlib import resources

log = logging.getLogger(__name__)

#: languages with a shipped rules file
SHIPPED = ("de", "en", "es", "fr")
_SECTIONS = ("settings", "prefix", "abbreviations", "final", "units", "after_number", "continuations", "starters",
             "drop_sections")


@dataclass(frozen=True)
class LanguageRules:
    """Text rules of one language (see the module docstring)."""

    code: str
    prefix: frozenset[str]  #: lower-case entries (match any case)
    prefix_exact: frozenset[str]  #: entries with a capital letter (exact match)
    abbreviations: frozenset[str]
    abbreviations_exact: frozenset[str]
    units: frozenset[str]
    starters: frozenset[str]  #: lower case
    drop_sections: tuple[str, ...]  #: lower case
    final: frozenset[str] = frozenset()  #: lower case; two-word entries joined by one space
    after_number: frozenset[str] = frozenset()  #: lower case
    continuations: tuple[tuple[str, frozenset[str]], ...] = ()  #: (key, lower-case words)
    ordinal_period: bool = False
    capitalized_nouns: bool = False
    shipped: bool = True

    def is_prefix(self, stem: str) -> bool:
        """``stem`` (an abbreviation without its final period) never ends a sentence."""
        return stem in self.prefix_exact or stem.lower() in self.prefix

    def is_abbreviation(self, stem: str) -> bool:
        """``stem`` is a listed abbreviation that may end a sentence ([final], units, ... included)."""
        low = stem.lower()
        return (stem in self.abbreviations_exact or low in self.abbreviations or low in self.final
                or low in self.after_number or self.is_unit(stem))

    def is_unit(self, stem: str) -> bool:
        """``stem`` is a listed unit (single letters exactly: ``t``, ``g``, ``m``)."""
        return (stem if len(stem) == 1 else stem.lower()) in self.units

    def final_key(self, prev: str, stem: str) -> str | None:
        """The ``[final]`` entry matching ``stem`` (after the word ``prev``, both without the
        final period of ``stem``; ``prev`` as written, ``EE.``), or ``None``."""
        low = stem.lower()
        if prev.endswith(".") and f"{prev.lower()} {low}" in self.final:
            return f"{prev.lower()} {low}"
        return low if low in self.final else None

    def after_number_key(self, stem: str) -> str | None:
        """``stem`` as a ``[units]``/``[after_number]`` entry (final after a number), or ``None``."""
        if self.is_unit(stem):
            return stem if len(stem) == 1 else stem.lower()
        return stem.lower() if stem.lower() in self.after_number else None

    def is_continuation(self, key: str, word: str) -> bool:
        """``word`` continues a name after the entry ``key`` (``U.S. Army``)."""
        low = word.lower()
        return any(k in (key, "*") and low in words for k, words in self.continuations)

    def is_starter(self, word: str) -> bool:
        """``word`` (capitalised, punctuation stripped) is a typical sentence-initial word."""
        low = word.lower()
        if low in self.starters:
            return True
        for apo in ("'", "\u2019"):
            if apo in low:
                return low.split(apo, 1)[0] + "'" in self.starters
        return False


def _parse(code: str, text: str, where: str) -> LanguageRules:
    sec: dict[str, list[str]] = {s: [] for s in _SECTIONS}
    cur = None
    for i, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            cur = line[1:-1].strip()
            if cur not in sec:
                raise ValueError(f"{where}:{i}: unknown section [{cur}]; allowed: {', '.join(_SECTIONS)}")
            continue
        if cur is None:
            raise ValueError(f"{where}:{i}: entry {line!r} before the first [section]")
        sec[cur].append(line)
    settings: dict[str, bool] = {}
    for line in sec["settings"]:
        k, _, v = line.partition("=")
        k, v = k.strip(), v.strip().lower()
        if k not in ("ordinal_period", "capitalized_nouns") or v not in ("true", "false"):
            raise ValueError(f"{where}: bad setting {line!r} (ordinal_period|capitalized_nouns = true|false)")
        settings[k] = v == "true"

    def split_case(entries: list[str]) -> tuple[frozenset[str], frozenset[str]]:
        """(case-insensitive entries, exact entries): capitalised or single-letter ones are exact."""
        exact = {e for e in entries if e != e.lower() or len(e) == 1}
        return frozenset(e for e in entries if e not in exact), frozenset(exact)

    prefix, prefix_exact = split_case(sec["prefix"])
    abbr, abbr_exact = split_case(sec["abbreviations"])
    final = frozenset(" ".join(e.lower().split()) for e in sec["final"])
    units = frozenset(u if len(u) == 1 else u.lower() for u in sec["units"])
    after_number = frozenset(e.lower() for e in sec["after_number"])
    clash = sorted(e for e in final | after_number if e in prefix or e in prefix_exact)
    if clash:
        raise ValueError(f"{where}: {', '.join(clash)} both in [prefix] (never ends a sentence) and "
                         "[final]/[after_number]; keep one")
    return LanguageRules(code=code, prefix=prefix, prefix_exact=prefix_exact, abbreviations=abbr,
                         abbreviations_exact=abbr_exact, units=units,
                         starters=frozenset(s.lower() for s in sec["starters"]),
                         drop_sections=tuple(d.lower() for d in sec["drop_sections"]), final=final,
                         after_number=after_number,
                         continuations=_continuations(sec["continuations"], final | units | after_number, where),
                         **settings)


def _continuations(lines: list[str], keys: frozenset[str], where: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """Parse ``key: word word ...`` lines of ``[continuations]``; ``key`` must be an entry or ``*``."""
    out: dict[str, set[str]] = {}
    for line in lines:
        names, sep, words = line.partition(":")
        if not sep or not words.split():
            raise ValueError(f"{where}: bad [continuations] line {line!r} (key, key: word word ...)")
        for key in (" ".join(k.lower().split()) for k in names.split(",")):
            if key != "*" and key not in keys:
                raise ValueError(f"{where}: [continuations] key {key!r} is no [final]/[units]/[after_number] "
                                 "entry (or *)")
            out.setdefault(key, set()).update(w.lower() for w in words.split())
    return tuple((k, frozenset(v)) for k, v in out.items())


@functools.lru_cache(maxsize=None)
def language_rules(code: str) -> LanguageRules:
    """The rules for language ``code`` (``corpus.language``); generic rules if not shipped."""
    code = (code or "en").strip().lower()
    res = resources.files("langtail").joinpath("resources").joinpath("languages").joinpath(f"{code}.txt")
    if not res.is_file():
        log.warning("no sentence-splitting / section rules for language %r (shipped: %s): using language-"
                    "neutral rules only and no default drop_sections; add src/langtail/resources/languages/"
                    "%s.txt (see langtail.corpus.language) or set corpus.drop_sections",
                    code, ", ".join(SHIPPED), code)
        empty: frozenset[str] = frozenset()
        return LanguageRules(code=code, prefix=empty, prefix_exact=empty, abbreviations=empty,
                             abbreviations_exact=empty, units=empty, starters=empty, drop_sections=(),
                             shipped=False)
    return _parse(code, res.read_text("utf-8"), f"langtail/resources/languages/{code}.txt")


def drop_sections_for(drop_sections: list[str] | None, language: str) -> list[str]:
    """``corpus.drop_sections`` if set, else the list for ``corpus.language``."""
    if drop_sections is not None:
        return list(drop_sections)
    return list(language_rules(language).drop_sections)
