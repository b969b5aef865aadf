"""Differential tests of the methods added for issue 11 against TorchJD 0.18, their reference.

Same inputs, same outputs: the update direction for the stateless aggregators (ConFIG,
DualProj) on random and conflicting Jacobians; the weights and updates along sequences of 25
steps for the stateful ones (PCD, MoDo, CR-MOGM), fed identical Jacobians; and, for the two
IMTL methods with a learned parameter, 25 SGD steps of a tiny model from the same initial
weights and batches, the method's parameters stepped with the model. TorchJD has no hybrid
IMTL; LibMTL's (IMTL-G on the gradients of IMTL-L's scaled losses) is rebuilt from TorchJD's two
halves, ``scalarization.IMTLL`` and ``aggregation.IMTLG``.

Where the definitions differ on purpose the test says so and compares what must still agree:
DualProj's ``reg_eps`` (TorchJD's ``quadprog`` needs 1e-4; ours defaults to 0), CR-MOGM's
wrapped UPGrad (the same ``reg_eps``), PCD's multipliers (unique only with independent active
gradients; the update always is).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlbench.gradients import GradientEngine, jacobian
from mtlbench.method import StepContext, create

torchjd = pytest.importorskip("torchjd")
from torchjd import aggregation as tjd  # noqa: E402
from torchjd import scalarization as tjs  # noqa: E402

pytestmark = [pytest.mark.oracle, pytest.mark.slow]  # slow: out of the day-to-day tier

STEPS = 25
DT = torch.float64


def _jacobians(k: int, steps: int, seed: int, p: int = 12) -> list[torch.Tensor]:
    """Random Jacobians with varied row norms; every other one made conflicting."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.5, 3.0, k, dtype=DT)[:, None]
    out = []
    for t in range(steps):
        jac = torch.randn(k, p, generator=g, dtype=DT) * scales
        if t % 2:
            jac = jac - 1.3 * jac.mean(0)
        out.append(jac)
    return out


def _ones(k: int) -> torch.Tensor:
    return torch.ones(k, dtype=DT)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


# -- stateless aggregators --------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_config_matches_torchjd(k):
    for jac in _jacobians(k, 10, seed=k):
        got = create("config", k).aggregate(jac, _ones(k)).update
        assert _rel(got, tjd.ConFIG()(jac)) < 1e-10


def test_config_matches_torchjd_on_dependent_rows_and_a_zero_row():
    # K > P (least-squares direction), a duplicated row and a zero row (its unit vector is 0).
    g = torch.Generator().manual_seed(7)
    wide = torch.randn(5, 3, generator=g, dtype=DT)
    dup = torch.randn(3, 6, generator=g, dtype=DT)
    dup[2] = dup[0]
    zero = torch.randn(3, 6, generator=g, dtype=DT)
    zero[1] = 0.0
    for jac in (wide, dup, zero):
        k = jac.shape[0]
        got = create("config", k).aggregate(jac, _ones(k)).update
        assert _rel(got, tjd.ConFIG()(jac)) < 1e-8


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_dualproj_matches_torchjd_at_its_regularisation(k):
    pytest.importorskip("qpsolvers")  # TorchJD's default projector (torchjd[quadprog_projector])
    for jac in _jacobians(k, 10, seed=10 + k):
        got = create("dualproj", k, reg_eps=1e-4).aggregate(jac, _ones(k)).update
        assert _rel(got, tjd.DualProj()(jac)) < 1e-7


@pytest.mark.parametrize("k", [2, 3, 5])
def test_dualproj_default_differs_from_torchjd_only_by_its_regularisation(k):
    # Ours solves the QP exactly (reg_eps = 0); TorchJD adds 1e-4 I to G / tr(G) for quadprog,
    # a relative change of about 1e-4 / lambda_min(G / tr G): up to 0.3 % on these Jacobians.
    pytest.importorskip("qpsolvers")
    for jac in _jacobians(k, 10, seed=20 + k):
        got = create("dualproj", k).aggregate(jac, _ones(k)).update
        ref = tjd.DualProj()(jac)
        assert _rel(got, ref) < 1e-2
        assert (jac @ got >= -1e-9 * got.norm() * jac.norm(dim=1)).all()


