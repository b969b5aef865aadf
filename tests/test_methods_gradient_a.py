"""Golden values of the gradient methods PCGrad, GradDrop, CAGrad and IMTL-G.

Every expected value is derived here from the method's formula (cited at each test), in float64
with plain Python / NumPy / explicit vector operations, never by calling the code under test a
second time.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from mtlbench.gradients import GradientEngine
from mtlbench.method import StepContext, create, scale_factor
from mtlbench.methods.cagrad import cagrad_objective
from mtlbench.methods.graddrop import sign_dropout
from mtlbench.methods.pcgrad import pcgrad_coefficients


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _random_problem(k: int, p: int, seed: int, conflict: float = 0.8):
    g = torch.Generator().manual_seed(seed)
    jac = torch.randn(k, p, generator=g, dtype=torch.float64)
    jac = jac - conflict * jac.mean(0)
    losses = 0.5 + torch.rand(k, generator=g, dtype=torch.float64)
    return jac, losses


# -- PCGrad -----------------------------------------------------------------------------------


def test_pcgrad_two_conflicting_gradients_by_hand():
    # g1 = (1, 0), g2 = (-1, 1): <g1, g2> = -1 < 0.
    # g1' = g1 - (-1 / |g2|^2) g2 = (1, 0) + (-1, 1) / 2 = (0.5, 0.5)
    # g2' = g2 - (-1 / |g1|^2) g1 = (-1, 1) + (1, 0) = (0, 1)
    # (projecting a gradient on itself first changes nothing, so both orders agree)
    jac = _t([[1.0, 0.0], [-1.0, 1.0]])
    for order in itertools.product(itertools.permutations(range(2)), repeat=2):
        coeffs = pcgrad_coefficients(jac @ jac.T, torch.tensor(order))
        torch.testing.assert_close(coeffs @ jac, _t([[0.5, 0.5], [0.0, 1.0]]))
    method = create("pcgrad", n_tasks=2)
    torch.manual_seed(0)
    agg = method.aggregate(jac, _t([1.0, 1.0]))
    torch.testing.assert_close(agg.update, _t([0.5, 1.5]))  # "sum" of the projections
    # 1^T C with C = [[1, 0.5], [1, 1]] (g1' = g1 + g2 / 2, g2' = g1 + g2)
    torch.testing.assert_close(agg.weights, _t([2.0, 1.5]))
    torch.testing.assert_close(agg.head_weights, _t([1.0, 1.0]))


def _surgery(jac: torch.Tensor, orders) -> torch.Tensor:
    """PCGrad with explicit vectors (Yu et al. 2020, Algorithm 1, nash-mtl ordering): for each
    i, over j in orders[i]: if <g'_i, g_j> < 0, g'_i -= <g'_i, g_j> / |g_j|^2 g_j."""
    out = []
    for i in range(jac.shape[0]):
        gi = jac[i].clone()
        for j in orders[i]:
            dot = float(gi @ jac[j])
            if dot < 0:
                gi = gi - dot / float(jac[j] @ jac[j]) * jac[j]
        out.append(gi)
    return torch.stack(out)


def test_pcgrad_order_matters_and_every_order_matches_explicit_surgery():
    # Three 2-D gradients where task 0 conflicts with both others: the order changes g'_0.
    jac = _t([[1.0, 0.2], [-1.0, 1.0], [-0.5, -1.0]])
    gram = jac @ jac.T
    results = set()
    for orders in itertools.product(itertools.permutations(range(3)), repeat=3):
        coeffs = pcgrad_coefficients(gram, torch.tensor(orders))
        torch.testing.assert_close(coeffs @ jac, _surgery(jac, orders))
        results.add(tuple(round(v, 9) for v in (coeffs @ jac)[0].tolist()))
    assert len(results) > 1


def test_pcgrad_draws_its_orders_from_torch_global_generator():
    jac, losses = _random_problem(4, 9, seed=1)
    method = create("pcgrad", n_tasks=4)
    torch.manual_seed(7)
    agg = method.aggregate(jac, losses)
    torch.manual_seed(7)
    orders = [torch.randperm(4).tolist() for _ in range(4)]
    torch.testing.assert_close(agg.update, _surgery(jac, orders).sum(0))
    torch.testing.assert_close(agg.update, agg.weights @ jac)


