"""User-supplied class descriptions: ``{class name: [sentence, ...]}`` JSON files.

Format: one JSON object whose keys are class names and whose values are lists of
strings (e.g. the CuPL / SuS-X ``CuPL_prompts_*.json`` or the "classify by description"
``descriptors_*.json`` files). A value that is a single string is taken as a one-item
list. Keys are matched to the class list by :func:`~langtail.corpus.classes.normalize_name`
(lower case, ``_`` -> space), so ``aquarium_fish`` matches ``"aquarium fish"``.

Cleaning: each string is stripped and its inner whitespace (including newlines)
collapsed to single spaces; empty strings are dropped; exact repeats within one class
are dropped (first kept, counted). Nothing is silently lost: keys that match no class
and classes that have no key are logged (``logging`` warning) and returned in
:class:`DescriptionMatch`, and the corpus stage writes them to ``corpus_stats.parquet``
metadata. Two classes with the same normalised name (ImageNet ``missile``) both get the
entry.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from langtail.corpus.classes import normalize_name

log = logging.getLogger(__name__)
_WS = re.compile(r"\s+")


@dataclass
class DescriptionMatch:
    """Result of matching a descriptions file to a class list."""

    per_class: list[list[str]]  #: cleaned sentences, index = class id
    unmatched_keys: list[str] = field(default_factory=list)  #: file keys that match no class
    classes_without_entry: list[str] = field(default_factory=list)  #: class names with no key
    empty_dropped: int = 0  #: empty / whitespace-only strings dropped
    duplicates_removed: int = 0  #: repeated strings within a class dropped
    whitespace_fixed: int = 0  #: strings whose leading/trailing/inner whitespace was changed


def load_descriptions(path: str | Path) -> dict[str, list[str]]:
    """Read a descriptions JSON file (see the module docstring); validate its shape."""
    path = Path(path)
    raw: Any = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object {{class name: [sentence, ...]}}, got {type(raw).__name__}")
    out: dict[str, list[str]] = {}
    for k, v in raw.items():
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            raise ValueError(f"{path}: value of key {k!r} must be a list of strings")
        out[str(k)] = list(v)
    return out


def match_descriptions(raw: Mapping[str, list[str]], class_names: list[str], source: str = "",
                       dedup: bool = True) -> DescriptionMatch:
    """Match description keys to ``class_names`` by normalised name and clean the strings.

    ``dedup=False`` keeps repeated strings within a class.
    """
    where = f"{source}: " if source else ""
    by_norm: dict[str, list[int]] = {}
    for i, n in enumerate(class_names):
        by_norm.setdefault(normalize_name(n), []).append(i)
    per_class: list[list[str]] = [[] for _ in class_names]
    seen: list[set[str]] = [set() for _ in class_names]
    has_key = [False] * len(class_names)
    res = DescriptionMatch(per_class=per_class)
    for key, sentences in raw.items():
        ids = by_norm.get(normalize_name(key))
        if not ids:
            res.unmatched_keys.append(key)
            continue
        cleaned = []
        for s in sentences:
            c = _WS.sub(" ", s).strip()
            if c != s:
                res.whitespace_fixed += 1
            if not c:
                res.empty_dropped += 1
                continue
            cleaned.append(c)
        for i in ids:
            has_key[i] = True
            for c in cleaned:
                if dedup and c in seen[i]:
                    res.duplicates_removed += 1
                    continue
                seen[i].add(c)
                per_class[i].append(c)
    res.classes_without_entry = [n for n, h in zip(class_names, has_key) if not h]
    if res.unmatched_keys:
        log.warning("%s%d description key(s) match no class and are ignored: %s",
                    where, len(res.unmatched_keys), res.unmatched_keys)
    if res.classes_without_entry:
        log.warning("%s%d class(es) have no description entry: %s",
                    where, len(res.classes_without_entry), res.classes_without_entry)
    return res


def descriptions_for(path: str | Path, class_names: list[str], dedup: bool = True) -> DescriptionMatch:
    """:func:`load_descriptions` + :func:`match_descriptions`."""
    return match_descriptions(load_descriptions(path), class_names, source=str(path), dedup=dedup)
