"""CAGrad: the update that maximises the worst task's improvement near the mean gradient."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from mtlbench.method import Aggregate, GramianWeighting, Scale, register, sanitize
from mtlbench.methods._min_norm import min_norm_element
from mtlbench.registry import NonNegativeFloat
from mtlbench.space import Choice

_SMOOTH = 1e-8  # the reference's guard sqrt(w^T G w + 1e-8) of the dual (here relative)


def cagrad_objective(gramian: np.ndarray, c: float) -> tuple:
    """``(f, grad_f)`` of the CAGrad dual ``f(w) = w^T G b + c |g0| sqrt(w^T G w + 1e-8)`` with
    ``b`` uniform and ``|g0|^2 = b^T G b``."""
    k = gramian.shape[0]
    gb = gramian @ np.full(k, 1.0 / k)
    radius = c * np.sqrt(max(gb.mean(), 0.0))

    def f(w: np.ndarray) -> float:
        return float(w @ gb + radius * np.sqrt(max(w @ gramian @ w, 0.0) + _SMOOTH))

    def grad(w: np.ndarray) -> np.ndarray:
        gw = gramian @ w
        return gb + radius * gw / np.sqrt(max(w @ gw, 0.0) + _SMOOTH)

    return f, grad


def solve_cagrad(gramian: np.ndarray, c: float) -> np.ndarray:
    """The simplex weights ``w`` minimising :func:`cagrad_objective`, by SLSQP from the uniform
    point (the reference's solver), with the analytic gradient and a tight tolerance. Raises
    ``ValueError`` when the result is not finite or is worse than the starting point."""
    k = gramian.shape[0]
    start = np.full(k, 1.0 / k)
    if k == 1:
        return start
    f, grad = cagrad_objective(gramian, c)
    res = minimize(
        f,
        start,
        jac=grad,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * k,
        constraints=[{"type": "eq", "fun": lambda w: 1.0 - w.sum(), "jac": lambda w: -np.ones(k)}],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    w = np.asarray(res.x, dtype=np.float64)
    if not np.isfinite(w).all():
        raise ValueError("CAGrad's solve returned non-finite weights")
    w = np.clip(w, 0.0, None)
    w = w / w.sum() if w.sum() > 0 else start
    if f(w) > f(start) + 1e-12 * max(1.0, abs(f(start))):
        raise ValueError("CAGrad's solve ended worse than its starting point")
    return w


@register("cagrad")
class CAGrad(GramianWeighting):
    """Conflict-averse gradient descent (Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient
    Descent for Multi-task Learning", NeurIPS 2021, arXiv 2110.14048), as the official code and
    its nash-mtl / FAMO and LibMTL copies. With ``g0 = mean_k g_k`` and ``G = J J^T``, the update
    ``d`` maximises ``min_k <g_k, d>`` over the ball ``|d - g0| <= c |g0|``; its dual is solved
    over the simplex::

        w* = argmin_{w in simplex} w^T G b + c |g0| sqrt(w^T G w),     b = (1/K, ..., 1/K)
        g_w = sum_k w*_k g_k,      d = g0 + (c |g0| / |g_w|) g_w

    then ``d / (1 + c^2)`` (``rescale = 1``, the default of every reference), ``d`` (0) or
    ``d / (1 + c)`` (2). Everything is an inner product, so this is a Gramian method: the weights
    are ``(1/K + lambda w*) / rescale`` with ``lambda = c |g0| / |g_w|`` and
    ``|g_w|^2 = w*^T G w*``. ``c = 0.4`` is the nash-mtl / FAMO value (``--c``); LibMTL's default
    ``calpha`` is 0.5.

    Scale: ``d`` is a mean-scale direction (``scale = "mean"``); nash-mtl / FAMO multiply it by
    K "to match the sum loss" (``reference_scale = "sum"``), LibMTL does not. The task heads get
    their own unweighted gradients, as in the reference (its K backward passes reach each head
    once): ``head_weights = 1 / K`` on this mean scale (1 under the reference ×K).

    Solver: scipy SLSQP from the uniform point, as the reference, but with the analytic gradient
    and ``ftol = 1e-12`` (the reference uses finite differences and the default ``1e-6``); and on
    the Gramian divided by its mean diagonal, which leaves the minimiser unchanged (the objective
    is homogeneous of degree 1 in ``G``) but makes the ``1e-8`` guards relative instead of
    absolute, so that the method is scale-equivariant. A failed solve (non-finite, or worse than
    the uniform start) falls back to the last ``w*`` (uniform at first); a non-finite Gramian to
    the mean direction ``g0 / rescale``; both are counted in ``fallbacks``.

    **Stationary inputs** (deviation from the official code, as TorchJD's ``CAGradWeighting``):
    where some convex combination of the gradients is (nearly) 0, ``w*`` makes ``g_w`` vanish and
    the official ``c |g0| / (|g_w| + 1e-8)`` multiplies rounding noise: updates of thousands of
    times the mean gradient, which conflict with the tasks. Here, with ``c >= 1``, the update is
    0 when ``|g_w|``, or the exact min-norm point of the gradients' convex hull (SLSQP on the
    non-smooth dual stops short of ``g_w = 0``), is below ``norm_eps`` (``1e-4``, TorchJD's
    default) times the root-mean-square task gradient norm: 0 lies in the ball and is the exact
    optimum there (``min_k <g_k, d> <= 0`` for every ``d`` at a stationary point, and 0 attains
    it). With ``c < 1`` the dual's optimum need not have ``g_w = 0``; where ``|g_w|`` is below
    ``norm_eps`` its direction is undefined and the update is the ball's centre
    ``g0 / rescale``. The update never exceeds its bound
    ``|d| <= (1 + c) |g0| / rescale`` (the ball's centre plus its radius), and never conflicts
    at a stationary point when ``c >= 1``.

    Search space: ``c`` on the paper's grid 0.1 .. 0.9 (0.4 in nash-mtl / FAMO, 0.5 in LibMTL;
    the grid as the CAGrad paper's sensitivity study, from memory: UNVERIFIED).
    """

    not_in_paper: ClassVar[tuple[str, ...]] = ("norm_eps",)
    summary: ClassVar[str] = "Maximises the worst task's improvement near the mean gradient."
    search_space = {"c": Choice(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)}

    paper: ClassVar[str] = (
        "Liu et al., Conflict-Averse Gradient Descent for Multi-task Learning, NeurIPS 2021 "
        "(arXiv 2110.14048)"
    )
    scale: ClassVar[Scale] = "mean"
    reference_scale: ClassVar[Scale | None] = "sum"
    scale_equivariant: ClassVar[bool] = True

    def __init__(
        self,
        n_tasks: int,
        c: NonNegativeFloat = 0.4,
        rescale: Literal[0, 1, 2] = 1,
        norm_eps: NonNegativeFloat = 1e-4,
        log_losses: bool = False,
    ) -> None:
        super().__init__(n_tasks, log_losses=log_losses)
        if c < 0:
            raise ValueError(f"c must be non-negative, got {c}")
        if norm_eps < 0:
            raise ValueError(f"norm_eps must be non-negative, got {norm_eps}")
        self.c = c
        self.norm_eps = norm_eps
        self.rescale = rescale
        self._last = [1.0 / n_tasks] * n_tasks

    def _divisor(self) -> float:
        return {0: 1.0, 1: 1.0 + self.c**2, 2: 1.0 + self.c}[self.rescale]

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        k = self.n_tasks
        if bool(torch.isfinite(gramian).all()):
            mean_diag = float(gramian.diagonal().mean())
            norm = mean_diag if mean_diag > 0 else 1.0
            gram = sanitize((gramian + gramian.T) / (2.0 * norm)).numpy()
            if self.c >= 1.0 and self._stationary(gram):
                return torch.zeros(k, dtype=gramian.dtype)
            try:
                w = solve_cagrad(gram, self.c)
                self._last = w.tolist()
            except ValueError:
                w = np.asarray(self.fallback(self._last))
        else:
            gram = np.zeros((k, k))
            w = np.asarray(self.fallback(self._last))
        g0_norm = np.sqrt(max(gram.mean(), 0.0))
        gw_norm = np.sqrt(max(float(w @ gram @ w), 0.0))
        if gw_norm < self.norm_eps:  # (nearly) Pareto-stationary: g_w has no direction
            if self.c >= 1.0:  # d = 0 is in the ball and optimal there
                return torch.zeros(k, dtype=gramian.dtype)
            lam = 0.0  # the ball's centre, g0
        else:
            lam = self.c * g0_norm / gw_norm
        out = (np.full(k, 1.0 / k) + lam * w) / self._divisor()
        return torch.from_numpy(out).to(gramian.dtype)

    def _stationary(self, gram: np.ndarray) -> bool:
        """Whether the min-norm point of the gradients' convex hull (exact, by NNLS) is shorter
        than ``norm_eps`` on the normalised Gramian: SLSQP's ``w*`` on the non-smooth dual stops
        short of it, so this test does not rely on ``w*``."""
        try:
            return min_norm_element(gram).norm2 < self.norm_eps**2
        except ValueError:
            return False

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Aggregate:
        agg = super().aggregate(jacobian, losses)
        heads = self.loss_transform(losses.detach()).to(jacobian) / self.n_tasks
        return Aggregate(update=agg.update, weights=agg.weights, head_weights=heads)

    def get_extra_state(self) -> dict[str, list[float]]:
        return {"last_weights": list(self._last)}

    def set_extra_state(self, state: dict[str, list[float]]) -> None:
        self._last = [float(v) for v in state["last_weights"]]
