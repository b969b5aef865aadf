"""Job arrays that fit a Slurm cluster (issue 22): ``MaxArraySize`` and the per-user submit
limits read from fake ``scontrol`` / ``sacctmgr`` outputs, groups split into arrays that fit, and
arrays held back (and shown by ``status``) while the submit limit is reached. No Slurm needed;
the end-to-end tests on a real controller are in test_slurm.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from mtlbench.registry import ConfigError
from mtlbench.run.slurm.batches import Array, Gate, split, submit_batches
from mtlbench.run.slurm.held import read_held
from mtlbench.run.slurm.limits import (
    ASSOC_FIELDS,
    Limits,
    parse_max_array_size,
    parse_rows,
    read_limits,
    submit_limit,
)

# abridged `scontrol show config` of Slurm 22.05
SCONTROL = """Configuration data as of 2026-12-03T08:00:00
AccountingStorageType   = accounting_storage/slurmdbd
MaxArraySize            = 4
MaxJobCount             = 10000
MaxStepCount            = 40000
"""
# `sacctmgr -n -P show assoc user=ana format=Account,User,Partition,MaxSubmit,QOS,DefaultQOS`
ASSOC_ANA = "lab|ana||||\nlab|ana|gpu|3|normal,high|\nother|ana||50|normal|\n"
# ... `account=lab,other`: the accounts' own rows (User empty) and their users'
ASSOC_ACCOUNTS = "lab|||20|normal|\nlab|ana||||\nlab|bob||2||\nother|||||\n"
# `sacctmgr -n -P show qos format=Name,MaxSubmitPU`
QOS = "normal|\nhigh|7\n"


def fake_sacctmgr(argv: list[str]) -> str | None:
    text = " ".join(argv)
    if argv[0] == "scontrol":
        return SCONTROL
    if "user=ana" in text:
        return ASSOC_ANA
    if "account=lab,other" in text:
        return ASSOC_ACCOUNTS
    if "show qos" in text:
        return QOS
    return None


def test_max_array_size_from_scontrol():
    assert parse_max_array_size(SCONTROL) == 4
    assert parse_max_array_size("MaxJobCount = 5\n") is None


def test_submit_limit_is_the_tightest_per_user_setting():
    rows = parse_rows(ASSOC_ANA + ASSOC_ACCOUNTS, ASSOC_FIELDS)
    qos = parse_rows(QOS, ("Name", "MaxSubmitPU"))
    # the user's lab association sets none: it inherits the lab account's 20; bob's 2 is not hers
    assert submit_limit(rows, qos, "ana", account="lab") == (
        3,  # the gpu partition's association of ana in lab says 3
        "MaxSubmitJobs=3 (association ana/lab)",
    )
    assert submit_limit(rows, qos, "ana", account="lab", partition="cpu") == (
        20,
        "MaxSubmitJobs=20 (association ana/lab)",
    )
    assert submit_limit(rows, qos, "ana", account="other") == (
        50,
        "MaxSubmitJobs=50 (association ana/other)",
    )
    # a QOS with a lower per-user limit wins; the default QOS (normal) has none
    assert submit_limit(rows, qos, "ana", account="other", job_qos="high") == (
        7,
        "MaxSubmitJobsPerUser=7 (QOS high)",
    )
    assert submit_limit([], qos, "ana") == (None, "")


def test_read_limits_asks_scontrol_and_sacctmgr():
    limits = read_limits("other", None, "high", run=fake_sacctmgr, user="ana")
    assert limits == Limits(4, 7, "MaxSubmitJobsPerUser=7 (QOS high)")
    assert limits.array_cap == 4  # indices 0..3 < MaxArraySize=4
    # nothing answers (no Slurm, no accounting): nothing known, nothing held
    assert read_limits(run=lambda argv: None, user="ana") == Limits()
    assert Limits(max_array_size=1001, max_submit=3).array_cap == 3
    assert Limits().array_cap is None


def group(name: str, stage: str = "mtl", **params) -> SimpleNamespace:
    return SimpleNamespace(benchmarks=[name], stage=stage, params=params)


def trials(prefix: str, n: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(trial_id=f"{prefix}{i}") for i in range(n)]


def test_groups_split_into_arrays_below_the_cap_in_order():
    seen = []

    def reader(account, partition, qos):
        seen.append((account, partition, qos))
        return Limits(max_array_size=4)

    gate = Gate("slurm", reader)
    stl, toy = group("toy", "stl", slurm_account="lab"), group("toy", slurm_account="lab")
    batches = split([(stl, trials("s", 3)), (toy, trials("t", 10)), (group("x"), [])], gate)
    assert [(b.group.stage, len(b.trials), b.part, b.parts) for b in batches] == [
        ("stl", 3, 1, 1),
        ("mtl", 4, 1, 3),
        ("mtl", 4, 2, 3),
        ("mtl", 2, 3, 3),
    ]
    assert [b.index for b in batches] == [1, 2, 3, 4]
    assert [t.trial_id for b in batches[1:] for t in b.trials] == [f"t{i}" for i in range(10)]
    assert batches[2].describe() == "toy (mtl, part 2 of 3)"
    assert seen == [("lab", None, None)]  # read once per account/partition/QOS
    # off Slurm (submitit's local executor) nothing is read and nothing split
    assert len(split([(toy, trials("t", 10))], Gate("local", reader))) == 1


class Queue:
    """A user's queue: each submitted array adds its tasks; each poll drains ``drain`` jobs."""

    def __init__(self, start: int, drain: int) -> None:
        self.jobs, self.drain = start, drain
        self.submitted: list[list[str]] = []
        self.held_seen: list[list[str]] = []

    def submit(self, batch: Array) -> None:
        self.submitted.append([t.trial_id for t in batch.trials])
        self.jobs += len(batch.trials)

    def sleep(self, results: Path) -> object:
        def wait(_: float) -> None:
            held = read_held(results)
            assert held is not None  # status shows what waits while it waits
            self.held_seen.append(held.trial_ids)
            self.jobs = max(0, self.jobs - self.drain)

        return wait


