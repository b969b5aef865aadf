"""Checks of a gradient method (``aggregate``) on the families of :mod:`.families`.

Every check takes a fresh method per call (a stateful method's first update), seeded alike, so
that two calls differ only by their input. Tolerances are relative to ``|J|`` (Frobenius):
:data:`REL` of the Jacobian's dtype.

* shapes and finiteness on every family and every scale (1e-8 .. 1e8), float32 and float64; for
  Gramian methods ``update = w^T J``;
* the promises the method declares (:class:`~mtlbench.method.Method`), on every family at unit
  scale, K = 2, 5, 20 and 40: ``non_conflicting`` (``J d >= -tol |J|^2``), permutation
  invariance unless ``stochastic`` (among tasks 1..K-1 if ``ordered_tasks``),
  ``scale_equivariant`` (``A(c J) = c A(J)``), ``linear_under_scaling``
  (``A(diag(a + b) J) = A(diag(a) J) + A(diag(b) J)`` for positive ``a``, ``b``, TorchJD's
  property) and ``zero_at_zero`` (``A(0) = 0``).

The scale factors are powers of two, so that ``c J`` is exact in float32 too and the check sees
the method, not the rounding of its input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor

from mtlbench.conformance.families import Case, extreme_cases, property_cases
from mtlbench.conformance.findings import Builder, Finding
from mtlbench.method import Aggregate, GradientMethod, GramianWeighting

REL = {torch.float32: 1e-5, torch.float64: 1e-7}
SCALE_FACTORS = (2.0**-27, 2.0**-10, 2.0**17, 2.0**27)
SEED = 0


def run(method: GradientMethod, jac: Tensor, losses: Tensor, seed: int = SEED) -> Aggregate:
    """``method.aggregate`` on copies of the inputs, with the CPU generator seeded by ``seed``
    and its state restored after (the inputs are shared between checks)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return method.aggregate(jac.clone(), losses.clone())


def _off(a: Tensor, b: Tensor, unit: float) -> float:
    """``|a - b|`` in float64, in units of ``unit`` (``inf`` where either is not finite)."""
    diff = float((a.double() - b.double()).norm())
    return diff / unit if unit > 0 else diff


def _fresh(build: Builder, case: Case) -> Callable[[Tensor], Tensor]:
    def update(jac: Tensor) -> Tensor:
        return run(build(case.k), jac, case.losses).update

    return update


def check_structure(build: Builder, name: str, cases: Iterable[Case]) -> Iterator[Finding]:
    """Shapes, finiteness and (Gramian methods) ``update = w^T J``: the first failure only."""
    for case in cases:
        k, p = case.jacobian.shape
        try:
            method = build(k)
            agg = run(method, case.jacobian, case.losses)
        except Exception as err:  # a method must not raise on a valid input
            yield Finding(name, "runs", f"{type(err).__name__}: {err} on {case.describe()}")
            return
        shapes = (tuple(agg.update.shape), tuple(agg.weights.shape), tuple(agg.head_weights.shape))
        if shapes != ((p,), (k,), (k,)):
            reason = f"got {shapes}, expected {((p,), (k,), (k,))} on {case.describe()}"
            yield Finding(name, "shapes", reason)
            return
        outputs = {"update": agg.update, "weights": agg.weights, "head_weights": agg.head_weights}
        for label, t in outputs.items():
            if not bool(torch.isfinite(t).all()):
                yield Finding(name, "finite", f"non-finite {label} on {case.describe()}")
                return
        if isinstance(method, GramianWeighting):
            expected = agg.weights.double() @ case.jacobian.double()
            unit = case.norm * max(float(agg.weights.double().norm()), 1.0)
            off = _off(agg.update, expected, unit)
            if off > REL[case.jacobian.dtype]:
                reason = f"off by {off:.1e} |w||J| on {case.describe()}"
                yield Finding(name, "update = w^T J", reason)
                return


