"""Losses of VL-LTR (paper Sec. 3.2-3.4), as plain functions and ``nn.Module`` wrappers.

Notation: a batch of N images ``I`` and N sentences ``T`` (sentence i is drawn from the
class of image i), embeddings ``E^I, E^T [N, D]``, ``S = cos(E^I, E^T) [N, N]``
(``S[i, j]`` = image i vs sentence j), temperature ``tau``.

- :func:`class_contrastive_loss` — Eq. 2 (CCL), multi-positive on both sides.
- :func:`logit_distillation_loss` — Eq. 3 (teacher similarities ``S'`` of a frozen CLIP).
- :func:`feature_distillation_loss` — the feature-level alternative of Table 9.
- :func:`pretrain_loss` — Eq. 8, ``lambda * L_ccl + (1 - lambda) * L_dis``.
- :func:`recognition_loss` — Eq. 9, ``CE(P^I, y) + CE(P^T, y)``, or the same sum with any
  long-tail loss below in place of CE (``finetune.loss``).

Long-tail classification losses (``finetune.loss``; logits ``z [B, C]``, labels ``y [B]``,
class priors ``pi [C]`` = the manifest's train counts normalised, :func:`class_priors`):

- :func:`logit_adjusted_loss` — Menon et al. 2021 (ICLR), loss form:
  ``CE(z + tau * log pi, y)``; the post-hoc form at inference is :func:`posthoc_adjust`,
  ``z - tau * log pi``.
- :func:`balanced_softmax_loss` — Ren et al. 2020: ``CE(z + log pi, y)`` (logit adjustment
  with tau = 1).
- :func:`ldam_loss` — Cao et al. 2019: margins ``m_j = C / n_j^{1/4}`` scaled so that
  ``max_j m_j = max_margin`` (:func:`ldam_margins`), subtracted from the true-class cosine:
  ``CE(s * (cos - m_y e_y), y, weight)``; with deferred re-weighting (DRW) the weights are
  the class-balanced ones of Cui et al. 2019 (:func:`class_balanced_weights`, beta 0.9999)
  from epoch ``drw_epoch`` on, none before (:class:`LongTailLoss.set_epoch`).

:class:`LongTailLoss` bundles the choice, the priors and the schedule for the training loops;
each loss is one registered class of :data:`langtail.registry.LOSSES` (docs/extending.md
"A new loss"), :func:`make_loss` builds the one of ``finetune.loss``.
"""
from __future__ import annotations

import logging
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from langtail.registry import LOSSES

log = logging.getLogger(__name__)


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


def _counts(counts: Sequence[int] | np.ndarray | torch.Tensor, where: str = "the manifest") -> torch.Tensor:
    """Train counts ``[C]`` as float64; a class without training image is refused, naming ``where``."""
    c = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
    if c.ndim != 1 or c.numel() == 0:
        raise ValueError(f"{where}: class counts must be a non-empty 1-d list, got shape {tuple(c.shape)}")
    if bool((c <= 0).any()):
        bad = torch.nonzero(c <= 0).flatten().tolist()
        raise ValueError(f"{where}: class(es) {bad[:10]} have no training image; the long-tail losses and "
                         "post-hoc logit adjustment need every class's prior (drop those classes, or use loss: ce)")
    return c


def class_priors(counts: Sequence[int] | np.ndarray | torch.Tensor, where: str = "the manifest") -> torch.Tensor:
    """``pi [C]`` float64 = train counts / their sum. A class without training image has no
    prior (log 0): refused, naming ``where``."""
    c = _counts(counts, where)
    return c / c.sum()


