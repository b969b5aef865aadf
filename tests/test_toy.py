"""The toy benchmark against the formulas of methods.md §6.3 (CAGrad / Nash-MTL / FAMO toy)."""

from __future__ import annotations

import math

import pytest
import torch

from mtlbench.benchmark import get
from mtlbench.datasets.toy import INITIAL_POINTS, PARETO_X2, Toy, pareto_front, toy_losses
from mtlbench.registry import ConfigError


def reference_losses(x1: float, x2: float, s: float) -> tuple[float, float]:
    """§6.3 written out in plain floats, independently of the module."""
    lower = 5e-6
    f1_log = math.log(max(abs(0.5 * (-x1 - 7) - math.tanh(-x2)), lower)) + 6
    f2_log = math.log(max(abs(0.5 * (-x1 + 3) + math.tanh(-x2) + 2), lower)) + 6
    f1_sq = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    f2_sq = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    c1 = max(math.tanh(0.5 * x2), 0.0)
    c2 = max(math.tanh(-0.5 * x2), 0.0)
    return s * (c1 * f1_log + c2 * f1_sq), c1 * f2_log + c2 * f2_sq


def make(**options: object) -> Toy:
    cls = get("toy")
    return cls(cls.default_protocol().replace(**options))  # type: ignore[return-value]


def forward_losses(bench: Toy, model: torch.nn.Module) -> torch.Tensor:
    batch = next(iter(bench.batches("train")))
    _, outputs = model(bench.model_input(batch))
    return bench.task_losses(outputs, batch)


def test_default_protocol_is_famo() -> None:
    p = Toy.default_protocol()
    assert (p.epochs * p.steps_per_epoch, p.lr, p.selection) == (50_000, 1e-3, "last")
    assert (p.scale, p.start) == (0.1, 0)
    assert INITIAL_POINTS == ((-8.5, 7.5), (0, 0), (9, 9), (-7.5, -0.5), (9, -1))


@pytest.mark.parametrize("start", range(5))
@pytest.mark.parametrize("scale", [0.1, 1.0])
def test_losses_at_initial_points(start: int, scale: float) -> None:
    bench = make(start=start, scale=scale)
    model = bench.build_model()
    losses = forward_losses(bench, model)
    assert losses.shape == (2,)
    expected = reference_losses(*INITIAL_POINTS[start], scale)
    assert losses.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5)
    losses.sum().backward()
    grad = model.encoder.x.grad
    assert grad is not None and torch.isfinite(grad).all()


@pytest.mark.parametrize("point", [(3.0, 2.0), (-2.0, -9.0), (-5.0, 0.7), (1.0, -3.0)])
def test_losses_elsewhere_and_clamp(point: tuple[float, float]) -> None:
    got = toy_losses(torch.tensor(point, dtype=torch.float64), 1.0)
    assert got.tolist() == pytest.approx(reference_losses(*point, 1.0), rel=1e-12)
    # On the kink of f1_log the argument is clamped at LOWER: finite value and gradient.
    x2 = 1.0
    x = torch.tensor([-7 - 2 * math.tanh(-x2), x2], dtype=torch.float64, requires_grad=True)
    loss = toy_losses(x, 0.1)[0]
    loss.backward()
    assert loss.item() == pytest.approx(0.1 * math.tanh(0.5) * (math.log(5e-6) + 6))
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_pareto_front_segment() -> None:
    front = pareto_front(0.1, n=201)
    assert front.shape == (201, 2)
    ends = toy_losses(torch.tensor([[-7.0, PARETO_X2], [7.0, PARETO_X2]], dtype=torch.float64))
    assert torch.allclose(front[[0, -1]], ends)
    # Along the segment L1 falls and L2 rises: no point dominates another.
    assert (front[1:, 0] < front[:-1, 0]).all() and (front[1:, 1] > front[:-1, 1]).all()
    # x2 = -8.3552 minimises both losses over x2 at the segment's middle (x1 = 0).
    x2 = torch.linspace(-9.0, -8.0, 10_001, dtype=torch.float64)
    grid = torch.stack([torch.zeros_like(x2), x2], dim=-1)
    for k in range(2):
        assert x2[toy_losses(grid)[:, k].argmin()].item() == pytest.approx(PARETO_X2, abs=1e-3)
    # Both losses can go down to about -20 (times s for L1), as FAMO's l* = [-21 s, -21] assumes.
    assert front[:, 0].min() > -2.1 and front[:, 1].min() > -21
    assert pareto_front(1.0, n=5)[:, 0].tolist() == pytest.approx(
        (10 * pareto_front(0.1, n=5)[:, 0]).tolist()
    )


