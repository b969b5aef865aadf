"""Differential tests of the stateless gradient aggregators against TorchJD 0.18.

Same inputs, same outputs: on 27 random, conflicting Jacobians (K = 2..10 tasks, three seeds
each, P = 3K + 7, task gradients pulled towards their common mean with a negative factor so
that they conflict, norms spread by a factor ``exp(N(0, 1))``), our functional core
``aggregate(J, losses).update`` is compared with TorchJD's aggregator on ``J`` (float64):

* ``cos(ours, theirs) >= 1 - COS_TOL`` and ``|ours - theirs| / |theirs| <= REL_TOL`` (each test
  states its own when the methods' solvers differ).

Where the definitions differ on purpose (a scale convention, a solver), the test's docstring
says so and compares what must still agree. Stateful and loss-based methods are in
``tests/test_oracle_torchjd_stateful.py``. TorchJD is an optional dependency (extra
``[oracle]``, included in ``dev``); without it these tests skip.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import Tensor

from mtlbench.method import create

pytest.importorskip(
    "torchjd", reason="the oracle tests need TorchJD 0.18 (pip install '.[oracle]')"
)

import torchjd  # noqa: E402
from torchjd import aggregation as tj  # noqa: E402

pytestmark = [pytest.mark.oracle, pytest.mark.slow]  # slow: out of the day-to-day tier

# Tolerances for methods whose weights both sides compute by the same formula or an exact solve.
COS_TOL = 1e-9
REL_TOL = 1e-7


def test_torchjd_is_the_pinned_version():
    assert torchjd.__name__ == "torchjd"
    from importlib.metadata import version

    assert version("torchjd").startswith("0.18."), version("torchjd")


def conflicting_jacobian(k: int, seed: int) -> tuple[Tensor, Tensor]:
    """A K x (3K + 7) float64 Jacobian with conflicting rows of spread norms, and K losses."""
    g = torch.Generator().manual_seed(1000 * k + seed)
    jac = torch.randn(k, 3 * k + 7, generator=g, dtype=torch.float64)
    jac = jac - 0.8 * jac.mean(0)
    jac = jac * torch.exp(torch.randn(k, 1, generator=g, dtype=torch.float64))
    losses = 0.5 + torch.rand(k, generator=g, dtype=torch.float64)
    return jac, losses


CASES = [(k, seed) for k in range(2, 11) for seed in range(3)]
CASE_IDS = [f"K{k}-s{seed}" for k, seed in CASES]


def assert_same_direction(ours: Tensor, theirs: Tensor, cos_tol: float, rel_tol: float) -> None:
    cos = float(ours @ theirs / (ours.norm() * theirs.norm()))
    rel = float((ours - theirs).norm() / theirs.norm())
    assert cos >= 1.0 - cos_tol, f"cosine {cos:.12f}"
    assert rel <= rel_tol, f"relative difference {rel:.3e}"


def ours(name: str, jac: Tensor, losses: Tensor, **hparams: object) -> Tensor:
    return create(name, n_tasks=jac.shape[0], **hparams).aggregate(jac, losses).update


def test_every_case_conflicts():
    # The inputs must exercise conflict: some pair of task gradients has a negative inner product.
    for k, seed in CASES:
        jac, _ = conflicting_jacobian(k, seed)
        gram = jac @ jac.T
        assert (gram < 0).any(), (k, seed)


@pytest.mark.parametrize(("k", "seed"), CASES, ids=CASE_IDS)
def test_imtl_g(k: int, seed: int):
    """IMTL-G. TorchJD computes ``pinv(G) sqrt(diag G)`` normalised to sum 1 (the generalisation
    of Quinton & Rey, arXiv 2406.16232, to dependent rows); ours solves the equal-projection
    system of the nash-mtl code on ``G``. For full-rank ``G`` both are the unique solution of
    ``G w = c sqrt(diag G)``, ``sum w = 1``."""
    jac, losses = conflicting_jacobian(k, seed)
    assert_same_direction(ours("imtl_g", jac, losses), tj.IMTLG()(jac), COS_TOL, REL_TOL)


@pytest.mark.parametrize(("k", "seed"), CASES, ids=CASE_IDS)
def test_aligned_mtl(k: int, seed: int):
    """Aligned-MTL. TorchJD's default preference vector is the mean (``B 1 / K``); ours sums the
    aligned gradients (``B 1``, as LibMTL and the official code): ours = K x TorchJD. Both drop
    eigenvalues below ``lambda_max K eps`` (ours with the float32 eps of the references, TorchJD
    with the dtype's), which keeps all K here."""
    jac, losses = conflicting_jacobian(k, seed)
    assert_same_direction(ours("aligned_mtl", jac, losses) / k, tj.AlignedMTL()(jac), COS_TOL, 1e-9)


@pytest.mark.parametrize(("k", "seed"), CASES, ids=CASE_IDS)
def test_upgrad_with_torchjd_regularisation(k: int, seed: int):
    """UPGrad with ``reg_eps = 1e-4``, TorchJD's default (its quadprog solver needs a positive
    definite matrix): the same QPs on ``G / tr(G) + 1e-4 I``, solved exactly by both (NNLS here,
    quadprog there), give the same weights."""
    jac, losses = conflicting_jacobian(k, seed)
    update = ours("upgrad", jac, losses, reg_eps=1e-4)
    assert_same_direction(update, tj.UPGrad()(jac), COS_TOL, 1e-9)


@pytest.mark.parametrize(("k", "seed"), CASES, ids=CASE_IDS)
def test_upgrad_default_is_the_unregularised_projection(k: int, seed: int):
    """Our default ``reg_eps = 0`` differs from TorchJD's ``1e-4`` on purpose: the regularisation
    lets TorchJD's update conflict with a task whose share of ``tr(G)`` is near ``1e-4`` (here
    up to cosine 0.78 apart). What must agree is the projection itself: TorchJD with a
    regularisation of ``1e-12`` gives our unregularised weights, and ours conflicts with no
    task."""
    from torchjd.linalg import QuadprogProjector

    jac, losses = conflicting_jacobian(k, seed)
    update = ours("upgrad", jac, losses)
    theirs = tj.UPGrad(projector=QuadprogProjector(reg_eps=1e-12))(jac)
    assert_same_direction(update, theirs, 1e-8, 1e-4)
    assert (jac @ update >= -1e-10 * update.norm() * jac.norm(dim=1)).all()


@pytest.mark.parametrize(("k", "seed"), CASES, ids=CASE_IDS)
def test_cagrad(k: int, seed: int):
    """CAGrad, c = 0.4. Scale convention: TorchJD returns ``d = g0 + (c |g0| / |g_w|) g_w``
    (``rescale = 0`` here); our default ``rescale = 1`` (every reference's) divides it by
    ``1 + c^2``. Solvers differ (SLSQP here, as the reference; CLARABEL there): tolerance
    cosine 1e-6, relative 1e-3."""
    pytest.importorskip("cvxpy", reason="TorchJD's CAGrad needs cvxpy (extra torchjd[cagrad])")
    jac, losses = conflicting_jacobian(k, seed)
    theirs = tj.CAGrad(c=0.4)(jac)
    assert_same_direction(ours("cagrad", jac, losses, rescale=0), theirs, 1e-6, 1e-3)
    rescaled = ours("cagrad", jac, losses) * (1 + 0.4**2)
    assert_same_direction(rescaled, theirs, 1e-6, 1e-3)


@pytest.mark.parametrize(("k", "seed"), CASES, ids=CASE_IDS)
def test_fairgrad(k: int, seed: int):
    """FairGrad, alpha = 2: both solve ``G w = w^(-1/alpha)``, TorchJD by
    ``scipy.optimize.least_squares`` from ``1/K`` (as the official code), ours by Newton to a
    relative residual of 1e-8; the solution is unique."""
    jac, losses = conflicting_jacobian(k, seed)
    theirs = tj.FairGrad(alpha=2.0)(jac)
    assert_same_direction(ours("fairgrad", jac, losses), theirs, 1e-9, 1e-6)


@pytest.mark.parametrize(("k", "seed"), CASES, ids=CASE_IDS)
def test_pcgrad_with_a_shared_seed(k: int, seed: int):
    """PCGrad. Both draw one ``torch.randperm(K)`` per task from torch's global generator, so a
    shared seed gives the same orders. The definitions differ in one detail: the reference code
    (Pytorch-PCGrad, LibMTL) and ours also project ``g'_i`` on ``g_i`` itself, which TorchJD
    skips; that projection fires only if ``g'_i . g_i < 0``, never on these Jacobians."""
    jac, losses = conflicting_jacobian(k, seed)
    torch.manual_seed(seed)
    update = ours("pcgrad", jac, losses)
    torch.manual_seed(seed)
    assert_same_direction(update, tj.PCGrad()(jac), COS_TOL, REL_TOL)


@pytest.mark.parametrize("leak", [0.0, 0.3])
@pytest.mark.parametrize(("k", "seed"), CASES[::3], ids=CASE_IDS[::3])
def test_graddrop_with_a_shared_seed(k: int, seed: int, leak: float):
    """GradDrop. Both draw ``torch.rand(P)`` once, so a shared seed gives the same masks (our
    sign purity has the reference's ``+ 1e-8`` in its denominator, TorchJD's none: a mask can
    differ only if a uniform draw falls within about 1e-8 of the purity). Scale convention:
    TorchJD sums the masked gradients, ours averages them (the reference multiplies the mean
    by K): ours = TorchJD / K."""
    jac, losses = conflicting_jacobian(k, seed)
    torch.manual_seed(seed)
    update = ours("graddrop", jac, losses, leak=leak)
    torch.manual_seed(seed)
    theirs = tj.GradDrop(leak=torch.full((k,), leak, dtype=torch.float64))(jac)
    assert_same_direction(update * k, theirs, COS_TOL, REL_TOL)


# -- MGDA: our exact solve against TorchJD's Frank-Wolfe ---------------------------------------


@pytest.mark.parametrize(("k", "seed"), CASES, ids=CASE_IDS)
def test_mgda_against_frank_wolfe_run_to_convergence(k: int, seed: int):
    """MGDA. Deliberate difference in the solver: TorchJD runs Frank-Wolfe (Sener & Koltun,
    Algorithm 2) with ``epsilon = 1e-3``, ``max_iters = 100`` by default, which stops early on
    these Jacobians (cosine down to 0.33 from the optimum); ours solves the min-norm problem
    exactly. What must agree: (1) the min-norm point, which Frank-Wolfe reaches when run to
    convergence (``epsilon = 1e-9``, 10,000 iterations); (2) no feasible point is shorter than
    ours, TorchJD's default output included."""
    jac, losses = conflicting_jacobian(k, seed)
    update = ours("mgda", jac, losses)
    long_run = tj.MGDA(epsilon=1e-9, max_iters=10_000)(jac)
    assert_same_direction(update, long_run, 1e-6, 2e-3)
    default = tj.MGDA()(jac)
    assert float(update @ update) <= float(default @ default) * (1 + 1e-12)


@pytest.mark.parametrize(("k", "seed"), CASES, ids=CASE_IDS)
def test_mgda_against_an_exact_qp(k: int, seed: int):
    """MGDA against the exact QP ``min w^T G w`` on the simplex, solved by quadprog (the solver
    TorchJD's extra installs for UPGrad): the same min-norm direction to rounding."""
    pytest.importorskip("qpsolvers", reason="needs qpsolvers + quadprog (torchjd[full])")
    from qpsolvers import solve_qp

    jac, losses = conflicting_jacobian(k, seed)
    gram = (jac @ jac.T).numpy()
    gram = gram / np.trace(gram)
    eye = np.eye(k)
    w = solve_qp(
        2 * gram + 1e-14 * eye,
        np.zeros(k),
        -eye,
        np.zeros(k),
        np.ones((1, k)),
        np.ones(1),
        solver="quadprog",
    )
    exact = torch.from_numpy(w) @ jac
    assert_same_direction(ours("mgda", jac, losses), exact, 1e-10, 1e-5)


# -- Nash-MTL: our Newton solve against TorchJD's CCCP (cvxpy / ECOS) ---------------------------


NASH_CASES = [(k, 0) for k in range(2, 11)] + [(3, 1), (5, 1), (5, 2), (9, 1)]


@pytest.mark.parametrize(("k", "seed"), NASH_CASES, ids=[f"K{k}-s{s}" for k, s in NASH_CASES])
def test_nash_mtl(k: int, seed: int):
    """Nash-MTL: both solve ``G alpha = 1 / alpha``. TorchJD runs the reference's CCCP (up to 20
    cvxpy/ECOS solves from ``alpha = 1``) and clips ``|alpha^T J|`` to ``max_norm = 1`` (0 here
    disables it; our trainer's ``clip_grad_norm`` does that job). On some Jacobians TorchJD's
    loop stops with a large residual ``max_k |alpha_k (G alpha)_k - 1|`` (6 to 92 on K3-s1,
    K5-s0, K5-s1 and K9-s1, cosine 0.89-0.98 from ours: its stop test compares the normalised
    ``G`` with raw-scale weights), where ours solves the equation to 1e-8. The test compares
    the two where TorchJD's own residual is below 1e-3; elsewhere ours must solve the
    equation better than TorchJD does."""
    pytest.importorskip("cvxpy", reason="TorchJD's Nash-MTL needs cvxpy + ecos (torchjd[nash_mtl])")
    jac, losses = conflicting_jacobian(k, seed)
    method = create("nash_mtl", n_tasks=k)
    agg = method.aggregate(jac, losses)
    gram = jac @ jac.T
    residual = (agg.weights * (gram @ agg.weights) - 1).abs().max()
    assert float(residual) < 1e-7
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cvxpy: "the problem is not DPP"
        theirs = tj.NashMTL(n_tasks=k, max_norm=0.0).weighting(jac)
    their_residual = float((theirs * (gram @ theirs) - 1).abs().max())
    if their_residual > 1e-3:  # TorchJD's CCCP stopped short of the solution
        assert float(residual) < their_residual
        return
    assert_same_direction(agg.update, theirs @ jac, 1e-6, 1e-2)
    torch.testing.assert_close(agg.weights, theirs, rtol=1e-2, atol=0)
