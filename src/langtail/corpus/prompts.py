"""CLIP prompt-template sentences ("a photo of a {}.") for every class.

:data:`CLIP_IMAGENET_TEMPLATES` are the 80 ImageNet templates of the CLIP authors'
"Prompt Engineering for ImageNet" notebook (Radford et al., 2021), verbatim and in
their order -- including the notebook's own "a origami {}." / "a embroidered {}.".

:func:`render` fills a template with the class's display name (``_`` -> space) and
then fixes the indefinite article: every stand-alone ``a`` that precedes a word with
a vowel sound becomes ``an`` ("a photo of an apple", "an origami crane"), with the
usual exceptions (``a unicorn``, ``a one-piece``, ``an hour``; see :func:`article`).
"""
from __future__ import annotations

import re

from langtail.corpus.classes import display_name

CLIP_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {"clip80": CLIP_IMAGENET_TEMPLATES, "none": ()}

# vowel letters pronounced as a consonant ("a unicorn", "a euro", "a one-piece")
_CONSONANT_SOUND = ("uni", "use", "usu", "usa", "uti", "ute", "uri", "ura", "ure", "uro", "ubiq", "uku",
                    "eu", "ewe", "one", "once", "ouija")
# a silent h ("an hour")
_SILENT_H = ("hour", "honest", "honor", "honour", "heir")
_A_WORD = re.compile(r"(?<![\w'-])a(\s+)([\w\-']+)")


def article(word: str) -> str:
    """``"a"`` or ``"an"`` for the word that follows (by its first sound, heuristically)."""
    w = word.lower().lstrip("\"'(")
    if not w:
        return "a"
    if w.startswith(_SILENT_H):
        return "an"
    if w[0] in "aeiou" and not w.startswith(_CONSONANT_SOUND):
        return "an"
    return "a"


def fix_articles(text: str) -> str:
    """Replace each stand-alone lower-case ``a`` by ``an`` before a vowel sound."""
    return _A_WORD.sub(lambda m: f"{article(m.group(2))}{m.group(1)}{m.group(2)}", text)


def render(template: str, class_name: str) -> str:
    """One prompt: the template filled with the display name, articles fixed."""
    return fix_articles(template.format(display_name(class_name)))


def prompts_for(class_name: str, templates: str | tuple[str, ...] = "clip80") -> list[str]:
    """All prompt sentences for one class, in template order (``"none"`` -> ``[]``)."""
    tpls = TEMPLATE_SETS[templates] if isinstance(templates, str) else templates
    return [render(t, class_name) for t in tpls]
