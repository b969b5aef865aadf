"""GO4Align: group-level loss weights from risk-guided indicators clustered into task groups."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from mtlbench.method import LossWeighting, Objective, Scale, StepContext, register
from mtlbench.registry import PositiveFloat, PositiveInt


def kmeans_1d(values: np.ndarray, n_groups: int) -> np.ndarray:
    """The exact (globally optimal) k-means partition of 1-D ``values`` into at most ``n_groups``
    clusters; returns each value's cluster centre (the mean of its cluster).

    In one dimension an optimal k-means partition consists of contiguous runs of the sorted
    values, so dynamic programming over the sorted *distinct* values (weighted by their counts)
    finds it exactly: equal values always share a cluster, and the result does not depend on the
    order of the input. With at most ``n_groups`` distinct values every value is its own centre.
    """
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    m = uniq.size
    g = min(n_groups, m)
    if g == m:
        return uniq[inverse]
    # cost[a, b]: within-cluster sum of squares of the distinct values a..b (inclusive).
    centred = uniq - uniq.mean()
    cw = np.concatenate([[0.0], np.cumsum(counts)])
    s1 = np.concatenate([[0.0], np.cumsum(counts * centred)])
    s2 = np.concatenate([[0.0], np.cumsum(counts * centred**2)])
    a, b = np.triu_indices(m)
    n = cw[b + 1] - cw[a]
    seg1 = s1[b + 1] - s1[a]
    cost = np.full((m, m), np.inf)
    cost[a, b] = np.maximum(s2[b + 1] - s2[a] - seg1**2 / n, 0.0)
    # best[j, b]: least cost of splitting values 0..b into j + 1 clusters; cut: first index of
    # the last cluster.
    best = np.full((g, m), np.inf)
    cut = np.zeros((g, m), dtype=np.int64)
    best[0] = cost[0]
    for j in range(1, g):
        for end in range(j, m):
            starts = np.arange(j, end + 1)
            total = best[j - 1, starts - 1] + cost[starts, end]
            pick = int(np.argmin(total))
            best[j, end], cut[j, end] = total[pick], starts[pick]
    centres = np.empty(m)
    end = m - 1
    for j in range(g - 1, -1, -1):
        start = int(cut[j, end]) if j > 0 else 0
        members = slice(start, end + 1)
        centres[members] = (counts[members] * uniq[members]).sum() / counts[members].sum()
        end = start - 1
    return centres[inverse]


@register("go4align")
class GO4Align(LossWeighting):
    """GO4Align (Shen, Wang, Xiao, van Noord & Worring, "GO4Align: Group Optimization for
    Multi-Task Alignment", NeurIPS 2024, arXiv 2404.06486), as its official code
    (autumn9999/GO4Align ``methods/cluster_methods.py::GO4ALIGN``). At each step, with the
    detached shifted losses ``d = l - l*`` (``l*`` the ``min_losses``, 0 by default) and the state
    ``p`` (``adv_probs``, uniform at start)::

        s_k     = (sum_j d_j) / d_k                            (scale)
        p       <- p * exp(-eta d);  p <- p / sum(p)           (risk-guided indicator)
        gamma_k = s_k p_k
        w       = the centre of gamma_k's cluster in a k-means clustering of gamma into
                  ``num_groups`` groups (mean(gamma) for every task when num_groups = 1)
        L       = sum_k w_k d_k                                (gradient sum_k w_k grad l_k)

    ``eta = robust_step_size`` (1e-4) and ``num_groups`` (1) are the defaults of the official
    NYU-v2 trainer (``--robust_step_size``, ``--num_groups``), the configuration its README runs.
    With one group every task gets the same weight ``mean(gamma)``: the grouping only acts with
    ``num_groups >= 2``. ``w_k = 1`` when all losses are equal, so ``scale = "sum"``. The weights
    are constants (computed from detached losses); ``p`` is a buffer.

    Differences from the code:

    * The code clusters with ``kmeans_pytorch.kmeans`` (Lloyd's algorithm from centres drawn by
      NumPy's global RNG; its import is commented out in the released file, so only
      ``num_groups = 1`` runs there as released). Here the clustering is the exact optimum of the
      same k-means objective, computed deterministically by :func:`kmeans_1d` (``gamma`` is
      one-dimensional): Lloyd's algorithm may stop at a worse local optimum, and the result no
      longer depends on a random draw. ``num_groups`` larger than the number of distinct
      ``gamma`` values gives each value its own group (Lloyd's would fail to initialise).
    * ``p`` is kept in float64 (the code: float32 on the device).
    * A non-finite weight (a zero loss makes ``s`` infinite) keeps the last weights (ones at
      start) and is counted in ``fallbacks``; the code would propagate it.
    * ``min_losses`` (``l*``) is our addition, as FAMO's ``l*``; 0 is exactly the code. The
      scale ``s_k`` assumes positive losses: with losses of mixed signs it is negative, and so
      are the weights (the step ascends), as on the toy problem (losses down to about -20).
    """

    summary: ClassVar[str] = "Groups the tasks by loss trends and weights the groups."
    paper: ClassVar[str] = (
        "Shen et al., GO4Align: Group Optimization for Multi-Task Alignment, NeurIPS 2024 "
        "(arXiv 2404.06486)"
    )
    scale: ClassVar[Scale] = "sum"

    def __init__(
        self,
        n_tasks: int,
        num_groups: PositiveInt = 1,
        robust_step_size: PositiveFloat = 1e-4,
        min_losses: list[float] | None = None,
    ) -> None:
        super().__init__(n_tasks)
        self.register_min_losses(min_losses)
        if num_groups < 1:
            raise ValueError(f"num_groups must be positive, got {num_groups}")
        self.num_groups = num_groups
        self.robust_step_size = robust_step_size
        uniform = torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64)
        self.register_buffer("adv_probs", uniform)
        self.register_buffer("last_weights", torch.ones(n_tasks, dtype=torch.float64))

    @torch.no_grad()
    def group_weights(self, losses: Tensor) -> Tensor:
        """Update the indicator state with ``losses`` (shifted by ``l*``) and return the task
        weights (float64)."""
        risk = losses.detach().to(self.adv_probs) - self.min_losses.to(self.adv_probs)
        scale = risk.sum() / risk
        probs = self.adv_probs * torch.exp(-self.robust_step_size * risk)
        probs = probs / probs.sum()
        gamma = scale * probs
        if not bool(torch.isfinite(gamma).all()):
            return self.fallback(self.last_weights.clone())
        self.adv_probs = probs
        if self.num_groups == 1:
            weights = gamma.mean().expand(self.n_tasks).clone()
        else:
            centres = kmeans_1d(gamma.cpu().numpy(), self.num_groups)
            weights = torch.from_numpy(centres).to(gamma)
        self.last_weights = weights
        return weights

    def objective(self, losses: Tensor, ctx: StepContext) -> Objective:
        weights = self.group_weights(losses).to(losses)
        shifted = losses - self.min_losses.to(losses)
        return Objective(loss=(weights * shifted).sum(), weights=weights)
