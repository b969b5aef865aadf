"""Input validation (issue 15): every numeric setting declares its valid range in its type hint,
and a bad value is rejected when the spec or ``--set`` is read: exit 2, one line per problem,
the right file and line, every problem of a file at once, and nothing written."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import pytest

from mtlbench import benchmark as benchmarks
from mtlbench import cli
from mtlbench.method import METHODS
from mtlbench.method import names as method_names
from mtlbench.registry import (
    ConfigError,
    ConfigErrors,
    PositiveInt,
    Range,
    Registry,
    coerce,
)
from mtlbench.sweep import SpecError, load_spec
from mtlbench.trial import Policies, TrialConfig, resolve

# Settings with no obvious range: the router's initial parameters are any real numbers.
UNBOUNDED_HPARAMS = {("ldc_mtl", "init_low"), ("ldc_mtl", "init_high")}


@pytest.fixture(autouse=True)
def _no_extensions(monkeypatch):
    monkeypatch.setattr(cli, "EXTENSIONS", [])


def _numeric(hint: Any) -> bool:
    """Whether a plain (range-free) hint is int, float or an optional one of them."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_numeric(a) for a in typing.get_args(hint) if a is not type(None))
    return hint in (int, float)


def _has_range(hint: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return all(_has_range(a) for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) is Annotated and any(
        isinstance(e, Range) for e in typing.get_args(hint)[1:]
    )


def _errors(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("mtlbench: error: ") for line in lines), err
    return [line.removeprefix("mtlbench: error: ") for line in lines]


# -- the range declarations -------------------------------------------------------------------


def test_coerce_checks_declared_ranges():
    assert coerce(3, PositiveInt, "protocol.epochs") == 3
    assert coerce(2, Annotated[float, Range(gt=0)], "lr") == 2.0  # converted, then checked
    assert coerce(None, PositiveInt | None, "max_steps") is None
    with pytest.raises(ConfigError, match=r"protocol.epochs: expected int >= 1, got 0") as info:
        coerce(0, PositiveInt, "protocol.epochs")
    assert info.value.key == "epochs"
    with pytest.raises(ConfigError, match=r"expected int >= 1 \| None, got -2"):
        coerce(-2, PositiveInt | None, "max_steps")
    unit = Annotated[float, Range(ge=0, le=1)]
    assert coerce(1, unit, "beta") == 1.0
    for bad in (1.5, -0.1, math.nan, math.inf):
        with pytest.raises(ConfigError, match=r">= 0 and <= 1"):
            coerce(bad, unit, "beta")
    with pytest.raises(ConfigError, match=r"expected float > 0, got 'fast'"):
        coerce("fast", Annotated[float, Range(gt=0)], "lr")


@pytest.mark.parametrize("bench", benchmarks.names())
def test_every_numeric_protocol_option_declares_a_range(bench: str):
    ptype = benchmarks.get(bench).protocol_type
    plain = typing.get_type_hints(ptype)
    rich = ptype.field_hints()
    missing = [k for k, hint in plain.items() if _numeric(hint) and not _has_range(rich[k])]
    assert not missing, f"{bench}: no declared range for {missing}"


def test_every_numeric_policy_declares_a_range():
    rich = typing.get_type_hints(Policies, include_extras=True)
    plain = typing.get_type_hints(Policies)
    assert [k for k in plain if _numeric(plain[k]) and not _has_range(rich[k])] == []


@pytest.mark.parametrize("method", method_names())
def test_numeric_hyper_parameters_declare_a_range(method: str):
    plain = typing.get_type_hints(METHODS.get(method).__init__)
    missing = [
        k
        for k, p in METHODS.hparams(method).items()
        if _numeric(plain.get(k)) and not _has_range(p.annotation)
    ]
    assert [k for k in missing if (method, k) not in UNBOUNDED_HPARAMS] == []


@pytest.mark.parametrize("bench", benchmarks.names())
def test_every_default_lies_in_its_range(bench: str):
    """The defaults of each benchmark, and of each method on it, pass their own checks."""
    for method in method_names():
        resolve(TrialConfig(bench, method))
    for task in benchmarks.get(bench).tasks[:1]:
        resolve(TrialConfig(bench, "stl", task=task))


def test_a_subclass_that_changes_a_default_keeps_the_range():
    toy = benchmarks.get("toy").protocol_type
    assert "epochs" in toy.__annotations__  # redeclared as a plain int with another default
    with pytest.raises(ConfigError, match=r"protocol.epochs: expected int >= 1, got 0"):
        toy().replace(epochs=0)


def test_registry_reports_every_bad_hyper_parameter():
    registry: Registry[Any] = Registry("thing")

    @registry.register("t")
    def make(a: PositiveInt = 1, b: Annotated[float, Range(ge=0, le=1)] = 0.5) -> None:
        return None

    with pytest.raises(ConfigErrors) as info:
        registry.validate("t", {"a": 0, "b": 2, "c": 1})
    assert [e.key for e in info.value.errors] == ["a", "b", "c"]


def test_resolve_reports_every_bad_setting_with_its_key():
    config = TrialConfig(
        "toy",
        "famo",
        -1,
        {"epochs": -3, "lr": -0.1, "gamma": -1, "jacobian_chunk": 0, "lamd": 1},
    )
    with pytest.raises(ConfigErrors) as info:
        resolve(config)
    keys = sorted(e.key for e in info.value.errors)
    assert keys == ["epochs", "gamma", "jacobian_chunk", "lamd", "lr", "seed"]


@pytest.mark.parametrize(
    "spec",
    ["step:0:0.5", "step:10:2", "step:10", "plateau:1.5:5:0", "plateau:0.5:-1:0", "cosine:3"],
)
def test_scheduler_arguments_are_checked(spec: str):
    with pytest.raises(ConfigError, match="protocol.scheduler"):
        benchmarks.get("toy").default_protocol().replace(scheduler=spec)


def test_valid_schedulers_pass():
    protocol = benchmarks.get("toy").default_protocol()
    assert protocol.replace(scheduler="step:100:0.5").scheduler == "step:100:0.5"
    assert protocol.replace(scheduler="plateau:0.7:5:1e-5").scheduler == "plateau:0.7:5:1e-5"


# -- `mtlbench run --set`: the absurd values ------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "epochs=-3"], "protocol.epochs: expected int >= 1, got -3"),
        (["--set", "epochs=0"], "protocol.epochs: expected int >= 1, got 0"),
        (["--set", "eval_every=0"], "protocol.eval_every: expected int >= 1, got 0"),
        (["--set", "batch_size=0"], "protocol.batch_size: expected int >= 1, got 0"),
        (["--set", "lr=-0.1"], "protocol.lr: expected float > 0, got -0.1"),
        (["--seed", "-1"], "seed: expected int >= 0 and < 4294967296, got -1"),
        (["--set", "start=5"], "protocol.start: expected int >= 0 and < 5, got 5"),
        (["--set", "gamma=-0.5"], "famo.gamma: expected float >= 0, got -0.5"),
    ],
)
def test_run_rejects_absurd_values_up_front(tmp_path, capsys, args, message):
    out = tmp_path / "runs"
    assert cli.main(["run", "-b", "toy", "-m", "famo", *args, "--out", str(out), "-q"]) == 2
    assert _errors(capsys) == [message]
    assert not out.exists()  # nothing written for a rejected run


