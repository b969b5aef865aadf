"""Golden values of the O(1) loss-weighting methods SI, RLW, DWA, UW, GLS, STCH and GO4Align.

Every expected value is derived here from the method's formula (cited at each test), in float64
with plain Python / NumPy, never by calling the code under test a second time.
"""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest
import torch

from mtlbench.gradients import GradientEngine
from mtlbench.method import StepContext, create
from mtlbench.methods.go4align import kmeans_1d

LOSSES = [0.5, 2.0, 1.25]


def _losses(values=LOSSES) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def _grad(loss: torch.Tensor, wrt: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(loss, wrt)[0]


def _roundtrip(method):
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


# -- SI ---------------------------------------------------------------------------------------


def test_si_is_the_sum_of_log_losses_with_inverse_loss_weights():
    # L = sum_k log l_k, dL/dl_k = 1 / l_k.
    losses = _losses()
    out = create("si", n_tasks=3).objective(losses, StepContext())
    assert out.loss.item() == pytest.approx(sum(math.log(v) for v in LOSSES))
    expected = torch.tensor([1 / v for v in LOSSES], dtype=torch.float64)
    torch.testing.assert_close(_grad(out.loss, losses), expected)
    torch.testing.assert_close(out.weights, expected)


def test_si_min_losses_shift_the_log():
    # L = sum_k log(l_k - l*_k).
    losses = _losses([-1.0, -20.0])
    out = create("si", n_tasks=2, min_losses=[-2.1, -21.0]).objective(losses, StepContext())
    assert out.loss.item() == pytest.approx(math.log(1.1) + math.log(1.0))
    torch.testing.assert_close(
        _grad(out.loss, losses), torch.tensor([1 / 1.1, 1.0], dtype=torch.float64)
    )


def test_si_is_scale_invariant():
    # grad of log(c l) = grad of log l: the update ignores a constant factor on a loss.
    x = torch.tensor([0.3, -0.7], requires_grad=True)

    def losses(c):
        return torch.stack([c * ((x**2).sum() + 0.1), (x - 1).pow(2).sum()])

    method = create("si", n_tasks=2)
    g1 = _grad(method.objective(losses(1.0), StepContext()).loss, x)
    g2 = _grad(method.objective(losses(50.0), StepContext()).loss, x)
    torch.testing.assert_close(g1, g2, rtol=1e-3, atol=0)


# -- RLW --------------------------------------------------------------------------------------


def test_rlw_draws_softmax_normal_weights_from_the_global_generator():
    # w = softmax(z), z ~ N(0, I_K) drawn with torch's global generator; L = sum_k w_k l_k.
    method = create("rlw", n_tasks=3)
    torch.manual_seed(123)
    out = method.objective(_losses(), StepContext())
    torch.manual_seed(123)
    z = torch.randn(3).double().tolist()
    e = [math.exp(v) for v in z]
    w = [v / sum(e) for v in e]
    torch.testing.assert_close(out.weights, torch.tensor(w, dtype=torch.float64))
    assert out.loss.item() == pytest.approx(sum(a * b for a, b in zip(w, LOSSES, strict=True)))
    again = method.objective(_losses(), StepContext())
    assert not torch.equal(again.weights, out.weights)  # a fresh draw every step
    assert again.weights.sum().item() == pytest.approx(1.0)


# -- DWA --------------------------------------------------------------------------------------


def _dwa_expected(history: list[list[float]], window: int, temp: float) -> list[list[float]]:
    """Weights lambda (summing to K) used at each call, from the FAMO / nash-mtl rule: a FIFO of
    2W rows initialised to ones receives the losses; from the call with index n > W on,
    lambda = K softmax(mean(recent W) / mean(previous W) / T); otherwise the last lambda."""
    k = len(history[0])
    fifo = [[1.0] * k for _ in range(2 * window)]
    lam = [1.0] * k
    used = []
    for n, losses in enumerate(history):
        fifo = fifo[1:] + [list(losses)]
        if n > window:
            ratio = [
                (sum(r[t] for r in fifo[window:]) / window)
                / (sum(r[t] for r in fifo[:window]) / window)
                for t in range(k)
            ]
            e = [math.exp(r / temp) for r in ratio]
            lam = [k * v / sum(e) for v in e]
        used.append(lam)
    return used


def _loss_history(n: int, k: int, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    decay = np.exp(-rng.uniform(0.01, 0.2, size=k) * np.arange(n)[:, None])
    return (decay * rng.uniform(0.5, 2.0, size=(n, k))).tolist()


@pytest.mark.parametrize("window,temp", [(3, 2.0), (5, 0.7)])
def test_dwa_weights_follow_the_iteration_window_rule(window, temp):
    history = _loss_history(4 * window + 3, k=3)  # more than two full windows
    expected = _dwa_expected(history, window, temp)
    method = create("dwa", n_tasks=3, temp=temp, window=window)
    for n, (losses, lam) in enumerate(zip(history, expected, strict=True)):
        out = method.objective(_losses(losses), StepContext(step=n))
        # loss = mean_k(lambda_k l_k); reported weights lambda / K.
        assert out.loss.item() == pytest.approx(
            sum(a * b for a, b in zip(lam, losses, strict=True)) / 3
        )
        torch.testing.assert_close(out.weights, torch.tensor(lam, dtype=torch.float64) / 3)
        if n <= window:
            assert lam == [1.0, 1.0, 1.0]
    # After more than two windows the FIFO holds only real losses: the plain ratio rule.
    recent = np.mean(history[-window:], axis=0)
    previous = np.mean(history[-2 * window : -window], axis=0)
    e = np.exp(recent / previous / temp)
    torch.testing.assert_close(
        out.weights, torch.tensor(e / e.sum(), dtype=torch.float64), rtol=1e-12, atol=0
    )


def test_dwa_history_survives_a_checkpoint():
    history = _loss_history(12, k=2, seed=1)
    first = create("dwa", n_tasks=2, window=3)
    for losses in history[:7]:
        first.objective(_losses(losses), StepContext())
    second = create("dwa", n_tasks=2, window=3)
    second.load_state_dict(_roundtrip(first))
    for losses in history[7:]:
        a = first.objective(_losses(losses), StepContext()).weights
        b = second.objective(_losses(losses), StepContext()).weights
        assert torch.equal(a, b)


# -- UW ---------------------------------------------------------------------------------------


def test_uw_objective_and_gradients():
    # L = sum_k (exp(-s_k) l_k + s_k) / 2: dL/dl_k = exp(-s_k) / 2, dL/ds_k = (1 - e^-s_k l_k)/2.
    method = create("uw", n_tasks=3)
    s = [0.2, -0.4, 1.1]
    with torch.no_grad():
        method.log_sigma.copy_(torch.tensor(s))
    losses = _losses()
    out = method.objective(losses, StepContext())
    expected = sum(0.5 * (math.exp(-a) * b + a) for a, b in zip(s, LOSSES, strict=True))
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    d_losses, d_s = torch.autograd.grad(out.loss, [losses, method.log_sigma])
    exp_dl = [0.5 * math.exp(-a) for a in s]
    exp_ds = [0.5 * (1 - math.exp(-a) * b) for a, b in zip(s, LOSSES, strict=True)]
    torch.testing.assert_close(d_losses, torch.tensor(exp_dl, dtype=torch.float64))
    torch.testing.assert_close(d_s, torch.tensor(exp_ds), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.weights, torch.tensor(exp_dl, dtype=torch.float64))


# Hand-made losses of mixed signs, as the toy's, with the toy's shift l* (FAMO's [-21 s, -21] at
# s = 0.1) and a third task left unshifted: d = l - l* = [1.1, 1.0, 0.5].
MIXED = [-1.0, -20.0, 0.5]
SHIFT = [-2.1, -21.0, 0.0]


@pytest.mark.parametrize("min_losses", [None, SHIFT])
def test_uw_min_losses_shift_the_losses(min_losses):
    # Kendall et al. 2018 (arXiv 1705.07115), as methods/uw.py, on d = l - l* (l* = 0 for None):
    # L = sum_k (exp(-s_k) d_k + s_k) / 2, minimised in s_k at log d_k, which needs d_k > 0;
    # dL/dl_k = exp(-s_k) / 2, dL/ds_k = (1 - exp(-s_k) d_k) / 2.
    d = [a - b for a, b in zip(MIXED, min_losses or [0.0] * 3, strict=True)]
    s = [0.2, -0.4, 1.1]
    outs = []
    for method, values in (
        (create("uw", n_tasks=3, min_losses=min_losses), MIXED),
        (create("uw", n_tasks=3), d),  # the unshifted method on l - l*
    ):
        with torch.no_grad():
            method.log_sigma.copy_(torch.tensor(s))
        losses = _losses(values)
        out = method.objective(losses, StepContext())
        outs.append((out.loss, *torch.autograd.grad(out.loss, [losses, method.log_sigma])))
    expected = sum(0.5 * (math.exp(-a) * b + a) for a, b in zip(s, d, strict=True))
    exp_ds = [0.5 * (1 - math.exp(-a) * b) for a, b in zip(s, d, strict=True)]
    for loss, d_losses, d_s in outs:
        assert loss.item() == pytest.approx(expected, rel=1e-6)
        exp_dl = torch.tensor([0.5 * math.exp(-a) for a in s], dtype=torch.float64)
        torch.testing.assert_close(d_losses, exp_dl)
        torch.testing.assert_close(d_s, torch.tensor(exp_ds), rtol=1e-6, atol=1e-7)
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b)


def test_uw_parameters_start_at_zero_with_their_own_learning_rate():
    method = create("uw", n_tasks=2)
    assert torch.equal(method.log_sigma.detach(), torch.zeros(2))
    groups = method.parameter_groups()
    assert len(groups) == 1 and groups[0]["lr"] == 0.025
    assert create("uw", n_tasks=2, lr=0.1).parameter_groups()[0]["lr"] == 0.1


# -- GLS --------------------------------------------------------------------------------------


def test_gls_is_the_geometric_mean_with_its_gradient():
    # L = (prod l)^(1/K), dL/dl_k = L / (K l_k).
    losses = _losses()
    out = create("gls", n_tasks=3).objective(losses, StepContext())
    gm = (LOSSES[0] * LOSSES[1] * LOSSES[2]) ** (1 / 3)
    assert out.loss.item() == pytest.approx(gm)
    expected = torch.tensor([gm / (3 * v) for v in LOSSES], dtype=torch.float64)
    torch.testing.assert_close(_grad(out.loss, losses), expected)
    torch.testing.assert_close(out.weights, expected)


def test_gls_does_not_underflow_with_many_small_losses():
    # 40 losses of 0.05 in float32: the product 0.05^40 = 9e-53 is 0, the geometric mean 0.05.
    losses = torch.full((40,), 0.05, requires_grad=True)
    out = create("gls", n_tasks=40).objective(losses, StepContext())
    assert out.loss.item() == pytest.approx(0.05, rel=1e-5)
    torch.testing.assert_close(_grad(out.loss, losses), torch.full((40,), 1 / 40))


def test_gls_floors_a_loss_that_underflowed_to_zero():
    """Losses (0, 0.5, 2) in float32, as a saturated binary cross-entropy gives (Yeast): without
    the floor log 0 = -inf and the gradient is 0 / 0 = NaN (eps = 0, LibMTL's arithmetic).
    Floored at eps = 1e-8: L = (1e-8 * 0.5 * 2)^(1/3) = 1e-8^(1/3), the zero task gets no
    gradient, the others L / (3 l_k)."""
    losses = torch.tensor([0.0, 0.5, 2.0], requires_grad=True)
    out = create("gls", n_tasks=3).objective(losses, StepContext())
    grad = _grad(out.loss, losses)
    gm = 1e-8 ** (1 / 3)
    assert out.loss.item() == pytest.approx(gm, rel=1e-5)
    torch.testing.assert_close(grad, torch.tensor([0.0, gm / 1.5, gm / 6.0]), rtol=1e-5, atol=0)
    bare = torch.tensor([0.0, 0.5, 2.0], requires_grad=True)
    unguarded = create("gls", n_tasks=3, eps=0.0).objective(bare, StepContext())
    assert torch.isnan(_grad(unguarded.loss, bare)).any()


# -- STCH -------------------------------------------------------------------------------------


def test_stch_warms_up_then_records_the_nadir_then_smooths_the_max():
    k, mu, warmup = 3, 0.5, 2
    method = create("stch", n_tasks=k, mu=mu, warmup_epochs=warmup)
    # Warm-up epochs: L = sum log(l + 1e-20), gradient 1 / l.
    losses = _losses()
    out = method.objective(losses, StepContext(epoch=0))
    assert out.loss.item() == pytest.approx(sum(math.log(v) for v in LOSSES))
    torch.testing.assert_close(
        _grad(out.loss, losses), torch.tensor([1 / v for v in LOSSES], dtype=torch.float64)
    )
    method.objective(_losses([9.0, 9.0, 9.0]), StepContext(epoch=1))  # not recorded
    # Epoch == warmup: same objective, losses recorded; nadir = their mean.
    recorded = [[0.4, 2.2, 1.0], [0.6, 1.8, 1.6], [0.5, 2.0, 1.3]]
    for values in recorded:
        method.objective(_losses(values), StepContext(epoch=warmup))
    nadir = [sum(col) / len(col) for col in zip(*recorded, strict=True)]
    # After: x = log(l / n + 1e-20), L = K mu log sum exp((x - max x) / mu).
    values = [0.3, 1.9, 1.5]
    losses = _losses(values)
    state = _roundtrip(method)
    out = method.objective(losses, StepContext(epoch=warmup + 1))
    torch.testing.assert_close(method.nadir, torch.tensor(nadir, dtype=torch.float64))
    x = [math.log(v / n + 1e-20) for v, n in zip(values, nadir, strict=True)]
    top = max(x)
    expected = k * mu * math.log(sum(math.exp((v - top) / mu) for v in x))
    assert out.loss.item() == pytest.approx(expected)
    # dL/dl_k = K softmax(x / mu)_k / (l_k + 1e-20 n_k).
    e = [math.exp(v / mu) for v in x]
    grad = [k * a / sum(e) / b for a, b in zip(e, values, strict=True)]
    torch.testing.assert_close(_grad(out.loss, losses), torch.tensor(grad, dtype=torch.float64))
    torch.testing.assert_close(out.weights, torch.tensor(grad, dtype=torch.float64))
    # The recorded nadir survives a checkpoint taken before it was set.
    resumed = create("stch", n_tasks=k, mu=mu, warmup_epochs=warmup)
    resumed.load_state_dict(state)
    again = resumed.objective(_losses(values), StepContext(epoch=warmup + 1))
    assert again.loss.item() == pytest.approx(expected)


def test_stch_default_warmup_is_four_epochs():
    method = create("stch", n_tasks=2)
    assert method.mu == 1.0 and method.warmup_epochs == 4
    for epoch in range(5):  # epochs 0-4 are the sum of log losses
        out = method.objective(_losses([0.5, 2.0]), StepContext(epoch=epoch))
        assert out.loss.item() == pytest.approx(math.log(0.5) + math.log(2.0))
    # At the nadir itself x = 0: L = K mu log K, weights 1 / l as SI.
    out = method.objective(_losses([0.5, 2.0]), StepContext(epoch=5))
    assert out.loss.item() == pytest.approx(2 * math.log(2))
    torch.testing.assert_close(out.weights, torch.tensor([2.0, 0.5], dtype=torch.float64))


# -- GO4Align ---------------------------------------------------------------------------------


def _best_partition_centres(values: list[float], groups: int) -> list[float]:
    """Brute force: the assignment into at most ``groups`` clusters with the least within-cluster
    sum of squares; each value's cluster mean."""
    best, best_cost = None, math.inf
    for labels in itertools.product(range(groups), repeat=len(values)):
        cost, centres = 0.0, {}
        for g in set(labels):
            members = [v for v, lab in zip(values, labels, strict=True) if lab == g]
            centres[g] = sum(members) / len(members)
            cost += sum((v - centres[g]) ** 2 for v in members)
        if cost < best_cost - 1e-15:
            best, best_cost = [centres[lab] for lab in labels], cost
    return best


def test_go4align_group_weights_on_a_small_case():
    # s = sum(l) / l; p <- p exp(-eta l) / Z; gamma = s p; w = centre of gamma's k-means cluster.
    eta = 0.3
    method = create("go4align", n_tasks=4, num_groups=2, robust_step_size=eta)
    probs = [0.25] * 4
    for values in ([0.5, 2.0, 1.25, 0.6], [0.4, 1.5, 1.0, 0.45]):
        out = method.objective(_losses(values), StepContext())
        total = sum(values)
        probs = [p * math.exp(-eta * v) for p, v in zip(probs, values, strict=True)]
        probs = [p / sum(probs) for p in probs]
        gamma = [total / v * p for v, p in zip(values, probs, strict=True)]
        expected = _best_partition_centres(gamma, 2)
        torch.testing.assert_close(out.weights, torch.tensor(expected, dtype=torch.float64))
        assert out.loss.item() == pytest.approx(
            sum(a * b for a, b in zip(expected, values, strict=True))
        )
    torch.testing.assert_close(method.adv_probs, torch.tensor(probs, dtype=torch.float64))


def test_go4align_one_group_gives_every_task_the_mean_indicator():
    method = create("go4align", n_tasks=3)  # reference defaults: 1 group, eta = 1e-4
    out = method.objective(_losses(), StepContext())
    probs = [math.exp(-1e-4 * v) for v in LOSSES]
    probs = [p / sum(probs) for p in probs]
    gamma = [sum(LOSSES) / v * p for v, p in zip(LOSSES, probs, strict=True)]
    torch.testing.assert_close(out.weights, torch.full((3,), sum(gamma) / 3, dtype=torch.float64))
    # Equal losses: every weight is 1 (the "sum" scale of LS).
    fresh = create("go4align", n_tasks=3)
    torch.testing.assert_close(
        fresh.objective(_losses([0.7] * 3), StepContext()).weights, torch.ones(3).double()
    )


@pytest.mark.parametrize("n,groups", [(5, 2), (6, 3), (7, 2), (4, 4), (3, 5)])
def test_kmeans_1d_is_the_exact_optimum(n, groups):
    rng = np.random.default_rng(n * 10 + groups)
    for _ in range(5):
        values = rng.uniform(0, 3, size=n)
        values[0] = values[1]  # a tie
        got = kmeans_1d(values, groups)
        expected = _best_partition_centres(values.tolist(), min(groups, n))
        got_cost = float(((values - got) ** 2).sum())
        exp_cost = float(((values - np.array(expected)) ** 2).sum())
        assert got_cost == pytest.approx(exp_cost, abs=1e-12)
        perm = rng.permutation(n)
        np.testing.assert_allclose(kmeans_1d(values[perm], groups), got[perm])


@pytest.mark.parametrize("min_losses", [None, SHIFT])
def test_go4align_min_losses_shift_the_losses(min_losses):
    # Shen et al. 2024 (arXiv 2404.06486), as the code's GO4ALIGN, on d = l - l*
    # (l* = 0 for None): s = sum(d) / d; p <- p exp(-eta d) / Z; gamma = s p; w = centres of
    # gamma's k-means clusters; L = sum_k w_k d_k, whose gradient is sum_k w_k grad l_k.
    eta = 0.3
    shift = min_losses or [0.0] * 3
    hparams = {"num_groups": 2, "robust_step_size": eta}
    method = create("go4align", n_tasks=3, min_losses=min_losses, **hparams)
    unshifted = create("go4align", n_tasks=3, **hparams)
    probs = [1 / 3] * 3
    for values in (MIXED, [-1.5, -20.5, 0.25]):
        d = [a - b for a, b in zip(values, shift, strict=True)]
        probs = [p * math.exp(-eta * v) for p, v in zip(probs, d, strict=True)]
        probs = [p / sum(probs) for p in probs]
        gamma = [sum(d) / v * p for v, p in zip(d, probs, strict=True)]
        expected = torch.tensor(_best_partition_centres(gamma, 2), dtype=torch.float64)
        for m, inputs in ((method, values), (unshifted, d)):
            losses = _losses(inputs)
            out = m.objective(losses, StepContext())
            torch.testing.assert_close(out.weights, expected)
            torch.testing.assert_close(_grad(out.loss, losses), expected)
            assert out.loss.item() == pytest.approx(float(expected @ torch.tensor(d).double()))
    torch.testing.assert_close(method.adv_probs, torch.tensor(probs, dtype=torch.float64))
    torch.testing.assert_close(unshifted.adv_probs, method.adv_probs)
    assert method.fallbacks == 0


def test_go4align_falls_back_on_a_zero_loss():
    method = create("go4align", n_tasks=2, num_groups=2)
    out = method.objective(_losses([0.0, 1.0]), StepContext())
    assert method.fallbacks == 1
    torch.testing.assert_close(out.weights, torch.ones(2, dtype=torch.float64))


# -- through the engine -----------------------------------------------------------------------


@pytest.mark.parametrize("policy,factor", [("reference", 1.0), ("sum", 3.0), ("mean", 1.0)])
def test_dwa_scale_policy_multiplies_the_mean_objective(policy, factor):
    # DWA is mean-scale (weights lambda / K sum to 1); update_scale="sum" is MTAN's sum of
    # lambda_k l_k.
    x = torch.nn.Parameter(torch.tensor([0.5, -1.0]))
    engine = GradientEngine([x], [], update_scale=policy)
    method = create("dwa", n_tasks=3)
    losses = torch.stack([(x**2).sum(), (x - 1).pow(2).sum(), x.sum().exp()])
    rows = [torch.autograd.grad(v, x, retain_graph=True)[0] for v in losses]
    result = engine.backward(method, losses, StepContext())
    torch.testing.assert_close(x.grad, torch.stack(rows).sum(0) / 3 * factor)
    torch.testing.assert_close(result.weights, torch.full((3,), factor / 3))
