"""Peer libraries side by side with mtlbench: TorchJD 0.18 (Quinton & Rey, "Jacobian Descent for
Multi-Objective Optimization", 2024; https://github.com/SimplexLab/TorchJD), an optional extra
(``pip install 'mtlbench[peers]'``).

For each method both libraries implement, TorchJD's training step runs on its own copy of the
bench's model, batch and optimizer (Adam, lr 1e-4), in two forms where they apply:

* ``mtl_backward``: ``torchjd.autojac.mtl_backward`` (the K x P Jacobian of the shared
  parameters through the features, each head its own task's gradient) then
  ``jac_to_grad(shared, aggregator)``;
* ``autogram`` (aggregators whose weights depend on the Gramian only): ``autogram.Engine`` on
  the encoder (``batch_dim=None``: the bench's losses are task means, not per-example losses),
  ``G = engine.compute_gramian(losses)``, ``w = weighting(G)``, then ``losses.backward(w)``.

:func:`update_difference` compares the first step's update of the shared parameters with
mtlbench's engine (heads ``unit``, as ``mtl_backward``), at the update scale (``sum``/``mean``,
a convention, the ``update_scale`` policy) closest to TorchJD's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mtlbench.bench.spec import Spec
from mtlbench.bench.workloads import Workload
from mtlbench.benchmark import MultiTaskModel
from mtlbench.gradients import GradientEngine
from mtlbench.method import StepContext
from mtlbench.registry import ConfigError, unknown

PEERS = ("torchjd",)


@dataclass(frozen=True)
class Shared:
    """One method both libraries implement: TorchJD's aggregator and, where its weights depend on
    the Gramian only, its weighting (for ``autogram``), built for K tasks with mtlbench's
    default hyper-parameters."""

    aggregator: Callable[[int], Any]
    weighting: Callable[[int], Any] | None


def _torchjd_methods() -> dict[str, Shared]:
    from torchjd import aggregation as a  # optional heavy dependency: torchjd

    return {
        "mgda": Shared(lambda k: a.MGDA(), lambda k: a.MGDAWeighting()),
        "upgrad": Shared(lambda k: a.UPGrad(), lambda k: a.UPGradWeighting()),
        "cagrad": Shared(lambda k: a.CAGrad(c=0.4), lambda k: a.CAGradWeighting(c=0.4)),
        "nash_mtl": Shared(lambda k: a.NashMTL(n_tasks=k), None),
        "imtl_g": Shared(lambda k: a.IMTLG(), lambda k: a.IMTLGWeighting()),
        "aligned_mtl": Shared(lambda k: a.AlignedMTL(), lambda k: a.AlignedMTLWeighting()),
        "pcgrad": Shared(lambda k: a.PCGrad(), lambda k: a.PCGradWeighting()),
        "graddrop": Shared(lambda k: a.GradDrop(), None),
        "fairgrad": Shared(
            lambda k: a.FairGrad(alpha=2.0), lambda k: a.FairGradWeighting(alpha=2.0)
        ),
        "gradvac": Shared(lambda k: a.GradVac(beta=0.5), lambda k: a.GradVacWeighting(beta=0.5)),
        "excess_mtl": Shared(lambda k: a.ExcessMTL(robust_step_size=1e-2), None),
    }


def require(peer: str) -> None:
    """Fail with one clear line when ``peer`` is unknown or not installed at the tested version."""
    if peer not in PEERS:
        raise unknown("peer", peer, PEERS)
    from importlib import metadata

    try:
        version = metadata.version("torchjd")
    except metadata.PackageNotFoundError:
        raise ConfigError(
            "--peers torchjd needs TorchJD 0.18: pip install 'mtlbench[peers]'"
        ) from None
    if not version.startswith("0.18."):
        raise ConfigError(f"--peers torchjd is written for TorchJD 0.18, found {version}")


def shared_methods(peer: str) -> list[str]:
    """The mtlbench methods ``peer`` also implements."""
    require(peer)
    return sorted(_torchjd_methods())


def peer_modes(peer: str, method: str) -> list[str]:
    """The peer's steps for ``method``: none if it does not implement it, ``mtl_backward``, and
    ``autogram`` where its weights depend on the Gramian only."""
    shared = _torchjd_methods().get(method)
    if shared is None:
        return []
    return ["mtl_backward"] + (["autogram"] if shared.weighting is not None else [])


class _PeerStep:
    """TorchJD's training step on ``model``: zero_grad, forward, losses, backward, Adam step."""

    def __init__(self, workload: Workload, model: MultiTaskModel, spec: Spec) -> None:
        shared = _torchjd_methods()[spec.method]
        k = workload.n_tasks
        self.model, self.losses_of, self.mode = model, workload.task_losses, spec.mode
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        self.shared = model.shared_parameters()
        if spec.mode == "mtl_backward":
            self.aggregator = shared.aggregator(k)
        elif spec.mode == "autogram" and shared.weighting is not None:
            from torchjd.autogram import Engine  # optional heavy dependency: torchjd

            self.weighting = shared.weighting(k)
            self.engine = Engine(model.encoder, batch_dim=None)
        else:
            raise ConfigError(f"TorchJD has no {spec.mode} step for {spec.method!r}")

    def backward(self, batch: Any) -> Tensor:
        """Fill ``.grad`` for one step; returns the losses."""
        rep, outputs = self.model(batch[0])
        losses = self.losses_of(outputs, batch)
        if self.mode == "mtl_backward":
            from torchjd import autojac  # optional heavy dependency: torchjd

            # The graph is kept: the MLP workload's K heads are one Linear(width, K), whose
            # graph every task's head backward crosses (freed with the losses at the step's end).
            autojac.mtl_backward(
                list(losses), features=rep, shared_params=self.shared, retain_graph=True
            )
            autojac.jac_to_grad(self.shared, self.aggregator)
        else:
            gramian = self.engine.compute_gramian(losses)
            losses.backward(self.weighting(gramian))
        return losses.detach()

    def __call__(self, batch: Any, global_step: int, epoch: int) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.backward(batch)
        self.optimizer.step()
        return losses


