"""End-to-end checks of the methods whose only reference is LibMTL or a paper repository.

Each method trains a tiny fixed model for 20 steps through mtlbench's own training step
(:class:`mtlbench.step.TrainingStep`: forward, :class:`mtlbench.gradients.GradientEngine`,
optimizer step) and must retrace, step by step, the run of its reference code from the same
initial parameters on the same batches. The expected values (``reference_e2e_values.py``) were
computed once by running the reference code itself, outside the repository; none of it is here.

**The tiny problem** (built identically here and in the reference scripts): shared encoder
``tanh(Linear(4, 3))``, two heads ``Linear(3, 1)``; every parameter drawn as ``0.5 N(0, 1)`` from
``torch.Generator().manual_seed(0)`` in the order encoder weight, encoder bias, head 0 weight and
bias, head 1 weight and bias. Five batches of 8 inputs ``x ~ N(0, I_4)`` from
``torch.Generator().manual_seed(1)``, targets ``y = (x0 - 2 x1 + 1, 3 x2 x3 + 1)``; task losses
the two MSEs (positive, so that log-loss methods apply unshifted). Four epochs of the five
batches (20 steps), plain SGD at lr 0.05 (LDC-MTL: Adam at lr 0.05, as its trainers use Adam),
``torch.manual_seed(7)`` before the first step (RLW's draws).

**Reference code and procedure** (torch 2.x CPU, Python 3.11, float32):

* ``median-research-group/LibMTL@4336804`` (2025-05-14), ``LibMTL/weighting/{GLS, RLW, DB_MTL,
  GradNorm, Aligned_MTL, MoCo}.py``: only ``abstract_weighting.py`` and the weighting file were
  loaded (stub ``LibMTL`` packages). A subclass of the weighting class set ``task_num = 2``,
  ``device = "cpu"``, ``rep_grad = False``, ``get_share_params`` (the encoder's parameters),
  ``zero_grad_share_params``; ``init_param()`` was called once. Each step reproduced LibMTL's
  ``Trainer.train_singlelevel``: ``optimizer.zero_grad(set_to_none=False)``, ``w =
  model.backward(losses, **weight_args)``, ``optimizer.step()`` (the optimizer over the model's
  and the weighting's parameters: GradNorm's ``loss_scale``); ``model.epoch`` set each epoch and
  ``train_loss_buffer[:, epoch]`` set to the epoch's mean losses afterwards (GradNorm's ``L0``).
  ``weight_args``: LibMTL's defaults (``DB_beta 0.9, DB_beta_sigma 0``; ``alpha 1.5``;
  ``MoCo_beta 0.5, MoCo_beta_sigma 0.5, MoCo_gamma 0.1, MoCo_gamma_sigma 0.5, MoCo_rho 0``),
  and DB-MTL once more with ``DB_beta_sigma 0.5`` (the decaying ``beta / t^sigma``).
  ``torch.symeig`` (removed from torch 2) was provided as ``torch.linalg.eigh``, which returns
  the same ascending eigen-pairs.
* ``AvivNavon/nash-mtl@cce1840`` (2025-06-25), ``methods/weight_methods.py::{NashMTL,
  ScaleInvariantLinearScalarization}`` with cvxpy 1.9.3 and ECOS 2.0.14 (installed in a scratch
  folder), each step ``optimizer.zero_grad(); _, extra = method.backward(losses=...,
  shared_parameters=encoder params, task_specific_parameters=head params); optimizer.step()``.
  ``NashMTL(max_norm=0.0)``: its default ``max_norm = 1`` clips the shared gradient, which is
  our trainer's ``clip_grad_norm`` policy, not part of the method. Once more with
  ``update_weights_every = 3`` (see ``test_nash_mtl_reuses_weights_as_the_reference``).
* ``autumn9999/GO4Align@5fcbc71`` (2024-09-25), ``methods/cluster_methods.py::GO4ALIGN`` with
  ``num_groups = 1`` (the README's configuration), the same loop as nash-mtl's; and with
  ``num_groups = 2``, for which ``kmeans_pytorch`` 0.3 (its import is commented out in the
  released file) was injected as ``cluster_methods.kmeans``: with two tasks each is its own
  cluster, so Lloyd's algorithm and our exact 1-D k-means agree and ``w = gamma``.
* ``OptMN-Lab/LDC-MTL@7c39465`` (2025-05-15): LDC-MTL lives in the trainers, not in a class, so
  their objective was run around the tiny model, line for line: the CelebA configuration
  (``experiments/celeba/trainer.py`` lines 112-120, router ``sigmoid(theta)`` with ``theta = 1``
  from ``models.py``, ``lamb = 0.01``) and the QM9 configuration
  (``experiments/quantum_chemistry/trainer.py`` lines 151-164: ``log(l / l0)`` with ``l0`` the
  first batch's losses of each epoch, router ``sigmoid(relu(theta))`` with ``theta = 0.8 U + 0.2``
  drawn right after ``torch.manual_seed(3)``, ``lamb = 0.05``). Here ``torch.manual_seed(3)`` is
  called before building every method, so our ``init_low + (init_high - init_low) U`` draws the
  same ``U``.

**What is compared, and the deliberate differences.** Always the per-step losses and the final
parameters; the per-step weights where the reference reports what we report. GLS: LibMTL
reports ``l_k / (K prod l)``, we report the gradient's coefficients ``L / (K l_k)``; DB-MTL:
LibMTL reports ones, we report the max-norm factors; SI: nash-mtl reports its unit task weights,
we report ``1 / l_k``. The objectives and updates agree, so the trajectories must. Head
gradients follow each reference: LibMTL back-propagates every task's raw loss into the heads
(``head_grads = "unit"``) except for DB-MTL, whose heads train on the log losses (``weighted``,
``c_k = 1 / l_k``); nash-mtl, GO4Align and LDC-MTL back-propagate the weighted loss
(``weighted``). ``update_scale = "reference"`` everywhere. GradNorm's ``theta = 0`` and LibMTL's
``loss_scale = 1`` give the same ``K softmax``; Aligned-MTL's Gramian and Nash-MTL's solve are in
float64 here (float32 and cvxpy/ECOS's CCCP in the references).

**Tolerance**: ``rtol = 1e-4, atol = 1e-5``. The references run in float32 (eps 1.2e-7) and the
two sides round differently (float64 Gramians, Nash-MTL's Newton solve against ECOS's CCCP);
over 20 steps the largest difference measured was 4.8e-6 (Nash-MTL's weights), 3.8e-6 for
losses of order 10 and 3e-7 for parameters. A 10% change of a constant is seen: DB-MTL's beta
0.9 -> 0.81 moves the final parameters by 3.4e-2, MoCo's gamma 0.1 -> 0.09 its weights by 1.1e-2
(measured). Not everything is: GradNorm's weight update depends on ``alpha`` only through the
signs of ``G_k - Gbar r_k^alpha``, and here a 10% change of ``alpha`` flips none of them.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from reference_e2e_values import REFERENCE
from torch import Tensor, nn

from mtlbench.gradients import GradientEngine
from mtlbench.method import create
from mtlbench.step import TrainingStep

pytestmark = [pytest.mark.oracle, pytest.mark.slow]  # slow: out of the day-to-day tier

N_TASKS, IN_DIM, HIDDEN, BATCH, N_BATCHES, EPOCHS = 2, 4, 3, 8, 5, 4
LR = 0.05
RTOL, ATOL = 1e-4, 1e-5


class TinyNet(nn.Module):
    """``tanh(Linear(4, 3))`` shared, two ``Linear(3, 1)`` heads; returns ``(rep, outputs)``."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(IN_DIM, HIDDEN)
        self.heads = nn.ModuleList([nn.Linear(HIDDEN, 1) for _ in range(N_TASKS)])
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        rep = torch.tanh(self.shared(x))
        return rep, [head(rep) for head in self.heads]