@pytest.mark.parametrize("start", range(5))
def test_linear_scalarisation_decreases_the_sum(start: int) -> None:
    bench = make(start=start, epochs=1, steps_per_epoch=150)
    model = bench.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=bench.protocol.lr)
    before = forward_losses(bench, model).sum().item()
    for batch in bench.batches("train", 0):
        batch = bench.to_device(batch, torch.device("cpu"))
        _, outputs = model(bench.model_input(batch))
        optimizer.zero_grad()
        bench.task_losses(outputs, batch).sum().backward()
        optimizer.step()
    x = model.encoder.x.detach()
    assert not torch.equal(x, torch.tensor(INITIAL_POINTS[start]))
    assert forward_losses(bench, model).sum().item() < before

    evaluator = bench.evaluator()
    model.eval()
    with torch.no_grad():
        for batch in bench.batches("val"):
            evaluator.update(model(bench.model_input(batch))[1], batch)
    values = evaluator.compute()
    assert set(values) == {"L1", "L2", "x1", "x2"} >= {m.name for m in bench.metrics}
    assert [values["x1"], values["x2"]] == pytest.approx(x.tolist())
    expected = reference_losses(*x.tolist(), 0.1)
    assert [values["L1"], values["L2"]] == pytest.approx(expected, rel=1e-4, abs=1e-5)

    extra = bench.record_extra(model)
    assert extra["start_point"] == list(INITIAL_POINTS[start])
    assert extra["final_point"] == pytest.approx(x.tolist())
    assert extra["final_losses"]["L1"] == pytest.approx(expected[0], rel=1e-4, abs=1e-5)
    assert extra["total_steps"] == 150 and extra["standard_steps"] == 50_000
    assert extra["shortened"] is True


def test_shortened_flag_and_steps() -> None:
    extra = make().record_extra(make().build_model())
    assert (extra["total_steps"], extra["shortened"]) == (50_000, False)
    assert make(epochs=700).record_extra(make().build_model())["shortened"] is False
    assert make(max_steps=10).record_extra(make().build_model())["total_steps"] == 5_000
    assert len(list(make(steps_per_epoch=7).batches("train", 3))) == 7
    assert len(list(make().batches("test"))) == 1


def test_model_layout_and_options() -> None:
    bench = make(start=2, scale=1)
    assert bench.protocol.scale == 1.0 and bench.reference() is None
    model = bench.build_model()
    rep, outputs = model(None)
    assert rep.shape == (1, Toy.feature_dim)
    assert [o.shape for o in outputs] == [(3,), (3,)]
    assert model.head_parameters() == [] and len(model.shared_parameters()) == 1
    with pytest.raises(ConfigError, match="start"):
        make(start=5)
    with pytest.raises(ConfigError, match="scale"):
        make(scal=0.1)


def test_methods_that_shift_losses_take_the_toys_lower_bounds() -> None:
    """The toy's losses go negative: every method with a ``min_losses`` hyper-parameter gets
    the toy's ``loss_lower_bounds`` (FAMO's l*) by default, and a run can still ask for none."""
    from mtlbench.datasets.toy import Toy
    from mtlbench.method import METHODS, names
    from mtlbench.trial import TrialConfig, resolve

    shifting = [m for m in names() if "min_losses" in METHODS.hparams(m)]
    assert {"si", "gls", "stch", "famo", "db_mtl", "uw", "go4align", "moco"} <= set(shifting)
    for m in shifting:
        assert resolve(TrialConfig("toy", m, 0)).hparams["min_losses"] == list(
            Toy.loss_lower_bounds
        )
        assert resolve(TrialConfig("multidigits", m, 0)).hparams["min_losses"] is None
    unshifted = resolve(TrialConfig("toy", "famo", 0, {"min_losses": None}))
    assert unshifted.hparams["min_losses"] is None