def peer_step(workload: Workload, model: MultiTaskModel, spec: Spec) -> Callable[..., Any]:
    """The peer's step for ``spec`` on ``model`` (a fresh copy of the workload's model)."""
    require(spec.peer or "")
    return _PeerStep(workload, model, spec)


def _flat_grad(params: list[nn.Parameter]) -> Tensor:
    return torch.cat(
        [torch.zeros(p.numel()) if p.grad is None else p.grad.reshape(-1) for p in params]
    )


def _ours(workload: Workload, model: MultiTaskModel, method: str, scale: str, batch: Any) -> Tensor:
    torch.manual_seed(1)
    m = workload.method(method)
    shared = model.shared_parameters()
    engine = GradientEngine(shared, model.head_parameters(), head_grads="unit", update_scale=scale)
    _, outputs = model(batch[0])
    engine.backward(m, workload.task_losses(outputs, batch), StepContext())
    return _flat_grad(shared)


def update_difference(workload: Workload, spec: Spec, device: torch.device) -> float:
    """``|u_peer - u_ours| / |u_ours|`` for the first step's update of the shared parameters,
    from the same initial model and batch, at the update scale (``mean`` or ``sum``) closer to
    the peer's. Stochastic methods (PCGrad's and GradVac's task orders, GradDrop's masks) draw
    different random numbers in the two libraries and need not agree."""
    batch = tuple(t.to(device) for t in workload.batch)
    torch.manual_seed(0)
    model = copy.deepcopy(workload.model).to(device)
    step = _PeerStep(workload, copy.deepcopy(model), spec)
    torch.manual_seed(1)
    step.backward(batch)
    theirs = _flat_grad(step.shared)
    errors = []
    for scale in ("mean", "sum"):
        ours = _ours(workload, copy.deepcopy(model), spec.method, scale, batch)
        errors.append(float((theirs - ours).norm() / ours.norm().clamp_min(1e-30)))
    return min(errors)
