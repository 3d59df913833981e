"""Eq. 2, 3, 8, 9 and the AnSS score against hand computations (plain Python math)."""
import math

import pytest
import torch

from langtail.losses import (class_contrastive_loss, feature_distillation_loss, logit_distillation_loss,
                             pretrain_loss, recognition_loss, sentence_lin_scores)


def _logsoftmax_row(row, j):
    return row[j] - math.log(sum(math.exp(v) for v in row))


def _ccl_by_hand(S, img_lab, txt_lab, tau):
    N, M = len(S), len(S[0])
    lv = 0.0
    for i in range(N):
        row = [S[i][k] / tau for k in range(M)]
        pos = [j for j in range(M) if txt_lab[j] == img_lab[i]]
        lv += -sum(_logsoftmax_row(row, j) for j in pos) / len(pos)
    ll = 0.0
    for i in range(M):
        col = [S[k][i] / tau for k in range(N)]
        pos = [j for j in range(N) if img_lab[j] == txt_lab[i]]
        ll += -sum(_logsoftmax_row(col, j) for j in pos) / len(pos)
    return lv / N, ll / M


def test_ccl_two_classes_literal():
    # S = I, tau = 1: each side is log(1 + e^-1) per row
    S = torch.eye(2)
    y = torch.tensor([0, 1])
    expected = math.log(1 + math.exp(-1))
    assert class_contrastive_loss(S, y, y, 1.0, "paper").item() == pytest.approx(2 * expected, rel=1e-6)
    assert class_contrastive_loss(S, y, y, 1.0, "code").item() == pytest.approx(expected, rel=1e-6)


def test_ccl_multi_positive_matches_hand_computation():
    S = [[0.5, 0.2, -0.1, 0.0], [0.3, 0.4, 0.0, 0.1], [-0.2, 0.1, 0.6, 0.3], [0.1, -0.3, 0.2, 0.9]]
    img_lab = [0, 0, 1, 2]
    txt_lab = [0, 0, 1, 2]
    tau = 0.5
    lv, ll = _ccl_by_hand(S, img_lab, txt_lab, tau)
    got = class_contrastive_loss(torch.tensor(S), torch.tensor(img_lab), torch.tensor(txt_lab), torch.tensor(tau))
    assert got.item() == pytest.approx(lv + ll, rel=1e-6)
    # the two positives of image 0 are sentences 0 and 1, averaged: check L_vis row 0 explicitly
    row = [v / tau for v in S[0]]
    r0 = -(_logsoftmax_row(row, 0) + _logsoftmax_row(row, 1)) / 2
    assert r0 == pytest.approx(-(math.log(math.exp(1.0) / sum(math.exp(v) for v in row))
                                 + math.log(math.exp(0.4) / sum(math.exp(v) for v in row))) / 2)


def test_ccl_gradient_flows_to_tau():
    tau = torch.tensor(0.07, requires_grad=True)
    S = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    y = torch.tensor([0, 1])
    class_contrastive_loss(S, y, y, tau).backward()
    assert tau.grad is not None and tau.grad.abs().item() > 0


def test_lin_score_with_single_sentence_class():
    # 3 images (classes 0,0,1); sentence 0 of class 0, sentence 1 of class 1 (one sentence only)
    sim = torch.tensor([[0.8, 0.1], [0.6, 0.2], [0.1, 0.9]])  # [K images, S sentences]
    tau = 0.1
    got = sentence_lin_scores(sim, torch.tensor([0, 0, 1]), torch.tensor([0, 1]), tau)
    col0 = [0.8 / tau, 0.6 / tau, 0.1 / tau]
    col1 = [0.1 / tau, 0.2 / tau, 0.9 / tau]
    e0 = -(_logsoftmax_row(col0, 0) + _logsoftmax_row(col0, 1)) / 2
    e1 = -_logsoftmax_row(col1, 2)
    assert got.tolist() == pytest.approx([e0, e1], rel=1e-5, abs=1e-6)
    # the lin score is exactly the per-sentence term of L_lin in Eq. 2
    with pytest.raises(ValueError):
        sentence_lin_scores(sim, torch.tensor([0, 0, 0]), torch.tensor([0, 1]), tau)


def test_distillation_paper_is_diagonal_terms():
    S = [[0.5, 0.1], [0.2, 0.7]]
    T = [[0.9, 0.0], [0.1, 0.4]]
    tau = 0.5
    exp = 0.0
    for i in range(2):
        srow = [S[i][k] / tau for k in range(2)]
        trow = [T[i][k] / tau for k in range(2)]
        scol = [S[k][i] / tau for k in range(2)]
        tcol = [T[k][i] / tau for k in range(2)]
        exp += -math.exp(_logsoftmax_row(trow, i)) * _logsoftmax_row(srow, i)
        exp += -math.exp(_logsoftmax_row(tcol, i)) * _logsoftmax_row(scol, i)
    exp /= 2  # mean over i of (image->text + text->image)
    got = logit_distillation_loss(torch.tensor(S), torch.tensor(T), tau, "paper")
    assert got.item() == pytest.approx(exp, rel=1e-6)


def test_distillation_code_is_full_soft_ce_averaged():
    S = torch.tensor([[0.5, 0.1], [0.2, 0.7]])
    T = torch.tensor([[0.9, 0.0], [0.1, 0.4]])
    tau = 0.5
    d1 = -(torch.softmax(T / tau, 1) * torch.log_softmax(S / tau, 1)).sum(1).mean()
    d2 = -(torch.softmax(T.t() / tau, 1) * torch.log_softmax(S.t() / tau, 1)).sum(1).mean()
    assert logit_distillation_loss(S, T, tau, "code").item() == pytest.approx(((d1 + d2) / 2).item(), rel=1e-6)
    # identical student and teacher: soft CE equals the teacher entropy (minimum over students)
    assert logit_distillation_loss(T, T, tau, "code").item() <= logit_distillation_loss(S, T, tau, "code").item()


def test_pretrain_and_recognition_loss():
    a, b = torch.tensor(2.0), torch.tensor(4.0)
    assert pretrain_loss(a, b, 0.5).item() == 3.0
    assert pretrain_loss(a, None, 0.5).item() == 2.0
    li = torch.tensor([[2.0, 0.0]])
    lt = torch.tensor([[0.0, 1.0]])
    y = torch.tensor([0])
    exp = -math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(1 / (1 + math.e))
    assert recognition_loss(li, lt, y).item() == pytest.approx(exp, rel=1e-6)


def test_feature_distillation_zero_when_equal():
    x = torch.randn(4, 8)
    t = torch.randn(4, 8)
    assert feature_distillation_loss(x, t, x * 3, t * 2).item() == pytest.approx(0.0, abs=1e-6)