# -- stateful aggregators, along sequences ----------------------------------------------------


@pytest.mark.parametrize("tau", [0.02, 0.3, 1.0])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_pcd_matches_torchjd_along_a_sequence(k, tau):
    ours, ref = create("pcd", k, tau=tau), tjd.PCD(tau=tau)
    for jac in _jacobians(k, STEPS, seed=30 + k):
        got = ours.aggregate(jac, _ones(k)).update
        assert _rel(got, ref(jac)) < 1e-9
    ema = ref.gramian_weighting._sq_norm_ema
    torch.testing.assert_close(ours.sq_norm_ema, ema, rtol=1e-12, atol=0.0)


def test_pcd_matches_torchjd_on_infeasible_constraints_and_a_zero_primary():
    # Two anti-parallel secondary gradients cannot both get progress: the update is g_1.
    infeasible = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0]], dtype=DT)
    zero_primary = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [0.0, 1.0, 3.0]], dtype=DT)
    for jac in (infeasible, zero_primary):
        got = create("pcd", 3).aggregate(jac, _ones(3)).update
        torch.testing.assert_close(got, tjd.PCD()(jac), rtol=1e-12, atol=1e-14)
    agg = create("pcd", 3).aggregate(infeasible, _ones(3))
    torch.testing.assert_close(agg.update, infeasible[0], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize(("gamma", "rho"), [(0.1, 0.1), (1e-3, 0.1), (0.5, 0.0)])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_modo_matches_torchjd_along_a_sequence(k, gamma, rho):
    # The single-batch Gramian G = J J^T is what our engine gives (see methods/modo.py).
    ours, ref = create("modo", k, gamma=gamma, rho=rho), tjd.MoDoWeighting(gamma=gamma, rho=rho)
    for jac in _jacobians(k, STEPS, seed=40 + k):
        agg = ours.aggregate(jac, _ones(k))
        expected = ref(jac @ jac.T)
        torch.testing.assert_close(agg.weights, expected, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(agg.update, expected @ jac, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_cr_mogm_over_imtl_g_matches_torchjd_along_a_sequence(k, alpha):
    # IMTL-G is a closed form on both sides: the smoothed weights agree to rounding.
    ours = create("cr_mogm", k, base="imtl_g", alpha=alpha)
    ref = tjd.CRMOGMWeighting(tjd.IMTLGWeighting(), alpha=alpha)
    for jac in _jacobians(k, STEPS, seed=50 + k):
        agg = ours.aggregate(jac, _ones(k))
        torch.testing.assert_close(agg.weights, ref(jac @ jac.T), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_cr_mogm_over_upgrad_matches_torchjd_along_a_sequence(k):
    # Our UPGrad's exact QP (reg_eps 0) against TorchJD's quadprog at reg_eps 1e-4: the EMA adds
    # no difference of its own, so the gap stays that of the UPGrad solves (as for DualProj).
    pytest.importorskip("qpsolvers")
    ours = create("cr_mogm", k, base="upgrad")
    ref = tjd.GramianWeightedAggregator(tjd.CRMOGMWeighting(tjd.UPGradWeighting()))
    for jac in _jacobians(k, STEPS, seed=60 + k):
        assert _rel(ours.aggregate(jac, _ones(k)).update, ref(jac)) < 1e-2


# -- learned loss scales: a tiny model trained for 25 steps -----------------------------------


def _tiny(k: int, seed: int = 0) -> tuple[nn.Module, nn.ModuleList]:
    torch.manual_seed(seed)
    shared = nn.Sequential(nn.Linear(4, 6), nn.Tanh()).to(DT)
    heads = nn.ModuleList([nn.Linear(6, 1) for _ in range(k)]).to(DT)
    return shared, heads


def _batches(k: int, steps: int = STEPS) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(123)
    return [
        (torch.randn(16, 4, generator=g, dtype=DT), torch.randn(16, k, generator=g, dtype=DT))
        for _ in range(steps)
    ]


def _losses(shared: nn.Module, heads: nn.ModuleList, batch) -> torch.Tensor:
    x, y = batch
    rep = shared(x)
    return torch.stack([((h(rep)[:, 0] - y[:, i]) ** 2).mean() for i, h in enumerate(heads)])


def _params(*modules: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for m in modules for p in m.parameters()])


@pytest.mark.parametrize("k", [2, 3])
def test_imtl_l_matches_torchjd_over_training_steps(k):
    lr = 0.05
    shared, heads = _tiny(k)
    ref_shared, ref_heads = _tiny(k)
    method, ref = create("imtl_l", k).to(DT), tjs.IMTLL(k).to(DT)
    engine = GradientEngine(list(shared.parameters()), list(heads.parameters()))
    opt = torch.optim.SGD([*shared.parameters(), *heads.parameters(), *method.parameters()], lr=lr)
    ref_opt = torch.optim.SGD(
        [*ref_shared.parameters(), *ref_heads.parameters(), *ref.parameters()], lr=lr
    )
    for batch in _batches(k):
        ref_weights = ref.log_scale.detach().exp()  # dIMTLL/dl_k = exp(s_k)
        opt.zero_grad()
        result = engine.backward(method, _losses(shared, heads, batch), StepContext())
        opt.step()
        ref_opt.zero_grad()
        ref(_losses(ref_shared, ref_heads, batch)).backward()
        ref_opt.step()
        torch.testing.assert_close(result.weights, ref_weights, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(
            method.log_scale.detach(), ref.log_scale.detach(), rtol=1e-12, atol=1e-14
        )
        torch.testing.assert_close(
            _params(shared, heads), _params(ref_shared, ref_heads), rtol=1e-12, atol=1e-14
        )


@pytest.mark.parametrize("k", [2, 3])
def test_imtl_matches_libmtl_built_from_torchjd_halves(k):
    """LibMTL's IMTL step, from TorchJD's parts: the scaled losses ``IMTLL`` defines (their
    gradients ``c_k grad l_k`` with ``c = dIMTLL/dl = exp(s)``), the shared update
    ``IMTLG()(diag(c) J)``, the heads trained on the scaled losses (LibMTL back-propagates each
    one), ``s`` on ``IMTLL``'s own gradient; SGD on all of them.

    Also checked once against LibMTL's ``weighting/IMTL.py`` run verbatim (median-research-group/
    LibMTL@4336804, outside the repository: its ``backward`` on a 3-task float64 model of this
    shape, 30 SGD steps at lr 0.05 from the same initial weights and batches): parameters and
    ``s`` agree to 8e-9, the rounding of LibMTL's float32 gradient buffer (``_grad2vec``)."""
    lr = 0.05
    shared, heads = _tiny(k, seed=1)
    ref_shared, ref_heads = _tiny(k, seed=1)
    method, ref = create("imtl", k).to(DT), tjs.IMTLL(k).to(DT)
    engine = GradientEngine(list(shared.parameters()), list(heads.parameters()))
    opt = torch.optim.SGD([*shared.parameters(), *heads.parameters(), *method.parameters()], lr=lr)
    ref_params = [*ref_shared.parameters(), *ref_heads.parameters(), *ref.parameters()]
    ref_opt = torch.optim.SGD(ref_params, lr=lr)
    for batch in _batches(k):
        opt.zero_grad()
        engine.backward(method, _losses(shared, heads, batch), StepContext())
        opt.step()

        ref_opt.zero_grad()
        losses = _losses(ref_shared, ref_heads, batch)
        (c,) = torch.autograd.grad(ref(losses), losses, retain_graph=True)
        jac = jacobian(losses, list(ref_shared.parameters()), "sequential", retain_graph=True)
        update = tjd.IMTLG()(c[:, None] * jac)
        offset = 0
        for p in ref_shared.parameters():
            p.grad = update[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        (c.detach() * losses).sum().backward(inputs=list(ref_heads.parameters()))
        ref(losses.detach()).backward(inputs=list(ref.parameters()))
        ref_opt.step()

        torch.testing.assert_close(
            method.log_scale.detach(), ref.log_scale.detach(), rtol=1e-10, atol=1e-12
        )
        torch.testing.assert_close(
            _params(shared, heads), _params(ref_shared, ref_heads), rtol=1e-10, atol=1e-12
        )
