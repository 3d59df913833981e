"""Losses of VL-LTR (paper Sec. 3.2-3.4), as plain functions and ``nn.Module`` wrappers.

Notation: a batch of N images ``I`` and N sentences ``T`` (sentence i is drawn from the
class of image i), embeddings ``E^I, E^T [N, D]``, ``S = cos(E^I, E^T) [N, N]``
(``S[i, j]`` = image i vs sentence j), temperature ``tau``.

- :func:`class_contrastive_loss` — Eq. 2 (CCL), multi-positive on both sides.
- :func:`logit_distillation_loss` — Eq. 3 (teacher similarities ``S'`` of a frozen CLIP).
- :func:`feature_distillation_loss` — the feature-level alternative of Table 9.
- :func:`pretrain_loss` — Eq. 8, ``lambda * L_ccl + (1 - lambda) * L_dis``.
- :func:`recognition_loss` — Eq. 9, ``CE(P^I, y) + CE(P^T, y)``.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[N, D] x [M, D] -> [N, M]`` cosine similarities."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()


def _multi_positive_nll(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-1/|P_i| sum_{j in P_i} log softmax(logits_i)_j``. ``[N, K], [N, K] bool -> []``."""
    logp = F.log_softmax(logits, dim=1)
    npos = pos.sum(1).clamp(min=1)
    return (-(logp * pos).sum(1) / npos).mean()


def class_contrastive_loss(
    sim: torch.Tensor,
    image_labels: torch.Tensor,
    text_labels: torch.Tensor,
    tau: torch.Tensor | float,
    reduction: Literal["paper", "code"] = "paper",
) -> torch.Tensor:
    """Eq. 2: ``L_ccl = L_vis + L_lin``.

    Args:
        sim: ``S [N, M]`` cosine similarities, ``S[i, j]`` = image i vs sentence j.
        image_labels: ``[N]`` class of each image; text_labels: ``[M]`` class of each sentence.
        tau: temperature (scalar tensor, learnable in CVLP).
        reduction: ``"paper"`` sums the two sides (Eq. 2); ``"code"`` averages them, as the
            authors' released code does.

    ``L_vis = mean_i -1/|T_i+| sum_{j in T_i+} log softmax_k(S[i, k] / tau)_j`` (softmax over
    sentences); ``L_lin = mean_i -1/|I_i+| sum_{j in I_i+} log softmax_k(S[k, i] / tau)_j``
    (softmax over images, for sentence i).
    """
    logits = sim / tau
    pos = image_labels[:, None] == text_labels[None, :]  # [N, M]
    l_vis = _multi_positive_nll(logits, pos)
    l_lin = _multi_positive_nll(logits.t(), pos.t())
    total = l_vis + l_lin
    return total if reduction == "paper" else total / 2


def sentence_lin_scores(
    sim: torch.Tensor, image_labels: torch.Tensor, sentence_labels: torch.Tensor, tau: float
) -> torch.Tensor:
    """AnSS score of each sentence: its ``L_lin`` against an image batch. ``[K, S] -> [S]``.

    ``sim[k, s]`` = image k vs sentence s. For sentence s of class c:
    ``L_lin(s) = -1/|I_c| sum_{j in I_c} log softmax_k(sim[k, s] / tau)_j`` (softmax over the
    K images of the batch; I_c = images of class c). Lower = more discriminative.
    """
    logits = sim.t() / tau  # [S, K]
    pos = sentence_labels[:, None] == image_labels[None, :]
    logp = F.log_softmax(logits, dim=1)
    npos = pos.sum(1)
    if bool((npos == 0).any()):
        raise ValueError("a sentence's class has no image in the AnSS image batch")
    return -(logp * pos).sum(1) / npos


def logit_distillation_loss(
    sim: torch.Tensor,
    teacher_sim: torch.Tensor,
    tau: torch.Tensor | float,
    mode: Literal["paper", "code"] = "paper",
    teacher_tau: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Eq. 3: distil the frozen CLIP's similarity logits into the student. ``[N, N] x2 -> []``.

    ``mode="paper"`` is the typeset equation: only the diagonal (matched) terms,
    ``-p'_ii log p_ii`` for the image->text softmax (over sentences) plus the same for the
    text->image softmax (over images), averaged over i. ``mode="code"`` is the released
    code: the full soft cross-entropy ``-sum_j p'_ij log p_ij`` over every column, both
    directions averaged. Teacher probabilities use ``teacher_tau`` (default: the student's
    tau, as written in Eq. 3) and carry no gradient.
    """
    t_tau = tau if teacher_tau is None else teacher_tau
    if isinstance(t_tau, torch.Tensor):
        t_tau = t_tau.detach()
    s_logits = sim / tau
    t_logits = (teacher_sim / t_tau).detach()
    terms = []
    for s, t in ((s_logits, t_logits), (s_logits.t(), t_logits.t())):
        logp = F.log_softmax(s, dim=1)
        q = F.softmax(t, dim=1)
        if mode == "paper":
            terms.append(-(q.diagonal() * logp.diagonal()).mean())
        else:
            terms.append(-(q * logp).sum(1).mean())
    return terms[0] + terms[1] if mode == "paper" else (terms[0] + terms[1]) / 2


def feature_distillation_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, teacher_image: torch.Tensor, teacher_text: torch.Tensor
) -> torch.Tensor:
    """Feature-level distillation (Table 9): ``||n(E) - n(E')||^2`` on both towers, averaged over rows."""
    f = lambda a, b: (F.normalize(a, dim=-1) - F.normalize(b.detach(), dim=-1)).pow(2).sum(-1).mean()  # noqa: E731
    return f(image_emb, teacher_image) + f(text_emb, teacher_text)


def pretrain_loss(l_ccl: torch.Tensor, l_dis: torch.Tensor | None, lam: float) -> torch.Tensor:
    """Eq. 8: ``lambda * L_ccl + (1 - lambda) * L_dis`` (``L_ccl`` alone without a teacher)."""
    if l_dis is None:
        return l_ccl
    return lam * l_ccl + (1 - lam) * l_dis


def recognition_loss(logits_image: torch.Tensor, logits_text: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """Eq. 9: ``CE(P^I, y) + CE(P^T, y)`` from pre-softmax logits ``[B, C]``."""
    loss = F.cross_entropy(logits_image, y)
    if logits_text is not None:
        loss = loss + F.cross_entropy(logits_text, y)
    return loss
