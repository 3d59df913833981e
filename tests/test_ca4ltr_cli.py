"""The CLI path with the real frozen MiniLM: ``langtail ca4ltr-finetune`` (2 epochs) + ``ca4ltr-evaluate``."""
from __future__ import annotations

import json

import pytest

from langtail import io
from langtail.cli import main

from test_ca4ltr_e2e import NAMES, TEST, _files  # noqa: E402  (same small generated manifest)

pytest.importorskip("sentence_transformers")


def test_cli_train_and_evaluate_with_minilm(tmp_path):
    manifest, anchors, _ = _files(tmp_path)
    params = json.dumps({"data": {"name": "e2e", "many_threshold": 8, "few_threshold": 3},
                         "model": {"image_encoder": "demo_cnn", "embed_dim": 16},
                         "ca4ltr": {"width": 32, "heads": 4, "depth": 1, "ffn_mult": 2, "epochs": 2, "batch_size": 8,
                                    "device": "cpu", "bidirectional": True},
                         "evaluate": {"device": "cpu", "batch_size": 16}})
    out = tmp_path / "ca4ltr" / "description" / "model.pt"
    assert main(["ca4ltr-finetune", "--params", params, "--source", "description", "--manifest", str(manifest),
                 "--anchors", str(anchors), "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    ck = io.torch_load(out)
    assert ck["state_dict"]["text_bank"].shape == (2 * len(NAMES), 384)  # 2 selected anchors per class, MiniLM 384-d
    assert len(list((tmp_path / "cache").glob("text_base_*.safetensors"))) == 1
    ev = tmp_path / "eval" / "ca4ltr_description"
    assert main(["ca4ltr-evaluate", "--params", params, "--manifest", str(manifest), "--checkpoint", str(out),
                 "--anchors", str(anchors), "--out-dir", str(ev)]) == 0
    m = io.read_json(ev / "metrics.json")
    assert m["model"] == "ca4ltr_description" and m["n_images"] == TEST * len(NAMES) and m["text_tokens"] == 8
