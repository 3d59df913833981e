"""Words of a paragraph for sentence splitting, with quote marks written apart attached.

French puts spaces inside guillemets (``« Il dort. » Puis ...``), and some texts write
a lone ``"``. :func:`words_of` splits a paragraph at single spaces and joins a word made
only of quote marks/brackets (maybe with punctuation after it) to the word before it
when it closes a mark that is open (or closes nothing that could open: ``”``, ``)``),
else to the word after it. Open marks are tracked on a stack from the marks at the start
and end of every word, with the pairs of the shipped languages: English/Spanish
``“…”``, French/Spanish ``«…»``, German ``„…“`` and ``»…«``, ``"…"``, brackets.
Used by :mod:`langtail.corpus.sentences`; ``" ".join(words_of(p)) == p``.
"""
from __future__ import annotations

import re

# a word of only quotes/brackets (French "dort. \u00bb", "\u00ab Il"), maybe with punctuation after it
_QUOTES = "\"()[]{}\u00ab\u00bb\u2039\u203a\u201c\u201d\u201e\u2018\u2019\u201a"
_LONE = re.compile("(?:^| )[" + re.escape(_QUOTES) + "]+[.,;:!?\u2026]*(?= |$)")
_LONE_TOKEN = re.compile("^[" + re.escape(_QUOTES) + "]+[.,;:!?\u2026]*$")
# opening mark -> the marks that close it (German \u201e...\u201c and \u00bb...\u00ab, French \u00ab...\u00bb)
_PAIRS = {"\u00ab": "\u00bb", "\u00bb": "\u00ab", "\u2039": "\u203a", "\u203a": "\u2039", "\u201e": "\u201c\u201d",
          "\u201a": "\u2018\u2019", "\u201c": "\u201d", "\u2018": "\u2019", '"': '"', "(": ")", "[": "]", "{": "}"}


def _closes(c: str, stack: list[str]) -> bool:
    """Does the mark ``c`` close one of the open marks in ``stack``? (then popped down to it)"""
    for j in range(len(stack) - 1, -1, -1):
        if c in _PAIRS[stack[j]]:
            del stack[j:]
            return True
    return False


def _track(word: str, stack: list[str]) -> None:
    """Update ``stack`` (open quotes/brackets) with the marks at the start and end of ``word``."""
    lead = len(word) - len(word.lstrip(_QUOTES))
    for c in word[:lead]:
        if not _closes(c, stack) and c in _PAIRS:
            stack.append(c)
    body = word.rstrip(".,;:!?\u2026")
    for c in body[max(lead, len(body.rstrip(_QUOTES))):]:
        _closes(c, stack)


def words_of(para: str) -> list[str]:
    """Words of ``para`` (split at spaces); a word of only quotes/brackets is joined to the word
    before it when it closes an open mark (``dort. \u00bb``, ``"it bites. "``) or has none to
    close (``\u201d``), else to the word after it (``\u00ab Il``): ``" ".join`` gives ``para`` back."""
    words = para.split(" ")
    if not _LONE.search(para):
        return words
    out: list[str] = []
    pending = ""
    stack: list[str] = []
    for w in words:
        if _LONE_TOKEN.match(w):
            closes = any(w[0] in _PAIRS[m] for m in stack) or w[0] not in _PAIRS
            _track(w, stack)
            if closes and out and not pending:
                out[-1] += " " + w
                continue
            if not closes:
                pending += w + " "
                continue
        else:
            _track(w, stack)
        out.append(pending + w)
        pending = ""
    if pending:
        out.append(pending.rstrip(" "))
    return out
