"""Families of Jacobians on which gradient methods are checked (:mod:`mtlbench.conformance`).

As TorchJD's property tests (Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization",
arXiv 2406.16232, and the ``tests/unit/aggregation`` suite of TorchJD): full-rank and
rank-deficient matrices, more tasks than the rank, more rows than columns, stationary matrices
(a non-negative combination of the rows is 0), the solvers' extreme cases (a zero matrix, a zero
row, duplicate rows, a Gramian of rank 1) and an ill-conditioned, rank-deficient one, in float32
and float64, from 2 to 40 tasks, with small P so that the whole registry is checked in seconds.
Every matrix is built in float64 and rounded once to its dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

FAMILIES = (
    "full_rank",
    "rank_deficient",
    "k_above_p",
    "stationary",
    "zero",
    "zero_row",
    "duplicate_rows",
    "rank_one",
    "ill_conditioned",
)
DTYPES = (torch.float32, torch.float64)
# Scales of the extreme-scale cases (finiteness and shapes): |J| from 1e-8 to 1e8.
SCALES = (1e-8, 1e-4, 1e4, 1e8)


@dataclass(frozen=True)
class Case:
    """One input: its family, the K x P Jacobian and K positive losses (of the same dtype)."""

    family: str
    jacobian: Tensor
    losses: Tensor

    @property
    def k(self) -> int:
        return self.jacobian.shape[0]

    @property
    def norm(self) -> float:
        """``|J|`` (Frobenius, in float64): the unit of every tolerance."""
        return float(self.jacobian.double().norm())

    def describe(self) -> str:
        k, p = self.jacobian.shape
        dtype = str(self.jacobian.dtype).removeprefix("torch.")
        return f"{self.family} (K={k}, P={p}, {dtype}, |J|={self.norm:.1e})"

    def scaled(self, factor: float) -> Case:
        return Case(self.family, self.jacobian * factor, self.losses)


def _orthonormal(n: int, m: int, g: torch.Generator) -> Tensor:
    """An n x m matrix with orthonormal columns (m <= n)."""
    q, _ = torch.linalg.qr(torch.randn(n, m, generator=g, dtype=torch.float64))
    return q


def _low_rank(k: int, p: int, singular: Tensor, g: torch.Generator) -> Tensor:
    r = singular.numel()
    return (_orthonormal(k, r, g) * singular) @ _orthonormal(p, r, g).T


def jacobian(family: str, k: int, p: int, seed: int = 0) -> Tensor:
    """A K x P float64 matrix of ``family`` (:data:`FAMILIES`), of Frobenius norm about 1-10.

    ``rank_deficient`` has rank ``min(K, P) - 1`` (``K > rank``); ``k_above_p`` has ``P`` replaced
    by ``max(1, K // 2)`` when ``P >= K``; ``stationary`` has a last row ``-sum_k r_k g_k`` with
    ``r >= 0``; ``rank_one`` rows are positive multiples of one vector; ``ill_conditioned`` has
    rank ``min(K, P) - 1`` and singular values from 1 to 1e-6 (as the 20 x 100 rank-19 input of
    issue 20)."""
    g = torch.Generator().manual_seed(seed)
    r = min(k, p)
    if family == "full_rank":
        common = torch.randn(1, p, generator=g, dtype=torch.float64)
        return torch.randn(k, p, generator=g, dtype=torch.float64) + 0.5 * common
    if family == "rank_deficient":
        return _low_rank(k, p, 1.0 + torch.rand(max(r - 1, 1), generator=g), g) * k**0.5
    if family == "k_above_p":
        return torch.randn(k, max(1, k // 2) if p >= k else p, generator=g, dtype=torch.float64)
    if family == "stationary":
        rows = torch.randn(k - 1, p, generator=g, dtype=torch.float64)
        mix = torch.rand(1, k - 1, generator=g, dtype=torch.float64) + 0.1
        return torch.cat([rows, -(mix @ rows)])
    if family == "zero":
        return torch.zeros(k, p, dtype=torch.float64)
    if family == "zero_row":
        out = jacobian("full_rank", k, p, seed)
        out[0] = 0.0
        return out
    if family == "duplicate_rows":
        out = jacobian("full_rank", k, p, seed)
        out[-1] = out[0]
        return out
    if family == "rank_one":
        v = torch.randn(p, generator=g, dtype=torch.float64)
        return torch.outer(torch.linspace(0.5, 2.0, k, dtype=torch.float64), v)
    if family == "ill_conditioned":
        singular = torch.logspace(0, -6, max(r - 1, 1), dtype=torch.float64)
        return _low_rank(k, p, singular, g) * k**0.5
    raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")


def case(family: str, k: int, p: int, dtype: torch.dtype, seed: int = 0) -> Case:
    """:func:`jacobian` rounded to ``dtype``, with losses in ``[0.5, 2]``."""
    g = torch.Generator().manual_seed(seed + 1)
    losses = 0.5 + 1.5 * torch.rand(k, generator=g, dtype=torch.float64)
    return Case(family, jacobian(family, k, p, seed).to(dtype), losses.to(dtype))


@lru_cache(maxsize=4)
def property_cases(ks: tuple[int, ...] = (2, 5), p: int = 8) -> tuple[Case, ...]:
    """Every family at unit scale, for each K in ``ks`` in one dtype (float32 and float64 in turn,
    so that each family meets both); plus K = 40 > P and the ill-conditioned 20 x 100 matrix of
    rank 19, in both dtypes: the inputs on which declared properties are checked."""
    out = [
        case(f, k, p, DTYPES[(i + j) % 2], seed=10 * k + i)
        for i, f in enumerate(FAMILIES)
        for j, k in enumerate(ks)
    ]
    out += [case("k_above_p", 40, p, dtype) for dtype in DTYPES]
    out += [case("ill_conditioned", 20, 100, dtype) for dtype in DTYPES]
    return tuple(out)


@lru_cache(maxsize=4)
def extreme_cases(k: int = 5, p: int = 8) -> tuple[Case, ...]:
    """The structural families at every scale of :data:`SCALES`, both dtypes (finiteness).
    Cached: the checks copy a case's tensors before a method sees them."""
    return tuple(
        c.scaled(s)
        for c in (case(f, k, p, dtype, seed=i) for i, f in enumerate(FAMILIES) for dtype in DTYPES)
        for s in SCALES
    )