def test_arrays_over_the_submit_limit_are_held_until_the_queue_drains(tmp_path):
    limits = Limits(max_array_size=4, max_submit=6, submit_source="MaxSubmitJobs=6 (x)")
    toy = group("toy")
    batches = split([(toy, trials("t", 10))], Gate("slurm", lambda *_: limits))
    queue, said = Queue(start=1, drain=3), []
    submit_batches(
        tmp_path, batches, queue.submit, echo=said.append, poll_s=0.0,
        queued=lambda: queue.jobs, sleep=queue.sleep(tmp_path),
    )  # fmt: skip
    # 1 + 4 <= 6: the first array at once; then 5 + 4 > 6: held until 2 + 4 <= 6 (one poll);
    # then 6 + 2 > 6: held until 3 + 2 <= 6
    assert queue.submitted == [["t0", "t1", "t2", "t3"], ["t4", "t5", "t6", "t7"], ["t8", "t9"]]
    assert queue.held_seen == [[f"t{i}" for i in range(4, 10)], ["t8", "t9"]]
    assert len(said) == 2 and "holding the array of toy (mtl, part 2 of 3), 4 trial(s)" in said[0]
    assert "MaxSubmitJobs=6 (x): 5 of your jobs queued" in said[0]
    assert read_held(tmp_path) is None  # nothing held once everything is submitted


def test_an_sbatch_refusal_for_the_submit_limit_holds_too(tmp_path):
    refusal = (
        "sbatch refused the array of toy (4 trial(s)); nothing of it was submitted: Batch job "
        "submission failed: Job violates accounting/QOS policy (job submit limit, user's size "
        "and/or time limits)"
    )
    calls: list[int] = []

    def submit(batch: Array) -> None:
        calls.append(len(batch.trials))
        if len(calls) == 1:
            raise ConfigError(refusal)

    batches = split([(group("toy"), trials("t", 4))], Gate("slurm", lambda *_: Limits()))
    said: list[str] = []
    submit_batches(
        tmp_path, batches, submit, echo=said.append, poll_s=0.0,
        queued=lambda: 3, sleep=lambda _: None,
    )  # fmt: skip
    assert calls == [4, 4] and "sbatch refused it for a submit limit" in said[0]
    # with nothing of the user's queued, waiting would never end: the refusal is an error
    with pytest.raises(ConfigError, match="job submit limit"):
        calls.clear()
        submit_batches(
            tmp_path, batches, submit, echo=said.append, poll_s=0.0,
            queued=lambda: 0, sleep=lambda _: None,
        )  # fmt: skip
    # another refusal (an unknown partition) is an error at once
    other = ConfigError("sbatch refused ...: invalid partition specified: nope")
    with pytest.raises(ConfigError, match="invalid partition"):
        submit_batches(
            tmp_path, batches, lambda b: (_ for _ in ()).throw(other), echo=said.append,
            poll_s=0.0, queued=lambda: 3, sleep=lambda _: None,
        )  # fmt: skip
    assert read_held(tmp_path) is None
