"""Clean a MediaWiki plain-text extract into (section, paragraph) blocks.

Input format: the ``extract`` of ``action=query&prop=extracts&explaintext=1&
exsectionformat=wiki`` -- the lead summary first, then heading lines ``== Section ==``,
``=== Sub ===`` (up to level 6), paragraphs separated by newlines. Inline maths comes
out of ``explaintext`` as a dump of MathML text nodes (one symbol per line, indented)
followed by a ``{\\displaystyle ...}`` line; both are removed.

Output of :func:`clean_extract`: a list of :class:`Block` ``(section, text)`` where
``section`` is ``""`` for the summary and otherwise the heading path joined with
``" / "`` (``"History / Early years"``), and ``text`` is one cleaned paragraph (no
newline inside). Sections whose heading (case-insensitive, stripped) is in
``drop_sections`` are dropped together with all their subsections.

What is removed from paragraphs: leftover wiki markup (``[[a|b]]`` -> ``b``,
``'''bold'''``, ``{{templates}}``, ``<tags>``, ``[1]``-style citation marks,
``[citation needed]``), table rows (``{|``, ``|-``, ``|``, ``!`` lines), maths
(``{\\displaystyle ...}`` and the MathML dump before it), lines that are mostly
symbols/numbers (less than ``min_alpha`` of their non-space characters are
letters), and empty lines.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

HEADING = re.compile(r"^(={2,6})\s*(.*?)\s*\1\s*$")
_MATH = re.compile(r"\{\\displaystyle\b")
_LINK = re.compile(r"\[\[(?:[^\[\]|]*\|)?([^\[\]]*)\]\]")
_EXTLINK = re.compile(r"\[(?:https?:)?//[^\s\]]+\s*([^\]]*)\]")
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TAG = re.compile(r"</?[a-zA-Z][^<>]*/?>")
_REF = re.compile(r"\[(?:\d+|[a-z]|note \d+|citation needed|clarification needed|when\?|who\?|"
                  r"according to whom\?|dubious[^\]]*|verification needed|page needed|"
                  r"better source needed|failed verification)\]", re.IGNORECASE)
_BOLD = re.compile(r"'{2,}")
_SPACES = re.compile(r"[ \t\u00a0\u2009\u200b]+")
_SPACE_PUNCT = re.compile(r"\s+([,.;:!?)])")
_EMPTY_PARENS = re.compile(r"\(\s*[,;:]?\s*\)")
_DOUBLE_PUNCT = re.compile(r"([,;:])(?:\s*[,;:])+")
_TABLE_LINE = re.compile(r"^\s*(\{\||\|\}|\|-|\||!)")


@dataclass(frozen=True)
class Block:
    """One cleaned paragraph: ``section`` ("" = summary; else "H2 / H3 ...") and ``text``."""

    section: str
    text: str


def _strip_math(lines: list[str]) -> list[str]:
    """Remove MathML text-node dumps + ``{\\displaystyle}`` lines; rejoin the sentence.

    The dump is a run of blank or indented lines right before the ``{\\displaystyle``
    line. For inline maths the sentence goes on in the very next line (usually
    indented): it is joined to the text before the formula with a space. For display
    maths the next line is blank and nothing is joined.
    """
    out: list[str] = []
    pending: list[str] = []  # blank/indented lines that may belong to a maths dump
    join_next = False
    for line in lines:
        m = _MATH.search(line)
        if m:
            pending = []  # the dump before the formula
            before = line[: m.start()].strip()
            if before:
                out.append(before)
            join_next = bool(out)
            continue
        if join_next:
            join_next = False
            if line.strip():
                out[-1] = out[-1].rstrip() + " " + line.strip()
                continue
        if not line.strip() or line[:2].isspace():
            pending.append(line)
            continue
        out.extend(pending)
        pending = []
        out.append(line)
    out.extend(pending)
    return out


def clean_text(text: str) -> str:
    """Remove inline markup from one paragraph and normalise its spacing."""
    text = _TAG.sub(" ", text)
    prev = None
    while prev != text:  # nested templates / links
        prev = text
        text = _TEMPLATE.sub(" ", text)
        text = _LINK.sub(r"\1", text)
    text = _EXTLINK.sub(r"\1", text)
    text = _REF.sub("", text)
    text = _BOLD.sub("", text)
    text = _EMPTY_PARENS.sub("", text)
    text = _SPACES.sub(" ", text).strip()
    text = _SPACE_PUNCT.sub(r"\1", text)
    text = _DOUBLE_PUNCT.sub(r"\1", text)  # "triangle,, is" left by a removed formula
    return text


def alpha_ratio(s: str) -> float:
    """Fraction of the non-space characters of ``s`` that are letters."""
    chars = [c for c in s if not c.isspace()]
    if not chars:
        return 0.0
    return sum(c.isalpha() for c in chars) / len(chars)


def split_sections(extract: str) -> list[tuple[list[str], list[str]]]:
    """Split an extract into ``(heading_path, lines)`` chunks by its ``==`` heading lines.

    ``heading_path`` is ``[]`` for the summary, ``["History"]`` for a level-2 section,
    ``["History", "Early years"]`` for its level-3 subsection, and so on.
    """
    chunks: list[tuple[list[str], list[str]]] = [([], [])]
    path: list[tuple[int, str]] = []
    for line in extract.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        m = HEADING.match(line.strip()) if line.lstrip().startswith("==") else None
        if m:
            level = len(m.group(1))
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, clean_text(m.group(2))))
            chunks.append(([t for _, t in path], []))
        else:
            chunks[-1][1].append(line)
    return chunks


def clean_extract(extract: str, drop_sections: Iterable[str] = (), min_alpha: float = 0.5) -> list[Block]:
    """Cleaned paragraphs of an extract, in page order (see the module docstring)."""
    drop = {d.strip().lower() for d in drop_sections}
    blocks: list[Block] = []
    for headings, lines in split_sections(extract):
        if any(h.lower() in drop for h in headings):
            continue
        section = " / ".join(headings)
        for line in _strip_math(lines):
            if _TABLE_LINE.match(line):
                continue
            text = clean_text(line)
            if not text or alpha_ratio(text) < min_alpha:
                continue
            blocks.append(Block(section, text))
    return blocks
