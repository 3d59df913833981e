"""The open_clip code path (RN50 / ViT-B-16 in real runs) on a tiny random CLIP built from a
custom model config: CVLP with a frozen CLIP teacher (logit and feature distillation), the
CLIP text tower as linguistic encoder, local-checkpoint `pretrained`, LGR fine-tuning."""
import dataclasses

import pytest
import torch

from conftest import run_chain
from langtail.config import ModelConfig, from_dict
from langtail.models.encoders import create_vl_model, load_vl_checkpoint, register_open_clip_config

TINY_CLIP = "langtail-test-tiny-vit"


@pytest.fixture(scope="module", autouse=True)
def tiny_clip_config():
    register_open_clip_config(TINY_CLIP, {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    })


def _model_cfg(**kw) -> ModelConfig:
    return ModelConfig(image_encoder=TINY_CLIP, text_encoder="clip", embed_dim=32, train_text_encoder=True, **kw)


def test_tiny_clip_towers_and_shapes():
    m = create_vl_model(_model_cfg())
    img = m.image(torch.randn(3, 3, 32, 32))
    txt = m.text(["a photo of a cat.", "a photo of a dog."])
    assert img.shape == (3, 32) and txt.shape == (2, 32)
    assert float(m.tau.detach()) == pytest.approx(0.07, rel=1e-4)
    # the two towers share one CLIP model (its visual tower is the image encoder)
    assert m.image.backbone.visual is m.text.clip.visual


def test_local_checkpoint_as_pretrained(tmp_path):
    import open_clip

    ref = open_clip.create_model(TINY_CLIP)
    path = tmp_path / "tiny_clip.pt"
    torch.save(ref.state_dict(), path)
    m = create_vl_model(_model_cfg(pretrained=str(path)))
    for k, v in ref.state_dict().items():
        assert torch.equal(v, m.text.clip.state_dict()[k]), k
    with pytest.raises(RuntimeError, match="local checkpoint"):
        create_vl_model(_model_cfg(pretrained=str(tmp_path / "missing.pt")))


@pytest.mark.parametrize("distill", ["logits", "feature"])
def test_cvlp_with_clip_teacher_end_to_end(tmp_path, distill):
    from conftest import TINY

    d = {k: dict(v) for k, v in TINY.items()}
    d["data"].update(normalize="clip", max_train_per_class=12, test_per_class=2)
    d["corpus"] = {"sources": ["wiki"]}
    d["model"] = dataclasses.asdict(_model_cfg(teacher=TINY_CLIP))
    d["pretrain"].update(distill=distill, lambda_ccl=0.5, batch_size=32)
    d["finetune"].update(epochs=1, batch_size=32)
    cfg = from_dict(d)
    metrics = run_chain(cfg, tmp_path)
    assert 0.0 <= metrics["lgr"]["overall"] <= 100.0
    model, mcfg, ck = load_vl_checkpoint(tmp_path / "pretrain.pt")
    assert mcfg.teacher == TINY_CLIP and ck["extra"]["history"][0]["loss"] > 0
    image, _, _ = load_vl_checkpoint(tmp_path / "pretrain.pt", image_only=True)
    x = torch.randn(2, 3, 32, 32)
    model.eval(), image.eval()
    assert torch.allclose(model.image(x), image(x), atol=1e-5)


def test_teacher_encodes_the_corpus_once_through_the_cache(tmp_path):
    """Multi-GPU pre-training: rank 0 encodes the corpus with the CLIP teacher and caches it;
    the other ranks (and reruns) read the cache instead of encoding it again."""
    import open_clip

    from langtail.stages.pretrain import teacher_text_features

    teacher = open_clip.create_model(TINY_CLIP).eval()
    mc = _model_cfg(teacher=TINY_CLIP, teacher_pretrained="")
    sentences = [f"a photo of a thing number {i}." for i in range(5)]
    first = teacher_text_features(teacher, mc, sentences, tmp_path, torch.device("cpu"))
    assert first.shape == (5, 32) and len(list(tmp_path.glob("teacher_text_*.safetensors"))) == 1

    def boom(*a, **k):
        raise AssertionError("encoded again")

    teacher.encode_text = boom
    again = teacher_text_features(teacher, mc, sentences, tmp_path, torch.device("cpu"))
    torch.testing.assert_close(again, first)
    with pytest.raises(AssertionError, match="encoded again"):  # another corpus is a cache miss
        teacher_text_features(teacher, mc, sentences[:3], tmp_path, torch.device("cpu"))
