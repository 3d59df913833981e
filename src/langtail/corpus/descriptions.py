"""User-supplied class descriptions: ``{class name: [sentence, ...]}`` JSON files.

Format: one JSON object whose keys are class names and whose values are lists of
strings (e.g. the CuPL / SuS-X ``CuPL_prompts_*.json`` or the "classify by description"
``descriptors_*.json`` files). A value that is a single string is taken as a one-item
list. Keys are matched to the class list by :func:`~langtail.corpus.classes.normalize_name`
(lower case, ``_`` -> space), so ``aquarium_fish`` matches ``"aquarium fish"``.

Keys that differ from the class names are mapped, in this order, for keys that match no
class by name: (1) ``corpus.description_aliases`` (``{file key: class name}``, e.g.
``{car: automobile}``; an alias is applied even when the key is itself a class name, and an
alias whose target is not a class is an error); (2) a *loose* match that also ignores
punctuation and parenthesised qualifiers (``apartment_building-outdoor`` ->
``apartment building, outdoor``, ``arcade (passageway)`` -> ``arcade``), used when exactly
one class has that loose key; (3) the built-in synonyms :data:`BUILTIN_SYNONYMS` (known
mismatches between published description files and the standard class lists: CuPL's
CIFAR-10 ``car`` = ``automobile``, CIFAR-100 ``cra`` = ``crab``, ImageNet ``eft`` =
``newt``), used only when the target is a class. Every mapped key is recorded in
:attr:`DescriptionMatch.mapped_keys` (and the corpus metadata).

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
_PAREN = re.compile(r"\([^)]*\)")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")

#: description-file key -> class name, for keys of published files that differ from the
#: standard class lists (normalised names; see the module docstring for when they apply)
BUILTIN_SYNONYMS: dict[str, str] = {
    "car": "automobile",  # CuPL / SuS-X CuPL_prompts_cifar10.json (CIFAR-10 class "automobile")
    "cra": "crab",  # CuPL_prompts_cifar100.json (a truncated key)
    "eft": "newt",  # descriptors_imagenet.json (ImageNet class n01631663 "eft"; CLIP list: "newt")
    "aeroplane": "airplane",
    "plane": "airplane",
}


def loose_name(s: str) -> str:
    """Looser matching key: :func:`normalize_name` without parenthesised parts and punctuation."""
    return " ".join(_NON_ALNUM.sub(" ", _PAREN.sub(" ", normalize_name(s))).split())


@dataclass
class DescriptionMatch:
    """Result of matching a descriptions file to a class list."""

    per_class: list[list[str]]  #: cleaned sentences, index = class id
    unmatched_keys: list[str] = field(default_factory=list)  #: file keys that match no class
    classes_without_entry: list[str] = field(default_factory=list)  #: class names with no key
    empty_dropped: int = 0  #: empty / whitespace-only strings dropped
    duplicates_removed: int = 0  #: repeated strings within a class dropped
    whitespace_fixed: int = 0  #: strings whose leading/trailing/inner whitespace was changed
    mapped_keys: dict[str, str] = field(default_factory=dict)  #: file key -> class name it was mapped to (alias, loose, synonym)


def load_descriptions(path: str | Path) -> dict[str, list[str]]:
    """Read a descriptions JSON file (see the module docstring); validate its shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"corpus.descriptions_file {path} not found. Put a JSON {{class name: [sentence, ...]}} file there "
            "(e.g. the CuPL sentences of SuS-X, https://github.com/vishaal27/SuS-X gpt3_prompts/"
            "CuPL_prompts_<dataset>.json), point corpus.descriptions_file at yours, or drop 'descriptions' "
            "from corpus.sources.")
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


