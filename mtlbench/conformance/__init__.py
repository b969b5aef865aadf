"""The conformance kit for methods: every promise a method declares, checked on hard inputs.

``check_method(name_or_class, **hparams) -> list[Finding]`` runs, for any registered method or
any :class:`~mtlbench.method.Method` subclass (a plug-in), without pytest:

* its declarations (citation, docstring, cost and kind), its search space (every value builds)
  and its per-benchmark defaults (:mod:`.common`);
* a ``state_dict`` round trip gives the same next updates; two runs with one seed give the same
  updates (:mod:`.common`);
* gradient methods: shapes and finiteness on the Jacobian families of :mod:`.families` (zero,
  rank-deficient, K > P, stationary, duplicate and zero rows, rank-1 Gramians, ill-conditioned;
  scales 1e-8 .. 1e8; float32 and float64; K from 2 to 40), and every property the method
  declares, with tolerances relative to ``|J|`` (:mod:`.gradient`);
* loss-weighting methods: finite objectives and weights on typical, tiny, huge, zero and mixed
  losses, finite gradients (:mod:`.loss`).

An empty list means the method conforms; each :class:`Finding` is one readable line. The design
follows TorchJD's property tests of its aggregators (Quinton & Rey, "Jacobian Descent for
Multi-Objective Optimization", arXiv 2406.16232). ``tests/test_conformance.py`` runs it over the
whole registry: it is the suite's property tier.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any

import torch

from mtlbench.conformance.common import (
    check_benchmark_defaults,
    check_declarations,
    check_determinism,
    check_search_space,
    check_state,
)
from mtlbench.conformance.findings import Finding
from mtlbench.conformance.gradient import check_gradient
from mtlbench.conformance.loss import FEATURE_DIM, check_objective
from mtlbench.method import METHODS, GradientMethod, LossWeighting, Method
from mtlbench.method import names as method_names
from mtlbench.registry import Registry

__all__ = ["Finding", "check_method"]


def _registry(target: str | type[Method]) -> tuple[Registry[Method], str]:
    """The registry and name to validate ``target``'s hyper-parameters with: the methods'
    registry for a registered name or class, else a private one holding the class alone."""
    if isinstance(target, str):
        method_names()  # registers the built-ins
        METHODS.get(target)  # unknown names: one line naming the valid ones
        return METHODS, target
    if not (isinstance(target, type) and issubclass(target, Method)):
        raise TypeError(f"expected a method name or a Method subclass, got {target!r}")
    if target.name and target.name in METHODS and METHODS.get(target.name) is target:
        return METHODS, target.name
    private: Registry[Method] = Registry("method", context=METHODS.context)
    label = target.name or target.__name__
    private.register(label)(target)
    return private, label


def _make(registry: Registry[Method], label: str, k: int, **hparams: Any) -> Method:
    cls: Any = registry.get(label)
    checked = registry.validate(label, hparams)
    if "feature_dim" in inspect.signature(cls.__init__).parameters:
        checked["feature_dim"] = FEATURE_DIM
    return cls(k, **checked)


def check_method(target: str | type[Method], **hparams: Any) -> list[Finding]:
    """Every conformance check of a method (module docstring), with ``hparams`` set. Runs on one
    torch thread (small matrices, where a thread pool only adds overhead), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _check(target, hparams)
    finally:
        torch.set_num_threads(threads)


def _check(target: str | type[Method], hparams: dict[str, Any]) -> list[Finding]:
    registry, label = _registry(target)
    cls: Any = registry.get(label)
    make = partial(_make, registry, label)
    build = partial(make, **hparams)
    findings = list(check_declarations(cls, label))
    findings += check_search_space(registry, label, make)
    findings += check_benchmark_defaults(registry, label)
    try:
        build(2)
    except Exception as err:  # hyper-parameters that do not build: nothing else can run
        return findings + [Finding(label, "builds", f"{type(err).__name__}: {err}")]
    if issubclass(cls, GradientMethod):
        findings += check_gradient(build, label)
    elif issubclass(cls, LossWeighting):
        findings += check_objective(build, label)
    findings += check_state(build, label)
    findings += check_determinism(build, label)
    return findings