def batches() -> list[tuple[Tensor, Tensor]]:
    """Five fixed batches ``(x, y)``, ``y = (x0 - 2 x1 + 1, 3 x2 x3 + 1)``."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(N_BATCHES):
        x = torch.randn(BATCH, IN_DIM, generator=gen)
        y = torch.stack([x[:, 0] - 2 * x[:, 1], 3 * x[:, 2] * x[:, 3]], dim=1) + 1.0
        out.append((x, y))
    return out


def task_losses(outputs: list[Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
    """The two mean squared errors."""
    y = batch[1]
    return torch.stack([((o[:, 0] - y[:, k]) ** 2).mean() for k, o in enumerate(outputs)])


def train(
    name: str, hparams: dict[str, Any], head_grads: str, adam: bool = False
) -> dict[str, Tensor]:
    """Run ``name`` for ``EPOCHS`` epochs; per-step weights and losses, final parameters."""
    net = TinyNet()
    torch.manual_seed(3)  # LDC-MTL's random router init (QM9 configuration)
    method = create(name, N_TASKS, feature_dim=HIDDEN, **hparams)
    engine = GradientEngine(
        list(net.shared.parameters()), list(net.heads.parameters()), head_grads=head_grads
    )
    groups = [{"params": list(net.parameters())}, *method.parameter_groups()]
    optimizer = torch.optim.Adam(groups, lr=LR) if adam else torch.optim.SGD(groups, lr=LR)
    step = TrainingStep(net, method, engine, optimizer, task_losses, lambda batch: batch[0])
    torch.manual_seed(7)  # RLW's draws
    weights, losses, t = [], [], 0
    for epoch in range(EPOCHS):
        method.on_epoch_start(epoch)
        for batch in batches():
            batch_losses, batch_weights = step(batch, t, epoch)
            weights.append(batch_weights)
            losses.append(batch_losses)
            t += 1
    params = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    return {"weights": torch.stack(weights), "losses": torch.stack(losses), "params": params}


LDC_CELEBA = {
    "router": "vector",
    "activation": "sigmoid",
    "init_low": 1.0,
    "init_high": 1.0,
    "normalization": "none",
    "tau": "w",
    "normalizer": "sum_detached",
    "lamb": 0.01,
}
LDC_QM9 = {
    "router": "vector",
    "activation": "relu_sigmoid",
    "init_low": 0.2,
    "init_high": 1.0,
    "normalization": "log",
    "log_reset": "epoch",
    "tau": "w",
    "normalizer": "sum_detached",
    "lamb": 0.05,
}

# case id -> (method, hyper-parameters, head policy, Adam?); the case id keys REFERENCE.
CASES: dict[str, tuple[str, dict[str, Any], str, bool]] = {
    "gls": ("gls", {}, "weighted", False),
    "rlw": ("rlw", {}, "weighted", False),
    "db_mtl": ("db_mtl", {}, "weighted", False),
    "gradnorm": ("gradnorm", {}, "unit", False),
    "aligned_mtl": ("aligned_mtl", {}, "unit", False),
    "moco": ("moco", {}, "unit", False),
    "nash_mtl": ("nash_mtl", {}, "weighted", False),
    "si": ("si", {}, "weighted", False),
    "go4align": ("go4align", {}, "weighted", False),
    "ldc_mtl": ("ldc_mtl", LDC_CELEBA, "weighted", True),
    "ldc_mtl_qm9": ("ldc_mtl", LDC_QM9, "weighted", True),
    "db_mtl_sigma": ("db_mtl", {"beta_sigma": 0.5}, "weighted", False),
    "go4align_2groups": ("go4align", {"num_groups": 2}, "weighted", False),
}
# Checked by its own test below (the reference's warm start fails at step 3).
NASH_EVERY_3 = "nash_mtl_every3"


def assert_close(actual: Tensor, expected: list, what: str) -> None:
    torch.testing.assert_close(
        actual.double(),
        torch.tensor(expected, dtype=torch.float64),
        rtol=RTOL,
        atol=ATOL,
        msg=lambda m: f"{what}: {m}",
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_method_retraces_its_reference_code(case: str) -> None:
    name, hparams, head_grads, adam = CASES[case]
    ours = train(name, hparams, head_grads, adam)
    ref = REFERENCE[case]
    assert_close(ours["losses"], ref["losses"], f"{case} per-step losses")
    assert_close(ours["params"], ref["params"], f"{case} final parameters")
    if "weights" in ref:
        assert_close(ours["weights"], ref["weights"], f"{case} per-step weights")


def test_reference_values_cover_every_case() -> None:
    assert set(REFERENCE) == set(CASES) | {NASH_EVERY_3}
    for case, ref in REFERENCE.items():
        steps = EPOCHS * N_BATCHES
        assert len(ref["losses"]) == steps, case
        assert len(ref["params"]) == HIDDEN * (IN_DIM + 1) + N_TASKS * (HIDDEN + 1), case
        assert "weights" not in ref or len(ref["weights"]) == steps, case


def test_the_check_detects_a_wrong_constant() -> None:
    """The tolerance is tight enough to see a 10% change of a hyper-parameter (DB-MTL's beta)."""
    ours = train("db_mtl", {"beta": 0.81}, "weighted")
    with pytest.raises(AssertionError):
        assert_close(ours["params"], REFERENCE["db_mtl"]["params"], "db_mtl beta 0.81")


def test_libmtl_rep_grad_gramian_is_of_the_batch_summed_representation_gradient() -> None:
    """A deliberate difference, pinned. LibMTL's ``rep_grad = True`` sums each task's gradient
    of the representation over the batch before taking inner products (``AbsWeighting._get_grads``:
    ``per_grads.reshape(K, B, -1).sum(1)``); our ``wrt = "representation"`` keeps one row per
    sample, as MGDA-UB (Sener & Koltun 2018), so the two Gramians and weights differ. What must
    agree: our Aligned-MTL on LibMTL's Gramian gives LibMTL's weights. Reference: LibMTL@4336804
    ``Aligned_MTL`` with ``rep_grad = True`` (``rep`` the encoder output, ``rep_tasks`` its
    detached copies feeding the heads), first step of the tiny problem: (0.98346287, 0.17376107);
    ours with ``wrt = "representation"`` gives (0.99126, 0.15739) there."""
    net = TinyNet()
    batch = batches()[0]
    rep, outputs = net(batch[0])
    losses = task_losses(outputs, batch)
    rows = [torch.autograd.grad(loss, rep, retain_graph=True)[0].sum(0) for loss in losses]
    summed = torch.stack(rows).double()
    weights = create("aligned_mtl", N_TASKS).weights(summed @ summed.T, losses.detach().double())
    assert_close(weights, [0.98346287, 0.17376107], "aligned_mtl on LibMTL's rep_grad Gramian")


def test_nash_mtl_reuses_weights_as_the_reference() -> None:
    """``update_weights_every = 3``: steps 0-2 share the first solve's weights, as in nash-mtl.

    At step 3 the two part, deliberately. nash-mtl warm-starts its CCCP from the previous
    weights ``a``; there the new Gramian (normalised: ``[[0.614, -0.138], [-0.138, 0.765]]``)
    gives ``(G a)_2 < 0``, the linearised sub-problem is unbounded (ECOS's status), the stop test
    fires on the unchanged ``alpha`` and the reference keeps the stale weights until step 6. Ours
    solve ``G alpha = 1 / alpha`` from a fixed start and get the Nash solution, (0.790, 0.708),
    which satisfies the equation on that Gramian (``G alpha = (1.266, 1.413) = 1 / alpha``).
    """
    ours = train("nash_mtl", {"update_weights_every": 3}, "weighted")
    ref = REFERENCE[NASH_EVERY_3]["weights"]
    assert_close(ours["weights"][:3], ref[:3], "nash_mtl every 3, steps 0-2")
    assert ref[3] == ref[0]  # the reference's stale weights
    assert_close(ours["weights"][3], [0.78976822, 0.70763171], "nash_mtl every 3, step 3")
    assert_close(ours["weights"][4:6], [[0.78976822, 0.70763171]] * 2, "reused at steps 4-5")
