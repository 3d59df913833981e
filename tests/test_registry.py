"""The part registries: discovery of built-ins, plugins from $LANGTAIL_PLUGINS, clear errors."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from langtail.registry import IMAGE_ENCODERS, TEXT_ENCODERS, TUNING_MODES, Registry


def test_builtins_are_discovered():
    assert {"demo_cnn", "resnet32"} <= set(IMAGE_ENCODERS.names())
    assert {"minilm", "clip"} <= set(TEXT_ENCODERS.names())
    assert {"full", "frozen"} <= set(TUNING_MODES.names())
    assert IMAGE_ENCODERS.get("demo_cnn").keys == {"model": ("embed_dim",)}


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match=r"unknown image encoder 'nope'; known: .*demo_cnn.*resnet32"):
        IMAGE_ENCODERS.get("nope")


def test_double_registration_is_an_error():
    reg = Registry("thing", "THINGS", (), "factory()")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(lambda: 2)
    reg.register("a", replace=True)(lambda: 3)
    assert reg.get("a")() == 3


def test_plugin_file_from_the_environment(tmp_path):
    plugin = tmp_path / "my_encoder.py"
    plugin.write_text(textwrap.dedent('''
        from langtail.registry import IMAGE_ENCODERS
        from langtail.models.encoders import ImageTower, DemoCNN

        @IMAGE_ENCODERS.register("my_cnn", keys={"model": ("embed_dim",)})
        def my_cnn(cfg):
            bb = DemoCNN(width=8)
            return ImageTower(bb, bb.out_dim, cfg.embed_dim, "my_cnn")
    '''))
    code = ("from langtail.config import ModelConfig; from langtail.models.encoders import create_image_encoder;"
            "t = create_image_encoder(ModelConfig(image_encoder='my_cnn', embed_dim=16)); print(t.embed_dim, t.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "LANGTAIL_PLUGINS": str(plugin)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["16", "my_cnn"]


def test_missing_plugin_file_is_named(monkeypatch):
    from langtail.registry import load_plugins

    with pytest.raises(FileNotFoundError, match="nowhere.py"):
        load_plugins("/nowhere.py")


def test_needs_follows_the_config_and_stays_within_the_declared_inputs():
    from langtail.config import from_dict
    from langtail.registry import HEADS, Part

    on = from_dict({})
    off = from_dict({"finetune": {"init_from_pretrain": False}})
    assert HEADS.get("lgr").needs(on) == ("text_emb", "pretrain")
    assert HEADS.get("lgr").needs(off) == ("text_emb",)
    assert HEADS.get("fc_cvlp").needs(off) == () and HEADS.get("fc").needs(on) == ()
    bad = Part("x", lambda: None, "head", inputs=("text_emb",), info={"needs": lambda cfg: ("pretrain",)})
    with pytest.raises(ValueError, match=r"head 'x'.*\['pretrain'\].*not in its declared inputs"):
        bad.needs(on)


def test_every_builtin_head_and_loss_declares_existing_keys_and_what_stages_read():
    from langtail.config import check_keys, from_dict
    from langtail.models.classifier import head_option_names
    from langtail.registry import HEADS, LOSSES

    for part in HEADS.parts():
        check_keys(part.keys, f"head {part.name}")
        assert part.info["encoder"] in ("cvlp", "baseline") and part.info["label"], part.name
        assert "anchors" in part.info and part.info["checkpoint"], part.name
        opts = part.info["options"](from_dict({}), None)
        assert set(opts) <= set(head_option_names(part)), part.name  # options are factory kwargs
    for part in LOSSES.parts():
        check_keys(part.keys, f"loss {part.name}")
        assert isinstance(part.info.get("uses_priors"), bool), part.name
