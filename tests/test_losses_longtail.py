"""Long-tail losses (finetune.loss) against hand computations in float64 (plain Python math)."""
import math

import pytest
import torch

from langtail.losses import (LongTailLoss, balanced_softmax_loss, class_balanced_weights, class_priors,
                             ldam_loss, ldam_margins, logit_adjusted_loss, posthoc_adjust, recognition_loss)

Z = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [0.3, 0.2, -0.4]]
Y = [1, 2, 0]
COUNTS = [8, 4, 1]


def _ce(row, j, w=None):
    return -(row[j] - math.log(sum(math.exp(v) for v in row)))


def _mean_ce(rows, ys, weights=None):
    if weights is None:
        return sum(_ce(r, y) for r, y in zip(rows, ys)) / len(ys)
    # torch's weighted mean: sum_i w_{y_i} l_i / sum_i w_{y_i}
    return sum(weights[y] * _ce(r, y) for r, y in zip(rows, ys)) / sum(weights[y] for y in ys)


def _t(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


def test_priors_are_normalised_counts_and_empty_class_is_refused():
    assert class_priors(COUNTS).tolist() == pytest.approx([8 / 13, 4 / 13, 1 / 13])
    with pytest.raises(ValueError, match=r"m\.parquet.*class\(es\) \[1\] have no training image"):
        class_priors([3, 0, 2], "m.parquet")


def test_logit_adjusted_loss_by_hand():
    tau = 1.5
    pri = [c / 13 for c in COUNTS]
    rows = [[z + tau * math.log(p) for z, p in zip(r, pri)] for r in Z]
    got = logit_adjusted_loss(_t(Z), torch.tensor(Y), class_priors(COUNTS), tau).item()
    assert got == pytest.approx(_mean_ce(rows, Y), rel=1e-12)
    # tau = 0 is plain cross-entropy
    assert logit_adjusted_loss(_t(Z), torch.tensor(Y), class_priors(COUNTS), 0.0).item() == pytest.approx(
        _mean_ce(Z, Y), rel=1e-12)


def test_balanced_softmax_by_hand_and_equals_la_with_tau_one():
    rows = [[z + math.log(c / 13) for z, c in zip(r, COUNTS)] for r in Z]
    got = balanced_softmax_loss(_t(Z), torch.tensor(Y), class_priors(COUNTS)).item()
    assert got == pytest.approx(_mean_ce(rows, Y), rel=1e-12)
    assert got == pytest.approx(logit_adjusted_loss(_t(Z), torch.tensor(Y), class_priors(COUNTS), 1.0).item())


def test_posthoc_adjust_by_hand_changes_the_prediction_towards_the_tail():
    z = _t([[2.0, 1.9, 1.0]])
    out = posthoc_adjust(z, class_priors(COUNTS), 1.0)
    exp = [2.0 - math.log(8 / 13), 1.9 - math.log(4 / 13), 1.0 - math.log(1 / 13)]
    assert out[0].tolist() == pytest.approx(exp, rel=1e-12)
    assert z.argmax().item() == 0 and out.argmax().item() == 2


def test_ldam_margins_and_class_balanced_weights_by_hand():
    m = ldam_margins([100, 10, 1], 0.5)
    raw = [100 ** -0.25, 10 ** -0.25, 1.0]
    assert m.tolist() == pytest.approx([0.5 * r / max(raw) for r in raw], rel=1e-12)
    assert m.max().item() == pytest.approx(0.5)
    beta = 0.9
    w = [(1 - beta) / (1 - beta ** n) for n in COUNTS]
    w = [x / sum(w) * 3 for x in w]
    assert class_balanced_weights(COUNTS, beta).tolist() == pytest.approx(w, rel=1e-12)


def test_ldam_loss_by_hand_with_and_without_weights():
    cos = [[0.1, 0.8, -0.2], [0.0, -0.5, 0.9], [0.6, 0.2, 0.1]]
    s, marg, w = 30.0, [0.1, 0.2, 0.5], [0.5, 1.0, 1.5]
    rows = [[s * (c - (marg[j] if j == y else 0.0)) for j, c in enumerate(r)] for r, y in zip(cos, Y)]
    got = ldam_loss(_t(cos), torch.tensor(Y), _t(marg), s).item()
    assert got == pytest.approx(_mean_ce(rows, Y), rel=1e-12)
    got_w = ldam_loss(_t(cos), torch.tensor(Y), _t(marg), s, _t(w)).item()
    assert got_w == pytest.approx(_mean_ce(rows, Y, w), rel=1e-12)


def test_drw_switches_the_class_balanced_weights_on_at_drw_epoch():
    cos = [[0.1, 0.8, -0.2], [0.0, -0.5, 0.9], [0.6, 0.2, 0.1]]
    f = LongTailLoss("ldam", COUNTS, ldam_max_margin=0.5, ldam_scale=30.0, drw_epoch=2, drw_beta=0.9).double()
    marg = f.margins.double()
    unweighted = ldam_loss(_t(cos), torch.tensor(Y), marg, 30.0).item()
    weighted = ldam_loss(_t(cos), torch.tensor(Y), marg, 30.0, class_balanced_weights(COUNTS, 0.9)).item()
    assert unweighted != pytest.approx(weighted)
    for epoch, exp in ((0, unweighted), (1, unweighted), (2, weighted), (5, weighted)):
        f.set_epoch(epoch)
        assert f(_t(cos), torch.tensor(Y)).item() == pytest.approx(exp, rel=1e-6)
    off = LongTailLoss("ldam", COUNTS, drw_epoch=0)
    off.set_epoch(100)
    assert not off.drw_active()


def test_recognition_loss_sums_both_branches_with_the_chosen_loss():
    """Eq. 9 with the chosen loss; LDAM puts the margin on the text branch's cosine (logits = cos/tau)."""
    zi, y = _t(Z), torch.tensor(Y)
    cos = _t([[0.1, 0.8, -0.2], [0.0, -0.5, 0.9], [0.6, 0.2, 0.1]])
    tau = 0.07
    la = LongTailLoss("logit_adjusted", COUNTS, la_tau=2.0).double()
    exp = (logit_adjusted_loss(zi, y, class_priors(COUNTS), 2.0) + logit_adjusted_loss(cos / tau, y, class_priors(COUNTS), 2.0))
    assert recognition_loss(zi, cos / tau, y, la, tau).item() == pytest.approx(exp.item(), rel=1e-12)
    ld = LongTailLoss("ldam", COUNTS, ldam_max_margin=0.5, ldam_scale=30.0).double()
    m = ldam_margins(COUNTS, 0.5)
    exp = ldam_loss(zi, y, m, 30.0) + ldam_loss(cos, y, m, 1 / tau)
    assert recognition_loss(zi, cos / tau, y, ld, text_tau=tau).item() == pytest.approx(exp.item(), rel=1e-6)
    # ce through the module is the paper's Eq. 9
    assert recognition_loss(zi, cos, y, LongTailLoss("ce")).item() == pytest.approx(recognition_loss(zi, cos, y).item())


def test_unknown_loss_and_missing_counts_are_refused():
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        LongTailLoss("focal", COUNTS)
    with pytest.raises(ValueError, match="needs the class counts"):
        LongTailLoss("balanced_softmax", None)


def test_cosine_fc_head_logits_are_scaled_cosines():
    from langtail.models.classifier import create_head

    torch.manual_seed(0)
    h = create_head("fc", 4, 3, None, None, fc_cosine_scale=30.0)
    e = torch.randn(2, 4)
    exp = 30.0 * torch.nn.functional.normalize(e, dim=-1) @ torch.nn.functional.normalize(h.fc.weight, dim=-1).t()
    assert torch.allclose(h(e)["image"], exp)
    assert h(e)["image"].abs().max() <= 30.0 + 1e-5


def test_fit_calls_on_epoch_with_the_epoch_index_also_after_resume(tmp_path):
    from langtail.train.loop import fit

    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = [{"image": torch.randn(4, 2), "label": torch.tensor([0, 1, 0, 1])}]
    seen = []
    step = lambda b: torch.nn.functional.cross_entropy(model(b["image"]), b["label"])  # noqa: E731
    res = tmp_path / "m.pt.resume"
    fit(model, opt, loader, step, epochs=2, resume_path=res, fingerprint="x", device=torch.device("cpu"),
        on_epoch=seen.append)
    assert seen == [0, 1]
    seen.clear()
    fit(model, opt, loader, step, epochs=4, resume_path=res, fingerprint="x", device=torch.device("cpu"),
        on_epoch=seen.append)
    assert seen == [2, 3]  # resumed after epoch 2: the schedule continues, not restarts


def test_finetune_declares_only_the_chosen_loss_keys(tiny_cfg):
    import dataclasses

    from langtail.stages import stage_keys

    ce = stage_keys("finetune", tiny_cfg, head="fc")["finetune"]
    assert "loss" in ce and "la_tau" not in ce and "drw_epoch" not in ce
    la = dataclasses.replace(tiny_cfg, finetune=dataclasses.replace(tiny_cfg.finetune, loss="logit_adjusted"))
    assert "la_tau" in stage_keys("finetune", la, head="lgr")["finetune"]
    ld = dataclasses.replace(tiny_cfg, finetune=dataclasses.replace(tiny_cfg.finetune, loss="ldam"))
    assert {"ldam_scale", "ldam_max_margin", "drw_epoch", "drw_beta"} <= set(stage_keys("finetune", ld, head="knn")["finetune"])
    assert {"loss", "ldam_scale"} <= set(stage_keys("ca4ltr_finetune", ld, source="label")["finetune"])
    assert "posthoc_la_tau" in stage_keys("evaluate", tiny_cfg)["evaluate"]
    assert "posthoc_la_tau" in stage_keys("ca4ltr_evaluate", tiny_cfg)["evaluate"]


@pytest.fixture(scope="module")
def chain_ldam(tmp_path_factory):
    """The tiny demo chain with loss ldam + DRW from epoch 1 and post-hoc LA at evaluation."""
    from conftest import TINY, run_chain

    from langtail.config import deep_merge, from_dict

    cfg = from_dict(deep_merge(TINY, {"finetune": {"loss": "ldam", "drw_epoch": 1},
                                      "evaluate": {"posthoc_la_tau": 1.0}}))
    out = tmp_path_factory.mktemp("ldam")
    return cfg, out, run_chain(cfg, out, heads=("lgr", "fc"))


@pytest.mark.slow
def test_ldam_drw_trains_lgr_and_cosine_fc_and_posthoc_la_evaluates(chain_ldam):
    from conftest import staged

    from langtail import io
    from langtail.stages import evaluate, finetune

    cfg, out, metrics = chain_ldam
    for h in ("lgr", "fc"):
        ck = io.torch_load(out / f"{h}.pt")
        assert ck["extra"]["loss"] == "ldam" and len(ck["extra"]["history"]) == cfg.finetune.epochs
        assert metrics[h]["posthoc_la_tau"] == 1.0 and metrics[h]["train_loss"] == "ldam"
    assert io.torch_load(out / "fc.pt")["extra"]["fc_cosine_scale"] == 30.0
    # the CVLP history records tau per epoch (training curves)
    hist = io.torch_load(out / "pretrain.pt")["extra"]["history"]
    assert len(hist) == cfg.pretrain.epochs and all(0 < r["tau"] < 1 for r in hist)
    # a huge adjustment sends every prediction to the rarest classes (logits - tau log pi)
    big = evaluate.run(staged(deep_cfg(cfg, evaluate={"posthoc_la_tau": 1000.0}), "evaluate"), "fc",
                       out / "manifest.parquet", out / "fc.pt", out / "eval_big", None)
    assert big["posthoc_la_tau"] == 1000.0
    per = io.read_parquet(out / "eval_big" / "per_class.parquet")
    rare = per.train_count == per.train_count.min()
    assert per[~rare].correct.sum() == 0 and per[rare].correct.sum() > 0
    # a class without training image is refused, naming the manifest
    from langtail.data.manifest import read_manifest, write_manifest

    df, meta = read_manifest(out / "manifest.parquet")
    bad = out / "bad_manifest.parquet"
    write_manifest(bad, df[~((df.split == "train") & (df.label == 0))].reset_index(drop=True), meta)
    with pytest.raises(ValueError, match=r"bad_manifest\.parquet: class\(es\) \[0\] have no training image"):
        finetune.run(staged(cfg, "finetune", head="fc"), "fc", bad, out / "bad.pt", None, None)


def deep_cfg(cfg, **over):
    import dataclasses

    return dataclasses.replace(cfg, **{sec: dataclasses.replace(getattr(cfg, sec), **kv) for sec, kv in over.items()})


def test_ca4ltr_trains_with_ldam_drw_and_evaluates_with_posthoc_la(tmp_path):
    """CA4LTR shares finetune.loss (CLI path, real frozen MiniLM) and ca4ltr-evaluate applies post-hoc LA."""
    import json

    pytest.importorskip("sentence_transformers")
    from test_ca4ltr_e2e import _files

    from langtail import io
    from langtail.cli import main

    manifest, anchors, _ = _files(tmp_path)
    params = json.dumps({"data": {"name": "e2e", "many_threshold": 8, "few_threshold": 3},
                         "model": {"image_encoder": "demo_cnn", "embed_dim": 16},
                         "finetune": {"loss": "ldam", "drw_epoch": 1},
                         "ca4ltr": {"width": 32, "heads": 4, "depth": 1, "ffn_mult": 2, "epochs": 2, "batch_size": 8,
                                    "device": "cpu", "sampler": "instance"},
                         "evaluate": {"device": "cpu", "batch_size": 16, "posthoc_la_tau": 1.0}})
    out = tmp_path / "ca4ltr" / "description" / "model.pt"
    assert main(["ca4ltr-finetune", "--params", params, "--source", "description", "--manifest", str(manifest),
                 "--anchors", str(anchors), "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    ck = io.torch_load(out)
    assert ck["extra"]["loss"] == "ldam" and len(ck["extra"]["history"]) == 2
    ev = tmp_path / "eval" / "ca4ltr_description"
    assert main(["ca4ltr-evaluate", "--params", params, "--manifest", str(manifest), "--checkpoint", str(out),
                 "--anchors", str(anchors), "--out-dir", str(ev)]) == 0
    m = io.read_json(ev / "metrics.json")
    assert m["posthoc_la_tau"] == 1.0 and m["train_loss"] == "ldam"
