"""Every registered method runs a short trial on the toy problem and on MultiDigits (issue 3:
"every one runs a quickstart trial on multidigits and the toy"), through the same path as
``mtlbench run`` (``resolve`` -> ``Trial.run``), and ends ``done`` with finite curves.

Kept fast (well under a minute on a 2-core CPU) by shortening the protocols:

* toy: 6 epochs x 20 steps = 120 Adam steps from start 3, (-7.5, -0.5), where L1 = 0.039 and
  L2 = -4.75: the toy's losses go negative (down to about -20), which is where a method that
  assumes positive losses shows it. Six epochs so that STCH leaves its warm-up (epochs 0-4
  with ``warmup_epochs = 4``) and GradNorm, which takes its initial losses from epoch 0,
  updates its weights in the later epochs; DWA's 25-step windows fill after 27 steps.
* multidigits: ``smoke`` (2 steps per epoch, 512 / 256 / 256 images) with 2 epochs and batches
  of 64. Two steps per epoch would never reach the main branch of STCH, GradNorm or DWA, so
  those three get hyper-parameters that reach it at once (:data:`SHORT_RUN`). The single-task
  runs of the same protocol go first into the same results folder, so that every MTL record
  has a Δm% against them, as in the quickstart sweep.

Every method must end ``done`` with finite curves and no solver fallback, and, on the toy,
decrease L1 + L2 from start 3 (where both losses are negative). A method that does not is a
finding: pin it here with its reason (a ``diverged`` expectation, or an ascent), in a test of
its own, so that a fix shows up as a failure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from mtlbench.datasets.toy import toy_losses
from mtlbench.method import names
from mtlbench.trainer import run_trial
from mtlbench.trial import TrialConfig, resolve

NEGATIVE_START = 3
TOY = {"epochs": 6, "steps_per_epoch": 20, "start": NEGATIVE_START}
MULTIDIGITS = {"epochs": 2, "batch_size": 64}  # on top of the smoke protocol (2 steps / epoch)
# Hyper-parameters that let a 4-step MultiDigits run reach each method's main branch.
SHORT_RUN: dict[str, dict[str, Any]] = {
    "stch": {"warmup_epochs": 0},  # epoch 0 estimates the nadir, epoch 1 uses it
    "gradnorm": {"initial_loss": "first_step"},  # the paper's L0: weights move from step 1
    "dwa": {"window": 1},  # ratios from the third step on
}
# From the toy's start 3 every method decreases L1 + L2 (by 0.4 or more in 120 steps). A rule
# that assumes positive losses has a ``min_losses`` shift whose toy default is FAMO's l* (SI,
# UW, GLS, STCH, FAMO, GO4Align, DB-MTL, MoCo, IMTL, IMTL-L).

METHODS = names()


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """One intra-op thread: these models are tiny, and on a busy 2-core machine torch's thread
    pool spends far more time waiting at its barriers than computing (a ReLU of 64 x 16 x 16 x 16
    values took 11 ms with two threads under load, 0.2 ms with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(results: Path, config: TrialConfig) -> dict[str, Any]:
    return run_trial(resolve(config), results, device="cpu")


def _finite(values: Any) -> bool:
    if isinstance(values, dict):
        return all(_finite(v) for v in values.values())
    if isinstance(values, list):
        return all(_finite(v) for v in values)
    return isinstance(values, (int, float)) and math.isfinite(values)


def _check(record: dict[str, Any], benchmark: str, method: str, steps: int) -> None:
    """``done`` with finite curves and no solver fallback."""
    assert record["status"] == "done", (method, record["error"], record["diverged"])
    assert record["timing"]["steps"] == steps
    curves = record["curves"]
    assert _finite(curves["train_loss"]), curves["train_loss"]
    assert _finite(curves["weights"]), curves["weights"]
    assert _finite(curves["val"]) and _finite(curves["test"])
    assert record["diagnostics"]["solver_fallbacks"] == 0


@pytest.mark.parametrize("method", METHODS)
def test_method_runs_on_the_toy(tmp_path: Path, method: str) -> None:
    record = _run(tmp_path, TrialConfig("toy", method, 0, dict(TOY)))
    _check(record, "toy", method, TOY["epochs"] * TOY["steps_per_epoch"])
    extra = record["extra"]
    assert extra["total_steps"] == 120 and extra["shortened"]
    assert _finite(extra["final_point"]) and _finite(extra["final_losses"])
    # Adam at lr 1e-3 moves each coordinate by at most about 1e-3 per step.
    start, final = extra["start_point"], extra["final_point"]
    assert 0 < max(abs(a - b) for a, b in zip(final, start, strict=True)) <= 0.2
    before = float(toy_losses(torch.tensor(start, dtype=torch.float64)).sum())
    after = sum(extra["final_losses"].values())
    assert after < before - 0.1, (before, after)


def test_uw_weights_stay_bounded_with_a_negative_loss(tmp_path: Path) -> None:
    """UW's objective sum_k (exp(-s_k) d_k + s_k) / 2 is bounded below in s_k only for d_k > 0:
    without the toy's shift d = l - l* (L2 = -4.75 at start 3) s_k falls at every step and the
    weights grow exponentially (50-fold in these 120 steps)."""
    record = _run(tmp_path, TrialConfig("toy", "uw", 0, dict(TOY)))
    assert record["status"] == "done", record["error"]
    weights = record["curves"]["weights"]
    first = max(w[0] for w in weights.values())
    last = max(w[-1] for w in weights.values())
    assert last < 10 * first, (first, last)


@pytest.fixture(scope="module")
def multidigits_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder holding the single-task runs (the Δm% reference) of the protocol."""
    results = tmp_path_factory.mktemp("multidigits")
    for task in ("left", "right"):
        config = TrialConfig("multidigits", "stl", 0, dict(MULTIDIGITS), task=task, smoke=True)
        record = _run(results, config)
        assert record["status"] == "done", record["error"]
        assert record["metrics"]["test"][f"{task}_acc"] > 0  # Δm% divides by it
    return results


@pytest.mark.parametrize("method", METHODS)
def test_method_runs_on_multidigits(multidigits_results: Path, method: str) -> None:
    overrides = {**MULTIDIGITS, **SHORT_RUN.get(method, {})}
    config = TrialConfig("multidigits", method, 0, overrides, smoke=True)
    record = _run(multidigits_results, config)
    _check(record, "multidigits", method, 2 * MULTIDIGITS["epochs"])
    delta_m = record["delta_m"]
    assert delta_m is not None, "no Δm%: the STL reference was not found"
    assert math.isfinite(delta_m["metric_avg"]) and math.isfinite(delta_m["task_avg"])
    assert delta_m["reference"]["source"].startswith("mtlbench stl mode")


def test_every_method_is_covered() -> None:
    """The short-run settings name registered methods only, and the registry holds them all."""
    assert set(SHORT_RUN) <= set(METHODS)
    assert "ls" in METHODS and len(METHODS) >= 32
