"""Golden values of Nash-MTL, FairGrad, Aligned-MTL, UPGrad, GradVac, GradNorm, MoCo, SDMGrad and
ExcessMTL on small fixed inputs, and their robustness to non-finite inputs.

Every expected value is derived here from the method's defining equations (cited at each test),
in float64 with NumPy / SciPy and written independently of the code under test: fixed points
are checked by their residuals or solved by a different algorithm, projections are brute-forced
in parameter space, and the stateful methods' first steps are replayed from their formulas.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm
from scipy.optimize import least_squares, minimize
from torch import nn

from mtlbench.gradients import GradientEngine
from mtlbench.method import StepContext, create
from mtlbench.methods.fairgrad import alpha_fair_weights
from mtlbench.methods.gradvac import gradvac_pass

NAMES = [
    "nash_mtl",
    "fairgrad",
    "aligned_mtl",
    "upgrad",
    "gradvac",
    "gradnorm",
    "moco",
    "sdmgrad",
    "excess_mtl",
]

# Two tasks in conflict (cosine -0.6), and three tasks in R^4 with varied norms and a conflict.
J2 = np.array([[1.0, 0.0], [-0.6, 0.8]]) * np.array([[1.0], [3.0]])
J3 = np.array(
    [
        [1.0, 0.2, 0.0, -0.3],
        [-0.5, 1.5, 0.4, 0.0],
        [0.3, -0.8, 2.0, 0.5],
    ]
)
LOSSES3 = np.array([0.7, 1.3, 2.2])


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def _aggregate(name: str, jac: np.ndarray, losses: np.ndarray | None = None, **hparams):
    losses = np.ones(jac.shape[0]) if losses is None else losses
    method = create(name, n_tasks=jac.shape[0], **hparams)
    return method, method.aggregate(_t(jac), _t(losses))


# -- Nash-MTL ---------------------------------------------------------------------------------


def test_nash_mtl_two_tasks_closed_form():
    # Navon et al. 2022, G alpha = 1/alpha. For two tasks alpha_k = t / |g_k| solves it with
    # t^2 (1 + cos) = 1 (substitute: alpha_1 (G11 alpha_1 + G12 alpha_2) = t^2 (1 + cos)).
    g = J2 @ J2.T
    cos = g[0, 1] / math.sqrt(g[0, 0] * g[1, 1])
    expected = 1.0 / np.sqrt(np.diag(g) * (1.0 + cos))
    _, agg = _aggregate("nash_mtl", J2)
    np.testing.assert_allclose(agg.weights.numpy(), expected, rtol=1e-8)
    np.testing.assert_allclose(agg.update.numpy(), expected @ J2, rtol=1e-8)


def test_nash_mtl_three_tasks_fixed_point_and_independent_solve():
    g = J3 @ J3.T
    _, agg = _aggregate("nash_mtl", J3)
    alpha = agg.weights.numpy()
    # The defining equation on the raw Gramian (the reference's CCCP constraint
    # alpha_k (G alpha)_k >= 1 carries the Frobenius factor back, so its fixed point is G's).
    assert (alpha > 0).all()
    np.testing.assert_allclose(g @ alpha, 1.0 / alpha, rtol=1e-7)
    # d . g_k = 1 / alpha_k > 0 (no conflict) and |d|^2 = alpha^T G alpha = K.
    d = agg.update.numpy()
    np.testing.assert_allclose(J3 @ d, 1.0 / alpha, rtol=1e-7)
    assert d @ d == pytest.approx(3.0, rel=1e-7)
    # An independent solve: minimise 1/2 a^T G a - sum log a (whose gradient is G a - 1/a) in
    # log-coordinates with BFGS.
    res = minimize(
        lambda u: 0.5 * np.exp(u) @ g @ np.exp(u) - u.sum(),
        np.zeros(3),
        jac=lambda u: np.exp(u) * (g @ np.exp(u)) - 1.0,
        method="BFGS",
        options={"gtol": 1e-12},
    )
    np.testing.assert_allclose(alpha, np.exp(res.x), rtol=1e-5)


def test_nash_mtl_reuses_weights_between_updates_and_falls_back_on_a_zero_gradient():
    method = create("nash_mtl", n_tasks=3, update_weights_every=2)
    first = method.aggregate(_t(J3), _t(LOSSES3)).weights
    second = method.aggregate(_t(2.0 * J3), _t(LOSSES3)).weights  # not a solve step
    torch.testing.assert_close(second, first)
    third = method.aggregate(_t(2.0 * J3), _t(LOSSES3)).weights  # solve step: alpha / 2
    torch.testing.assert_close(third, first / 2.0)
    # A zero task gradient: G alpha = 1/alpha has no solution; the last weights are reused.
    zero = J3.copy()
    zero[1] = 0.0
    method = create("nash_mtl", n_tasks=3)
    out = method.aggregate(_t(zero), _t(LOSSES3))
    assert method.fallbacks == 1
    torch.testing.assert_close(out.weights, torch.ones(3, dtype=torch.float64))


def test_nash_mtl_log_losses_uses_the_log_loss_gradients():
    # The gradient of log l_k is g_k / l_k: the Nash weights of those rows, divided by l_k.
    jl = J3 / LOSSES3[:, None]
    gl = jl @ jl.T
    _, agg = _aggregate("nash_mtl", J3, LOSSES3, log_losses=True)
    beta = agg.weights.numpy() * LOSSES3  # weights on the rows g_k / l_k
    np.testing.assert_allclose(gl @ beta, 1.0 / beta, rtol=1e-7)
    np.testing.assert_allclose(agg.update.numpy(), beta @ jl, rtol=1e-7)


# -- FairGrad ---------------------------------------------------------------------------------


@pytest.mark.parametrize("jac", [J2, J3], ids=["2 tasks", "3 tasks"])
def test_fairgrad_fixed_point_matches_the_reference_least_squares(jac):
    # Ban & Ji 2024: G w = w^(-1/alpha), alpha = 2. The reference solves it with
    # scipy.optimize.least_squares from 1/K with bounds (0, inf); do exactly that here.
    g = jac @ jac.T
    k = g.shape[0]
    ref = least_squares(
        lambda x: g @ x - np.power(1.0 / x, 0.5),
        np.ones(k) / k,
        bounds=(0, np.inf),
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    ).x
    _, agg = _aggregate("fairgrad", jac)
    w = agg.weights.numpy()
    np.testing.assert_allclose(g @ w, w**-0.5, rtol=1e-7)
    np.testing.assert_allclose(w, ref, rtol=1e-6)
    np.testing.assert_allclose(jac @ agg.update.numpy(), w**-0.5, rtol=1e-7)  # no conflict


def test_fairgrad_alpha_one_is_nash_and_the_scaling_law_holds():
    _, fair = _aggregate("fairgrad", J3, alpha=1.0)
    _, nash = _aggregate("nash_mtl", J3)
    torch.testing.assert_close(fair.weights, nash.weights, rtol=1e-7, atol=0)
    # G -> c^2 G: c^2 s G w = (s w)^(-1/alpha) needs s^(1 + 1/alpha) = c^-2, s = c^(-4/3).
    _, base = _aggregate("fairgrad", J3)
    _, scaled = _aggregate("fairgrad", 5.0 * J3)
    torch.testing.assert_close(
        scaled.weights, base.weights * 5.0 ** (-4.0 / 3.0), rtol=1e-7, atol=0
    )


def test_alpha_fair_solver_reports_problems_without_a_solution():
    # A non-negative combination of the gradients that vanishes (g3 = -(g1 + g2)): Pareto
    # stationary, the objective is unbounded below.
    jac = J3.copy()
    jac[2] = -(jac[0] + jac[1])
    assert not alpha_fair_weights(jac @ jac.T, 2.0).converged
    assert alpha_fair_weights(np.full((2, 2), np.nan), 1.0).weights is None


# -- Aligned-MTL ------------------------------------------------------------------------------


def test_aligned_mtl_orthogonal_gradients():
    # Senushkin et al. 2023: orthogonal rows of norms s_k give G = diag(s^2), lambda_min =
    # min s^2, B = s_min diag(1/s): each aligned gradient is g_k s_min / s_k.
    jac = np.diag([1.0, 2.0, 4.0])
    _, agg = _aggregate("aligned_mtl", jac)
    np.testing.assert_allclose(agg.weights.numpy(), [1.0, 0.5, 0.25], rtol=1e-12)
    np.testing.assert_allclose(agg.update.numpy(), [1.0, 1.0, 1.0], rtol=1e-12)


def test_aligned_mtl_rank_deficient_by_hand():
    # g1 = g2 = e1, g3 = 2 e2: G = [[1,1,0],[1,1,0],[0,0,4]] has eigenpairs 2, (1,1,0)/sqrt2;
    # 4, e3; 0 (dropped). B 1 = sqrt(2) (v1 v1^T 1 / sqrt(2) + e3 e3^T 1 / 2) = (1, 1, 1/sqrt2).
    jac = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    _, agg = _aggregate("aligned_mtl", jac)
    np.testing.assert_allclose(agg.weights.numpy(), [1.0, 1.0, 1 / math.sqrt(2)], rtol=1e-10)
    np.testing.assert_allclose(agg.update.numpy(), [2.0, math.sqrt(2)], rtol=1e-10)


def test_aligned_mtl_general_case_matches_the_inverse_square_root():
    # w = B 1 = sqrt(lambda_min) G^(-1/2) 1, with G^(-1/2) from scipy's matrix square root; the
    # aligned gradients B J are orthogonal with norm sqrt(lambda_min): (B J)(B J)^T = lambda_min I.
    g = J3 @ J3.T
    lam_min = np.linalg.eigvalsh(g).min()
    b = math.sqrt(lam_min) * np.linalg.inv(np.real(sqrtm(g)))
    np.testing.assert_allclose((b @ J3) @ (b @ J3).T, lam_min * np.eye(3), atol=1e-10)
    _, agg = _aggregate("aligned_mtl", J3)
    np.testing.assert_allclose(agg.weights.numpy(), b.sum(axis=0), rtol=1e-8)


# -- UPGrad -----------------------------------------------------------------------------------


def _project_onto_dual_cone(jac: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """argmin |x - x0|^2 subject to J x >= 0, brute force in parameter space (SLSQP)."""
    res = minimize(
        lambda x: np.sum((x - x0) ** 2),
        x0,
        jac=lambda x: 2.0 * (x - x0),
        constraints=[{"type": "ineq", "fun": lambda x: jac @ x, "jac": lambda x: jac}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert res.success
    return res.x


@pytest.mark.parametrize("jac", [J2, J3, -J3 + 0.8 * J3.mean(0)], ids=["2", "3", "3 conflicting"])
def test_upgrad_is_the_mean_of_the_dual_cone_projections(jac):
    # Quinton & Rey 2024: d = (1/K) sum_i pi_J(g_i), pi_J the projection onto {x : J x >= 0}.
    expected = np.mean([_project_onto_dual_cone(jac, row) for row in jac], axis=0)
    _, agg = _aggregate("upgrad", jac)
    d = agg.update.numpy()
    np.testing.assert_allclose(d, expected, atol=1e-6 * np.abs(expected).max())
    assert (jac @ d >= -1e-10 * np.linalg.norm(d) * np.linalg.norm(jac, axis=1)).all()


def test_upgrad_without_conflict_or_below_norm_eps_is_the_mean():
    jac = np.array([[1.0, 0.2], [0.5, 1.0], [1.0, 1.0]])  # pairwise non-negative products
    _, agg = _aggregate("upgrad", jac)
    np.testing.assert_allclose(agg.weights.numpy(), np.full(3, 1 / 3), rtol=1e-12)
    # TorchJD's normalisation: tr(G) < norm_eps = 1e-4 replaces G by 0, the projections by u.
    _, agg = _aggregate("upgrad", 1e-3 * J3)
    np.testing.assert_allclose(agg.weights.numpy(), np.full(3, 1 / 3), rtol=1e-12)


# -- GradVac ----------------------------------------------------------------------------------


def test_gradvac_first_step_by_hand():
    # Wang et al. 2021 / LibMTL: with phi = 0 a conflicting pair is made orthogonal.
    # g1 = (1, 0), g2 = (-1, 1): rho = -1/sqrt2 < 0; p1 = g1 + |g1| (0 - rho) / |g2| g2 =
    # g1 + g2 / 2 = (1/2, 1/2); p2 = g2 + |g2| (1/sqrt2) / |g1| g1 = g2 + g1 = (0, 1).
    jac = np.array([[1.0, 0.0], [-1.0, 1.0]])
    torch.manual_seed(0)
    method, agg = _aggregate("gradvac", jac)
    np.testing.assert_allclose(agg.update.numpy(), [0.5, 1.5], atol=1e-7)
    np.testing.assert_allclose(agg.weights.numpy(), [2.0, 1.5], atol=1e-7)
    # phi <- (1 - beta) 0 + beta rho, beta = 0.5.
    rho = -1 / math.sqrt(2)
    np.testing.assert_allclose(method.targets.numpy(), [[0, rho / 2], [rho / 2, 0]], atol=1e-9)
    # Second step, with rho < phi: the corrected p1 = g1 + (w2 - 1) g2 has cosine phi with g2.
    jac2 = np.array([[1.0, 0.1], [-1.0, 0.3]])
    w = method.aggregate(_t(jac2), _t(np.ones(2))).weights.numpy()
    p1 = jac2[0] + (w[1] - 1.0) * jac2[1]
    cos = p1 @ jac2[1] / (np.linalg.norm(p1) * np.linalg.norm(jac2[1]))
    assert cos == pytest.approx(rho / 2, abs=1e-7)


def _gradvac_in_parameter_space(jac, order, targets, beta):
    """LibMTL's loop on the vectors themselves (no Gramian)."""
    targets = targets.copy()
    projected = jac.copy()
    for i in range(jac.shape[0]):
        for j in order[i]:
            p, g = projected[i], jac[j]
            rho = p @ g / (np.linalg.norm(p) * np.linalg.norm(g) + 1e-8)
            phi = targets[i, j]
            if rho < phi:
                coef = (
                    np.linalg.norm(p)
                    * (phi * math.sqrt(1 - rho**2) - rho * math.sqrt(1 - phi**2))
                    / (np.linalg.norm(g) * math.sqrt(1 - phi**2) + 1e-8)
                )
                projected[i] = p + coef * g
            targets[i, j] = (1 - beta) * phi + beta * rho
    return projected.sum(axis=0), targets


