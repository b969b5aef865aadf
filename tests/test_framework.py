"""The framework: registry validation, trial resolution, the gradient engine, the trainer
(records, divergence, selection, resume), sweep specs and the local executor."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import tiny_benchmark  # noqa: F401  (registers the "_tiny" benchmark)
from mtlbench.gradients import GradientEngine, jacobian, write_grad
from mtlbench.method import METHODS, GramianWeighting, StepContext, create, names
from mtlbench.records import atomic_write_json, iter_records, load_results, read_record
from mtlbench.registry import ConfigError, Registry
from mtlbench.sweep import SpecError, load_spec, parse_spec
from mtlbench.trainer import run_trial
from mtlbench.trial import TrialConfig, resolve

# -- registry ---------------------------------------------------------------------------------


def test_unknown_method_lists_valid_names_and_closest():
    with pytest.raises(ConfigError, match=r"Did you mean 'mgda'\?.*Valid: .*ldc_mtl"):
        create("mgdaa", n_tasks=2)


def test_hyperparameter_validation_names_and_types():
    reg: Registry = Registry("thing")

    @reg.register("t")
    def factory(rate: float = 0.1, mode: str = "a", steps: int = 2, flag: bool = False):
        return (rate, mode, steps, flag)

    assert reg.create("t", rate=1) == (1.0, "a", 2, False)  # int accepted for float
    with pytest.raises(ConfigError, match="Did you mean 'rate'"):
        reg.create("t", rat=0.2)
    with pytest.raises(ConfigError, match="expected int"):
        reg.create("t", steps=2.5)
    with pytest.raises(ConfigError, match="expected bool"):
        reg.create("t", flag=1)
    with pytest.raises(ConfigError, match="expected float"):
        reg.create("t", rate="fast")
    # PyYAML (YAML 1.1) reads "1e-6" from `--set rate=1e-6` or a sweep file as a string.
    assert reg.create("t", rate="1e-6")[0] == 1e-6
    assert reg.create("t", rate="-2.5E+3")[0] == -2500.0
    with pytest.raises(ConfigError, match="expected str"):
        reg.create("t", mode=1e-6)


def test_literal_hyperparameters_are_checked():
    with pytest.raises(ConfigError, match="expected one of"):
        create("ldc_mtl", n_tasks=2, router="mlp")


# -- trial resolution -------------------------------------------------------------------------


def test_resolve_routes_settings_and_ids_are_stable():
    a = resolve(
        TrialConfig("_tiny", "ldc_mtl", 1, {"lamb": 0.5, "epochs": 2, "clip_grad_norm": 1.0})
    )
    assert a.hparams["lamb"] == 0.5 and a.protocol.epochs == 2 and a.policies.clip_grad_norm == 1.0
    b = resolve(
        TrialConfig(
            "_tiny",
            "ldc_mtl",
            1,
            {"method.lamb": 0.5, "protocol.epochs": 2, "policies.clip_grad_norm": 1},
            data_root="/x",
        )
    )
    assert a.trial_id == b.trial_id  # same resolved config, other spelling and data root
    c = resolve(TrialConfig("_tiny", "ldc_mtl", 2, {"lamb": 0.5, "epochs": 2}))
    assert c.trial_id != a.trial_id


def test_resolve_errors_are_helpful():
    with pytest.raises(ConfigError, match="unknown setting 'lamd'.*Did you mean 'lamb'"):
        resolve(TrialConfig("_tiny", "ldc_mtl", 0, {"lamd": 0.1}))
    with pytest.raises(ConfigError, match="protocol.epochs: expected int"):
        resolve(TrialConfig("_tiny", "ls", 0, {"epochs": "many"}))
    with pytest.raises(ConfigError, match="unknown benchmark"):
        resolve(TrialConfig("_tinny", "ls", 0))
    with pytest.raises(ConfigError, match="needs a task"):
        resolve(TrialConfig("_tiny", "stl", 0))
    with pytest.raises(ConfigError, match="unknown task"):
        resolve(TrialConfig("_tiny", "stl", 0, task="c"))


# -- gradient engine ---------------------------------------------------------------------------


def _tiny_problem(seed: int = 0):
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4))
    heads = nn.ModuleList([nn.Linear(4, 1) for _ in range(3)])
    x, y = torch.randn(8, 3), torch.randn(8, 3)
    rep = enc(x)
    losses = torch.stack([((h(rep).squeeze(1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)])
    return enc, heads, rep, losses


def test_batched_jacobian_equals_sequential_and_manual_rows():
    enc, _, _, losses = _tiny_problem()
    params = list(enc.parameters())
    jb = jacobian(losses, params, "batched", retain_graph=True)
    js = jacobian(losses, params, "sequential", retain_graph=True)
    rows = [
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(l, params, retain_graph=True)])
        for l in losses
    ]
    assert jb.shape == (3, sum(p.numel() for p in params))
    torch.testing.assert_close(jb, js)
    torch.testing.assert_close(jb, torch.stack(rows))


@pytest.mark.parametrize("chunk", [1, 2, 3, 10])
def test_chunked_jacobian_equals_one_pass_and_frees_the_graph(chunk):
    enc, _, _, losses = _tiny_problem()
    params = list(enc.parameters())
    whole = jacobian(losses, params, "batched", retain_graph=True)
    chunked = jacobian(losses, params, "batched", chunk_size=chunk)
    torch.testing.assert_close(chunked, whole)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        losses.sum().backward()  # retain_graph=False: the last chunk freed the graph


def test_chunked_jacobian_and_policy_reject_non_positive_chunks():
    enc, _, _, losses = _tiny_problem()
    with pytest.raises(ValueError, match="chunk_size"):
        jacobian(losses, list(enc.parameters()), chunk_size=0)
    with pytest.raises(ConfigError, match="jacobian_chunk"):
        resolve(TrialConfig("_tiny", "mgda", 0, {"jacobian_chunk": 0}))
    r = resolve(TrialConfig("_tiny", "mgda", 0, {"jacobian_chunk": 2}))
    assert r.policies.jacobian_chunk == 2


def test_engine_with_chunks_writes_the_same_gradients():
    grads = []
    for chunk in (None, 2):
        enc, heads, _, losses = _tiny_problem()
        engine = GradientEngine(list(enc.parameters()), list(heads.parameters()), chunk_size=chunk)
        engine.backward(_FixedWeights(3), losses, StepContext())
        grads.append([p.grad.clone() for p in [*enc.parameters(), *heads.parameters()]])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_write_grad_adds_and_checks_size():
    p = nn.Parameter(torch.zeros(2, 2))
    write_grad([p], torch.arange(4.0))
    write_grad([p], torch.ones(4))
    torch.testing.assert_close(p.grad, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    with pytest.raises(ValueError):
        write_grad([p], torch.ones(5))


class _FixedWeights(GramianWeighting):
    """Test method: constant weights (2, 1, 0.5)."""

    def weights(self, gramian, losses):
        return torch.tensor([2.0, 1.0, 0.5], dtype=gramian.dtype)


@pytest.mark.parametrize("head_grads", ["weighted", "unit"])
def test_engine_writes_w_transpose_j_and_head_policy(head_grads):
    w = torch.tensor([2.0, 1.0, 0.5])
    enc, heads, _, losses = _tiny_problem()
    engine = GradientEngine(list(enc.parameters()), list(heads.parameters()), head_grads=head_grads)
    engine.backward(_FixedWeights(3), losses, StepContext())
    got_shared = [p.grad.clone() for p in enc.parameters()]
    got_heads = [p.grad.clone() for p in heads.parameters()]

    enc2, heads2, _, losses2 = _tiny_problem()
    (w * losses2).sum().backward()  # the update w^T J, by one backward of the weighted loss
    for a, p in zip(got_shared, enc2.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)
    enc3, heads3, _, losses3 = _tiny_problem()
    coef = w if head_grads == "weighted" else torch.ones(3)
    (coef * losses3).sum().backward()
    for a, p in zip(got_heads, heads3.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)


def test_engine_representation_mode_uses_the_representation_gramian():
    enc, heads, rep, losses = _tiny_problem()

    class Probe(_FixedWeights):
        def weights(self, gramian, losses):
            self.seen = gramian
            return super().weights(gramian, losses)

    probe = Probe(3)
    engine = GradientEngine(list(enc.parameters()), list(heads.parameters()), wrt="representation")
    engine.backward(probe, losses, StepContext(), representation=rep)
    enc2, heads2, rep2, losses2 = _tiny_problem()
    jz = jacobian(losses2, [rep2], retain_graph=True)
    torch.testing.assert_close(probe.seen, (jz @ jz.T).double())
    (torch.tensor([2.0, 1.0, 0.5]) * losses2).sum().backward()
    for a, b in zip(enc.parameters(), enc2.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_log_losses_divides_rows_by_the_losses():
    losses = torch.tensor([2.0, 4.0, 0.5])
    jac = torch.randn(3, 7)
    plain = _FixedWeights(3).aggregate(jac / losses[:, None], losses)
    logged = _FixedWeights(3, log_losses=True).aggregate(jac, losses)
    torch.testing.assert_close(logged.update, plain.update)


# -- trainer ----------------------------------------------------------------------------------


def _run(tmp_path: Path, method: str = "ls", **overrides) -> dict:
    resolved = resolve(TrialConfig("_tiny", method, 0, overrides))
    return run_trial(resolved, tmp_path, device="cpu")


def test_trainer_writes_a_complete_record(tmp_path):
    record = _run(tmp_path)
    assert record["status"] == "done"
    on_disk = read_record(tmp_path / f"{record['trial_id']}.json")
    assert on_disk["status"] == "done"
    assert set(on_disk["metrics"]["test"]) == {"mse_a", "mse_b"}
    assert on_disk["selection"]["rule"] == "best_val_delta_m"
    assert on_disk["curves"]["epoch"] == [0, 1, 2]
    assert len(on_disk["curves"]["train_loss"]["a"]) == 3
    t = on_disk["timing"]
    assert t["steps"] == 12 and t["step_median_s"] > 0 and t["train_s"] >= t["step_median_s"]
    # Delta m% from the selected test metrics and the reference 0.5 / 0.5 (lower is better).
    test = on_disk["metrics"]["test"]
    expected = 100 * ((test["mse_a"] - 0.5) / 0.5 + (test["mse_b"] - 0.5) / 0.5) / 2
    assert on_disk["delta_m"]["metric_avg"] == pytest.approx(expected)
    assert on_disk["environment"]["torch"] == torch.__version__
    row = load_results(tmp_path).iloc[0]
    assert row["status"] == "done" and row["solver_fallbacks"] == 0
    assert row["delta_m"] == pytest.approx(expected)


def test_selection_picks_best_validation_epoch(tmp_path):
    record = _run(tmp_path, epochs=4)
    scores = record["curves"]["val_score"]
    best = min(range(4), key=scores.__getitem__)
    assert record["selection"]["epoch"] == best
    assert record["metrics"]["test"]["mse_a"] == record["curves"]["test"]["mse_a"][best]
    # Convergence: epoch 3 of 4 is the last fifth (3 + 1 > 0.8 * 4); epochs 0-2 are not.
    assert record["selection"]["best_val_epoch"] == best
    assert record["selection"]["selected_at_end"] == (best == 3)
    row = load_results(tmp_path).iloc[0]
    assert (row["best_val_epoch"], row["selected_at_end"]) == (best, best == 3)


def test_early_stopping_ends_training_after_patience_evaluations_without_a_new_best(tmp_path):
    """``patience: 2`` at lr 0.5 (an oscillating run, measured 2026-12-03): the best validation
    score comes at epoch 7, epochs 8 and 9 do not beat it, so training stops before epoch 10
    of 30; the record says so and selects epoch 7. Without ``patience`` the protocol's ids and
    config are unchanged (the key is left out)."""
    record = _run(tmp_path, epochs=30, patience=2, lr=0.5)
    scores = record["curves"]["val_score"]
    best = min(range(len(scores)), key=scores.__getitem__)
    assert record["status"] == "done" and len(scores) == best + 3 < 30
    assert record["selection"]["epochs_run"] == best + 3
    assert record["selection"]["epoch"] == best and record["selection"]["selected_at_end"] is False
    assert record["config"]["protocol"]["patience"] == 2
    plain = resolve(TrialConfig("_tiny", "ls", 0, {}))
    assert "patience" not in plain.to_dict()["protocol"]


def test_nan_loss_is_recorded_as_diverged_with_its_step(tmp_path):
    record = _run(tmp_path, nan_at_step=5)
    assert record["status"] == "diverged"
    assert record["diverged"]["step"] == 5
    assert read_record(tmp_path / f"{record['trial_id']}.json")["status"] == "diverged"


def test_stl_mode_trains_one_task_and_keeps_its_metrics(tmp_path):
    resolved = resolve(TrialConfig("_tiny", "stl", 0, task="b"))
    record = run_trial(resolved, tmp_path, device="cpu")
    assert record["status"] == "done"
    assert set(record["metrics"]["test"]) == {"mse_b"}
    assert list(record["curves"]["train_loss"]) == ["b"]


@pytest.mark.parametrize("method", ["ls", "mgda", "famo", "ldc_mtl", "db_mtl"])
def test_resume_from_checkpoint_is_bit_identical(tmp_path, method):
    resolved = resolve(TrialConfig("_tiny", method, 3, {"epochs": 4}))
    full = run_trial(resolved, tmp_path / "full", device="cpu")

    class Killed(BaseException):
        pass

    def kill_after_epoch_1(epoch: int) -> None:
        if epoch == 1:
            raise Killed

    ckpt = tmp_path / "part" / "ckpt.pt"
    with pytest.raises(Killed):
        run_trial(
            resolved, tmp_path / "part", device="cpu", checkpoint=ckpt, on_epoch=kill_after_epoch_1
        )
    assert read_record(tmp_path / "part" / f"{resolved.trial_id}.json")["status"] == "running"
    resumed = run_trial(resolved, tmp_path / "part", device="cpu", checkpoint=ckpt)
    assert resumed["status"] == "done"
    assert resumed["metrics"] == full["metrics"]
    assert resumed["curves"]["train_loss"] == full["curves"]["train_loss"]
    assert resumed["curves"]["weights"] == full["curves"]["weights"]


def test_every_registered_method_trains_on_the_tiny_benchmark(tmp_path):
    for name in names():
        record = _run(tmp_path, name, epochs=1)
        assert record["status"] in ("done", "diverged"), (name, record["error"])


# -- records ----------------------------------------------------------------------------------


def test_corrupt_records_are_skipped_with_a_warning(tmp_path):
    _run(tmp_path)
    (tmp_path / "broken.json").write_text('{"schema": "mtlbench.rec')
    with pytest.warns(UserWarning, match="broken.json"):
        df = load_results(tmp_path)
    assert len(df) == 1 and df.loc[0, "status"] == "done"
    assert {"test/mse_a", "delta_m", "step_median_s", "method", "seed"} <= set(df.columns)


def test_atomic_write_never_leaves_partial_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": float("nan"), "y": [1.0]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": None, "y": [1.0]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "b.json", {"x": object()})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


# -- sweep specs ------------------------------------------------------------------------------


def test_spec_reports_every_problem_with_its_line(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: bad\n"
        "seeds: [0]\n"
        "methods: [ls, mgdaa]\n"
        "colour: blue\n"
        "benchmarks:\n"
        "  _tiny:\n"
        "    protocol: {epochs: two}\n"
        "  toyy: {}\n"
    )
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    text = str(info.value)
    assert "line 4: unknown key 'colour'" in text
    assert "mgdaa" in text and "Did you mean 'mgda'" in text
    assert "protocol.epochs: expected int" in text
    assert "unknown benchmark 'toyy'" in text
    assert "problem(s)" in text


def test_malformed_yaml_is_one_clear_error(tmp_path):
    spec = tmp_path / "broken.yaml"
    spec.write_text("name: x\nmethods: [ls\n")
    with pytest.raises(SpecError, match="malformed YAML"):
        load_spec(spec)


def test_spec_expands_grids_seeds_and_stl():
    sweep = parse_spec(
        {
            "name": "s",
            "seeds": [0, 1],
            "methods": {"ls": {}, "ldc_mtl": {"lamb": [0.1, 0.2]}},
            "benchmarks": {"_tiny": {"protocol": {"epochs": 1}, "stl": True}},
        }
    )
    assert len(sweep.trials) == 2 * (1 + 2) + 2 * 2
    assert [t.mode for t in sweep.stages()[0]] == ["stl"] * 4
    assert len({t.trial_id for t in sweep.trials}) == len(sweep.trials)


def test_quickstart_spec_is_valid():
    sweep = load_spec(Path(__file__).parent.parent / "sweeps" / "quickstart.yaml")
    methods = {t.method for t in sweep.trials}
    assert methods == {"ls", "ldc_mtl", "famo", "mgda", "db_mtl", "stl"}
    assert {t.benchmark for t in sweep.trials} == {"toy", "multidigits"}
    seeds = {b: {t.seed for t in sweep.trials if t.benchmark == b} for b in ("toy", "multidigits")}
    assert seeds == {"toy": {0}, "multidigits": {0, 1, 2}}
    starts = {t.protocol.start for t in sweep.trials if t.benchmark == "toy"}
    assert starts == {0, 1, 2, 3, 4}


def test_iter_records_ignores_checkpoints_and_references(tmp_path):
    _run(tmp_path)
    (tmp_path / "references").mkdir()
    (tmp_path / "references" / "x.json").write_text("{}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(iter_records(tmp_path))) == 1


def test_methods_declare_what_they_need():
    for name in names():
        cls = METHODS.get(name)
        assert cls.needs in ("losses", "gramian", "jacobian"), name
