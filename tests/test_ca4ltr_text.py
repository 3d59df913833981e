"""CA4LTR text sources: nonsense generator, class banks, per-run params, tiny captioner switch."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from langtail.config import DatasetConfig
from langtail.captions.blip2 import resolve_caption_model
from langtail.config import select_keys
from langtail.corpus.ca4ltr_text import (NonsenseGenerator, class_words, description_bank, label_bank, mentions_class,
                                         word_lengths)
from langtail.stages import stage_keys


def run_params(cfg, source, stage="train"):
    """What the rule of one CA4LTR run passes (its declared keys)."""
    if stage == "train":
        return select_keys(cfg, stage_keys("ca4ltr_finetune", cfg, source=source))
    return select_keys(cfg, stage_keys("ca4ltr_evaluate", cfg))

CLASSES = ["red solid circle", "blue striped square", "idea", "quiet_theory", "kettle", "green triangle"]
# a description-like reference: prompt sentences and longer encyclopedia sentences
DESCRIPTION = ([f"a photo of a {c}." for c in CLASSES] + [f"a blurry photo of the {c}." for c in CLASSES]
               + ["Its outline is a circle, like a coin or a wheel.",
                  "It has four equal straight sides and four right-angled corners.",
                  "Its surface is covered with parallel stripes that alternate with the background of the image.",
                  "The inside is plain."] * 3)


def _gen(seed=0) -> NonsenseGenerator:
    return NonsenseGenerator(word_lengths(DESCRIPTION), class_words(CLASSES), seed)


def test_nonsense_is_deterministic_per_image_and_seed():
    a, b = _gen(), _gen()
    assert [a.for_image(i, 3) for i in range(20)] == [b.for_image(i, 3) for i in range(20)]
    assert a.for_image(7, 2) == b.for_image(7, 2)
    # independent of which other rows are generated, and of the order
    first = {i: b.for_image(i) for i in (1, 5, 9)}
    assert [a.for_image(i) for i in (9, 5, 1)] == [first[9], first[5], first[1]]
    assert a.for_image(3) != a.for_image(4)
    assert _gen(1).for_image(3) != a.for_image(3)
    s = a.for_image(0)[0]
    assert s[0].isupper() and s.endswith(".")


def test_nonsense_length_distribution_matches_description():
    g = _gen()
    ref = word_lengths(DESCRIPTION)
    lens = np.array([len(s.split()) for i in range(1500) for s in g.for_image(i)])
    assert abs(lens.mean() - ref.mean()) < 0.35
    assert abs(lens.std() - ref.std()) < 0.5
    # two-sample KS distance between the length distributions
    grid = np.arange(1, max(lens.max(), ref.max()) + 1)
    ks = np.abs((lens[:, None] <= grid).mean(0) - (ref[:, None] <= grid).mean(0)).max()
    assert ks < 0.06
    # every target length is hit exactly
    rng = np.random.default_rng(0)
    for n in range(1, 45):
        assert len(g.sentence(rng, n).split()) == n


def test_nonsense_contains_no_class_name_or_class_word():
    g = _gen()
    words = class_words(CLASSES)
    for i in range(400):
        for s in g.for_image(i, 2):
            assert not any(mentions_class(s, c) for c in CLASSES), s
            assert not set(s.lower().rstrip(".").split()) & words, s
    # class names can remove vocabulary words ("idea", "quiet", "theory" are in it)
    assert "idea" not in g.vocab["noun"] and "quiet" not in g.vocab["adj"] and "theory" not in g.vocab["noun"]
    with pytest.raises(ValueError, match="vocabulary"):
        NonsenseGenerator([5], set(VOCAB_ALL_DETS), 0)


VOCAB_ALL_DETS = ("the", "a", "every", "some", "no", "this", "that", "each", "another")


def test_mentions_class_matches_whole_words():
    assert mentions_class("Two red solid circles.", "red_solid_circle")
    assert mentions_class("A KETTLE on a stove", "kettle")
    assert not mentions_class("kettledrum", "kettle")
    assert not mentions_class("red and solid circle", "red solid circle")


def test_label_and_description_banks():
    sents, cls = label_bank(["red_solid circle", "apple"], 2)
    assert sents == ["a photo of a red solid circle.", "a bad photo of a red solid circle.",
                     "a photo of an apple.", "a bad photo of an apple."] and cls == [0, 0, 1, 1]
    anchors = pd.DataFrame({"class_id": [0, 0, 0, 1, 1], "sentence_id": range(5), "sentence": list("abcde"),
                            "source": ["prompt"] * 5, "l_lin": np.zeros(5, np.float32), "rank": [2, 0, 1, 1, 0],
                            "selected": [True, True, False, True, True]})
    assert description_bank(anchors, 2) == (["b", "a", "e", "d"], [0, 0, 1, 1])
    assert description_bank(anchors, 2, per_class=1) == (["b", "e"], [0, 1])
    with pytest.raises(ValueError, match="without a selected anchor"):
        description_bank(anchors, 3)


def test_run_params_only_what_a_run_depends_on():
    base = DatasetConfig()
    other = dataclasses.replace(base, ca4ltr=dataclasses.replace(base.ca4ltr, label_templates=5,
                                                                 sources=["label"], nonsense_seed=3))
    assert run_params(base, "caption") == run_params(other, "caption")
    assert run_params(base, "description") == run_params(other, "description")
    assert run_params(base, "label") != run_params(other, "label")
    assert run_params(base, "nonsense") != run_params(other, "nonsense")
    wider = dataclasses.replace(base, ca4ltr=dataclasses.replace(base.ca4ltr, width=64))
    assert all(run_params(base, s) != run_params(wider, s) for s in ("label", "description", "caption", "nonsense"))
    with pytest.raises(ValueError):
        run_params(base, "poetry")
    # evaluation settings do not retrain; training settings do not re-evaluate (the checkpoint changes)
    bigger = dataclasses.replace(base, evaluate=dataclasses.replace(base.evaluate, batch_size=7))
    assert run_params(base, "label") == run_params(bigger, "label")
    assert run_params(base, "label", "evaluate") != run_params(bigger, "label", "evaluate")
    assert run_params(base, "label", "evaluate") == run_params(wider, "label", "evaluate")


def test_resolve_caption_model_passthrough(tmp_path):
    assert resolve_caption_model("Salesforce/blip2-opt-2.7b", tmp_path) == "Salesforce/blip2-opt-2.7b"
    assert not (tmp_path / "tiny_blip2").exists()


def test_caption_lookup_empty_vs_missing():
    from langtail.corpus.ca4ltr_text import TextSource

    src = TextSource("caption", captions={i: ("" if i % 2 else f"caption {i}") for i in range(200)})
    assert src.for_images([0, 1, 2], "test") == [["caption 0"], [], ["caption 2"]]  # empty caption: no token
    assert len(src.for_images(list(range(201)), "test")) == 201  # 1 of 201 uncaptioned: tolerated, masked
    with pytest.raises(ValueError, match="not captioned"):
        src.for_images(list(range(190, 210)), "test")
