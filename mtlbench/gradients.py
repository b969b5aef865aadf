"""The gradient engine: gives each method what it declares it needs.

* ``losses`` methods: one backward pass of their objective.
* ``gramian`` / ``jacobian`` methods: the per-task Jacobian ``J`` (K x P) of the shared
  parameters in **one batched vector-Jacobian product** (``torch.autograd.grad`` with
  ``is_grads_batched=True``, i.e. ``vmap`` over the backward pass), not K sequential backward
  passes; the method's update is written into ``.grad``. A ``sequential`` mode (K backward
  passes, as LibMTL and the nash-mtl family do) is kept for comparison and as a fallback for
  operations that ``vmap`` does not support.
* ``mode="gramian"`` (Gramian methods, parameter gradients): ``G = J J^T`` without ``J``
  (:func:`mtlbench.gramian.gramian`): the backward graph is cut at one tensor ``h``; above it one
  vmapped pass of the K tasks reduces each K x P_p block to its K x K Gramian as soon as autograd
  produces it (as TorchJD's ``autogram`` engine, Quinton & Rey, "Jacobian Descent for
  Multi-Objective Optimization", 2024, section 6), below it the K cotangents at ``h`` are
  back-propagated ``chunk_size`` tasks at a time into the few rows of the early layers'
  Jacobian; then the update is one backward pass of ``sum_k w_k l_k``. ``mode="auto"`` takes
  that path for every Gramian method (``chunk_size``: tasks per pass below the cut; automatic
  when None) and the batched Jacobian for the others.
* ``wrt="representation"`` (MGDA-UB, Sener & Koltun 2018): Gramian methods get ``G`` from the
  gradients w.r.t. the shared representation ``Z`` instead, and the update is one backward pass
  of ``sum_k w_k l_k``.

Head parameters follow a recorded policy, ``head_grads``:

* ``"weighted"`` (default, the nash-mtl / FAMO code): each head gets the gradient of
  ``sum_k c_k l_k`` with the coefficients ``c`` the method reports (its task weights for
  Gramian methods), exactly as back-propagating the weighted loss would.
* ``"unit"`` (LibMTL's backward mode): each head gets its own task's unweighted gradient,
  the gradient of ``sum_k l_k``.

Only K x K matrices travel to the CPU (float64) for solvers; ``J`` stays on its device. Every
Gramian is accumulated in float64 and every update formed in float64 before the cast to the
parameters' dtype (the precision policy, :mod:`mtlbench.precision`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from mtlbench.gramian import gramian
from mtlbench.method import (
    GradientMethod,
    GramianWeighting,
    LossWeighting,
    Method,
    StepContext,
    scale_factor,
)
from mtlbench.precision import gramian64
from mtlbench.registry import ConfigError

JacobianMode = Literal["batched", "sequential", "gramian", "auto"]
HeadPolicy = Literal["weighted", "unit"]
GradTarget = Literal["parameters", "representation"]


def flat_grads(
    grads: Sequence[Tensor | None],
    params: Sequence[Tensor],
    batch: int | None,
    out: Tensor | None = None,
) -> Tensor:
    """Concatenate (possibly ``None``) gradients into one flat (batch x P) or P tensor, written
    into ``out`` when given (of that shape)."""
    parts = []
    for g, p in zip(grads, params, strict=True):
        if g is None:
            shape = (batch, p.numel()) if batch is not None else (p.numel(),)
            parts.append(torch.zeros(shape, device=p.device, dtype=p.dtype))
        else:
            parts.append(g.reshape(batch, -1) if batch is not None else g.reshape(-1))
    if out is not None:
        return torch.cat(parts, dim=-1, out=out)
    return torch.cat(parts, dim=-1)


def jacobian(
    losses: Tensor,
    params: Sequence[Tensor],
    mode: JacobianMode = "batched",
    retain_graph: bool = False,
    out: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """The K x P Jacobian of ``losses`` (K,) with respect to ``params`` (P values in all).

    ``batched`` back-propagates the K unit vectors in one vmapped pass; ``sequential`` runs K
    backward passes. Both return the same matrix (up to floating-point summation order).
    ``out``: a K x P tensor to write the Jacobian into (see :class:`GradientEngine`).
    ``chunk_size`` (batched mode): back-propagate at most this many unit vectors per vmapped
    pass. The vmapped backward holds K cotangents of every activation at once (at batch 256
    on the CelebA trunk, K times a few GB), so chunks of ``c`` tasks bound that extra memory by
    ``c`` at the cost of ``ceil(K / c)`` passes; ``None`` is one pass, ``1`` is sequential.
    """
    k = losses.shape[0]
    params = list(params)
    if out is not None:
        p = sum(x.numel() for x in params)
        if out.shape != (k, p) or out.dtype != losses.dtype or out.device != losses.device:
            raise ValueError(f"out must be a {k} x {p} {losses.dtype} tensor on {losses.device}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of tasks, got {chunk_size}")
    if mode == "batched":
        step = k if chunk_size is None else chunk_size
        if out is None:
            n = sum(x.numel() for x in params)
            out = torch.empty(k, n, device=losses.device, dtype=losses.dtype)
        eye = torch.eye(k, device=losses.device, dtype=losses.dtype)
        for start in range(0, k, step):
            stop = min(start + step, k)
            grads = torch.autograd.grad(
                losses,
                params,
                grad_outputs=eye[start:stop],
                retain_graph=retain_graph or stop < k,
                is_grads_batched=True,
                allow_unused=True,
            )
            flat_grads(grads, params, batch=stop - start, out=out[start:stop])
        return out
    if mode == "sequential":
        rows = []
        for i in range(k):
            grads = torch.autograd.grad(
                losses[i], params, retain_graph=retain_graph or i < k - 1, allow_unused=True
            )
            rows.append(flat_grads(grads, params, None, out=None if out is None else out[i]))
        return out if out is not None else torch.stack(rows)
    raise ValueError(f"jacobian mode must be 'batched' or 'sequential', got {mode!r}")


def gramian_root(gramian: Tensor) -> Tensor:
    """A symmetric K x K matrix ``R`` with ``R R^T = G`` (negative rounding eigenvalues set to 0).

    A Gramian method's ``aggregate`` depends on its Jacobian only through ``J J^T``, so ``R``
    stands in for ``J`` to obtain its task and head weights from ``G`` alone."""
    eigenvalues, vectors = torch.linalg.eigh(gramian)
    return (vectors * eigenvalues.clamp_min(0).sqrt()) @ vectors.T


def write_grad(params: Sequence[nn.Parameter], flat: Tensor) -> None:
    """Add a flat P-vector into the ``.grad`` of ``params`` (allocating where empty)."""
    offset = 0
    for p in params:
        n = p.numel()
        g = flat[offset : offset + n].view_as(p)
        if p.grad is None:
            p.grad = g.detach().clone()
        else:
            p.grad.add_(g)
        offset += n
    if offset != flat.numel():
        raise ValueError(f"update has {flat.numel()} values, parameters have {offset}")


@dataclass
class StepResult:
    """What one backward step produced: the task weights the method used (for logging)."""

    weights: Tensor


class GradientEngine:
    """Runs the backward step of one training step for any registered method.

    ``shared`` are the parameters every task uses (the encoder), ``heads`` the task-specific
    ones. Method parameters (LDC-MTL's router, UW's log-variances) receive their gradients
    through the method's own objective.
    """

    def __init__(
        self,
        shared: Sequence[nn.Parameter],
        heads: Sequence[nn.Parameter],
        *,
        mode: JacobianMode = "batched",
        wrt: GradTarget = "parameters",
        head_grads: HeadPolicy = "weighted",
        update_scale: str = "reference",
        chunk_size: int | None = None,
    ) -> None:
        self.shared = [p for p in shared if p.requires_grad]
        self.heads = [p for p in heads if p.requires_grad]
        self.mode = mode
        self.wrt = wrt
        self.head_grads = head_grads
        self.update_scale = update_scale
        self.chunk_size = chunk_size  # tasks per vmapped backward (see :func:`jacobian`)
        # J is written into this K x P buffer, kept between steps: a fresh K x P allocation is
        # returned to the OS after each step on CPU and page-faulted in again at the next one
        # (at K = 40 on the bench's MLP, 55 ms of copying instead of 15; docs/performance.md).
        self._jac: Tensor | None = None

    def check(self, method: Method) -> None:
        """Fail early when a method cannot run under these engine options."""
        if self.wrt == "representation" and not isinstance(
            method, (GramianWeighting, LossWeighting)
        ):
            raise ConfigError(
                f"method {method.name!r} needs the rows of the Jacobian; representation "
                "gradients (wrt=representation) only serve Gramian methods"
            )

    def backward(
        self, method: Method, losses: Tensor, ctx: StepContext, representation: Tensor | None = None
    ) -> StepResult:
        """Fill ``.grad`` of the shared, head and method parameters for one step."""
        factor = scale_factor(method, self.update_scale)
        if isinstance(method, LossWeighting):
            out = method.objective(losses, ctx)
            (out.loss * factor).backward()
            return StepResult(weights=out.weights.detach() * factor)
        if not isinstance(method, GradientMethod):
            raise TypeError(f"{type(method).__name__} is neither a loss nor a gradient method")
        if self.wrt == "representation":
            return self._representation_step(method, losses, representation, factor)
        if self.uses_gramian_path(method):
            return self._gramian_step(method, losses, factor)
        # J keeps the graph only while the heads still need it; their backward then frees it.
        jac = jacobian(
            losses,
            self.shared,
            "sequential" if self.mode == "sequential" else "batched",
            retain_graph=bool(self.heads),
            out=self._buffer(losses),
            chunk_size=self.chunk_size,
        )
        agg = method.aggregate(jac, losses.detach())
        write_grad(self.shared, agg.update.detach() * factor)
        self._heads_backward(losses, agg.head_weights.detach() * factor)
        return StepResult(weights=agg.weights.detach() * factor)

    def uses_gramian_path(self, method: Method) -> bool:
        """Whether ``method`` gets the Gramian-only path (:func:`~mtlbench.gramian.gramian`):
        under ``gramian`` and ``auto``, every Gramian method with parameter gradients
        (``chunk_size`` is then the tasks per pass below the cut). Where the losses' own node
        separates the graph, as in the bench's workloads, the plan's candidates include the cut
        at the top, which is the chunked Jacobian's memory (plus K losses' worth)."""
        if self.wrt != "parameters" or not isinstance(method, GramianWeighting):
            return False
        return self.mode in ("gramian", "auto")

    def _gramian_step(self, method: GramianWeighting, losses: Tensor, factor: float) -> StepResult:
        """``G`` without ``J``, the method's weights from ``G``, then one backward pass of
        ``sum_k w_k l_k`` into the shared parameters; heads per the policy."""
        g = gramian(losses, self.shared, retain_graph=True, chunk_size=self.chunk_size)
        g = g.to("cpu", torch.float64)
        agg = method.aggregate(gramian_root(g), losses.detach().to("cpu", torch.float64))
        w = agg.weights.to(losses) * factor
        torch.autograd.backward(
            (w.detach() * losses).sum(), inputs=self.shared, retain_graph=bool(self.heads)
        )
        self._heads_backward(losses, agg.head_weights.to(losses).detach() * factor)
        return StepResult(weights=w.detach())

    def _buffer(self, losses: Tensor) -> Tensor:
        """The reused K x P Jacobian buffer (reallocated when K, dtype or device change).

        Methods must not keep a reference to the Jacobian they are given across steps."""
        shape = (losses.shape[0], sum(p.numel() for p in self.shared))
        jac = self._jac
        if jac is None or (jac.shape, jac.dtype, jac.device) != (
            shape,
            losses.dtype,
            losses.device,
        ):
            jac = self._jac = torch.empty(shape, dtype=losses.dtype, device=losses.device)
        return jac

    def _heads_backward(self, losses: Tensor, coefficients: Tensor) -> None:
        if not self.heads:
            return
        if self.head_grads == "unit":
            coefficients = torch.ones_like(coefficients)
        grads = torch.autograd.grad(
            (coefficients.to(losses) * losses).sum(), self.heads, allow_unused=True
        )
        write_grad(self.heads, flat_grads(grads, self.heads, batch=None))

    def _representation_step(
        self, method: GradientMethod, losses: Tensor, representation: Tensor | None, factor: float
    ) -> StepResult:
        if representation is None:
            raise ConfigError("wrt=representation needs a model that returns its representation")
        if not isinstance(method, GramianWeighting):
            raise ConfigError(f"method {method.name!r} is not a Gramian method")
        jz = jacobian(
            losses, [representation], self.mode, retain_graph=True, chunk_size=self.chunk_size
        )
        gramian = gramian64(jz.reshape(jz.shape[0], -1))
        w = method.gramian_weights(gramian, losses.detach().to("cpu", torch.float64))
        w = w.to(losses) * factor
        # One backward of sum_k w_k l_k for the shared part; heads per the policy.
        keep = bool(self.heads) and self.head_grads == "unit"
        torch.autograd.backward(
            (w * losses).sum(),
            inputs=self.shared if keep else self.shared + self.heads,
            retain_graph=keep,
        )
        if keep:
            self._heads_backward(losses, torch.ones_like(w))
        return StepResult(weights=w.detach())
