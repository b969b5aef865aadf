"""Golden values of the methods added for issue 11 (IMTL, IMTL-L, MoDo, DualProj, ConFIG, PCD,
CR-MOGM) on small fixed inputs, derived by hand from each method's defining equation (cited at
each test) and written independently of the code under test. The registry-wide properties
(shapes, permutation equivariance, scaling, no conflict, checkpoints) are checked by the
conformance kit (``test_conformance.py``); the comparisons with TorchJD 0.18 in
``test_oracle_new_methods.py``.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from mtlbench.method import StepContext, create
from mtlbench.methods.imtl_g import imtl_g_weights

DT = torch.float64
# Two conflicting tasks (cosine -0.6, norms 1 and 3): g1 = (1, 0), g2 = (-1.8, 2.4).
J2 = torch.tensor([[1.0, 0.0], [-1.8, 2.4]], dtype=DT)
# Three tasks in R^4 with varied norms and a conflict.
J3 = torch.tensor([[1.0, 0.2, 0.0, -0.3], [-0.5, 1.5, 0.4, 0.0], [0.3, -0.8, 2.0, 0.5]], dtype=DT)
LOSSES3 = torch.tensor([0.7, 1.3, 2.2], dtype=DT)


def _ones(k: int) -> torch.Tensor:
    return torch.ones(k, dtype=DT)


def _units(jac: torch.Tensor) -> torch.Tensor:
    return jac / jac.norm(dim=1, keepdim=True)


# -- IMTL-L -----------------------------------------------------------------------------------


def test_imtl_l_objective_and_gradients():
    # Liu et al. 2021, Eq. 3: L = sum_k (exp(s_k) l_k - s_k).
    method = create("imtl_l", 2).to(DT)
    with torch.no_grad():
        method.log_scale.copy_(torch.tensor([0.5, -1.0]))
    losses = torch.tensor([2.0, 0.3], dtype=DT, requires_grad=True)
    out = method.objective(losses, StepContext())
    expected = math.exp(0.5) * 2.0 - 0.5 + math.exp(-1.0) * 0.3 + 1.0
    assert float(out.loss) == pytest.approx(expected, rel=1e-12)
    out.loss.backward()
    torch.testing.assert_close(losses.grad, torch.tensor([math.exp(0.5), math.exp(-1.0)], dtype=DT))
    ds = [math.exp(0.5) * 2.0 - 1.0, math.exp(-1.0) * 0.3 - 1.0]
    torch.testing.assert_close(method.log_scale.grad, torch.tensor(ds, dtype=DT))
    torch.testing.assert_close(out.weights, losses.grad)


def test_imtl_l_is_stationary_in_s_where_every_scaled_loss_is_one():
    losses = torch.tensor([0.2, 5.0, 1.0], dtype=DT)
    method = create("imtl_l", 3).to(DT)
    with torch.no_grad():
        method.log_scale.copy_(-losses.log())
    method.objective(losses, StepContext()).loss.backward()
    torch.testing.assert_close(method.log_scale.grad, torch.zeros(3, dtype=DT), atol=1e-12, rtol=0)


def test_imtl_l_min_losses_shift_the_s_gradient_only():
    losses = torch.tensor([-3.0, 1.0], dtype=DT)
    method = create("imtl_l", 2, min_losses=[-4.0, 0.0]).to(DT)
    method.objective(losses, StepContext()).loss.backward()
    # exp(0) (l - l*) - 1 = (1 - 1, 1 - 1): at its stationary point.
    torch.testing.assert_close(method.log_scale.grad, torch.zeros(2, dtype=DT))
    unshifted = create("imtl_l", 2).to(DT)
    unshifted.objective(losses, StepContext()).loss.backward()
    assert float(unshifted.log_scale.grad[0]) == -4.0  # a negative loss pushes s up for ever


# -- IMTL -------------------------------------------------------------------------------------


@pytest.mark.parametrize("jac", [J2, J3], ids=["k2", "k3"])
def test_imtl_at_zero_scales_is_imtl_g(jac):
    k = jac.shape[0]
    agg = create("imtl", k).aggregate(jac, _ones(k))
    torch.testing.assert_close(agg.weights, imtl_g_weights(jac @ jac.T))
    torch.testing.assert_close(agg.head_weights, _ones(k))  # exp(0): the unscaled losses


def test_imtl_combines_the_scaled_gradients_with_equal_projections():
    # Algorithm 1 of Liu et al. 2021: IMTL-G on the gradients exp(s_k) g_k of the scaled losses.
    # The update d = sum alpha_k exp(s_k) g_k has sum alpha = 1 and equal projections on u_k.
    s = torch.tensor([0.4, -0.7, 1.1], dtype=DT)
    method = create("imtl", 3)
    with torch.no_grad():
        method.log_scale.copy_(s.float())
    agg = method.aggregate(J3, LOSSES3)
    scales = method.log_scale.detach().double().exp()
    alpha = agg.weights / scales
    assert float(alpha.sum()) == pytest.approx(1.0, abs=1e-12)
    projections = _units(J3) @ agg.update
    torch.testing.assert_close(projections, projections[0].expand(3), rtol=1e-10, atol=0)
    torch.testing.assert_close(agg.update, agg.weights @ J3)
    # LibMTL back-propagates each scaled loss: heads get exp(s), s gets exp(s) l - 1.
    torch.testing.assert_close(agg.head_weights, scales)
    torch.testing.assert_close(
        method.log_scale.grad.double(), scales * LOSSES3 - 1.0, rtol=1e-6, atol=1e-7
    )


def test_imtl_falls_back_on_a_non_finite_gramian():
    method = create("imtl", 2)
    bad = J2.clone()
    bad[0, 0] = float("nan")
    agg = method.aggregate(bad, _ones(2))
    assert method.fallbacks == 1 and method.log_scale.grad is None
    torch.testing.assert_close(agg.weights, torch.full((2,), 0.5, dtype=DT))


# -- MoDo -------------------------------------------------------------------------------------


def test_modo_first_two_steps_by_hand():
    # Chen et al. 2023, Eq. 2.9a: lambda <- Proj(lambda - gamma (G lambda + rho lambda)).
    # G = [[1, -1.8], [-1.8, 9]], lambda_0 = (.5, .5), gamma = rho = 0.1:
    # step 1: (.5, .5) - .1 ((-.4, 3.6) + (.05, .05)) = (.535, .135) -> + .165 -> (.7, .3);
    # step 2: (.7, .3) - .1 ((.16, 1.44) + (.07, .03)) = (.677, .153) -> + .085 -> (.762, .238).
    method = create("modo", 2)
    agg = method.aggregate(J2, _ones(2))
    torch.testing.assert_close(agg.weights, torch.tensor([0.7, 0.3], dtype=DT))
    torch.testing.assert_close(agg.update, torch.tensor([0.16, 0.72], dtype=DT))
    agg = method.aggregate(J2, _ones(2))
    torch.testing.assert_close(agg.weights, torch.tensor([0.762, 0.238], dtype=DT))
    torch.testing.assert_close(method.lambd, torch.tensor([0.762, 0.238], dtype=DT))


def test_modo_projection_reaches_a_vertex():
    # gamma = 1: (.5, .5) - ((-.35, 3.65)) = (.85, -3.15); sum -2.3, shifted by +1.65 each:
    # (2.5, -1.5) has a negative entry, so the projection is the vertex (1, 0).
    agg = create("modo", 2, gamma=1.0).aggregate(J2, _ones(2))
    torch.testing.assert_close(agg.weights, torch.tensor([1.0, 0.0], dtype=DT))


# -- DualProj ---------------------------------------------------------------------------------


def test_dualproj_two_conflicting_tasks_by_hand():
    # Mean m = (-0.4, 1.2): m . g1 = -0.4 < 0, m . g2 = 3.6 > 0. Projecting onto g1 . x >= 0
    # gives (0, 1.2), and (0, 1.2) . g2 = 2.88 >= 0, so it is the projection onto the dual cone:
    # (0, 1.2) = 0.9 g1 + 0.5 g2.
    agg = create("dualproj", 2).aggregate(J2, _ones(2))
    torch.testing.assert_close(agg.weights, torch.tensor([0.9, 0.5], dtype=DT))
    torch.testing.assert_close(agg.update, torch.tensor([0.0, 1.2], dtype=DT), atol=1e-12, rtol=0)


def test_dualproj_is_the_projection_found_by_brute_force():
    # GEM Eq. 11: min |x - mean|^2 s.t. J x >= 0, solved in parameter space by SLSQP.
    jac = J3 - 0.9 * J3.mean(0)
    mean = jac.mean(0).numpy()
    rows = jac.numpy()
    res = minimize(
        lambda x: ((x - mean) ** 2).sum(),
        mean,
        jac=lambda x: 2 * (x - mean),
        constraints=[{"type": "ineq", "fun": lambda x: rows @ x, "jac": lambda x: rows}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    agg = create("dualproj", 3).aggregate(jac, _ones(3))
    np.testing.assert_allclose(agg.update.numpy(), res.x, atol=1e-6)
    assert (jac @ agg.update >= -1e-12).all()


def test_dualproj_without_conflict_is_the_mean_and_takes_a_preference_vector():
    jac = torch.tensor([[1.0, 0.1], [0.2, 1.0], [0.5, 0.5]], dtype=DT)
    agg = create("dualproj", 3).aggregate(jac, _ones(3))
    torch.testing.assert_close(agg.weights, torch.full((3,), 1 / 3, dtype=DT))
    pref = [0.5, 0.2, 0.3]
    agg = create("dualproj", 3, pref_vector=pref).aggregate(jac, _ones(3))
    torch.testing.assert_close(agg.weights, torch.tensor(pref, dtype=DT))
    with pytest.raises(ValueError, match="pref_vector"):
        create("dualproj", 3, pref_vector=[1.0, -1.0, 1.0])


# -- ConFIG -----------------------------------------------------------------------------------


def test_config_two_tasks_by_hand():
    # Liu et al. 2024, Eq. 2: u1 = (1, 0), u2 = (-0.6, 0.8); d_best solves u_k . d = 1, i.e.
    # d_best = (1, 2); e = (1, 2)/sqrt 5; length = g1 . e + g2 . e = (1 + 3)/sqrt 5, so
    # d = 4/5 (1, 2) = (0.8, 1.6), at cosine 0.8 to both unit gradients.
    agg = create("config", 2).aggregate(J2, _ones(2))
    torch.testing.assert_close(agg.update, torch.tensor([0.8, 1.6], dtype=DT))
    torch.testing.assert_close(_units(J2) @ agg.update, torch.tensor([0.8, 0.8], dtype=DT))


@pytest.mark.parametrize("pref", [None, [1.0, 2.0, 0.5]])
def test_config_equal_or_preferred_cosines_and_the_summed_length(pref):
    jac = J3 - 0.8 * J3.mean(0)  # conflicting
    agg = create("config", 3, pref_vector=pref).aggregate(jac, _ones(3))
    p = torch.ones(3, dtype=DT) if pref is None else torch.tensor(pref, dtype=DT)
    e = agg.update / agg.update.norm()
    cosines = _units(jac) @ e
    torch.testing.assert_close(cosines / cosines[0], p / p[0], rtol=1e-10, atol=0)
    assert float(agg.update.norm()) == pytest.approx(float((jac @ e).sum()), rel=1e-12)
    if pref is None:  # independent gradients: a positive cosine with each, no conflict
        assert (jac @ agg.update > 0).all()


def test_config_zero_gradients_give_a_zero_update():
    agg = create("config", 2).aggregate(torch.zeros(2, 3, dtype=DT), _ones(2))
    assert torch.equal(agg.update, torch.zeros(3, dtype=DT))


# -- PCD --------------------------------------------------------------------------------------


def test_pcd_two_tasks_first_step_by_hand():
    # TorchJD's PCD (the paper's QP): at step 1 the bias-corrected EMA is |g|^2, so g~ = u.
    # u2 . u1 = -0.6 < tau: the constraint is active, d~ = u1 + mu u2 with u2 . d~ = tau, i.e.
    # mu = tau + 0.6 = 0.62; d~ = (1 - 0.6 mu, 0.8 mu) = (0.628, 0.496), rescaled to |g1| = 1.
    tau = 0.02
    agg = create("pcd", 2, tau=tau).aggregate(J2, _ones(2))
    d_tilde = torch.tensor([0.628, 0.496], dtype=DT)
    torch.testing.assert_close(agg.update, d_tilde / d_tilde.norm(), rtol=1e-8, atol=0)
    weights = torch.tensor([1.0, 0.62 / 3.0], dtype=DT) / d_tilde.norm()
    torch.testing.assert_close(agg.weights, weights, rtol=1e-8, atol=0)
    assert float(_units(J2)[1] @ agg.update * d_tilde.norm()) == pytest.approx(tau)


def test_pcd_without_conflict_follows_the_primary_gradient():
    jac = torch.tensor([[1.0, 0.2, 0.0], [0.8, 1.0, 0.0], [0.5, 0.0, 1.0]], dtype=DT)
    agg = create("pcd", 3).aggregate(jac, _ones(3))
    torch.testing.assert_close(agg.weights, torch.tensor([1.0, 0.0, 0.0], dtype=DT))


def test_pcd_normalises_by_the_bias_corrected_ema_of_squared_norms():
    # Scaling a secondary row by the same c at every call leaves the update unchanged (the
    # normalisation s_j = 1 / sqrt(v^_j + eps)), up to eps; the primary sets the norm.
    a, b = create("pcd", 2, tau=0.1), create("pcd", 2, tau=0.1)
    for jac in (J2, 0.5 * J2, 2.0 * J2):
        scaled = jac * torch.tensor([[1.0], [7.0]], dtype=DT)
        torch.testing.assert_close(
            b.aggregate(scaled, _ones(2)).update,
            a.aggregate(jac, _ones(2)).update,
            rtol=1e-7,
            atol=0,
        )
    beta = 0.999
    n2 = torch.tensor([1.0, 0.25, 4.0], dtype=DT) * float(J2[1] @ J2[1])
    ema = ((1 - beta) * (beta**2 * n2[0] + beta * n2[1] + n2[2])).item()
    assert float(a.sq_norm_ema[1]) == pytest.approx(ema, rel=1e-12)
    assert int(a.steps) == 3


def test_pcd_primary_task_is_the_first():
    first = create("pcd", 2).aggregate(J2, _ones(2)).update
    swapped = create("pcd", 2).aggregate(J2.flip(0), _ones(2)).update
    assert float(first.norm()) == pytest.approx(1.0) and float(swapped.norm()) == pytest.approx(3.0)


# -- CR-MOGM ----------------------------------------------------------------------------------


def test_cr_mogm_smooths_mgda_weights():
    # MGDA on two tasks: lambda = (g2 - g1) . g2 / |g1 - g2|^2 = 10.8 / 13.6 for J2; 1/2 for
    # two orthogonal unit gradients. Zhou et al. 2022: lambda_t = alpha lambda_{t-1} + (1 -
    # alpha) lambda^_t, lambda_0 = lambda^_1.
    method = create("cr_mogm", 2, alpha=0.9)
    first = torch.tensor([10.8 / 13.6, 2.8 / 13.6], dtype=DT)
    torch.testing.assert_close(method.aggregate(J2, _ones(2)).weights, first)
    second = method.aggregate(torch.eye(2, dtype=DT), _ones(2)).weights
    torch.testing.assert_close(second, 0.9 * first + 0.1 * torch.tensor([0.5, 0.5], dtype=DT))


def test_cr_mogm_alpha_zero_is_the_base_and_alpha_one_freezes_the_first_weights():
    loose, frozen = create("cr_mogm", 2, alpha=0.0), create("cr_mogm", 2, alpha=1.0)
    for method in (loose, frozen):
        method.aggregate(J2, _ones(2))
    torch.testing.assert_close(
        loose.aggregate(torch.eye(2, dtype=DT), _ones(2)).weights, torch.full((2,), 0.5, dtype=DT)
    )
    first = torch.tensor([10.8 / 13.6, 2.8 / 13.6], dtype=DT)
    torch.testing.assert_close(frozen.aggregate(torch.eye(2, dtype=DT), _ones(2)).weights, first)


def test_cr_mogm_takes_the_base_properties_and_rejects_other_kinds():
    method = create("cr_mogm", 3, base="pcgrad")
    assert method.scale == "sum" and method.stochastic
    assert "base.last_weights" in create("cr_mogm", 3, base="upgrad").state_dict()
    with pytest.raises(ValueError, match="Gramian method, one of .*mgda"):
        create("cr_mogm", 3, base="moco")
    with pytest.raises(ValueError, match="Gramian method"):
        create("cr_mogm", 3, base="cr_mogm")


# -- robustness -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["imtl", "modo", "dualproj", "config", "pcd", "cr_mogm"])
def test_non_finite_jacobians_fall_back_and_leave_the_state_alone(name):
    method = create(name, 2)
    good = method.aggregate(J2, _ones(2))
    state = copy.deepcopy(method.state_dict())
    bad = J2.clone()
    bad[1, 0] = float("inf")
    agg = method.aggregate(bad, _ones(2))
    assert method.fallbacks >= 1
    torch.testing.assert_close(agg.weights, good.weights)
    for key, value in method.state_dict().items():
        same = torch.equal(value, state[key]) if torch.is_tensor(value) else value == state[key]
        assert same, (name, key)
