"""LIFT's text-initialised classifier (issue #23): at step 0 an fc / fc_cvlp head started from the
class text embeddings gives exactly the zero-shot logits at the head's scale: with the CLIP text
tower (fc: model.pretrained) and with MiniLM through the CVLP projection (fc_cvlp)."""
import dataclasses

import pytest
import torch

from langtail.config import DatasetConfig, ModelConfig, restrict
from langtail.models.classifier import create_head, fresh_image_encoder
from langtail.models.encoders import create_vl_model, load_vl_checkpoint, register_open_clip_config, save_vl_checkpoint
from langtail.models.heads import Classifier
from langtail.models.zeroshot import load_zeroshot, prompt_class_embeddings, zeroshot_scores
from langtail.stages import finetune

TINY = "langtail-test-init-vit"
NAMES = ["cat", "dog", "golden retriever", "sea turtle"]


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory):
    import open_clip

    register_open_clip_config(TINY, {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    })
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    torch.save(open_clip.create_model(TINY).state_dict(), path)
    return str(path)


def _cfg(model: ModelConfig, head: str, **ft) -> DatasetConfig:
    cfg = DatasetConfig(model=model)
    cfg.finetune = dataclasses.replace(cfg.finetune, **ft)
    return restrict(cfg, finetune.config_keys(cfg, head), "finetune")  # only declared keys are read


@pytest.mark.parametrize("scale", [30.0, 0.0])
def test_fc_text_init_equals_clip_zeroshot(clip_weights, scale):
    model = ModelConfig(image_encoder=TINY, text_encoder="clip", pretrained=clip_weights, embed_dim=32)
    cfg = _cfg(model, "fc", head_init="text", fc_cosine_scale=scale)
    opts = finetune.head_options(cfg, "fc", None)
    image = fresh_image_encoder(cfg.model).eval()
    head = create_head("fc", image.embed_dim, len(NAMES), None, None, **opts)
    assert finetune.init_head(cfg, "fc", head, NAMES, None, None) == "text"
    clf = Classifier(image, head, "fc").eval()
    proto = prompt_class_embeddings(create_vl_model(model).text, NAMES)  # the zero-shot classifier
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        logits = clf(x)["image"]
        cos = zeroshot_scores(image, proto)(x)
        if scale:
            assert torch.allclose(logits, scale * cos, atol=1e-5)
        else:  # linear head: <E^I, t_c> = ||E^I|| cos: the same ranking
            assert torch.allclose(logits, image(x).norm(dim=-1, keepdim=True) * cos, atol=1e-5)
    assert not torch.allclose(cos[:, 0], cos[:, 1])  # the classes differ: the check is not vacuous


def test_fc_cvlp_text_init_through_the_minilm_projection(tmp_path):
    model = ModelConfig(image_encoder="demo_cnn", text_encoder="minilm", embed_dim=32)
    torch.manual_seed(0)
    save_vl_checkpoint(tmp_path / "p.pt", create_vl_model(model), model)
    cfg = _cfg(model, "fc_cvlp", head_init="text", fc_cosine_scale=30.0)
    image = load_vl_checkpoint(tmp_path / "p.pt", image_only=True)[0].eval()
    head = create_head("fc_cvlp", image.embed_dim, len(NAMES), None, None, **finetune.head_options(cfg, "fc_cvlp", None))
    finetune.init_head(cfg, "fc_cvlp", head, NAMES, tmp_path / "p.pt", None)
    zs_image, proto, _ = load_zeroshot("zeroshot", tmp_path / "p.pt", None, NAMES)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(Classifier(image, head, "fc_cvlp").eval()(x)["image"],
                              30.0 * zeroshot_scores(zs_image.eval(), proto)(x), atol=1e-5)


def test_text_init_refused_where_no_text_tower_is_aligned():
    cfg = _cfg(ModelConfig(image_encoder="demo_cnn", text_encoder="minilm", embed_dim=32), "fc", head_init="text")
    head = create_head("fc", 32, 3, None, None)
    with pytest.raises(ValueError, match="fc_cvlp head"):
        finetune.init_head(cfg, "fc", head, NAMES[:3], None, None)


def test_anchor_init_reads_the_anchor_cache():
    cfg = DatasetConfig()
    cfg.finetune = dataclasses.replace(cfg.finetune, head_init="anchors")
    assert "text_emb" in finetune.inputs(cfg, "fc_cvlp") and "text_emb" in finetune.inputs(cfg, "fc")
    cfg.finetune = dataclasses.replace(cfg.finetune, head_init="random")
    assert "text_emb" not in finetune.inputs(cfg, "fc")