def test_pcgrad_leaves_non_conflicting_gradients_alone():
    jac = _t([[1.0, 0.5, 0.0], [0.2, 1.0, 0.3], [0.0, 0.1, 2.0]])
    torch.manual_seed(0)
    agg = create("pcgrad", n_tasks=3).aggregate(jac, _t([1.0, 1.0, 1.0]))
    torch.testing.assert_close(agg.update, jac.sum(0))
    torch.testing.assert_close(agg.weights, _t([1.0, 1.0, 1.0]))


def test_pcgrad_log_losses_projects_the_log_loss_gradients():
    # grad log l_k = g_k / l_k; the heads get the gradient of sum log l (weights 1 / l).
    jac, losses = _random_problem(3, 6, seed=2)
    torch.manual_seed(3)
    agg = create("pcgrad", n_tasks=3, log_losses=True).aggregate(jac, losses)
    torch.manual_seed(3)
    orders = [torch.randperm(3).tolist() for _ in range(3)]
    torch.testing.assert_close(agg.update, _surgery(jac / losses[:, None], orders).sum(0))
    torch.testing.assert_close(agg.head_weights, 1.0 / (losses + 1e-8))


# -- GradDrop ---------------------------------------------------------------------------------


def test_graddrop_masks_with_a_fixed_uniform_draw():
    # Per coordinate: P = (1 + sum g / (sum |g| + 1e-8)) / 2, keep g_k if (P > U and g_k > 0)
    # or (P < U and g_k < 0) (Chen et al. 2020, Eq. 1-2; the nash-mtl / FAMO variant).
    jac = _t([[1.0, -2.0, 0.5, 0.0], [-3.0, -1.0, 0.5, 2.0], [1.0, 1.0, -1.0, -2.0]])
    uniform = _t([0.1, 0.5, 0.9, 0.5])
    expected_keep = []
    for k in range(3):
        row = []
        for j in range(4):
            col = [jac[t, j].item() for t in range(3)]
            purity = 0.5 * (1 + sum(col) / (sum(abs(v) for v in col) + 1e-8))
            u, g = uniform[j].item(), col[k]
            row.append((purity > u and g > 0) or (purity < u and g < 0))
        expected_keep.append(row)
    # column 0: P = 0.5 (1 - 1/5) = 0.4 > 0.1: positives kept -> rows 0 and 2.
    assert [r[0] for r in expected_keep] == [True, False, True]
    masked, keep = sign_dropout(jac, uniform)
    assert keep.tolist() == expected_keep
    torch.testing.assert_close(masked, jac * _t(expected_keep))
    # leak lets a fraction of the dropped gradients through.
    masked_leak, _ = sign_dropout(jac, uniform, leak=0.25)
    torch.testing.assert_close(masked_leak, jac * (0.25 + 0.75 * _t(expected_keep)))


def test_graddrop_update_is_the_mean_of_masked_gradients_times_k_in_the_reference():
    jac, losses = _random_problem(3, 50, seed=4)
    method = create("graddrop", n_tasks=3)
    torch.manual_seed(11)
    agg = method.aggregate(jac, losses)
    torch.manual_seed(11)
    uniform = torch.rand(50, dtype=torch.float64)
    masked, _ = sign_dropout(jac, uniform)
    torch.testing.assert_close(agg.update, masked.mean(0))
    kept = (masked * jac).sum(1) / (jac * jac).sum(1)
    torch.testing.assert_close(agg.weights, kept / 3)
    torch.testing.assert_close(agg.head_weights, torch.full((3,), 1 / 3, dtype=torch.float64))
    # The reference (nash-mtl / FAMO) multiplies the mean by K.
    assert scale_factor(method, "reference") == 3.0


def test_graddrop_keeps_coordinates_where_all_tasks_agree():
    # All positive: P = 1 > U; all negative: P = 0 < U; everything is kept for U in (0, 1).
    jac = _t([[1.0, -1.0, 2.0], [3.0, -2.0, 0.5]])
    torch.manual_seed(0)
    agg = create("graddrop", n_tasks=2).aggregate(jac, _t([1.0, 1.0]))
    torch.testing.assert_close(agg.update, jac.mean(0))