def test_gradvac_gramian_pass_equals_the_parameter_space_loop():
    rng = np.random.default_rng(0)
    jac = rng.standard_normal((4, 7)) - 0.8 * rng.standard_normal((1, 7))
    order = np.array([[1, 3, 2], [0, 2, 3], [3, 1, 0], [2, 0, 1]])
    targets = rng.uniform(-0.3, 0.3, size=(4, 4))
    expected, expected_targets = _gradvac_in_parameter_space(jac, order, targets, 0.5)
    coef, new_targets = gradvac_pass(jac @ jac.T, order, targets, 0.5)
    np.testing.assert_allclose(coef.sum(axis=0) @ jac, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(new_targets, expected_targets, rtol=1e-9, atol=1e-12)


# -- GradNorm ---------------------------------------------------------------------------------


def test_gradnorm_first_steps_by_hand():
    # Chen et al. 2018 / LibMTL: w = K softmax(theta); G_k = w_k |g_k|; target
    # mean(G) r_k^alpha; dL/dw_k = sign(G_k - target_k) |g_k|; dtheta = K s (a - s.a).
    method = create("gradnorm", n_tasks=3, initial_loss="first_step")
    norms = np.linalg.norm(J3, axis=1)
    agg = method.aggregate(_t(J3), _t(LOSSES3))
    np.testing.assert_allclose(agg.weights.numpy(), np.ones(3))
    a = np.sign(norms - norms.mean()) * norms  # r = 1 at the first step
    expected_grad = a - a.mean()  # K s (a - s.a) with s = 1/K
    np.testing.assert_allclose(method.loss_scale.grad.numpy(), expected_grad, rtol=1e-6)
    # One SGD step of the trainer's optimizer, then the second step with new losses.
    theta = -0.1 * expected_grad
    with torch.no_grad():
        method.loss_scale.sub_(0.1 * method.loss_scale.grad)
    losses2 = LOSSES3 * np.array([0.5, 0.9, 1.0])
    agg = method.aggregate(_t(J3), _t(losses2))
    s = np.exp(theta) / np.exp(theta).sum()
    w = 3 * s
    np.testing.assert_allclose(agg.weights.numpy(), w, rtol=1e-6)
    ratio = losses2 / LOSSES3
    rate = ratio / ratio.mean()
    gk = w * norms
    a = np.sign(gk - gk.mean() * rate**1.5) * norms
    np.testing.assert_allclose(method.loss_scale.grad.numpy(), 3 * s * (a - s @ a), rtol=1e-5)


def test_gradnorm_first_epoch_warmup_uses_the_epoch_mean_loss():
    # LibMTL: equal weights during epoch 0, then L0 = mean training loss of epoch 0.
    method = create("gradnorm", n_tasks=3)
    method.on_epoch_start(0)
    for scale in (1.0, 3.0):
        agg = method.aggregate(_t(J3), _t(scale * LOSSES3))
        np.testing.assert_allclose(agg.weights.numpy(), np.ones(3))
        assert method.loss_scale.grad is None
    method.on_epoch_start(1)
    method.aggregate(_t(J3), _t(2.0 * LOSSES3))  # r = 1: the losses equal L0 = 2 LOSSES3
    norms = np.linalg.norm(J3, axis=1)
    a = np.sign(norms - norms.mean()) * norms
    np.testing.assert_allclose(method.loss_scale.grad.numpy(), a - a.mean(), rtol=1e-6)
    np.testing.assert_allclose(method.initial_losses.numpy(), 2.0 * LOSSES3)


def test_gradnorm_weights_are_stepped_by_the_trainer_optimizer():
    torch.manual_seed(0)
    shared = nn.Linear(3, 4)
    heads = nn.ModuleList([nn.Linear(4, 1) for _ in range(2)])
    method = create("gradnorm", n_tasks=2, initial_loss="first_step")
    params = list(shared.parameters()) + list(heads.parameters())
    optimizer = torch.optim.SGD([{"params": params}, *method.parameter_groups()], lr=0.1)
    engine = GradientEngine(list(shared.parameters()), list(heads.parameters()))
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        rep = shared(x)
        losses = torch.stack(
            [((h(rep).squeeze(1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)]
        )
        engine.backward(method, losses, StepContext())
        optimizer.step()
    assert not torch.equal(method.loss_scale.detach(), torch.zeros(2))


# -- MoCo -------------------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _simplex_projection(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the simplex by bisection on the threshold."""
    lo, hi = v.min() - 1.0, v.max()
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.clip(v - mid, 0, None).sum() > 1 else (lo, mid)
    return np.clip(v - (lo + hi) / 2, 0, None)


@pytest.mark.parametrize("simplex", ["softmax", "projection"])
def test_moco_first_two_steps_by_hand(simplex):
    # Fernando et al. 2023 / LibMTL: h = l g / |g|; y <- y - beta_t (y - h);
    # lambda <- S(lambda - gamma_t (Y Y^T + rho I) lambda); d = Y^T lambda; beta_t = 0.5 / sqrt t,
    # gamma_t = 0.1 / sqrt t, rho = 0, y = 0 and lambda = 1/K at start.
    to_simplex = _softmax if simplex == "softmax" else _simplex_projection
    method = create("moco", n_tasks=3, simplex=simplex)
    y, lam = np.zeros_like(J3), np.full(3, 1 / 3)
    for t, (jac, losses) in enumerate([(J3, LOSSES3), (J3[::-1] * 0.5, LOSSES3 * 0.8)], start=1):
        h = jac / (np.linalg.norm(jac, axis=1, keepdims=True) + 1e-8) * losses[:, None]
        y = y - 0.5 / math.sqrt(t) * (y - h)
        lam = to_simplex(lam - 0.1 / math.sqrt(t) * (y @ y.T) @ lam)
        agg = method.aggregate(_t(jac.copy()), _t(losses))
        np.testing.assert_allclose(agg.weights.numpy(), lam, rtol=1e-9)
        np.testing.assert_allclose(agg.update.numpy(), lam @ y, rtol=1e-9)


@pytest.mark.parametrize("log_losses", [False, True])
@pytest.mark.parametrize("min_losses", [None, [-2.1, -21.0, 0.0]])
def test_moco_min_losses_shift_the_losses(min_losses, log_losses):
    # Fernando et al. 2023 (arXiv 2210.12624) / LibMTL on D = l - l* (l* = 0 for None):
    # r = g / (D + 1e-8) with log losses (g otherwise); h = D r / (|r| + 1e-8), then as above;
    # head weights lambda / (D + 1e-8) with log losses. Mixed-sign losses as the toy's.
    losses = [np.array([-1.0, -20.0, 0.5]), np.array([-1.5, -20.5, 0.25])]
    shift = np.zeros(3) if min_losses is None else np.array(min_losses)
    method = create("moco", n_tasks=3, log_losses=log_losses, min_losses=min_losses)
    unshifted = create("moco", n_tasks=3, log_losses=log_losses)
    y, lam = np.zeros_like(J3), np.full(3, 1 / 3)
    for t, (jac, values) in enumerate(zip([J3, J3[::-1] * 0.5], losses, strict=True), start=1):
        big_d = values - shift
        scale = 1 / (big_d + 1e-8) if log_losses else np.ones(3)
        r = jac * scale[:, None]
        h = big_d[:, None] * r / (np.linalg.norm(r, axis=1, keepdims=True) + 1e-8)
        y = y - 0.5 / math.sqrt(t) * (y - h)
        lam = _softmax(lam - 0.1 / math.sqrt(t) * (y @ y.T) @ lam)
        for m, inputs in ((method, values), (unshifted, big_d)):
            agg = m.aggregate(_t(jac.copy()), _t(inputs))
            np.testing.assert_allclose(agg.weights.numpy(), lam, rtol=1e-9)
            np.testing.assert_allclose(agg.update.numpy(), lam @ y, rtol=1e-9)
            np.testing.assert_allclose(agg.head_weights.numpy(), lam * scale, rtol=1e-9)


# -- SDMGrad ----------------------------------------------------------------------------------


def test_sdmgrad_first_steps_by_hand():
    # Xiao et al. 2023 / LibMTL: Gn = G / (mean_k |g_k|)^2; 20 SGD steps (lr 5, momentum 0.5,
    # buffer restarted each training step) on w with gradient Gn w + lamda Gn 1/K, each projected
    # onto the simplex; weights (w + lamda / K) / (1 + lamda), lamda = 0.3.
    method = create("sdmgrad", n_tasks=3)
    w = np.full(3, 1 / 3)
    for jac in (J3, J3 * np.array([[2.0], [1.0], [0.5]])):
        g = jac @ jac.T
        gn = g / (np.sqrt(np.diag(g)).mean() ** 2 + 1e-8)
        buf = None
        for _ in range(20):
            grad = gn @ w + 0.3 * gn @ np.full(3, 1 / 3)
            buf = grad if buf is None else 0.5 * buf + grad
            w = _simplex_projection(w - 5.0 * buf)
        agg = method.aggregate(_t(jac), _t(LOSSES3))
        expected = (w + 0.1) / 1.3
        np.testing.assert_allclose(agg.weights.numpy(), expected, rtol=1e-7, atol=1e-10)
        assert agg.weights.sum().item() == pytest.approx(1.0)
        g0 = jac.mean(axis=0)
        np.testing.assert_allclose(agg.update.numpy(), (w @ jac + 0.3 * g0) / 1.3, atol=1e-8)


# -- ExcessMTL --------------------------------------------------------------------------------


def test_excess_mtl_first_steps_by_hand():
    # He et al. 2024: S += g^2; e_k = sum_p g_kp^2 / sqrt(S_kp + 1e-7); first step: e0 = e and
    # c = 1; then c <- c exp(eta e / e0), renormalised to sum K (eta = 1e-2).
    method = create("excess_mtl", n_tasks=3)
    agg = method.aggregate(_t(J3), _t(LOSSES3))
    np.testing.assert_allclose(agg.weights.numpy(), np.ones(3))
    np.testing.assert_allclose(agg.update.numpy(), J3.sum(axis=0), rtol=1e-12)
    s = J3**2
    e0 = (J3**2 / np.sqrt(s + 1e-7)).sum(axis=1)
    jac2 = J3 * np.array([[0.5], [1.0], [2.0]])
    s = s + jac2**2
    e = (jac2**2 / np.sqrt(s + 1e-7)).sum(axis=1)
    c = np.exp(1e-2 * e / e0)
    c = 3 * c / c.sum()
    agg = method.aggregate(_t(jac2), _t(LOSSES3))
    np.testing.assert_allclose(agg.weights.numpy(), c, rtol=1e-10)
    np.testing.assert_allclose(agg.update.numpy(), c @ jac2, rtol=1e-10)


# -- robustness -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", NAMES)
def test_non_finite_jacobian_does_not_raise_and_counts_a_fallback(name, bad):
    method = create(name, n_tasks=3)
    method.on_epoch_start(1)
    method.aggregate(_t(J3), _t(LOSSES3))
    jac = J3.copy()
    jac[1, 2] = bad
    agg = method.aggregate(_t(jac), _t(LOSSES3))
    assert method.fallbacks == 1
    assert torch.isfinite(agg.weights).all() and torch.isfinite(agg.head_weights).all()
    # The method recovers on the next finite input.
    agg = method.aggregate(_t(J3), _t(LOSSES3))
    assert torch.isfinite(agg.update).all()


@pytest.mark.parametrize("name", [n for n in NAMES if create(n, n_tasks=2).needs == "gramian"])
def test_non_finite_gramian_does_not_raise_and_counts_a_fallback(name):
    method = create(name, n_tasks=3)
    method.on_epoch_start(1)
    gram = _t(J3 @ J3.T)
    method.weights(gram, _t(LOSSES3))
    gram[1, 1] = float("nan")
    w = method.weights(gram, _t(LOSSES3))
    assert method.fallbacks == 1 and torch.isfinite(w).all()
