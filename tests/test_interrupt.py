"""Ctrl-C: `cli.main` lets KeyboardInterrupt through, so a caller (pytest running a test that
calls it) stops; the `mtlbench` console script exits with status 130 and one line."""

from __future__ import annotations

import pytest

from mtlbench import cli


def _interrupting(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(args):  # noqa: ARG001 - the command's signature
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "list", handler)


def test_main_propagates_ctrl_c(monkeypatch):
    _interrupting(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["list", "methods"])


def test_the_console_script_exits_130(monkeypatch, capsys):
    _interrupting(monkeypatch)
    monkeypatch.setattr("sys.argv", ["mtlbench", "list", "methods"])
    with pytest.raises(SystemExit) as exit_:
        cli.console()
    assert exit_.value.code == 130
    assert capsys.readouterr().err.strip() == "mtlbench: interrupted"