def _class_ids(key: str, user: Mapping[str, str], by_norm: Mapping[str, list[int]],
               by_loose: Mapping[str, list[int]], class_names: list[str], res: DescriptionMatch) -> list[int] | None:
    """The class indices a description key names (alias, normalised, loose, built-in synonym; module
    docstring), ``None``/empty when none; a key matched other than by its normalised name is recorded
    in ``res.mapped_keys``."""
    nk = normalize_name(key)
    ids = None
    if nk in user:
        ids = by_norm[normalize_name(user[nk])]
        res.mapped_keys[key] = user[nk]
    else:
        ids = by_norm.get(nk)
        if not ids and len(by_loose.get(loose_name(key), [])) == 1:
            ids = by_loose[loose_name(key)]
            res.mapped_keys[key] = class_names[ids[0]]
        if not ids and BUILTIN_SYNONYMS.get(nk, "") in by_norm:
            ids = by_norm[BUILTIN_SYNONYMS[nk]]
            res.mapped_keys[key] = class_names[ids[0]]
    return ids


def _clean_strings(sentences: list[str], res: DescriptionMatch) -> list[str]:
    """One key's strings with whitespace runs collapsed and empty ones dropped (counted in ``res``)."""
    cleaned = []
    for s in sentences:
        c = _WS.sub(" ", s).strip()
        if c != s:
            res.whitespace_fixed += 1
        if not c:
            res.empty_dropped += 1
            continue
        cleaned.append(c)
    return cleaned


def match_descriptions(raw: Mapping[str, list[str]], class_names: list[str], source: str = "",
                       dedup: bool = True, aliases: Mapping[str, str] | None = None) -> DescriptionMatch:
    """Match description keys to ``class_names`` and clean the strings.

    Keys match by normalised name, else through ``aliases`` / the loose key / the built-in
    synonyms (module docstring). ``dedup=False`` keeps repeated strings within a class.
    Raises ``ValueError`` for an alias whose target is not a class.
    """
    where = f"{source}: " if source else ""
    by_norm: dict[str, list[int]] = {}
    by_loose: dict[str, list[int]] = {}
    for i, n in enumerate(class_names):
        by_norm.setdefault(normalize_name(n), []).append(i)
        by_loose.setdefault(loose_name(n), []).append(i)
    user = {normalize_name(k): v for k, v in (aliases or {}).items()}
    bad_alias = {k: v for k, v in (aliases or {}).items() if normalize_name(v) not in by_norm}
    if bad_alias:
        raise ValueError(f"{where}corpus.description_aliases: target(s) that are not class names: {bad_alias} "
                         f"(class names look like {class_names[:5]})")
    per_class: list[list[str]] = [[] for _ in class_names]
    seen: list[set[str]] = [set() for _ in class_names]
    has_key = [False] * len(class_names)
    res = DescriptionMatch(per_class=per_class)
    for key, sentences in raw.items():
        ids = _class_ids(key, user, by_norm, by_loose, class_names, res)
        if not ids:
            res.unmatched_keys.append(key)
            continue
        cleaned = _clean_strings(sentences, res)
        for i in ids:
            has_key[i] = True
            for c in cleaned:
                if dedup and c in seen[i]:
                    res.duplicates_removed += 1
                    continue
                seen[i].add(c)
                per_class[i].append(c)
    res.classes_without_entry = [n for n, h in zip(class_names, has_key) if not h]
    if res.mapped_keys:
        log.info("%sdescription keys mapped to class names: %s", where, res.mapped_keys)
    if res.unmatched_keys:
        log.warning("%s%d description key(s) match no class and are ignored: %s",
                    where, len(res.unmatched_keys), res.unmatched_keys)
    if res.classes_without_entry:
        log.warning("%s%d class(es) have no description entry: %s",
                    where, len(res.classes_without_entry), res.classes_without_entry)
    return res


def descriptions_for(path: str | Path, class_names: list[str], dedup: bool = True,
                     aliases: Mapping[str, str] | None = None) -> DescriptionMatch:
    """:func:`load_descriptions` + :func:`match_descriptions`."""
    return match_descriptions(load_descriptions(path), class_names, source=str(path), dedup=dedup, aliases=aliases)
