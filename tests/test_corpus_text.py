"""Text processing of the corpus stage: cleaning, sentence splitting, tokens, prompts, class lists."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from langtail.corpus import classes, clean, prompts, sentences
from langtail.corpus.descriptions import match_descriptions

SHARED = Path(__file__).resolve().parents[2] / "shared"
TEXT = SHARED / "data" / "text"
needs_shared = pytest.mark.skipif(not TEXT.exists(), reason=f"shared test data not found at {TEXT}")

# ----------------------------------------------------------------------------- clean

PAGE = """Tench is a fish. It lives in lakes.

== Description ==
The tench has a [[thick skin|thick, slimy skin]] and '''small''' scales.[1]
Its tail is square.[citation needed]
1 = 2 + 3 = 4, 5 6 7 8 9

=== Colour ===
It is olive green.
{| class="wikitable"
|-
| cell || cell
|}

== References ==
Smith, J. (1990). Fishes. p. 3.

=== Sub of references ===
This should also be dropped.

== See Also ==
Carp

== Ecology ==
The area is given by
  
    
      
        A
        =
        π
      
    
    {\\displaystyle A=\\pi r^{2}}
   where r is the radius.
"""


def test_clean_sections_drop_and_markup():
    blocks = clean.clean_extract(PAGE, ["references", "see also"])
    sections = [b.section for b in blocks]
    assert sections[0] == ""
    assert "Description / Colour" in sections
    assert not any("References" in s or "See Also" in s for s in sections)
    text = " ".join(b.text for b in blocks)
    assert "should also be dropped" not in text and "Carp" not in text
    assert "thick, slimy skin" in text and "[[" not in text and "'''" not in text
    assert "[1]" not in text and "citation needed" not in text
    assert "wikitable" not in text and "||" not in text
    assert "1 = 2 + 3" not in text  # mostly numbers/symbols
    eco = [b.text for b in blocks if b.section == "Ecology"]
    assert eco == ["The area is given by where r is the radius."]


def test_clean_real_area_extract_has_no_math_debris():
    p = TEXT / "mediawiki_responses" / "pymediawiki_2017" / "en_extracts_full_Area.json"
    if not p.exists():
        pytest.skip(f"shared test data not found at {p}")
    page = next(iter(json.loads(p.read_text())["query"]["pages"].values()))
    blocks = clean.clean_extract(page["extract"], ["references", "external links", "see also"])
    text = "\n".join(b.text for b in blocks)
    assert "displaystyle" not in text and "\\frac" not in text
    assert all(len(b.text) > 1 for b in blocks)
    assert not any(b.section.lower().startswith(("see also", "references")) for b in blocks)
    assert any("Heron's formula" in b.text for b in blocks)


# ----------------------------------------------------------------------------- sentences


@pytest.mark.parametrize("text", [
    "Many fish, e.g. the tench, live in lakes.",
    "Dr. Smith studied the fish in St. Louis for many years.",
    "It is a cyprinid, i.e. a member of the carp family.",
    "The fish weighs approx. 3 kg in most lakes.",
    "The average length is 3.5 cm in the wild.",
    "The species was described by J. R. R. Tolkien in his notes.",
])
def test_punkt_does_not_split_abbreviations(text):
    assert sentences.split_sentences(text) == [text]


def test_punkt_splits_sentences_and_lines():
    text = "The tench is a fish. It lives in Europe! Does it bite? Rarely.\nA new paragraph starts here"
    assert sentences.split_sentences(text) == [
        "The tench is a fish.", "It lives in Europe!", "Does it bite?", "Rarely.", "A new paragraph starts here"]


def test_no_punkt_download_needed():
    # the splitter's lists are shipped in the package (no nltk punkt data)
    from langtail.corpus.language import SHIPPED, language_rules

    for code in SHIPPED:
        assert language_rules(code).shipped and language_rules(code).starters
    assert language_rules("en").is_prefix("e.g") and language_rules("en").is_prefix("approx")


def test_token_count_includes_sos_eos():
    assert sentences.count_tokens("a photo of a cat.") == 2 + 6


def test_long_sentence_is_split_not_dropped():
    long = " ".join(f"word{i} and more text" for i in range(60)) + "."
    counts = sentences.FilterCounts()
    out = sentences.fit_sentence(long, 3, 77, counts, "wiki")
    assert len(out) >= 2 and counts.split_too_long == 1 and counts.chunks_from_split == len(out)
    assert all(n <= 77 for _, n in out)
    assert " ".join(s for s, _ in out) == long  # split at word boundaries, nothing lost
    assert all(sentences.count_tokens(s) == n for s, n in out)


def test_overlong_single_word_is_cut():
    word = "x" * 2000
    out = sentences.split_long(word, 20)
    assert "".join(out) == word and all(sentences.count_tokens(p) <= 20 for p in out)


def test_short_sentence_dropped_and_counted():
    counts = sentences.FilterCounts()
    assert sentences.fit_sentence("Hi", 4, 77, counts, "wiki") == []
    assert counts.dropped_too_short == 1


# ----------------------------------------------------------------------------- prompts


def test_clip_templates_exactly_80():
    t = prompts.CLIP_IMAGENET_TEMPLATES
    assert len(t) == 80 and len(set(t)) == 80
    assert all(x.count("{}") == 1 for x in t)
    assert t[0] == "a bad photo of a {}." and t[-1] == "a tattoo of the {}."
    assert "itap of my {}." in t and "a {} in a video game." in t


def test_prompt_articles():
    p = prompts.prompts_for("apple")
    assert "a photo of an apple." in p and "a bad photo of an apple." in p
    assert not any(" a apple" in s or s.startswith("a apple") for s in p)
    assert "an apple in a video game." in p  # "a {} in a video game." (the second "a" is kept)
    assert "a photo of a unicycle." in prompts.prompts_for("unicycle")
    assert "a photo of an hourglass." in prompts.prompts_for("hourglass")
    assert "an origami cat." in prompts.prompts_for("cat")
    assert "a photo of an aquarium fish." in prompts.prompts_for("aquarium_fish")
    assert prompts.prompts_for("cat", "none") == []


# ----------------------------------------------------------------------------- classes


def test_normalize_name():
    assert classes.normalize_name("  Aquarium_fish  ") == "aquarium fish"
    assert classes.normalize_name("lawn__mower") == "lawn mower"


@pytest.mark.parametrize("name,n", list(classes.SHIPPED.items()))
def test_shipped_lists_count_and_uniqueness(name, n):
    lst = classes.get_class_list(name)
    assert len(lst) == n
    dups = classes.duplicates(lst)
    expected = classes.KNOWN_DUPLICATES.get(name, {})
    assert dups == expected, f"{name}: duplicates {dups}, documented {expected}"


def test_cifar_lists_match_torchvision_order():
    c10 = classes.get_class_list("cifar10")
    assert c10 == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    c100 = classes.get_class_list("cifar100_lt")
    assert c100 == sorted(c100) and c100[1] == "aquarium_fish" and c100[-1] == "worm"
    imnet = classes.get_class_list("imagenet1k")
    assert imnet[0] == "tench" and imnet[-1] == "toilet paper"
    assert classes.KNOWN_DUPLICATES["imagenet1k"] == {"missile": [657, 744], "sunglasses": [836, 837]}


@needs_shared
def test_shipped_lists_equal_shared_sources():
    src = TEXT / "labelfree_cbm_gpt3"
    assert classes.get_class_list("imagenet1k") == classes.load_text_list(src / "imagenet_classes.txt")
    assert classes.get_class_list("places365") == classes.load_text_list(src / "categories_places365_clean.txt")
    assert [classes.normalize_name(n) for n in classes.get_class_list("cifar100")] == \
        classes.load_text_list(src / "cifar100_classes.txt")


def test_loaders(tmp_path):
    (tmp_path / "categories.json").write_text(json.dumps(
        [{"id": 1, "name": "Bufo bufo", "supercategory": "Amphibia"}, {"id": 0, "name": "Homo sapiens"}]))
    assert classes.get_class_list("inat2018", str(tmp_path)) == ["Homo sapiens", "Bufo bufo"]
    (tmp_path / "wnids.txt").write_text("n02\nn01\n")
    (tmp_path / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tEuropean fire salamander\nn03\tx\n")
    assert classes.get_class_list("tiny_imagenet", str(tmp_path)) == ["European fire salamander", "goldfish"]
    (tmp_path / "list.txt").write_bytes(b"a\r\n# comment\r\n\r\nb c\r\n")
    assert classes.get_class_list("file", str(tmp_path / "list.txt")) == ["a", "b c"]
    with pytest.raises(ValueError):
        classes.get_class_list("inat2018")


# ----------------------------------------------------------------------------- descriptions


def test_descriptions_matching_reports(caplog):
    raw = {"Aquarium_Fish": ["  A fish\nin a tank. ", "", "A fish in a tank.", "Orange."], "sea lion": ["A seal."]}
    with caplog.at_level("WARNING"):
        m = match_descriptions(raw, ["aquarium_fish", "crab"])
    assert m.per_class == [["A fish in a tank.", "Orange."], []]
    assert m.unmatched_keys == ["sea lion"] and m.classes_without_entry == ["crab"]
    assert m.empty_dropped == 1 and m.duplicates_removed == 1
    assert "sea lion" in caplog.text and "crab" in caplog.text


def test_descriptions_built_in_synonym_maps_a_known_key():
    """CuPL's CIFAR-100 file says `cra` for `crab`: the built-in synonyms map it (and say so)."""
    m = match_descriptions({"cra": ["A crab on the sand."]}, ["crab"])
    assert m.per_class == [["A crab on the sand."]] and m.unmatched_keys == []
    assert m.mapped_keys == {"cra": "crab"}
