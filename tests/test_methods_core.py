"""Golden values of the core methods (LS, LDC-MTL, FAMO, MGDA, DB-MTL) on small fixed inputs.

Every expected value is derived here from the method's formula (cited at each test), in float64
with plain Python / NumPy, never by calling the code under test a second time.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mtlbench.gradients import GradientEngine
from mtlbench.method import METHODS, StepContext, create
from mtlbench.methods._min_norm import min_norm_2, min_norm_element, project_to_simplex
from mtlbench.registry import ConfigError


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _sign(x: float) -> float:
    return float(x > 0) - float(x < 0)


# -- LS ---------------------------------------------------------------------------------------


def test_ls_is_the_sum_of_the_losses_with_unit_weights():
    losses = torch.tensor([0.5, 2.0, 1.5], requires_grad=True)
    out = create("ls", n_tasks=3).objective(losses, StepContext())
    assert out.loss.item() == pytest.approx(4.0)
    torch.testing.assert_close(out.weights, torch.ones(3))
    out.loss.backward()
    torch.testing.assert_close(losses.grad, torch.ones(3))


# -- LDC-MTL ----------------------------------------------------------------------------------

THETA = [0.3, -0.2, 1.0]
LOSSES = [0.5, 1.2, 0.8]


def _ldc_expected(theta, losses, *, tau, normalizer, lamb, activation="sigmoid"):
    """Objective and its gradients w.r.t. theta and the losses, derived by hand from
    L = sum w l / N(w) + lamb sum_i |a_i - a_{i+1}|, a = tau * l (ldc-mtl.md §1.2)."""
    k = len(theta)
    act = [max(t, 0.0) if activation == "relu_sigmoid" else t for t in theta]
    w = [_sigmoid(t) for t in act]
    dw = [
        wi * (1 - wi) * (1.0 if (activation == "sigmoid" or t > 0) else 0.0)
        for wi, t in zip(w, theta, strict=True)
    ]
    s = sum(w)
    wl = sum(wi * li for wi, li in zip(w, losses, strict=True))
    n = {"none": 1.0, "sum": s, "sum_detached": s}[normalizer]
    tau_v = w if tau == "w" else [1.0] * k
    a = [t * l for t, l in zip(tau_v, losses, strict=True)]
    signs = [_sign(a[i] - a[i + 1]) for i in range(k - 1)]
    dpen_da = [
        (signs[i] if i < k - 1 else 0.0) - (signs[i - 1] if i > 0 else 0.0) for i in range(k)
    ]
    loss = wl / n + lamb * sum(abs(a[i] - a[i + 1]) for i in range(k - 1))
    d_theta, d_losses = [], []
    for i in range(k):
        dweighted_dw = losses[i] / n - (wl / s**2 if normalizer == "sum" else 0.0)
        dpen_dw = dpen_da[i] * losses[i] if tau == "w" else 0.0
        d_theta.append(dw[i] * (dweighted_dw + lamb * dpen_dw))
        d_losses.append(w[i] / n + lamb * dpen_da[i] * tau_v[i])
    return loss, w, d_theta, d_losses


@pytest.mark.parametrize("tau", ["w", "one"])
@pytest.mark.parametrize("normalizer", ["none", "sum", "sum_detached"])
@pytest.mark.parametrize("activation", ["sigmoid", "relu_sigmoid"])
def test_ldc_mtl_objective_and_gradients_match_the_hand_derivation(tau, normalizer, activation):
    lamb = 0.3
    m = create(
        "ldc_mtl", n_tasks=3, tau=tau, normalizer=normalizer, activation=activation, lamb=lamb
    ).double()
    with torch.no_grad():
        m.theta.copy_(torch.tensor(THETA, dtype=torch.float64))
    losses = torch.tensor(LOSSES, dtype=torch.float64, requires_grad=True)
    out = m.objective(losses, StepContext())
    out.loss.backward()
    loss, w, d_theta, d_losses = _ldc_expected(
        THETA, LOSSES, tau=tau, normalizer=normalizer, lamb=lamb, activation=activation
    )
    assert out.loss.item() == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(out.weights.numpy(), w, rtol=1e-12)
    np.testing.assert_allclose(m.theta.grad.numpy(), d_theta, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(losses.grad.numpy(), d_losses, rtol=1e-10)


def test_ldc_mtl_defaults_are_the_celeba_configuration():
    m = create("ldc_mtl", n_tasks=40)
    torch.testing.assert_close(m.theta.detach(), torch.ones(40))
    assert (m.router, m.activation, m.normalization, m.tau, m.normalizer, m.lamb) == (
        "vector",
        "sigmoid",
        "none",
        "w",
        "sum_detached",
        0.01,
    )
    celeba = {
        k: v
        for k, v in METHODS.get("ldc_mtl").benchmark_defaults["celeba"].items()
        if k != "protocol"
    }
    assert {k: METHODS.defaults("ldc_mtl")[k] for k in celeba} == celeba


def test_ldc_mtl_rescaled_uses_the_first_batch_ratios_for_good():
    # NYU-v2 code: r = L0 / min(L0) from epoch 0, batch 0; l~ = l / r afterwards.
    m = create(
        "ldc_mtl", n_tasks=3, normalization="rescaled", normalizer="none", tau="one", lamb=0.0
    ).double()
    m.on_epoch_start(0)
    first = torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64)
    m.objective(first, StepContext())
    m.on_epoch_start(1)  # no re-capture for "rescaled"
    losses = torch.tensor(LOSSES, dtype=torch.float64)
    w = _sigmoid(1.0)
    r = [4.0, 1.0, 2.0]
    expected = sum(w * l / ri for l, ri in zip(LOSSES, r, strict=True))
    assert m.objective(losses, StepContext()).loss.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("reset", ["epoch", "never"])
def test_ldc_mtl_log_normalization_and_its_reset(reset):
    # QM9 code: l~ = log(l / l0), l0 = detached losses of the first batch of each epoch.
    lamb = 0.05
    m = create("ldc_mtl", n_tasks=3, normalization="log", log_reset=reset, lamb=lamb).double()
    m.on_epoch_start(0)
    l0 = torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64, requires_grad=True)
    out = m.objective(l0, StepContext())
    assert out.loss.item() == 0.0  # log(l0 / l0) = 0 everywhere
    out.loss.backward()
    w = _sigmoid(1.0)
    # d/dl of w log(l / sg(l0)) / sg(3 w) = 1 / (3 l); the penalty is at its kink, sign(0) = 0.
    np.testing.assert_allclose(l0.grad.numpy(), [1 / (3 * 2.0), 1 / (3 * 0.5), 1 / 3.0])
    losses = torch.tensor(LOSSES, dtype=torch.float64)
    lt = [math.log(a / b) for a, b in zip(LOSSES, [2.0, 0.5, 1.0], strict=True)]
    expected, *_ = _ldc_expected([1.0] * 3, lt, tau="w", normalizer="sum_detached", lamb=lamb)
    assert m.objective(losses, StepContext()).loss.item() == pytest.approx(expected, rel=1e-12)
    m.on_epoch_start(1)
    again = m.objective(losses, StepContext()).loss.item()
    if reset == "epoch":
        assert again == 0.0  # the reference is now these losses
    else:
        assert again == pytest.approx(expected, rel=1e-12)
    assert w > 0


def test_ldc_mtl_linear_router_pools_space_then_batch_then_softmax_and_clamps():
    # NYU-v2 / Cityscapes code: GAP per image, mean over the batch, Linear, softmax, clamp.
    torch.manual_seed(0)
    m = create(
        "ldc_mtl", n_tasks=3, feature_dim=4, router="linear", normalizer="none", tau="one", lamb=0.1
    ).double()
    weight = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, -3.0]])
    bias = torch.tensor([0.5, 0.0, -0.5])
    with torch.no_grad():
        m.router_net.weight.copy_(weight)
        m.router_net.bias.copy_(bias)
    feats = torch.rand(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    f = feats.detach().numpy().mean(axis=(2, 3)).mean(axis=0)
    logits = weight.double().numpy() @ f + bias.double().numpy()
    w = np.clip(np.exp(logits) / np.exp(logits).sum(), 0.2, 0.8)
    out = m.objective(torch.tensor(LOSSES, dtype=torch.float64), StepContext(features=feats))
    np.testing.assert_allclose(out.weights.numpy(), w, rtol=1e-12)
    assert (w == 0.2).any() or (w == 0.8).any()  # the clamp is exercised
    expected = float(w @ np.array(LOSSES)) + 0.1 * (abs(0.5 - 1.2) + abs(1.2 - 0.8))
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    out.loss.backward()  # the features are not detached: the router trains the backbone too
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    # Flat (B, D) features (graph, MLP representations) are used as they are.
    flat = feats.detach().mean(dim=(2, 3))
    out2 = m.objective(torch.tensor(LOSSES, dtype=torch.float64), StepContext(features=flat))
    torch.testing.assert_close(out2.weights, out.weights)


def test_ldc_mtl_uniform_init_is_drawn_from_the_global_rng():
    torch.manual_seed(7)
    m = create("ldc_mtl", n_tasks=11, init_low=0.2, init_high=1.0, activation="relu_sigmoid")
    torch.manual_seed(7)
    torch.testing.assert_close(m.theta.detach(), torch.rand(11) * 0.8 + 0.2)


def test_ldc_mtl_configuration_errors():
    with pytest.raises(ConfigError, match="feature_dim"):
        create("ldc_mtl", n_tasks=2, router="linear")
    with pytest.raises(ConfigError, match="init_low"):
        create("ldc_mtl", n_tasks=2, init_low=1.0, init_high=0.5)
    m = create("ldc_mtl", n_tasks=2, feature_dim=3, router="linear")
    with pytest.raises(ValueError, match="ctx.features"):
        m.objective(torch.ones(2), StepContext())


def test_ldc_mtl_router_is_a_method_parameter_at_the_model_lr():
    m = create("ldc_mtl", n_tasks=3)
    groups = m.parameter_groups()
    assert len(groups) == 1 and "lr" not in groups[0]
    assert groups[0]["params"][0] is m.theta


def test_ldc_mtl_official_configurations():
    d = METHODS.get("ldc_mtl").benchmark_defaults
    assert d["nyuv2"]["router"] == "linear" and d["nyuv2"]["normalization"] == "rescaled"
    assert d["nyuv2"]["normalizer"] == "sum" and d["nyuv2"]["lamb"] == 0.05
    assert d["nyuv2"]["protocol"]["lr"] == 8e-5
    assert d["cityscapes"]["tau"] == "one" and d["cityscapes"]["normalizer"] == "none"
    assert d["cityscapes"]["lamb"] == 0.1 and d["cityscapes"]["protocol"]["lr"] == 3e-4
    assert d["celeba"]["protocol"] == {"lr": 1e-3, "scheduler": "step:3:0.3"}
    assert d["qm9"]["activation"] == "relu_sigmoid" and d["qm9"]["normalization"] == "log"
    assert (d["qm9"]["init_low"], d["qm9"]["init_high"], d["qm9"]["lamb"]) == (0.2, 1.0, 0.05)
    assert d["qm9"]["protocol"] == {"lr": 1e-3, "scheduler": "plateau:0.7:5:1e-5"}
    assert d["toy"]["normalization"] == "none"  # the toy's losses are negative


# -- FAMO -------------------------------------------------------------------------------------


def _tiny_model(seed: int = 0, k: int = 3):
    torch.manual_seed(seed)
    shared = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
    heads = nn.ModuleList([nn.Linear(4, 1) for _ in range(k)])
    x, y = torch.randn(6, 3), torch.randn(6, k)

    def losses():
        rep = shared(x)
        return torch.stack(
            [((h(rep).squeeze(1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)]
        )

    return shared, heads, losses


def test_famo_surrogate_gradient_is_the_normalised_log_loss_gradient():
    # FAMO code: grad of sum z log D / sg(c) = sum (z_i / c) grad l_i / D_i, c = sum z / D.
    shared, heads, losses_fn = _tiny_model()
    m = create("famo", n_tasks=3)
    xi = [0.2, -0.1, 0.4]
    m.logits.copy_(torch.tensor(xi))
    losses = losses_fn()
    params = list(shared.parameters()) + list(heads.parameters())
    per_task = [torch.autograd.grad(l, params, retain_graph=True) for l in losses]
    out = m.objective(losses, StepContext())
    got = torch.autograd.grad(out.loss, params)
    ez = [math.exp(v) for v in xi]
    z = [e / sum(ez) for e in ez]
    d = [float(l) + 1e-8 for l in losses.detach()]
    c = sum(zi / di for zi, di in zip(z, d, strict=True))
    coef = [zi / (c * di) for zi, di in zip(z, d, strict=True)]
    assert sum(coef) == pytest.approx(1.0)
    np.testing.assert_allclose(out.weights.numpy(), coef, rtol=1e-5)
    for j, g in enumerate(got):
        expected = sum(coef[i] * per_task[i][j] for i in range(3))
        torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-7)
    assert out.loss.item() == pytest.approx(
        sum(zi * math.log(di) for zi, di in zip(z, d, strict=True)) / c, rel=1e-5
    )


def test_famo_logit_update_after_one_step_is_one_adam_step():
    # delta = log(l_prev + eps) - log(l_new + eps); grad = J_softmax^T delta = z (delta - z.delta);
    # the first Adam step (m^ = g, v^ = g^2) moves xi by -lr g / (|g| + 1e-8).
    m = create("famo", n_tasks=3, gamma=0.01, w_lr=0.025)
    prev, new = [1.0, 2.0, 0.5], [0.9, 1.0, 0.5]
    m.objective(torch.tensor(prev), StepContext())
    m.after_step(torch.tensor(new))
    delta = [math.log(a + 1e-8) - math.log(b + 1e-8) for a, b in zip(prev, new, strict=True)]
    z = [1 / 3] * 3
    zd = sum(zi * di for zi, di in zip(z, delta, strict=True))
    g = [zi * (di - zd) for zi, di in zip(z, delta, strict=True)]  # + gamma * xi = 0 at start
    expected = [-0.025 * gi / (abs(gi) + 1e-8) for gi in g]
    np.testing.assert_allclose(m.logits.numpy(), expected, rtol=1e-5, atol=1e-8)


def test_famo_logit_updates_match_torch_adam_with_weight_decay():
    # The reference: xi = leaf tensor, Adam([xi], lr=w_lr, weight_decay=gamma), grad = VJP.
    gamma, lr = 0.05, 0.025
    m = create("famo", n_tasks=3, gamma=gamma, w_lr=lr, min_losses=[0.1, 0.0, -1.0])
    xi = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([xi], lr=lr, weight_decay=gamma)
    shift = torch.tensor([0.1, 0.0, -1.0])
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        prev = torch.rand(3, generator=g) + 0.5
        new = prev * (0.7 + 0.5 * torch.rand(3, generator=g))
        m.objective(prev, StepContext())
        m.after_step(new)
        delta = (prev - shift + 1e-8).log() - (new - shift + 1e-8).log()
        (d,) = torch.autograd.grad(torch.softmax(xi, -1), xi, grad_outputs=delta)
        opt.zero_grad()
        xi.grad = d
        opt.step()
        torch.testing.assert_close(m.logits, xi.detach(), rtol=1e-6, atol=1e-7)


def test_famo_min_losses_shift_and_misuse():
    m = create("famo", n_tasks=2, min_losses=[-2.1, -21.0])
    losses = torch.tensor([-1.0, -15.0])
    out = m.objective(losses, StepContext())
    d = [1.1 + 1e-8, 6.0 + 1e-8]
    c = 0.5 / d[0] + 0.5 / d[1]
    assert out.loss.item() == pytest.approx((0.5 * math.log(d[0]) + 0.5 * math.log(d[1])) / c)
    with pytest.raises(ValueError, match="min_losses"):
        create("famo", n_tasks=3, min_losses=[0.0])
    fresh = create("famo", n_tasks=2)
    with pytest.raises(RuntimeError, match="objective"):
        fresh.after_step(torch.ones(2))
    assert fresh.parameter_groups() == []  # the logits are not the trainer's to step


# -- MGDA and the min-norm solver --------------------------------------------------------------


def _kkt(gram: np.ndarray, w: np.ndarray, tol: float = 1e-6) -> None:
    """Optimality of min_{w in simplex} w^T G w: (G w)_k >= w^T G w for all k, with equality
    where w_k > 0 (the gradient of every active task has the same projection on d = J^T w)."""
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    gw, val = gram @ w, w @ gram @ w
    scale = np.abs(gram).max()
    assert (gw >= val - tol * scale).all()
    assert np.allclose(gw[w > 1e-6], val, atol=tol * scale)


def test_min_norm_2_closed_form():
    # |c x1 + (1 - c) x2|^2 is minimised at c = (g22 - g12) / (g11 + g22 - 2 g12), clipped.
    assert min_norm_2(1.0, 0.0, 4.0) == pytest.approx((0.8, 0.8))
    assert min_norm_2(1.0, 2.0, 4.0) == (1.0, 1.0)  # x2 = 2 x1: the end at x1
    assert min_norm_2(4.0, 2.0, 1.0) == (0.0, 1.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x1, x2 = rng.normal(size=4), rng.normal(size=4)
        c, cost = min_norm_2(x1 @ x1, x1 @ x2, x2 @ x2)
        grid = np.linspace(0, 1, 20001)
        norms = [np.sum((t * x1 + (1 - t) * x2) ** 2) for t in grid]
        assert cost == pytest.approx(np.sum((c * x1 + (1 - c) * x2) ** 2))
        assert cost <= min(norms) + 1e-12


def test_mgda_two_tasks_golden():
    jac = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    agg = create("mgda", n_tasks=2).aggregate(jac, torch.ones(2))
    torch.testing.assert_close(agg.weights, torch.tensor([0.8, 0.2]))
    torch.testing.assert_close(agg.update, torch.tensor([0.8, 0.4]))
    torch.testing.assert_close(agg.head_weights, agg.weights)


def test_mgda_three_tasks_known_solutions():
    # Orthogonal gradients of norms s_k: w_k proportional to 1 / s_k^2.
    jac = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    w = create("mgda", n_tasks=3).aggregate(jac, torch.ones(3)).weights
    torch.testing.assert_close(
        w, torch.tensor([16.0, 4.0, 1.0], dtype=torch.float64) / 21, rtol=0, atol=1e-6
    )
    # g3 = 2 (g1 + g2) lies beyond the segment [g1, g2]: it gets no weight.
    jac = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
    w = create("mgda", n_tasks=3).aggregate(jac, torch.ones(3)).weights
    torch.testing.assert_close(
        w, torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("seed", range(5))
def test_min_norm_element_is_optimal_on_random_gramians(seed):
    rng = np.random.default_rng(seed)
    jac = rng.normal(size=(3, 4)) + rng.normal(size=(1, 4))  # correlated rows
    gram = jac @ jac.T
    res = min_norm_element(torch.from_numpy(gram))
    w = res.weights.numpy()
    assert res.converged
    _kkt(gram, w)
    # Dense check: no point of a 1/300 grid on the simplex does better.
    n = 300
    a, b = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = a + b <= n
    grid = np.stack([a[keep], b[keep], n - a[keep] - b[keep]], axis=1) / n
    values = np.einsum("ij,jk,ik->i", grid, gram, grid)
    assert res.norm2 <= values.min() + 1e-10
    assert res.norm2 == pytest.approx(w @ gram @ w)


@pytest.mark.parametrize("k", [4, 6, 10])
def test_min_norm_element_kkt_for_more_tasks(k):
    rng = np.random.default_rng(k)
    jac = rng.normal(size=(k, 8)) + 0.5 * rng.normal(size=(1, 8))
    gram = jac @ jac.T
    _kkt(gram, min_norm_element(gram).weights.numpy(), tol=1e-4)


def test_min_norm_element_exact_where_the_reference_iterations_stall():
    # Orthogonal gradients, seven of norm 1 and one of norm 100: the KKT conditions give
    # G w = c 1, so w_k = (1 / s_k^2) / sum_j (1 / s_j^2). The reference's iterations
    # (MinNormSolver.find_min_norm_element, nash-mtl@fecac5c methods/min_norm_solvers.py) need
    # 3,254 steps here and the earlier port of them, capped at 250, was 0.26 off.
    norms = np.array([1.0] * 7 + [100.0])
    expected = (1.0 / norms**2) / np.sum(1.0 / norms**2)
    res = min_norm_element(np.diag(norms**2))
    np.testing.assert_allclose(res.weights.numpy(), expected, rtol=0, atol=1e-12)
    assert res.norm2 == pytest.approx(1.0 / np.sum(1.0 / norms**2), rel=1e-12)


def test_min_norm_element_origin_in_the_hull():
    # g1 = -g2: the origin is the midpoint of [g1, g2], so d* = 0 with w = (1/2, 1/2, 0).
    jac = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    res = min_norm_element(jac @ jac.T)
    np.testing.assert_allclose(res.weights.numpy(), [0.5, 0.5, 0.0], atol=1e-12)
    assert res.norm2 == pytest.approx(0.0, abs=1e-12)


def test_mgda_conflicts_with_no_task_on_spread_norms():
    # Conflicting gradients with norms spread over two decades, where the reference's
    # iterations stop short: the min-norm point d* has g_k . d* >= |d*|^2 for every task.
    rng = np.random.default_rng(18)
    for k in (5, 8, 10):
        jac = rng.normal(size=(k, 3 * k + 7))
        jac = (jac - 0.8 * jac.mean(0)) * np.exp(rng.normal(size=(k, 1)))
        gram = jac @ jac.T
        res = min_norm_element(gram)
        _kkt(gram, res.weights.numpy(), tol=1e-10)
        d = res.weights.numpy() @ jac
        assert (jac @ d >= (d @ d) * (1 - 1e-9)).all()


def test_project_to_simplex():
    np.testing.assert_allclose(project_to_simplex(np.array([0.5, 0.5, 0.5])), [1 / 3] * 3)
    np.testing.assert_allclose(project_to_simplex(np.array([2.0, 0.0, 0.0])), [1, 0, 0])
    np.testing.assert_allclose(project_to_simplex(np.array([0.6, 0.5, -1.0])), [0.55, 0.45, 0])
    rng = np.random.default_rng(1)
    for _ in range(10):
        y = rng.normal(size=5)
        p = project_to_simplex(y)
        # Projection optimality: (y - p) . (q - p) <= 0 for every vertex q of the simplex.
        assert p.min() >= 0 and p.sum() == pytest.approx(1.0)
        assert ((np.eye(5) - p) @ (y - p) <= 1e-12).all()


def test_mgda_normalizations_enter_the_solve_only():
    # gradient_normalizers: norm |g|, loss l, loss+ l |g|; weights apply to the raw gradients.
    jac = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    losses = torch.tensor([2.0, 1.0], dtype=torch.float64)
    cases = {
        "none": 0.8,  # G = diag(1, 4)
        "norm": 0.5,  # G~ = I
        "loss": 4.0 / 4.25,  # G~ = diag(1/4, 4): c = 4 / (1/4 + 4)
        "loss+": 0.8,  # n = (2, 2): G~ = diag(1/4, 1)
    }
    for normalization, c in cases.items():
        m = create("mgda", n_tasks=2, normalization=normalization)
        agg = m.aggregate(jac, losses)
        torch.testing.assert_close(agg.weights, torch.tensor([c, 1 - c], dtype=torch.float64))
        torch.testing.assert_close(agg.update, torch.tensor([c, 2 * (1 - c)], dtype=torch.float64))
        assert m.non_conflicting == (normalization == "none")


def test_log_mgda_is_the_min_norm_point_of_the_log_loss_gradients():
    jac = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    losses = torch.tensor([0.5, 4.0], dtype=torch.float64)
    agg = create("mgda", n_tasks=2, log_losses=True).aggregate(jac, losses)
    rows = jac / losses[:, None]  # grad log l_k = g_k / l_k: (2, 0) and (0, 0.5)
    c, _ = min_norm_2(4.0, 0.0, 0.25)
    torch.testing.assert_close(agg.update, c * rows[0] + (1 - c) * rows[1])


def test_mgda_falls_back_to_the_last_weights_on_a_bad_gramian():
    m = create("mgda", n_tasks=2)
    bad = torch.tensor([[float("nan"), 0.0], [0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(m.weights(bad, torch.ones(2)), torch.tensor([0.5, 0.5]).double())
    assert m.fallbacks == 1
    good = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    m.weights(good, torch.ones(2))
    inf = torch.tensor([[float("inf"), 0.0], [0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(m.weights(inf, torch.ones(2)), torch.tensor([0.8, 0.2]).double())
    assert m.fallbacks == 2
    # A zero loss under "loss" normalisation: G / 0 is sanitised to the float64 limit, the
    # iterations overflow, and the solve falls back instead of crashing.
    lossy = create("mgda", n_tasks=3, normalization="loss")
    agg = lossy.aggregate(torch.randn(3, 5), torch.tensor([0.0, 2.0, 3.0]))
    assert torch.isfinite(agg.update).all() and lossy.fallbacks == 1
    fresh = create("mgda", n_tasks=2)
    fresh.load_state_dict(m.state_dict())  # the last weights survive a checkpoint
    torch.testing.assert_close(fresh.weights(bad, torch.ones(2)), torch.tensor([0.8, 0.2]).double())


# -- DB-MTL -----------------------------------------------------------------------------------


def _db_expected(jacs, losses, beta=0.9, sigma=0.0, shift=None):
    """LibMTL DB_MTL.backward by hand: EMA from 0 without bias correction, max-norm scaling."""
    ema = np.zeros_like(jacs[0])
    out = []
    for t, (jac, loss) in enumerate(zip(jacs, losses, strict=True), start=1):
        s = np.zeros(len(loss)) if shift is None else np.asarray(shift)
        g = jac / (np.asarray(loss) - s + 1e-8)[:, None]
        b = beta / t**sigma
        ema = b * ema + (1 - b) * g
        norms = np.linalg.norm(ema, axis=1)
        alpha = norms.max() / (norms + 1e-8)
        out.append((alpha @ ema, alpha, 1 / (np.asarray(loss) - s + 1e-8)))
    return out


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_db_mtl_first_two_steps(sigma):
    jacs = [
        np.array([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]]),
        np.array([[0.5, 0.0, 1.0], [2.0, 1.0, -1.0]]),
    ]
    losses = [[0.5, 2.0], [0.25, 1.0]]
    m = create("db_mtl", n_tasks=2, beta_sigma=sigma)
    expected = _db_expected(jacs, losses, sigma=sigma)
    for jac, loss, (update, alpha, head) in zip(jacs, losses, expected, strict=True):
        agg = m.aggregate(torch.tensor(jac), torch.tensor(loss, dtype=torch.float64))
        np.testing.assert_allclose(agg.update.numpy(), update, rtol=1e-12)
        np.testing.assert_allclose(agg.weights.numpy(), alpha, rtol=1e-12)
        np.testing.assert_allclose(agg.head_weights.numpy(), head, rtol=1e-12)
    assert int(m.step) == 2
    # Step 1 alone: the EMA is 0.1 g (no bias correction).
    g1 = jacs[0] / np.array([[0.5], [2.0]])
    norms = np.linalg.norm(g1, axis=1)
    np.testing.assert_allclose(expected[0][0], (norms.max() / (norms + 1e-8)) @ (0.1 * g1))


def test_db_mtl_min_losses_shift():
    jac = np.array([[1.0, 0.0], [0.0, 1.0]])
    loss = [-1.0, -15.0]
    m = create("db_mtl", n_tasks=2, min_losses=[-2.1, -21.0])
    ((update, alpha, head),) = _db_expected([jac], [loss], shift=[-2.1, -21.0])
    agg = m.aggregate(torch.tensor(jac), torch.tensor(loss, dtype=torch.float64))
    np.testing.assert_allclose(agg.update.numpy(), update, rtol=1e-12)
    np.testing.assert_allclose(agg.head_weights.numpy(), head, rtol=1e-12)
    with pytest.raises(ValueError, match="min_losses"):
        create("db_mtl", n_tasks=2, min_losses=[0.0])


def test_db_mtl_state_survives_a_checkpoint_and_rejects_a_new_shape():
    m = create("db_mtl", n_tasks=2)
    m.aggregate(torch.randn(2, 5), torch.ones(2))
    fresh = create("db_mtl", n_tasks=2)
    fresh.load_state_dict(m.state_dict())
    assert int(fresh.step) == 1
    torch.testing.assert_close(fresh.ema, m.ema)
    with pytest.raises(ValueError, match="shape"):
        fresh.aggregate(torch.randn(2, 4), torch.ones(2))


# -- end to end through the gradient engine ---------------------------------------------------


def _engine_run(name: str, **hparams):
    shared, heads, losses_fn = _tiny_model(seed=3, k=2)
    engine = GradientEngine(list(shared.parameters()), list(heads.parameters()))
    method = create(name, n_tasks=2, **hparams)
    losses = losses_fn()
    result = engine.backward(method, losses, StepContext())
    shared_grad = torch.cat([p.grad.reshape(-1) for p in shared.parameters()])
    head_grad = torch.cat([p.grad.reshape(-1) for p in heads.parameters()])
    # The hand side: per-task rows of J and head gradients, by separate backward passes.
    shared2, heads2, losses_fn2 = _tiny_model(seed=3, k=2)
    losses2 = losses_fn2()
    rows = torch.stack(
        [
            torch.cat(
                [
                    g.reshape(-1)
                    for g in torch.autograd.grad(l, list(shared2.parameters()), retain_graph=True)
                ]
            )
            for l in losses2
        ]
    )
    head_rows = torch.stack(
        [
            torch.cat(
                [
                    g.reshape(-1)
                    for g in torch.autograd.grad(l, list(heads2.parameters()), retain_graph=True)
                ]
            )
            for l in losses2
        ]
    )
    return result, shared_grad, head_grad, rows.double(), head_rows.double(), losses2.detach()


def test_engine_end_to_end_mgda():
    result, shared_grad, head_grad, rows, head_rows, losses = _engine_run("mgda")
    gram = (rows @ rows.T).numpy()
    c, _ = min_norm_2(gram[0, 0], gram[0, 1], gram[1, 1])
    w = 2 * torch.tensor([c, 1 - c], dtype=torch.float64)  # reference scale: weights sum to K
    torch.testing.assert_close(result.weights.double(), w, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(shared_grad.double(), w @ rows, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(head_grad.double(), w @ head_rows, rtol=1e-4, atol=1e-6)


def test_engine_end_to_end_db_mtl():
    result, shared_grad, head_grad, rows, head_rows, losses = _engine_run("db_mtl")
    ((update, alpha, head),) = _db_expected([rows.numpy()], [losses.double().numpy()])
    np.testing.assert_allclose(shared_grad.double().numpy(), update, rtol=1e-4, atol=1e-7)
    # Heads: the unweighted log losses, grad log(l_k + 1e-8) = grad l_k / (l_k + 1e-8).
    np.testing.assert_allclose(
        head_grad.double().numpy(), head @ head_rows.numpy(), rtol=1e-4, atol=1e-7
    )
    np.testing.assert_allclose(result.weights.numpy(), alpha, rtol=1e-5)


def test_engine_end_to_end_ldc_mtl():
    # Default (CelebA) configuration, theta = 1: dL/dl_i from the hand derivation above; the
    # router's theta gets its gradient from the same single backward pass.
    shared, heads, losses_fn = _tiny_model(seed=3, k=2)
    engine = GradientEngine(list(shared.parameters()), list(heads.parameters()))
    method = create("ldc_mtl", n_tasks=2)
    result = engine.backward(method, losses_fn(), StepContext())
    _, _, rows, head_rows, losses = _engine_run("ls")[1:]
    loss_values = losses.double().tolist()
    _, w, d_theta, d_losses = _ldc_expected(
        [1.0, 1.0], loss_values, tau="w", normalizer="sum_detached", lamb=0.01
    )
    shared_grad = torch.cat([p.grad.reshape(-1) for p in shared.parameters()]).double()
    torch.testing.assert_close(
        shared_grad, torch.tensor(d_losses).double() @ rows, rtol=1e-4, atol=1e-7
    )
    np.testing.assert_allclose(method.theta.grad.numpy(), d_theta, rtol=1e-4)
    np.testing.assert_allclose(result.weights.numpy(), w, rtol=1e-6)


def test_engine_end_to_end_famo_and_ls():
    result, shared_grad, head_grad, rows, head_rows, losses = _engine_run("famo")
    coef = (1 / (losses.double() + 1e-8)) / (1 / (losses.double() + 1e-8)).sum()  # z uniform
    torch.testing.assert_close(shared_grad.double(), coef @ rows, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(result.weights.double(), coef, rtol=1e-5, atol=1e-7)
    result, shared_grad, head_grad, rows, head_rows, losses = _engine_run("ls")
    torch.testing.assert_close(shared_grad.double(), rows.sum(0), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(head_grad.double(), head_rows.sum(0), rtol=1e-4, atol=1e-7)


def test_docs_check_table_has_a_row_for_every_method():
    # docs/methods.md "How each method is checked": one row per registered method.
    from pathlib import Path

    from mtlbench.method import names

    text = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text()
    table = text.split("## How each method is checked", 1)[1]
    rows = {
        line.split("|")[1].strip().strip("`") for line in table.splitlines() if line[:3] == "| `"
    }
    assert set(names()) <= rows, sorted(set(names()) - rows)
