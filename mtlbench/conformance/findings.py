"""What a conformance check reports: one readable line per broken promise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mtlbench.method import Method


@dataclass(frozen=True)
class Finding:
    """A failed check: the method, the check's name, and a one-line reason (with the input)."""

    method: str
    check: str
    reason: str

    def __str__(self) -> str:
        return f"{self.method}: {self.check}: {self.reason}"


# Builds a fresh method with K tasks (the hyper-parameters under test already bound).
Builder = Callable[[int], Method]
