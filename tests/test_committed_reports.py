"""The committed leaderboards (issue 14): ``reports/`` is exactly what ``mtlbench report results
--out reports`` renders from the committed records in ``results/``. The records are copied first
(only the committed sweeps: a local ``results/quickstart`` would join the report), and the
command runs where ``results`` names them, as the page quotes the folder it was given. Only the
paths ``.gitignore`` keeps are compared (a local ``reports/quickstart/`` is not). Text
outputs are compared byte for byte; figures by name (PNG bytes depend on the matplotlib build)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mtlbench.cli import main
from mtlbench.records import scan

ROOT = Path(__file__).resolve().parents[1]
# The committed sweeps (sweeps/leaderboard_*.yaml); .gitignore keeps the rest of results/ out.
CANONICAL = ("multidigits", "multimnist", "qm9_small", "toy_figure", "yeast")
IGNORED = shutil.ignore_patterns(".*", "checkpoints")  # leases, checkpoints: not records
TEXT = {".md", ".csv", ".tex", ".html"}

pytestmark = pytest.mark.slow


# What .gitignore keeps of reports/: the page and its figures and tables. A sweep's own report
# (the README's quickstart writes reports/quickstart/) is local and not compared.
COMMITTED = ("index.md", "index.html", "figures", "tables")


def _files(folder: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(folder)): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).parts[0] in COMMITTED
    }


def _committed_results(dest: Path) -> Path:
    for name in CANONICAL:
        shutil.copytree(ROOT / "results" / name, dest / name, ignore=IGNORED)
    return dest


def test_committed_results_are_the_canonical_leaderboards(tmp_path):
    records = [r for _, r in scan(_committed_results(tmp_path / "results")).records]
    assert {r["config"]["benchmark"] for r in records} == {
        "multidigits",
        "multimnist",
        "qm9-small",
        "toy",
        "yeast",
    }
    assert all(r["status"] in {"done", "diverged"} for r in records)
    # A clone carries every record, so the size is bounded. The four re-runs of issue 21 are
    # 1,530 records with dense evaluation curves, 28.9 MiB gzipped (Yeast 12.4, qm9-small 10.3);
    # 40 MiB leaves room for one more leaderboard, not for checkpoints.
    size = sum(p.stat().st_size for p in (tmp_path / "results").rglob("*") if p.is_file())
    assert size < 40 * 2**20, f"results/ holds {size / 2**20:.1f} MiB (limit 40 MiB)"


def test_committed_reports_equal_what_the_command_renders(tmp_path, monkeypatch):
    _committed_results(tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    assert main(["report", "results", "--out", "reports", "--format", "md,csv,tex,html"]) == 0
    committed, rendered = _files(ROOT / "reports"), _files(tmp_path / "reports")
    assert sorted(committed) == sorted(rendered)
    for name, path in committed.items():
        if path.suffix in TEXT:
            assert path.read_text() == rendered[name].read_text(), f"reports/{name} is stale"


def test_committed_leaderboards_are_converged_and_state_their_power():
    """Issue 21's 'Done when': the committed leaderboards carry no "not converged" flag, and each
    of the four states its minimal detectable difference from LS (the toy has no Δm%)."""
    page = (ROOT / "reports" / "index.md").read_text()
    assert "**Not converged**" not in page
    assert page.count("- Converged: ") == 4
    assert page.count("points are undetectable here") == 4