# -- CAGrad -----------------------------------------------------------------------------------


def _cagrad_direction(jac: torch.Tensor, w: np.ndarray, c: float) -> torch.Tensor:
    """d = g0 + c |g0| g_w / |g_w| (Liu et al. 2021, Eq. 4 / Algorithm 1), before rescaling."""
    g0 = jac.mean(0)
    gw = torch.from_numpy(w) @ jac
    return g0 + c * g0.norm() / gw.norm() * gw


def test_cagrad_orthogonal_gradients_by_hand():
    # g1 = e1, g2 = e2: w^T G b = 1/2 on the simplex, so w* minimises |g_w|: w* = (1/2, 1/2),
    # g_w = g0, |g0| = 1/sqrt(2), d = g0 + c g0 = (1 + c) g0; rescale 1 divides by 1 + c^2.
    c = 0.4
    jac = _t([[1.0, 0.0], [0.0, 1.0]])
    agg = create("cagrad", n_tasks=2, c=c).aggregate(jac, _t([1.0, 1.0]))
    g0 = _t([0.5, 0.5])
    torch.testing.assert_close(agg.update, (1 + c) * g0 / (1 + c**2))
    torch.testing.assert_close(agg.weights, _t([0.5, 0.5]) * (1 + c) / (1 + c**2))
    torch.testing.assert_close(agg.head_weights, _t([0.5, 0.5]))
    for rescale, divisor in ((0, 1.0), (2, 1 + c)):
        agg = create("cagrad", n_tasks=2, c=c, rescale=rescale).aggregate(jac, _t([1.0, 1.0]))
        torch.testing.assert_close(agg.update, (1 + c) * g0 / divisor)


def _simplex_grid(k: int, steps: int):
    for point in itertools.product(range(steps + 1), repeat=k - 1):
        if sum(point) <= steps:
            yield np.array([*point, steps - sum(point)], dtype=np.float64) / steps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cagrad_solution_is_not_beaten_on_a_dense_simplex_grid(seed):
    jac, losses = _random_problem(3, 7, seed=seed)
    gram = (jac @ jac.T).numpy()
    method = create("cagrad", n_tasks=3)
    agg = method.aggregate(jac, losses)
    w = np.asarray(method._last)
    f, _ = cagrad_objective(gram, 0.4)
    best_grid = min(f(p) for p in _simplex_grid(3, 200))
    assert f(w) <= best_grid + 1e-9 * abs(best_grid)
    assert abs(w.sum() - 1) < 1e-9 and (w >= 0).all()
    d = _cagrad_direction(jac, w, 0.4)
    torch.testing.assert_close(agg.update, d / (1 + 0.4**2))


@pytest.mark.parametrize("seed", [3, 4])
def test_cagrad_direction_maximises_the_worst_task_improvement_in_its_ball(seed):
    # Primal problem: max_{|d - g0| <= c |g0|} min_k <g_k, d>. No point of the ball does better.
    c = 0.4
    jac, losses = _random_problem(4, 6, seed=seed)
    agg = create("cagrad", n_tasks=4, c=c, rescale=0).aggregate(jac, losses)
    g0 = jac.mean(0)
    radius = c * g0.norm()
    # (up to the relative 1e-8 guard in lambda = c |g0| / (|g_w| + 1e-8))
    assert (agg.update - g0).norm().item() == pytest.approx(radius.item(), rel=1e-6)
    worst = (jac @ agg.update).min().item()
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(20000, 6, generator=gen, dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True) * radius * torch.rand(20000, 1, generator=gen).double()
    others = (g0 + v) @ jac.T
    assert others.min(1).values.max().item() <= worst + 1e-6 * abs(worst)


def test_cagrad_with_c_zero_is_the_mean_gradient():
    jac, losses = _random_problem(3, 5, seed=5)
    agg = create("cagrad", n_tasks=3, c=0.0).aggregate(jac, losses)
    torch.testing.assert_close(agg.update, jac.mean(0))


