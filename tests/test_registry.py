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