def _non_conflicting(build: Builder, case: Case) -> str | None:
    d = _fresh(build, case)(case.jacobian)
    dots = case.jacobian.double() @ d.double()
    bound = REL[case.jacobian.dtype] * case.norm**2
    if bool((dots < -bound).any()):
        return f"min_k g_k . d = {float(dots.min()):.2e} < -{bound:.1e} on {case.describe()}"
    return None


def _permutation(build: Builder, case: Case) -> str | None:
    k = case.k
    perm = torch.arange(k - 1, -1, -1)
    if build(k).ordered_tasks:
        perm = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(k - 1, 0, -1)])
    a = run(build(k), case.jacobian, case.losses)
    b = run(build(k), case.jacobian[perm], case.losses[perm])
    off = _off(a.update, b.update, case.norm)
    if off > REL[case.jacobian.dtype]:
        return f"permuting the tasks moved the update by {off:.1e} |J| on {case.describe()}"
    if case.family == "full_rank":  # unique weights: they follow the tasks
        scale = max(float(a.weights.double().abs().max()), 1e-300)
        off = _off(a.weights[perm], b.weights, scale)
        if off > REL[case.jacobian.dtype] * k:
            return (
                f"permuting the tasks did not permute the weights (off by {off:.1e} max|w|) "
                f"on {case.describe()}"
            )
    return None


def _scale_equivariant(build: Builder, case: Case) -> str | None:
    update = _fresh(build, case)
    base = update(case.jacobian)
    for c in SCALE_FACTORS:
        off = _off(update(c * case.jacobian), c * base, c * case.norm)
        if off > REL[case.jacobian.dtype]:
            return f"A({c:g} J) != {c:g} A(J), off by {off:.1e} |cJ| on {case.describe()}"
    return None


def _linear_under_scaling(build: Builder, case: Case) -> str | None:
    g = torch.Generator().manual_seed(case.k)
    a = (0.5 + 1.5 * torch.rand(case.k, 1, generator=g, dtype=torch.float64)).to(case.jacobian)
    b = (0.5 + 1.5 * torch.rand(case.k, 1, generator=g, dtype=torch.float64)).to(case.jacobian)
    update = _fresh(build, case)
    both = update((a + b) * case.jacobian)
    apart = update(a * case.jacobian).double() + update(b * case.jacobian).double()
    off = _off(both, apart, 4.0 * case.norm)
    if off > REL[case.jacobian.dtype]:
        sums = "A(diag(a + b) J) != A(diag(a) J) + A(diag(b) J)"
        return f"{sums}, off by {off:.1e} |J| on {case.describe()}"
    return None


def _zero_at_zero(build: Builder, case: Case) -> str | None:
    if case.family != "zero":
        return None
    d = _fresh(build, case)(case.jacobian)
    if bool(d.any()):
        return f"|A(0)| = {float(d.double().norm()):.1e} on {case.describe()}"
    return None


PROPERTIES: dict[str, Callable[[Builder, Case], str | None]] = {
    "non_conflicting": _non_conflicting,
    "scale_equivariant": _scale_equivariant,
    "linear_under_scaling": _linear_under_scaling,
    "zero_at_zero": _zero_at_zero,
}


def declared(method: GradientMethod) -> list[str]:
    """The properties ``method`` promises (its class or instance attributes), permutation
    invariance included unless it is ``stochastic``."""
    out = [p for p in PROPERTIES if getattr(method, p, False)]
    if not method.stochastic:
        out.append("permutation_invariant")
    return out


def check_gradient(build: Builder, name: str) -> list[Finding]:
    """Every gradient-method check; at most one finding per check."""
    findings = list(check_structure(build, name, property_cases() + extreme_cases()))
    if findings:  # the properties assume a method that runs
        return findings
    checks = dict(PROPERTIES, permutation_invariant=_permutation)
    for prop in declared(build(2)):
        for case in property_cases():
            reason = checks[prop](build, case)
            if reason is not None:
                findings.append(Finding(name, prop, reason))
                break
    return findings
