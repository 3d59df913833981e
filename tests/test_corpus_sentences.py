"""Sentence splitting and non-content sections per language (issue #12, Corpus).

Each ``tests/fixtures/sentences/<lang>_page.txt`` is a trap page written for these tests;
``<lang>_expected.json`` lists the sentences the corpus must keep, in order.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from langtail.config import CorpusConfig
from langtail.corpus import language, sentences
from langtail.corpus.clean import clean_extract
from langtail.corpus.build import build_corpus

FIX = Path(__file__).resolve().parent / "fixtures" / "sentences"


def page_sentences(text: str, lang: str, drop_sections=None) -> list[list[str]]:
    blocks = clean_extract(text, language.drop_sections_for(drop_sections, lang))
    per_block = sentences.split_blocks([b.text for b in blocks], lang)
    return [[b.section, s] for b, sents in zip(blocks, per_block) for s in sents]


@pytest.mark.parametrize("lang", ["en", "de", "fr", "es"])
def test_trap_page_per_language(lang):
    text = (FIX / f"{lang}_page.txt").read_text(encoding="utf-8")
    expected = json.loads((FIX / f"{lang}_expected.json").read_text(encoding="utf-8"))
    assert page_sentences(text, lang) == expected


@pytest.mark.parametrize("text, expected", [
    ("The town was founded c. 1850 by settlers.", None),
    ("The R.M.S. Titanic sank in the Atlantic.", None),
    ("He served in the U.S. Army for years.", None),
    ("An adult weighs 2.5 t. Mass varies.", ["An adult weighs 2.5 t.", "Mass varies."]),
    ("A shrew weighs about 2 g. The tail is long.", ["A shrew weighs about 2 g.", "The tail is long."]),
    ("It lives in the U.S. In winter it migrates.", ["It lives in the U.S.", "In winter it migrates."]),
    ("It needs vitamin C. This is rare.", ["It needs vitamin C.", "This is rare."]),
    ("Fish, birds etc. The list is long.", ["Fish, birds etc.", "The list is long."]),
    ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
    ("The tree grows to 60 ft. Its bark is grey.", ["The tree grows to 60 ft.", "Its bark is grey."]),
    ("It was found near Ft. Worth in Texas.", None),
    ("The party left at 10 a.m. They arrived late.", ["The party left at 10 a.m.", "They arrived late."]),
])
def test_english_single_sentences(text, expected):
    assert sentences.split_sentences(text, "en") == (expected or [text])


def test_page_context_gives_evidence_across_paragraphs():
    # "newspapers" in lower case in another paragraph of the page: evidence that the
    # capitalised "Newspapers" after the dotted abbreviation "W.P.A." starts a sentence
    paras = ["Printing began under the W.P.A. Newspapers followed.", "Early newspapers were small."]
    assert sentences.split_blocks(paras, "en")[0] == ["Printing began under the W.P.A.", "Newspapers followed."]
    # without that evidence a capitalised word after an abbreviation is taken as a name
    assert sentences.split_sentences(paras[0], "en") == [paras[0]]
    # "U.S." is [final] (issue #24): a capitalised word that is no continuation ("U.S. Army")
    # starts a sentence without page evidence; a name the page capitalises mid-sentence does not
    assert sentences.split_sentences("Printing began in the U.S. Newspapers followed.", "en") == [
        "Printing began in the U.S.", "Newspapers followed."]
    paras = ["Shares of U.S. Bancorp rose.", "The firm was renamed Bancorp in 1993."]
    assert sentences.split_blocks(paras, "en") == [[p] for p in paras]
    assert sentences.split_sentences(paras[0], "en") == ["Shares of U.S.", "Bancorp rose."]


def test_german_does_not_use_the_english_list():
    text = "Im 19. Jh. wuchs die Stadt auf 2 Mio. Einwohner mit 3 Mrd. Euro Umsatz. Die Stadt ist groß."
    assert sentences.split_sentences(text, "de") == [
        "Im 19. Jh. wuchs die Stadt auf 2 Mio. Einwohner mit 3 Mrd. Euro Umsatz.", "Die Stadt ist groß."]
    # the English rules split after the German abbreviations
    assert len(sentences.split_sentences(text, "en")) > 2
    # German entries, not the English ones ("approx." is English only)
    de = language.language_rules("de")
    assert de.is_prefix("ca") and de.is_abbreviation("Mio") and not de.is_prefix("approx")


def test_drop_sections_follow_language_unless_set():
    assert language.drop_sections_for(None, "de")[:4] == ["siehe auch", "literatur", "weblinks", "einzelnachweise"]
    assert "voir aussi" in language.drop_sections_for(None, "fr")
    assert "véase también" in language.drop_sections_for(None, "es")
    assert "references" in language.drop_sections_for(None, "en")
    assert language.drop_sections_for(["weblinks"], "de") == ["weblinks"]
    assert language.drop_sections_for([], "de") == []
    assert CorpusConfig().drop_sections is None


def test_stage_uses_language_rules_and_sections():
    text = (FIX / "de_page.txt").read_text(encoding="utf-8")
    page = {"title": "Schleie", "status": "ok", "text": text, "pageid": 1, "revid": 2}
    cfg = CorpusConfig(language="de", sources=["wiki"], min_tokens=1)
    corpus, _, _ = build_corpus(["Schleie"], cfg, {"Schleie": page})
    expected = json.loads((FIX / "de_expected.json").read_text(encoding="utf-8"))
    assert corpus["sentence"].tolist() == [s for _, s in expected]
    assert not corpus["section"].isin(["Siehe auch", "Literatur", "Weblinks", "Einzelnachweise"]).any()
    # a user-set list wins: keep "Weblinks"
    cfg2 = CorpusConfig(language="de", sources=["wiki"], min_tokens=1, drop_sections=["literatur"])
    corpus2, _, _ = build_corpus(["Schleie"], cfg2, {"Schleie": page})
    assert corpus2["section"].isin(["Weblinks"]).any() and not corpus2["section"].isin(["Literatur"]).any()


def test_unknown_language_warns_and_uses_neutral_rules(caplog):
    language.language_rules.cache_clear()
    with caplog.at_level(logging.WARNING, logger="langtail.corpus.language"):
        rules = language.language_rules("it")
        language.language_rules("it")
    assert not rules.shipped and rules.drop_sections == ()
    assert sum("no sentence-splitting" in r.message for r in caplog.records) == 1
    assert sentences.split_sentences("Nel 1850 c'era R.M.S. Titanic. Poi no.", "it") == [
        "Nel 1850 c'era R.M.S. Titanic.", "Poi no."]


def test_bad_rules_file_names_line():
    with pytest.raises(ValueError, match=r"x\.txt:2: unknown section \[nope\]"):
        language._parse("x", "# c\n[nope]\n", "x.txt")
