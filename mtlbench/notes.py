"""What a careful reader of a leaderboard needs beside the table, as pure functions of records.

Each function takes the run records of one benchmark (dicts in the ``mtlbench.record/2`` shape,
as :func:`mtlbench.records.iter_records` yields them) and returns text; the report places it:

* :func:`protocol_note`: the protocol length (epochs, optimisation steps) of the runs;
* :func:`convergence_note`: how many runs were still improving when training stopped, and the
  "not converged" flag (issue 21);
* :func:`seeding_note`: how many seeds each method of a sequential sweep took, and why it
  stopped;
* :func:`timing_note`: how the runtime was measured (how many trials shared a machine);
* :func:`tuning_status` / :func:`tuning_note`: which methods were tuned (with their tuning
  trials counted: equal budgets are visible) and which ran at untuned defaults;
* :func:`outlier_notes`: a method far behind LS gets a line pointing at its known cause where
  docs/methods.md documents one (:data:`KNOWN_CAUSES`, a table of data).

Tuning records (``config.stage == "tune"``) are counted, never tabulated: :func:`stage_of` tells
them apart (untuned runs have no stage).
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mtlbench.records import AT_END_FRACTION, convergence

Record = Mapping[str, Any]
#: A leaderboard is flagged "not converged" when more than this share of its runs selected
#: their best validation epoch in the last AT_END_FRACTION of training.
NOT_CONVERGED_SHARE = 0.2

_OPS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}


def stage_of(record: Record) -> str:
    """``tune``, ``final`` (a tuned method's selected configuration) or ``untuned``."""
    return str((record.get("config") or {}).get("stage") or "untuned")


def _mtl(records: Iterable[Record]) -> list[Record]:
    return [r for r in records if (r.get("config") or {}).get("mode", "mtl") != "stl"]


def _span(values: Sequence[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"


def protocol_note(records: Iterable[Record]) -> str:
    """``"Protocol: 6 epochs, 600 optimisation steps per run."`` from the done runs (ranges where
    runs differ); tuning runs excluded."""
    done = [r for r in _mtl(records) if r.get("status") == "done" and stage_of(r) != "tune"]
    if not done:
        return "Protocol: no finished run."
    epochs = [int(r["config"]["protocol"]["epochs"]) for r in done]
    steps = [int((r.get("timing") or {}).get("steps") or 0) for r in done]
    text = f"Protocol: {_span(epochs)} epochs"
    if any(steps):
        text += f", {_span([s for s in steps if s])} optimisation steps per run"
    return text + "."


def _at_end(record: Record) -> bool | None:
    """Whether the run's best validation epoch lies at the end of training (stored, or derived
    from the curves for records older than the field)."""
    selection = record.get("selection") or {}
    if "selected_at_end" in selection:
        return selection["selected_at_end"]
    epochs = ((record.get("config") or {}).get("protocol") or {}).get("epochs")
    return convergence(record.get("curves"), epochs)[1]


def convergence_note(records: Iterable[Record]) -> str:
    """``"Converged: ..."`` or ``"**Not converged**: ..."``: of the done runs that the table
    and the references use (tuning trials excluded), how many had their best validation epoch
    in the last fifth of training, per method; flagged when more than
    :data:`NOT_CONVERGED_SHARE` of them did."""
    runs = [r for r in records if r.get("status") == "done" and stage_of(r) != "tune"]
    counts: dict[str, list[int]] = {}
    for record in runs:
        at_end = _at_end(record)
        if at_end is None:
            continue
        cfg = record.get("config") or {}
        name = "stl" if cfg.get("mode") == "stl" else str(cfg.get("method"))
        tally = counts.setdefault(name, [0, 0])
        tally[0] += int(at_end)
        tally[1] += 1
    total = sum(n for _, n in counts.values())
    if not total:
        return ""
    ended = sum(k for k, _ in counts.values())
    share = ended / total
    per = ", ".join(f"{m} {k}/{n}" for m, (k, n) in counts.items())
    what = (
        f"{ended} of {total} runs ({share:.0%}) had their best validation epoch in the last "
        f"{AT_END_FRACTION:.0%} of training ({per})"
    )
    if share > NOT_CONVERGED_SHARE:
        return (
            f"**Not converged**: {what}. Over {NOT_CONVERGED_SHARE:.0%} of the runs were still "
            "improving when the protocol stopped them: this table ranks progress within the "
            "budget, not what the methods converge to."
        )
    return f"Converged: {what}."


def seeding_note(records: Iterable[Record], rows: Iterable[tuple[str, int, float]]) -> str:
    """For a sequential sweep (records with ``config.seeding``, :mod:`mtlbench.seed_plan`): per
    method ``(label, seeds, CI half-width of its mean Δm%)`` of ``rows``, how many seeds it
    took and why it stopped: its interval was narrow enough, or ``max`` was reached."""
    plans = [(r.get("config") or {}).get("seeding") for r in records]
    plan = next((p for p in plans if p), None)
    if plan is None:
        return ""
    parts = []
    for label, n, width in rows:
        if width <= plan["until"]:
            why = f"CI ±{width:.2g}"
        elif n >= plan["max"]:
            why = f"max reached, CI ±{width:.2g}"
        else:
            why = "still growing"
        parts.append(f"{label} {n} ({why})")
    return (
        f"Sequential seeds: {plan['min']} to start, {plan['step']} more per wave while the 95% "
        f"CI of the mean Δm% is wider than ±{plan['until']:g}, at most {plan['max']}: "
        + (", ".join(parts) if parts else "no method has a test run yet")
        + "."
    )


def _most_at_once(spans: list[tuple[str, str]]) -> int:
    """The largest number of the ``(started_at, finished_at)`` ISO spans that overlap."""
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    most = now = 0
    for _, step in events:  # at a tie an end (-1) sorts before a start: touching spans differ
        now += step
        most = max(most, now)
    return most


def timing_note(records: Iterable[Record]) -> str:
    """How the table's times were measured: per host, how many of the timed runs (tuning
    trials included: they shared the machine too) ran at the same time, and with how many
    torch threads each. Ratios to LS from trials that shared cores carry that contention;
    ``mtlbench bench`` measures per-step costs without it (docs/performance.md)."""
    hosts: dict[str, list[tuple[str, str]]] = {}
    threads: dict[str, set[Any]] = {}
    for record in records:
        start, end = record.get("started_at"), record.get("finished_at")
        if record.get("status") != "done" or not start or not end:
            continue
        host = str((record.get("runner") or {}).get("host") or "?")
        hosts.setdefault(host, []).append((str(start), str(end)))
        threads.setdefault(host, set()).add((record.get("environment") or {}).get("threads"))
    if not hosts:
        return ""
    parts = []
    for host, spans in sorted(hosts.items()):
        each = "/".join(str(t) for t in sorted(threads[host], key=str))
        parts.append(
            f"up to {_most_at_once(spans)} at a time on host {host} ({each} torch thread(s) each)"
        )
    return (
        "Timing: measured in the sweep's own runs, " + "; ".join(parts) + ". Runs that shared "
        "a machine's cores time each other's contention too; `mtlbench bench` measures "
        "per-step costs alone (docs/performance.md)."
    )


NO_FINAL = "no final runs: "  # a tuning_status for a method whose tuning selected nothing


def tuning_status(records: Iterable[Record]) -> dict[str, str]:
    """Per method: ``"tuned: N tuning trials (sampler, budget B)"``, ``"untuned defaults"``, or,
    for a method with tuning trials but no final run, ``"no final runs: ..."`` (every tuning
    trial diverged or failed, so no configuration could be selected; or the tuning is still
    under way)."""
    records = _mtl(records)
    tuning = [r for r in records if stage_of(r) == "tune"]
    counts = Counter(r["config"]["method"] for r in tuning)
    tags = {
        r["config"]["method"]: r["config"].get("tuning") or {}
        for r in records
        if stage_of(r) == "final"
    }
    second = Counter(
        r["config"]["method"] for r in tuning if (r["config"].get("tuning") or {}).get("round")
    )
    out = {}
    for method in sorted({r["config"]["method"] for r in records}):
        if method in tags:
            t = tags[method]
            widened = f", {second[method]} of them widening the range" if second[method] else ""
            out[method] = (
                f"tuned: {counts[method]} tuning trials ({t.get('sampler')}, budget "
                f"{t.get('budget')} x {len(t.get('seeds') or [])} seed(s), on {t.get('metric')}"
                f"{widened})"
            )
        elif counts[method]:
            out[method] = NO_FINAL + _tuning_outcome(
                [r for r in tuning if r["config"]["method"] == method]
            )
        else:
            out[method] = "untuned defaults"
    return out


def _tuning_outcome(trials: list[Record]) -> str:
    """Why a tuned method has no final run: its tuning trials' statuses (and the reasons the
    diverged ones give)."""
    statuses = Counter(r["status"] for r in trials)
    if statuses["done"]:
        return f"{statuses['done']} of {len(trials)} tuning trials done, tuning not finished"
    reasons = sorted({(r.get("diverged") or {}).get("reason") or "" for r in trials} - {""})
    why = f" ({', '.join(reasons)})" if reasons else ""
    kinds = " or ".join(k for k in ("diverged", "failed") if statuses[k]) or "unfinished"
    return f"all {len(trials)} tuning trials {kinds}{why}, so no configuration was selected"


def tuning_note(records: Iterable[Record]) -> str:
    """One line: the tuning budget and its counts, the methods whose tuning selected nothing,
    and the methods run at untuned defaults."""
    status = tuning_status(records)
    tuned = {m: s for m, s in status.items() if s.startswith("tuned: ")}
    unselected = {m: s for m, s in status.items() if s.startswith(NO_FINAL)}
    untuned = sorted(m for m, s in status.items() if s == "untuned defaults")
    parts = []
    if tuned:
        parts.append(
            "Tuned on validation data: " + "; ".join(f"{m} {s[7:]}" for m, s in tuned.items())
        )
    if unselected:
        parts.append(
            "No final runs: "
            + "; ".join(f"{m}: {s.removeprefix(NO_FINAL)}" for m, s in unselected.items())
        )
    if untuned:
        parts.append("Run at untuned defaults: " + ", ".join(untuned))
    return ". ".join(parts) + "." if parts else ""


@dataclass(frozen=True)
class KnownCause:
    """A documented reason for a method's poor result under a condition.

    ``condition`` maps a path into the record's config to ``(operator, bound)``; the bound is a
    number, or ``(path, offset)``: another value of the config plus a number. All must hold::

        {"hparams.beta": (">=", 0.5), "protocol.epochs": ("<=", ("hparams.warmup_epochs", 1))}
    """

    method: str
    condition: Mapping[str, tuple[str, Any]]
    anchor: str
    text: str

    def holds(self, config: Mapping[str, Any]) -> bool:
        for path, (op, bound) in self.condition.items():
            value = _lookup(config, path)
            if isinstance(bound, tuple):
                base = _lookup(config, bound[0])
                bound = None if base is None else base + bound[1]
            if value is None or bound is None or not _OPS[op](value, bound):
                return False
        return True


def _lookup(config: Mapping[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


KNOWN_CAUSES: tuple[KnownCause, ...] = (
    KnownCause(
        "db_mtl",
        {"hparams.beta": (">=", 0.5), "protocol.epochs": ("<=", 20)},
        "docs/methods.md#db_mtl",
        "its constant gradient EMA (beta {hparams.beta}, no bias correction) lags on short "
        "protocols; beta = 0 closes the gap on MultiDigits",
    ),
    KnownCause(
        "stch",
        {"protocol.epochs": ("<=", ("hparams.warmup_epochs", 1))},
        "docs/methods.md#stch",
        "the run ends inside its warm-up (epochs 0-{hparams.warmup_epochs} train on sum log l): "
        "the Tchebycheff objective never starts",
    ),
)


def _fill(text: str, config: Mapping[str, Any]) -> str:
    out = text
    for token in ("hparams.beta", "hparams.warmup_epochs"):
        out = out.replace("{" + token + "}", str(_lookup(config, token)))
    return out


def outlier_notes(
    delta_m: Mapping[str, float],
    records: Iterable[Record],
    margin: float = 10.0,
    causes: Sequence[KnownCause] = KNOWN_CAUSES,
) -> list[str]:
    """A line per method whose Δm% (``delta_m``: method -> mean Δm%, positive is worse) is more
    than ``margin`` points behind LS's: its known cause with the doc anchor when one holds for
    the method's runs (the config of its first table run), else that none is documented."""
    if "ls" not in delta_m:
        return []
    table_runs = [r for r in _mtl(records) if stage_of(r) != "tune"]
    lines = []
    for method, value in sorted(delta_m.items(), key=lambda kv: -kv[1]):
        gap = value - delta_m["ls"]
        if method == "ls" or not gap > margin:
            continue
        config = next((r["config"] for r in table_runs if r["config"]["method"] == method), {})
        cause = next((c for c in causes if c.method == method and c.holds(config)), None)
        head = f"{method} is {gap:.1f} points of Δm% behind LS"
        if cause is None:
            lines.append(f"{head}: no known cause is documented.")
        else:
            lines.append(f"{head}: {_fill(cause.text, config)} ({cause.anchor}).")
    return lines