def test_run_lists_every_bad_setting_one_line_each(tmp_path, capsys):
    args = ["--set", "epochs=0", "--set", "lr=-1", "--set", "eval_every=0", "--seed", "-1"]
    assert cli.main(["run", "-b", "toy", "-m", "ls", *args, "--out", str(tmp_path / "o")]) == 2
    errors = _errors(capsys)
    assert len(errors) == 4
    for key in ("seed:", "protocol.epochs:", "protocol.lr:", "protocol.eval_every:"):
        assert any(line.startswith(key) for line in errors), key


# -- sweep specs: lines, every problem, nothing written ---------------------------------------


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(f"results: {tmp_path / 'results'}\n{text}")  # line 1
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value.problems


def test_each_spec_problem_names_its_own_line(tmp_path):
    path = _spec(
        tmp_path,
        "name: bad\n"  # 2
        "methods: [ls, ldc_mtl]\n"  # 3
        "seeds: [0]\n"  # 4
        "benchmarks:\n"  # 5
        "  toy:\n"  # 6
        "    protocol:\n"  # 7
        "      epochs: 2\n"  # 8
        '      lr: "fast"\n'  # 9
        "    methods:\n"  # 10
        "      ls: {}\n"  # 11
        "      ldc_mtl: {lamd: 0.1}\n"  # 12
        "  toyy: {}\n",  # 13
    )
    problems = _problems(path)
    where = f"{path}: line"
    assert f"{where} 9: benchmark 'toy': protocol.lr: expected float > 0, got 'fast'" in problems
    assert any(
        p.startswith(f"{where} 12: benchmark 'toy': method 'ldc_mtl': unknown setting 'lamd'")
        for p in problems
    ), problems
    assert any(p.startswith(f"{where} 13: unknown benchmark 'toyy'") for p in problems), problems
    assert len(problems) == 3  # the bad lr is said once, not once per method


