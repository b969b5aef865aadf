"""MGDA: the min-norm point of the convex hull of the task gradients.

Désidéri, "Multiple-gradient descent algorithm (MGDA) for multiobjective optimization", Comptes
Rendus Mathematique 350, 2012; Sener & Koltun, "Multi-Task Learning as Multi-Objective
Optimization", NeurIPS 2018 (arXiv 1810.04650).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from mtlbench.method import GramianWeighting, Scale, register, sanitize
from mtlbench.methods._min_norm import min_norm_element

Normalization = Literal["none", "norm", "loss", "loss+"]


@register("mgda")
class MGDA(GramianWeighting):
    """MGDA (Désidéri 2012; Sener & Koltun, NeurIPS 2018, arXiv 1810.04650).

    With normalised gradients ``h_k = g_k / n_k`` (Gramian ``G~ = G / (n n^T)``)::

        w = argmin_{w in simplex} | sum_k w_k h_k |^2,      update = sum_k w_k g_k

    solved exactly on the K x K Gramian by :func:`mtlbench.methods._min_norm.min_norm_element`
    (closed form for K = 2, Lawson-Hanson NNLS for K >= 3). The reference code's iterations
    (``find_min_norm_element``) can stop far from the optimum on conflicting gradients of spread
    norms; the module docstring gives the measurement, ``tests/test_oracle_torchjd.py`` the
    comparison with TorchJD's Frank-Wolfe solver and an exact QP.
    ``normalization`` picks ``n_k`` as in the reference ``gradient_normalizers``: ``"none"``
    (1, the default of nash-mtl / FAMO / LDC-MTL baselines), ``"norm"`` (``|g_k|``), ``"loss"``
    (``l_k``), ``"loss+"`` (``l_k |g_k|``). As in the reference, the normalisation only enters the
    solve: the weights multiply the *raw* gradients, so the update is the min-norm point (and
    conflicts with no task) only for ``"none"``. ``log_losses=True`` gives log-MGDA (rows
    ``g_k / l_k``), which keeps that guarantee.

    Weights sum to 1 (``scale = "mean"``); the nash-mtl / FAMO code multiplies them by K
    (``reference_scale = "sum"``). A non-finite Gramian or a failed solve falls back to the last
    weights (uniform at first) and is counted in ``fallbacks``.
    """

    summary: ClassVar[str] = "The min-norm point in the convex hull of the task gradients."
    paper: ClassVar[str] = (
        "Désidéri, C. R. Math. 2012; Sener & Koltun, NeurIPS 2018 (arXiv 1810.04650)"
    )
    scale: ClassVar[Scale] = "mean"
    reference_scale: ClassVar[Scale | None] = "sum"
    non_conflicting: ClassVar[bool] = True
    # aggregate(c J) = c aggregate(J) for c > 0: the weights depend on G up to its scale.
    scale_equivariant: ClassVar[bool] = True

    def __init__(
        self, n_tasks: int, normalization: Normalization = "none", log_losses: bool = False
    ) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        self.normalization = normalization
        # The min-norm guarantee holds for the raw gradients only without normalisation.
        self.non_conflicting = normalization == "none"  # type: ignore[misc]
        self._last = [1.0 / n_tasks] * n_tasks

    def normalizers(self, gramian: Tensor, losses: Tensor) -> Tensor:
        """``n_k`` of the chosen normalisation (float64)."""
        norms = gramian.diagonal().clamp_min(0.0).sqrt()
        losses = losses.to(gramian)
        if self.normalization == "norm":
            return norms
        if self.normalization == "loss":
            return losses
        if self.normalization == "loss+":
            return losses * norms
        return torch.ones_like(norms)

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        if bool(torch.isfinite(gramian).all()):
            n = self.normalizers(gramian, losses)
            # 0 / 0 (a zero gradient under "norm") becomes 0, as its normalised gradient.
            normalized = sanitize(gramian / (n[:, None] * n[None, :]))
            try:
                w = min_norm_element(normalized).weights
            except ValueError:
                w = None
            if w is not None and bool(torch.isfinite(w).all()):
                self._last = w.tolist()
                return w.to(gramian)
        return self.fallback(torch.tensor(self._last, dtype=gramian.dtype))

    def get_extra_state(self) -> dict[str, list[float]]:
        return {"last_weights": list(self._last)}

    def set_extra_state(self, state: dict[str, list[float]]) -> None:
        self._last = [float(v) for v in state["last_weights"]]
