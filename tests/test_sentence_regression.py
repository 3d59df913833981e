"""Regression corpus of the sentence splitter (issue #24).

``tests/fixtures/sentence_regression.json`` holds the splitter's outputs recorded before the
issue #24 rules (``tests/fixtures/make_sentence_regression.py``): every text the corpus tests
split, the trap pages, the MediaWiki fixtures, the demo's pages (with the length filter's
chunks of their over-long sentences) and digests of the shared full extracts. Any output
that differs now must be listed in ``expected_changes`` with a reason and the new output;
a listed change that no longer happens (or differs from what is listed) fails too.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from langtail.corpus import sentences
from langtail.corpus.clean import clean_extract
from langtail.corpus.language import drop_sections_for

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "sentence_regression.json").read_text(encoding="utf-8"))
SHARED = ROOT.parent / "shared"
CHANGES = FIXTURE["expected_changes"]


def _current(case: dict) -> dict:
    if case["kind"] == "text":
        return {"sentences": [sentences.split_sentences(case["texts"][0], case["language"])], "chunks": {}}
    per_block = sentences.split_blocks(case["texts"], case["language"])
    mt = FIXTURE["max_tokens"]
    chunks = {s: [c for c, _ in sentences.fit_sentence(s, 1, mt)]
              for block in per_block for s in block if sentences.count_tokens(s) > mt}
    return {"sentences": per_block, "chunks": chunks}


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=[c["id"] for c in FIXTURE["cases"]])
def test_outputs_match_record_or_listed_change(case):
    now = _current(case)
    before = {"sentences": case["sentences"], "chunks": case["chunks"]}
    change = CHANGES.get(case["id"])
    if change is None:
        assert now == before, f"{case['id']}: output changed and is not in expected_changes"
    else:
        assert change["reason"].strip(), f"{case['id']}: expected_changes entry without a reason"
        assert now != before, f"{case['id']}: listed as changed but the output is as recorded"
        assert now == {"sentences": change["sentences"], "chunks": change.get("chunks", {})}


def _extract(path: Path) -> str:
    pages = json.loads(path.read_text(encoding="utf-8"))["query"]["pages"]
    vals = pages.values() if isinstance(pages, dict) else pages
    return next(p["extract"] for p in vals if "extract" in p)


@pytest.mark.parametrize("page", FIXTURE["shared"], ids=[p["id"] for p in FIXTURE["shared"]])
def test_shared_extracts_match_record_or_listed_change(page):
    path = SHARED / page["path"]
    if not path.exists():
        pytest.skip(f"shared test data not found at {path}")
    lang = page["language"]
    texts = [b.text for b in clean_extract(_extract(path), drop_sections_for(None, lang))]
    now = sentences.split_blocks(texts, lang)
    assert len(now) == len(page["blocks"])
    for i, (sents, rec) in enumerate(zip(now, page["blocks"])):
        key = f"{page['id']}#{i}"
        sha = hashlib.sha256(json.dumps(sents, ensure_ascii=False).encode("utf-8")).hexdigest()
        change = CHANGES.get(key)
        if change is None:
            assert sha == rec["sha256"], f"{key}: output changed and is not in expected_changes: {sents}"
        else:
            assert change["reason"].strip() and sha != rec["sha256"], key
            assert sents == change["sentences"], key


def test_every_listed_change_names_a_recorded_case():
    ids = {c["id"] for c in FIXTURE["cases"]}
    ids |= {f"{p['id']}#{i}" for p in FIXTURE["shared"] for i in range(len(p["blocks"]))}
    assert not set(CHANGES) - ids