def test_a_bad_seed_hides_no_other_problem(tmp_path):
    path = _spec(
        tmp_path,
        'seeds: [0, "one", -1]\n'  # 2
        "methods:\n"  # 3
        "  - ls\n"  # 4
        "  - mgdaa\n"  # 5
        "benchmarks:\n"  # 6
        "  toy:\n"  # 7
        "    protocol: {epochs: -3, eval_every: 0}\n"  # 8
        "    grid: {start: [0, 9]}\n",  # 9
    )
    problems = [p.split(": line ", 1)[1] for p in _problems(path)]
    assert problems[:2] == [
        "2: seeds[1]: expected int >= 0 and < 4294967296, got 'one'",
        "2: seeds[2]: expected int >= 0 and < 4294967296, got -1",
    ]
    rest = "\n".join(problems[2:])
    assert "8: benchmark 'toy': protocol.epochs: expected int >= 1, got -3" in rest
    assert "8: benchmark 'toy': protocol.eval_every: expected int >= 1, got 0" in rest
    assert "9: benchmark 'toy': protocol.start: expected int >= 0 and < 5, got 9" in rest
    assert "5: benchmark 'toy': unknown method 'mgdaa'" in rest


def test_a_rejected_sweep_writes_nothing_and_prints_one_line_per_problem(tmp_path, capsys):
    path = _spec(
        tmp_path,
        "methods: [ls]\nbenchmarks:\n  toy:\n    protocol: {epochs: -3, lr: -0.1}\n",
    )
    assert cli.main(["sweep", str(path)]) == 2
    errors = _errors(capsys)
    assert errors == [
        f"{path}: line 5: benchmark 'toy': protocol.epochs: expected int >= 1, got -3",
        f"{path}: line 5: benchmark 'toy': protocol.lr: expected float > 0, got -0.1",
    ]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("methods: []\nbenchmarks: {toy: {}}\n", 2, "methods is empty"),
        ("methods: [ls]\nseeds: []\nbenchmarks: {toy: {}}\n", 3, "seeds is empty"),
        (
            "methods: [ls]\nbenchmarks:\n  toy:\n    grid: {start: []}\n",
            5,
            "'start' is an empty list",
        ),
        ("methods: {ldc_mtl: {lamb: []}}\nbenchmarks: {toy: {}}\n", 2, "'lamb' is an empty list"),
    ],
)
def test_an_empty_grid_is_an_error(tmp_path, capsys, text, line, message):
    path = _spec(tmp_path, text)
    assert cli.main(["sweep", str(path)]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and errors[0].startswith(f"{path}: line {line}:"), errors
    assert message in errors[0]
    assert not (tmp_path / "results").exists()


def test_a_single_task_only_sweep_may_list_no_methods(tmp_path):
    sweep = load_spec(_spec(tmp_path, "methods: []\nbenchmarks: {multidigits: {stl: true}}\n"))
    assert {t.mode for t in sweep.trials} == {"stl"} and len(sweep.trials) == 2


def test_shipped_specs_keep_their_trial_ids():
    """Ranges are checks, not config: the quickstart's ids are those of its stored results."""
    ids = {
        t.trial_id
        for t in load_spec(Path(__file__).parents[1] / "sweeps" / "quickstart.yaml").trials
    }
    assert "toy-ls-s0-9b7038d14c27" in ids and "multidigits-stl-left-s0-1443b0f01fef" in ids
    assert len(ids) == 46


def test_protocol_fields_are_unchanged_by_ranges():
    fields = {f.name: f.default for f in dataclasses.fields(benchmarks.Protocol)}
    assert fields["epochs"] == 1 and fields["eval_every"] == 1 and fields["max_steps"] is None
