"""``mtlbench check method | benchmark`` (issue 19, item 3): the conformance kit from the command
line. Exit 0 with one line when everything conforms, 1 with one line per finding, 2 for an
unknown name. The methods' kit itself is tested over the whole registry in test_conformance."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import tiny_benchmark
from mtlbench import benchmark as benchmarks
from mtlbench.benchmark import BENCHMARKS, Metric
from mtlbench.cli import main
from mtlbench.conformance.benchmark import check_benchmark


def test_check_method_conforms_in_one_line(capsys):
    assert main(["check", "method", "upgrad"]) == 0
    assert capsys.readouterr().out == "method upgrad: conforms\n"
    assert main(["check", "method", "cagrad", "--set", "c=2"]) == 0


def test_check_an_unknown_name_lists_the_valid_ones(capsys):
    assert main(["check", "method", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtlbench: error: unknown method 'nope'") and "upgrad" in err
    assert main(["check", "benchmark", "nope"]) == 2


class _Undeclared(tiny_benchmark.Tiny):
    """``_tiny`` with a metric of an undeclared task and one whose value is NaN."""

    name = "_tiny_broken"
    metrics = (*tiny_benchmark.Tiny.metrics, Metric("mse_c", "c", False))

    def evaluator(self):
        inner = super().evaluator()

        class WithNaN(type(inner)):
            def compute(self) -> dict[str, float]:
                return {**super().compute(), "mse_c": math.nan}

        return WithNaN()


if "_tiny_broken" not in BENCHMARKS:
    BENCHMARKS.register("_tiny_broken")(_Undeclared)


def test_a_broken_benchmark_gets_one_line_per_problem(tmp_path, capsys):
    findings, _ = check_benchmark("_tiny_broken", workdir=tmp_path, fixture_only=True)
    reasons = [f"{f.check}: {f.reason}" for f in findings]
    assert "declarations: metric 'mse_c' belongs to the undeclared task 'c'" in reasons
    assert any(r.startswith("smoke epoch: ") for r in reasons), reasons
    assert main(["check", "benchmark", "_tiny_broken", "--fixture"]) == 1
    out = capsys.readouterr().out
    assert "benchmark _tiny_broken: " in out and "  - declarations: metric 'mse_c'" in out


def test_a_benchmark_without_published_values_names_the_stl_runs(tmp_path):
    findings, info = check_benchmark("toy", workdir=tmp_path)
    assert findings == []
    assert info == [
        "no published single-task values: a sweep adds `stl: true` to run the 2 single-task "
        "reference(s) (L1, L2)"
    ]


def test_missing_data_is_a_finding_that_says_where_to_get_it(tmp_path):
    findings, _ = check_benchmark("celeba", str(tmp_path / "none"), workdir=tmp_path / "w")
    (data,) = [f for f in findings if f.check == "data"]
    assert "missing in" in data.reason and "CelebA site" in data.reason
    assert "the smoke epoch ran on the fixture instead" in data.reason


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in benchmarks.names() if not n.startswith("_")])
def test_every_built_in_benchmark_conforms_on_its_fixture(name, tmp_path: Path):
    findings, _ = check_benchmark(name, workdir=tmp_path, fixture_only=True)
    assert findings == [], [str(f) for f in findings]
