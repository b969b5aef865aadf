"""What a Slurm cluster allows one user to submit: array sizes and submit limits.

* ``MaxArraySize`` (``scontrol show config``, slurm.conf; Slurm's default 1001) bounds a job
  array's *index*: an array's indices must be below it, so an array of ``n`` tasks numbered
  ``0..n-1`` fits when ``n <= MaxArraySize``.
* ``MaxSubmitJobs`` of the user's association (``sacctmgr show assoc``; a user's association
  without one inherits its account's) and ``MaxSubmitJobsPerUser`` of the job's QOS
  (``sacctmgr show qos``) bound how many of the user's jobs may be pending or running at once;
  every task of an array counts as one job. The tighter of the two is the limit.

Only these per-user limits are read; a group limit (``GrpSubmitJobs``) counts other users' jobs
too, and shows as sbatch refusing an array for its "job submit limit", which
:mod:`mtlbench.run.slurm.batches` treats like a known limit. A command that does not answer
(no accounting, no permission) leaves its limit unknown (None): nothing is held for it.
Nothing here imports submitit.
"""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from mtlbench.run.slurm.ledger import squeue_states

Runner = Callable[[list[str]], "str | None"]


def run_command(argv: list[str]) -> str | None:
    """The standard output of ``argv`` (None when it is not on PATH, fails or hangs)."""
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


@dataclass(frozen=True)
class Limits:
    """A cluster's limits for one resource group (None: none known)."""

    max_array_size: int | None = None
    max_submit: int | None = None
    submit_source: str = ""  # which setting: ``MaxSubmitJobs=8 (association root/default)``

    @property
    def array_cap(self) -> int | None:
        """The most tasks one array may have: below ``MaxArraySize``'s index bound, and no
        more than the submit limit (an array above it could never be submitted)."""
        caps = [c for c in (self.max_array_size, self.max_submit) if c is not None]
        return max(1, min(caps)) if caps else None

    def describe(self) -> str:
        parts = []
        if self.max_array_size is not None:
            parts.append(f"MaxArraySize={self.max_array_size}")
        if self.max_submit is not None:
            parts.append(self.submit_source)
        return ", ".join(parts) or "no array or submit limit known"


def parse_max_array_size(config: str) -> int | None:
    """``MaxArraySize`` from ``scontrol show config`` output."""
    match = re.search(r"^\s*MaxArraySize\s*=\s*(\d+)", config, flags=re.MULTILINE)
    return int(match.group(1)) if match else None


ASSOC_FIELDS = ("Account", "User", "Partition", "MaxSubmit", "QOS", "DefaultQOS")
QOS_FIELDS = ("Name", "MaxSubmitPU")


def parse_rows(text: str, fields: tuple[str, ...]) -> list[dict[str, str]]:
    """``sacctmgr -n -P`` output (``|``-separated, no header) as dicts of ``fields``."""
    rows = []
    for line in text.splitlines():
        if line.strip():
            values = line.split("|")
            rows.append(dict(zip(fields, [v.strip() for v in values], strict=False)))
    return rows


def _number(text: str | None) -> int | None:
    return int(text) if text and text.strip().isdigit() else None


def submit_limit(
    assoc: list[dict[str, str]],
    qos: list[dict[str, str]],
    user: str,
    account: str | None = None,
    partition: str | None = None,
    job_qos: str | None = None,
) -> tuple[int | None, str]:
    """The tightest per-user submit limit for jobs of ``user`` (module docstring), and which
    setting it is. ``assoc`` holds the user's associations and their accounts' (``User``
    empty); with no ``account`` given every account of the user counts (the tightest wins)."""
    accounts = {r["Account"]: r for r in assoc if not r.get("User") and not r.get("Partition")}
    best: tuple[int | None, str] = (None, "")

    def tighter(value: int | None, source: str) -> None:
        nonlocal best
        if value is not None and (best[0] is None or value < best[0]):
            best = (value, source)

    mine = [
        r
        for r in assoc
        if r.get("User") == user
        and (account is None or r.get("Account") == account)
        and (partition is None or r.get("Partition") in ("", partition))
    ]
    for row in mine:
        own = _number(row.get("MaxSubmit"))
        inherited = _number(accounts.get(row.get("Account", ""), {}).get("MaxSubmit"))
        where = f"association {user}/{row.get('Account')}"
        tighter(own if own is not None else inherited, f"MaxSubmitJobs={{}} ({where})")
    names = {job_qos} if job_qos else {r.get("DefaultQOS") or "normal" for r in mine}
    for row in qos:
        if row.get("Name") in names:
            value = _number(row.get("MaxSubmitPU"))
            tighter(value, f"MaxSubmitJobsPerUser={{}} (QOS {row.get('Name')})")
    return best[0], best[1].format(best[0]) if best[0] is not None else ""


def read_limits(
    account: str | None = None,
    partition: str | None = None,
    qos: str | None = None,
    run: Runner = run_command,
    user: str | None = None,
) -> Limits:
    """The live limits (``scontrol``, ``sacctmgr``) for jobs with these options."""
    user = user or getpass.getuser()
    config = run(["scontrol", "show", "config"])
    size = parse_max_array_size(config) if config else None
    fmt = "format=" + ",".join(ASSOC_FIELDS)
    mine = parse_rows(
        run(["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}", fmt]) or "", ASSOC_FIELDS
    )
    accounts = sorted({r["Account"] for r in mine if r.get("Account")})
    parents: list[dict[str, str]] = []
    if accounts:
        text = run(["sacctmgr", "-n", "-P", "show", "assoc", f"account={','.join(accounts)}", fmt])
        parents = [r for r in parse_rows(text or "", ASSOC_FIELDS) if not r.get("User")]
    qos_rows = parse_rows(
        run(["sacctmgr", "-n", "-P", "show", "qos", "format=" + ",".join(QOS_FIELDS)]) or "",
        QOS_FIELDS,
    )
    limit, source = submit_limit(mine + parents, qos_rows, user, account, partition, qos)
    return Limits(max_array_size=size, max_submit=limit, submit_source=source)


def queued_jobs() -> int | None:
    """How many of this user's jobs are pending or running, one per array task (None when
    ``squeue`` does not answer)."""
    try:
        return len(squeue_states())
    except RuntimeError:
        return None
