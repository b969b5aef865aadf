"""The precision policy of every Gramian and Jacobian method (docs/methods.md, "Precision").

* The Gramian ``G = J J^T`` is **accumulated in float64**, whatever the Jacobian's dtype: the
  rows are cast to float64 a slice of columns at a time (:func:`gramian64`), so that the extra
  memory is bounded by :data:`SLICE_ELEMENTS` and not by the K x P Jacobian.
* The K x K solves run in float64 on the CPU (``GramianWeighting.weights`` receives that ``G``).
* The update ``w^T J`` is **formed in float64** and cast to the Jacobian's (the parameters')
  dtype at the end (:func:`combine64`): large weights along directions that barely change ``G``
  (UPGrad, DualProj, ConFIG on nearly dependent gradients) would otherwise amplify the float32
  rounding of the sum.

Why: a float32 Gramian carries rounding noise of about ``1e-7 |G|``. Solvers that cut
eigenvalues at a relative ``1e-10`` (ConFIG's pseudo-inverse) or that follow the null space of
``G`` (the dual-cone projections) then treat that noise as signal: on rank-deficient float32
Jacobians ConFIG's update was off by 5 to 15 % of ``|J|`` (median) and UPGrad's moved by up to
8e-5 (relative) under a permutation of the tasks (1.5e-5 with the float64 Gramian alone, 5e-11
with the update formed in float64 too). The float64 products cost the same number of
operations as the float32 ones (``K^2 P``); on the CPU they take 1.3 to 3 times as long (the cast
and float64 arithmetic), a small part of the K backward passes that produced ``J`` at K = 10 and
about a fifth of them at K = 40 (docs/methods.md, "Precision", gives the measurement).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Elements (K x columns) of J cast to float64 at once: 256 Ki float64 values, 2 MB, so that
# the cast slice stays in cache for its product (a 128 MB slice made the float64 Gramian 8 times
# slower than the float32 one on a 2-core CPU; this one about 2 times: docs/methods.md).
SLICE_ELEMENTS = 1 << 18


def _columns(k: int) -> int:
    """Columns per float64 slice of a K-row matrix."""
    return max(1, SLICE_ELEMENTS // max(k, 1))


def add_gramian64(rows: Tensor, total: Tensor) -> None:
    """Add ``R R^T`` (``rows``: K x N, any float dtype) into the float64 K x K ``total``, the
    products in float64, one slice of columns at a time."""
    k, n = rows.shape
    step = _columns(k)
    for start in range(0, n, step):
        part = rows[:, start : start + step].to(torch.float64)
        total.addmm_(part, part.T)


def gramian64(jacobian: Tensor) -> Tensor:
    """``J J^T`` of a K x P Jacobian, accumulated in float64, on the CPU (the solvers' side)."""
    k = jacobian.shape[0]
    total = torch.zeros(k, k, dtype=torch.float64, device=jacobian.device)
    add_gramian64(jacobian.reshape(k, -1), total)
    return total.cpu()


def combine64(weights: Tensor, jacobian: Tensor) -> Tensor:
    """``w^T J`` formed in float64 and returned in the Jacobian's dtype and device."""
    k, p = jacobian.shape
    w = weights.to(jacobian.device, torch.float64)
    if jacobian.dtype == torch.float64:
        return w @ jacobian
    out = torch.empty(p, dtype=jacobian.dtype, device=jacobian.device)
    step = _columns(k)
    for start in range(0, p, step):
        out[start : start + step] = w @ jacobian[:, start : start + step].to(torch.float64)
    return out
