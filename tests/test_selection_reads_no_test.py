"""No test metric reaches a choice (issue 21): epoch selection and tuning score validation
metrics against the single-task references' *validation* metrics, never their test metrics.

The proof is a counterfactual: the same MTL trial run twice, once beside the real STL records
and once beside copies whose test metrics were multiplied by 1,000. Everything a choice reads
(the validation score of every epoch, the selected epoch, the tuning score) is identical; the
reported test Δm%, which must use the test references, differs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import tiny_benchmark  # noqa: F401  (registers _tiny_stl)
from mtlbench.benchmark import BENCHMARKS
from mtlbench.references import stl_reference
from mtlbench.run.tuning import Scorer
from mtlbench.trainer import run_trial
from mtlbench.trial import TrialConfig, resolve


def _stl_folder(root: Path) -> Path:
    root.mkdir()
    for task in ("a", "b"):
        run_trial(resolve(TrialConfig("_tiny_stl", "stl", 0, {"epochs": 4}, task=task)), root)
    return root


def _inflate_test_metrics(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)
    for path in dst.glob("*.json"):
        record = json.loads(path.read_text())
        record["metrics"]["test"] = {k: 1000 * v for k, v in record["metrics"]["test"].items()}
        path.write_text(json.dumps(record))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("leak")
    real = _stl_folder(base / "real")
    _inflate_test_metrics(real, base / "inflated")
    return real, base / "inflated"


def test_the_stl_reference_carries_validation_and_test_means(folders):
    real, inflated = folders
    bench = BENCHMARKS.get("_tiny_stl")
    ref, changed = stl_reference(real, bench), stl_reference(inflated, bench)
    assert ref is not None and changed is not None
    assert changed.values == pytest.approx({k: 1000 * v for k, v in ref.values.items()})
    assert changed.validation == ref.validation and set(ref.validation) == {"mse_a", "mse_b"}
    assert ref.validation != ref.values  # two splits, two sets of numbers


def test_epoch_selection_and_tuning_never_read_a_reference_test_metric(folders):
    trial = resolve(TrialConfig("_tiny_stl", "ls", 0, {"epochs": 4}))
    records = [run_trial(trial, folder) for folder in folders]
    real, inflated = records
    assert real["selection"]["reference_source"].startswith("mtlbench stl mode")
    assert real["curves"]["val_score"] == inflated["curves"]["val_score"]
    assert real["selection"]["epoch"] == inflated["selection"]["epoch"]
    assert real["curves"]["test"] == inflated["curves"]["test"]  # the same training
    # The reported Δm% does use the test references: it changes by orders of magnitude.
    assert real["delta_m"]["metric_avg"] != pytest.approx(inflated["delta_m"]["metric_avg"])
    scores = [Scorer(f).score(r, "val_delta_m") for f, r in zip(folders, records, strict=True)]
    assert scores[0] == scores[1] == min(real["curves"]["val_score"])