def test_cagrad_reference_scale_and_fallback():
    method = create("cagrad", n_tasks=3)
    assert method.scale == "mean" and scale_factor(method, "reference") == 3.0
    jac, losses = _random_problem(3, 5, seed=6)
    method.aggregate(jac, losses)
    last = list(method._last)
    bad = jac.clone()
    bad[0, 0] = float("nan")
    w = method.weights(bad @ bad.T, losses)
    assert method.fallbacks == 1 and torch.isfinite(w).all()
    assert method._last == last


# -- IMTL-G -----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 5])
def test_imtl_g_update_has_equal_projections_on_all_unit_gradients(k):
    # Liu et al. 2021, Eq. 6: <g, u_1 - u_k> = 0 for all k, with sum alpha = 1.
    jac, losses = _random_problem(k, 8, seed=10 + k)
    agg = create("imtl_g", n_tasks=k).aggregate(jac, losses)
    units = jac / jac.norm(dim=1, keepdim=True)
    projections = units @ agg.update
    torch.testing.assert_close(projections, projections[0].expand(k), rtol=1e-9, atol=1e-12)
    assert agg.weights.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(agg.update, agg.weights @ jac)
    torch.testing.assert_close(agg.head_weights, agg.weights)


def test_imtl_g_two_tasks_closed_form():
    # K = 2: <a g1 + (1 - a) g2, u1 - u2> = 0 => a = <g2, u2 - u1> / <g1 - g2, u1 - u2>.
    g1, g2 = _t([3.0, 0.0]), _t([1.0, 2.0])
    u1, u2 = g1 / g1.norm(), g2 / g2.norm()
    a = float(g2 @ (u2 - u1)) / float((g1 - g2) @ (u1 - u2))
    agg = create("imtl_g", n_tasks=2).aggregate(torch.stack([g1, g2]), _t([1.0, 1.0]))
    torch.testing.assert_close(agg.weights, _t([a, 1 - a]))
    # Equal projections: the update bisects the angle between g1 and g2.
    cos1 = float(agg.update @ u1) / float(agg.update.norm())
    cos2 = float(agg.update @ u2) / float(agg.update.norm())
    assert cos1 == pytest.approx(cos2)
    assert math.acos(cos1) == pytest.approx(0.5 * math.acos(float(u1 @ u2)))


def test_imtl_g_log_losses_and_degenerate_input():
    jac, losses = _random_problem(3, 6, seed=20)
    agg = create("imtl_g", n_tasks=3, log_losses=True).aggregate(jac, losses)
    rows = jac / losses[:, None]
    units = rows / rows.norm(dim=1, keepdim=True)
    projections = units @ agg.update
    torch.testing.assert_close(projections, projections[0].expand(3), rtol=1e-9, atol=1e-12)
    method = create("imtl_g", n_tasks=3)
    w = method.weights(torch.full((3, 3), float("inf"), dtype=torch.float64), losses)
    assert method.fallbacks == 1
    torch.testing.assert_close(w, torch.full((3,), 1 / 3, dtype=torch.float64))


# -- through the engine -----------------------------------------------------------------------


def test_cagrad_and_pcgrad_head_gradients_follow_the_reference_code():
    # nash-mtl / FAMO: CAGrad overwrites the shared gradient with K d and leaves each head the
    # gradient of its own loss; PCGrad gives the heads the gradient of sum l.
    torch.manual_seed(0)
    shared = nn.Linear(3, 4)
    heads = nn.ModuleList([nn.Linear(4, 1) for _ in range(2)])
    x, y = torch.randn(6, 3), torch.randn(6, 2)

    def losses():
        rep = torch.tanh(shared(x))
        return torch.stack(
            [((h(rep).squeeze(1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)]
        )

    for name in ("cagrad", "pcgrad"):
        for p in [*shared.parameters(), *heads.parameters()]:
            p.grad = None
        values = losses()
        head_ref = torch.autograd.grad(values.sum(), list(heads.parameters()), retain_graph=True)
        engine = GradientEngine(list(shared.parameters()), list(heads.parameters()))
        torch.manual_seed(1)
        engine.backward(create(name, n_tasks=2), values, StepContext())
        for p, g in zip(heads.parameters(), head_ref, strict=True):
            torch.testing.assert_close(p.grad, g)
