"""Checks that apply to every method, whatever it needs: its declarations, its search space, its
per-benchmark defaults, a ``state_dict`` round trip and determinism under one seed."""

from __future__ import annotations

import dataclasses
import io
import random
from collections.abc import Callable, Iterator
from typing import Any

import torch

from mtlbench.benchmark import BENCHMARKS, Protocol
from mtlbench.conformance.families import case
from mtlbench.conformance.findings import Builder, Finding
from mtlbench.conformance.gradient import run
from mtlbench.conformance.loss import step, tiny_model
from mtlbench.method import GramianWeighting, JacobianMethod, LossWeighting, Method
from mtlbench.registry import Registry

KINDS = {"losses": LossWeighting, "gramian": GramianWeighting, "jacobian": JacobianMethod}
STATE_TASKS = 3


def check_declarations(cls: type[Method], name: str) -> Iterator[Finding]:
    """A citation, a docstring, a cost class and a kind that match what the class is."""
    if not cls.paper.strip():
        yield Finding(name, "declarations", "empty `paper`: cite the method's paper")
    if not (cls.__doc__ or "").strip():
        yield Finding(name, "declarations", "no docstring: state the update and cite the paper")
    needs = getattr(cls, "needs", None)
    if needs not in KINDS or not issubclass(cls, KINDS[needs]):
        yield Finding(
            name,
            "declarations",
            f"needs = {needs!r} but the class is not a "
            "LossWeighting, GramianWeighting or JacobianMethod of that kind",
        )
    elif (cls.cost == "O(1)") != (needs == "losses"):
        yield Finding(name, "declarations", f"cost {cls.cost!r} does not match needs {needs!r}")
    if cls.scale not in ("sum", "mean") or cls.reference_scale not in (None, "sum", "mean"):
        yield Finding(
            name, "declarations", "scale must be 'sum' or 'mean' (reference_scale also None)"
        )


def check_search_space(
    registry: Registry[Method], label: str, make: Callable[..., Method]
) -> Iterator[Finding]:
    """Every declared hyper-parameter exists; every value of its grid (and three draws of an
    infinite space) validates and builds."""
    cls: Any = registry.get(label)
    params = registry.hparams(label)
    for key, space in cls.search_space.items():
        if key not in params:
            valid = ", ".join(params) or "none"
            yield Finding(
                label, "search space", f"{key!r} is not a hyper-parameter (valid: {valid})"
            )
            continue
        default = params[key].default
        values = list(space.grid(default))
        if not space.finite():
            values += [space.sample(random.Random(i), default) for i in range(3)]
        for value in values:
            try:
                make(2, **registry.validate(label, {key: value}))
            except Exception as err:  # any failure is the finding
                yield Finding(label, "search space", f"{key} = {value!r} does not build: {err}")
                break


def check_benchmark_defaults(registry: Registry[Method], label: str) -> Iterator[Finding]:
    """Each per-benchmark default validates; its ``protocol`` entry names known options."""
    cls: Any = registry.get(label)
    for bench, settings in cls.benchmark_defaults.items():
        settings = dict(settings)
        protocol = settings.pop("protocol", {})
        ptype = BENCHMARKS.get(bench).protocol_type if bench in BENCHMARKS else Protocol
        try:
            registry.validate(label, settings)
            unknown = set(protocol) - {f.name for f in dataclasses.fields(ptype)}
            if unknown:
                raise ValueError(f"unknown protocol option(s) {sorted(unknown)}")
            ptype().replace(**protocol)
        except Exception as err:  # any failure is the finding
            yield Finding(label, "benchmark defaults", f"{bench}: {err}")


def _roundtrip(method: Method) -> dict:
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _gradient_steps(method: Method, steps: range) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for s in steps:
        c = case("full_rank", STATE_TASKS, 8, torch.float64, seed=s)
        agg = run(method, c.jacobian, c.losses, seed=s)  # type: ignore[arg-type]
        out += [agg.update, agg.weights, agg.head_weights]
    return out


def _loss_steps(method: Method, steps: range, model: tuple) -> list[torch.Tensor]:
    shared, heads, forward = model
    params = [*shared.parameters(), *heads.parameters()]
    return [t for s in steps for t in step(method, forward, params, s)]  # type: ignore[arg-type]


def _trajectories(build: Builder) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Three steps, a ``state_dict`` round trip into a fresh method, then two more steps of the
    original and of the copy (from the same model state)."""
    first = build(STATE_TASKS)
    first.on_epoch_start(0)
    if isinstance(first, LossWeighting):
        model = tiny_model(STATE_TASKS)
        params = [*model[0].parameters(), *model[1].parameters()]
        _loss_steps(first, range(3), model)
        state = _roundtrip(first)
        saved = [p.detach().clone() for p in params]
        expected = _loss_steps(first, range(3, 5), model)
        with torch.no_grad():
            for p, v in zip(params, saved, strict=True):
                p.copy_(v)
        second = build(STATE_TASKS)
        second.load_state_dict(state)
        return expected, _loss_steps(second, range(3, 5), model)
    _gradient_steps(first, range(3))
    state = _roundtrip(first)
    second = build(STATE_TASKS)
    second.load_state_dict(state)
    return _gradient_steps(first, range(3, 5)), _gradient_steps(second, range(3, 5))


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def check_state(build: Builder, name: str) -> Iterator[Finding]:
    """The next updates after a ``state_dict`` round trip equal the original's, exactly."""
    try:
        expected, got = _trajectories(build)
    except Exception as err:  # a state that cannot be saved or loaded is the finding
        yield Finding(name, "state_dict", f"round trip failed: {type(err).__name__}: {err}")
        return
    if not _same(expected, got):
        yield Finding(
            name,
            "state_dict",
            "the next update after a state_dict round trip "
            "differs from the original's (state kept outside state_dict?)",
        )


def check_determinism(build: Builder, name: str) -> Iterator[Finding]:
    """Two fresh methods under the same seeds give the same updates over four steps."""
    runs = []
    for _ in range(2):
        method = build(STATE_TASKS)
        method.on_epoch_start(0)
        if isinstance(method, LossWeighting):
            runs.append(_loss_steps(method, range(4), tiny_model(STATE_TASKS)))
        else:
            runs.append(_gradient_steps(method, range(4)))
    if not _same(*runs):
        yield Finding(name, "determinism", "two runs with one seed gave different updates")