def _shift(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``z [B, C] + v [C]`` in z's dtype and device."""
    return z + v.to(device=z.device, dtype=z.dtype)


def logit_adjusted_loss(logits: torch.Tensor, y: torch.Tensor, priors: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Menon et al. 2021, Eq. 10 (loss form): ``CE(z + tau * log pi, y)``. ``[B, C], [B], [C] -> []``."""
    return F.cross_entropy(_shift(logits, tau * priors.log()), y)


def balanced_softmax_loss(logits: torch.Tensor, y: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Balanced softmax (Ren et al. 2020): ``CE(z + log pi, y)``; scale-free in pi (counts work too)."""
    return F.cross_entropy(_shift(logits, priors.log()), y)


def posthoc_adjust(logits: torch.Tensor, priors: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Menon et al. 2021, Eq. 9 (post-hoc form, at inference): ``z - tau * log pi``. ``[B, C] -> [B, C]``."""
    return _shift(logits, -tau * priors.log())


def ldam_margins(counts: Sequence[int] | np.ndarray | torch.Tensor, max_margin: float = 0.5) -> torch.Tensor:
    """Cao et al. 2019: ``m_j = C / n_j^{1/4}`` with C such that ``max_j m_j = max_margin``. ``[C]`` float64."""
    n = _counts(counts)
    m = 1.0 / n.pow(0.25)
    return m * (max_margin / m.max())


def class_balanced_weights(counts: Sequence[int] | np.ndarray | torch.Tensor, beta: float = 0.9999) -> torch.Tensor:
    """Cui et al. 2019 (the DRW weights of Cao et al.): ``w_j = (1 - beta) / (1 - beta^{n_j})``,
    normalised to sum to C. ``[C]`` float64."""
    n = _counts(counts)
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
    return w / w.sum() * len(w)


def ldam_loss(logits: torch.Tensor, y: torch.Tensor, margins: torch.Tensor, scale: float = 30.0,
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cao et al. 2019: ``CE(scale * (z - m_y e_y), y, weight)`` where ``z [B, C]`` are cosine
    similarities (their normalised classifier), ``margins [C]``, ``weight [C]`` or None. A branch
    whose logits are already ``cos / tau`` passes ``z = logits * tau`` and ``scale = 1 / tau``
    (:func:`recognition_loss` does this for the LGR text branch)."""
    m = margins.to(device=logits.device, dtype=logits.dtype)[y]  # [B]
    onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    z = scale * (logits - m[:, None] * onehot)
    if weight is None:
        return F.cross_entropy(z, y)
    w = weight.to(device=logits.device, dtype=logits.dtype)[y]  # [B]
    return global_weighted_mean(F.cross_entropy(z, y, reduction="none"), w)


def global_weighted_mean(values: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``sum(w * values) / sum(w)`` over the GLOBAL batch (``values, w [B]``), as
    ``cross_entropy(weight=...)`` computes it over one process's batch. In a process group each
    rank returns ``sum_rank(w * values) * world / sum_all(w)``: the ranks' losses (and
    DistributedDataParallel's gradient average) then average to the global weighted mean,
    not to the mean of per-rank weighted means (ranks draw different class mixes)."""
    from langtail import distributed

    den = w.detach().sum()
    if distributed.is_distributed():
        den = distributed.all_sum(den) / distributed.world_size()
    return (w * values).sum() / den


# ----------------------------------------------------------------------------- registered losses
# ``finetune.loss`` picks one of :data:`langtail.registry.LOSSES`: ``factory(counts [C], **keys)
# -> nn.Module`` with ``forward(z [B, C], y [B], cosine_tau=None) -> []`` and optionally
# ``set_epoch(epoch)``. ``keys``: the ``finetune`` keys it reads (its keyword arguments).
# ``info["uses_priors"]``: it needs the train counts (validated before the factory sees them, as
# float64 ``[C]``); ``info["cosine_scale_key"]``: the key whose value turns linear heads into
# cosine classifiers (LDAM).


@LOSSES.register("ce", info={"uses_priors": False, "doc": "cross-entropy (paper)"})
class CrossEntropy(torch.nn.Module):
    """Plain cross-entropy: ``CE(z, y)``."""

    def __init__(self, counts: torch.Tensor | None = None):
        super().__init__()

    def forward(self, logits: torch.Tensor, y: torch.Tensor, cosine_tau: float | None = None) -> torch.Tensor:
        return F.cross_entropy(logits, y)


class _PriorLoss(torch.nn.Module):
    """A loss holding the class priors ``pi [C]`` (float32 buffer, not saved)."""

    def __init__(self, counts: torch.Tensor):
        super().__init__()
        self.register_buffer("priors", (counts / counts.sum()).float(), persistent=False)


@LOSSES.register("logit_adjusted", keys={"finetune": ("la_tau",)},
                 info={"uses_priors": True, "doc": "Menon et al. 2021: CE(z + la_tau log pi)"})
class LogitAdjusted(_PriorLoss):
    """:func:`logit_adjusted_loss` with ``tau = la_tau``."""

    def __init__(self, counts: torch.Tensor, la_tau: float = 1.0):
        super().__init__(counts)
        self.la_tau = float(la_tau)

    def forward(self, logits: torch.Tensor, y: torch.Tensor, cosine_tau: float | None = None) -> torch.Tensor:
        return logit_adjusted_loss(logits, y, self.priors, self.la_tau)


@LOSSES.register("balanced_softmax", info={"uses_priors": True, "doc": "Ren et al. 2020: CE(z + log pi)"})
class BalancedSoftmax(_PriorLoss):
    """:func:`balanced_softmax_loss`."""

    def forward(self, logits: torch.Tensor, y: torch.Tensor, cosine_tau: float | None = None) -> torch.Tensor:
        return balanced_softmax_loss(logits, y, self.priors)


@LOSSES.register("ldam", keys={"finetune": ("ldam_max_margin", "ldam_scale", "drw_epoch", "drw_beta")},
                 info={"uses_priors": True, "cosine_scale_key": "ldam_scale",
                       "doc": "Cao et al. 2019: margins C/n^(1/4) on the cosine, DRW from drw_epoch"})
class LDAM(_PriorLoss):
    """:func:`ldam_loss`; ``cosine_tau``: the temperature of a branch whose logits are ``cos / tau``
    (the margin applies to the cosine, the scale is ``1 / tau``); None = a linear branch, on whose
    raw logits Cao et al.'s formula runs with ``s = ldam_scale``. DRW: class-balanced weights from
    0-based epoch ``drw_epoch`` on (0 = off), switched by :meth:`set_epoch`."""

    def __init__(self, counts: torch.Tensor, ldam_max_margin: float = 0.5, ldam_scale: float = 30.0,
                 drw_epoch: int = 0, drw_beta: float = 0.9999):
        super().__init__(counts)
        self.scale, self.drw_epoch, self.epoch = float(ldam_scale), int(drw_epoch), 0
        self.register_buffer("margins", ldam_margins(counts, ldam_max_margin).float(), persistent=False)
        self.register_buffer("drw_weights", class_balanced_weights(counts, drw_beta).float(), persistent=False)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def drw_active(self) -> bool:
        return self.drw_epoch > 0 and self.epoch >= self.drw_epoch

    def forward(self, logits: torch.Tensor, y: torch.Tensor, cosine_tau: float | None = None) -> torch.Tensor:
        w = self.drw_weights if self.drw_active() else None
        if cosine_tau is not None:
            return ldam_loss(logits * cosine_tau, y, self.margins, 1.0 / cosine_tau, w)
        return ldam_loss(logits, y, self.margins, self.scale, w)


class LongTailLoss(torch.nn.Module):
    """The classification loss ``kind`` (a :data:`~langtail.registry.LOSSES` name) of one run:
    ``(z [B, C], y [B], cosine_tau) -> []``.

    ``counts [C]``: training images per class (the manifest's train split), validated naming
    ``where`` when the loss uses priors. ``cosine_tau``: the temperature of a branch whose logits
    are ``cos / tau`` (LGR text branch, KNN head, the cosine FC head under LDAM), None = a linear
    branch. ``keys``: the loss's declared config keys. The loop calls :meth:`set_epoch` before
    every epoch (DRW). Attributes of the loss (``priors``, ``margins``, ...) read through.
    """

    def __init__(self, kind: str = "ce", counts: Sequence[int] | np.ndarray | None = None,
                 where: str = "the manifest", **keys: Any):
        super().__init__()
        try:
            part = LOSSES.get(kind)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        if part.info.get("uses_priors", True):
            if counts is None:
                raise ValueError(f"loss {kind!r} needs the class counts of the training split")
            counts = _counts(counts, where)
        self.kind = kind
        self.impl = part(counts, **keys)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("impl"), name)

    def set_epoch(self, epoch: int) -> None:
        """0-based index of the epoch about to run (DRW switches on at ``drw_epoch``)."""
        if hasattr(self.impl, "set_epoch"):
            self.impl.set_epoch(epoch)

    def drw_active(self) -> bool:
        return bool(getattr(self.impl, "drw_active", lambda: False)())

    def forward(self, logits: torch.Tensor, y: torch.Tensor, cosine_tau: float | None = None) -> torch.Tensor:
        return self.impl(logits, y, cosine_tau)


def loss_keys(loss: str | None = None) -> dict[str, tuple[str, ...]]:
    """``{"finetune": ("loss", <the keys of loss>)}``; every loss's keys when ``loss`` is None
    (only the chosen loss's keys are declared, so e.g. ``la_tau`` does not rerun a ``ce`` run)."""
    parts = [LOSSES.get(loss)] if loss is not None else list(LOSSES.parts())
    keys = [k for p in parts for k in p.keys.get("finetune", ())]
    return {"finetune": ("loss",) + tuple(dict.fromkeys(keys))}


def make_loss(fc: Any, counts: Sequence[int], where: str, sampler: str, sampler_key: str) -> LongTailLoss:
    """The :class:`LongTailLoss` of ``fc.loss`` (``fc``: the finetune config section) for train
    ``counts [C]``; warns when a prior-based loss meets a re-balancing ``sampler`` (``sampler_key``
    names it: ``finetune.sampler``, ``ca4ltr.sampler``)."""
    part = LOSSES.get(fc.loss)
    if part.info.get("uses_priors", True) and sampler != "instance":
        log.warning("finetune.loss=%s takes its priors from the train counts, but %s=%s already "
                    "re-balances the batches: the adjustment over-corrects (use sampler: instance)",
                    fc.loss, sampler_key, sampler)
    return LongTailLoss(fc.loss, counts, where=where, **{k: getattr(fc, k) for k in part.keys.get("finetune", ())})


def recognition_loss(logits_image: torch.Tensor, logits_text: torch.Tensor | None, y: torch.Tensor,
                     loss_fn: LongTailLoss | None = None, text_tau: float | None = None,
                     image_tau: float | None = None) -> torch.Tensor:
    """Eq. 9: ``L(P^I, y) + L(P^T, y)`` from pre-softmax logits ``[B, C]``; ``L`` = cross-entropy
    (paper), or ``loss_fn`` (``finetune.loss``). ``text_tau`` / ``image_tau``: the temperature of
    a branch whose logits are ``cos / tau`` (LDAM puts its margin on the cosine), None for a
    linear branch."""
    if loss_fn is None:
        loss = F.cross_entropy(logits_image, y)
        if logits_text is not None:
            loss = loss + F.cross_entropy(logits_text, y)
        return loss
    loss = loss_fn(logits_image, y, image_tau)
    if logits_text is not None:
        loss = loss + loss_fn(logits_text, y, text_tau)
    return loss
