"""The stages of a sweep: which trials may run together, and in which order.

A module of its own, below the trial model: ``mtlbench status`` reads stages without the
registries (and so without torch); :func:`mtlbench.trial.split_stages` fills them.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Literal

StageKind = Literal["stl-tune", "stl", "tune", "mtl"]
STAGE_KINDS: tuple[StageKind, ...] = ("stl-tune", "stl", "tune", "mtl")
_STAGE_TEXT = {
    "stl-tune": "tuning trials of the single-task references",
    "stl": "single-task references",
    "tune": "tuning trials",
    "mtl": "multi-task trials",
}


@dataclass(frozen=True)
class Stage:
    """Trials that may run together, in the order they run. Stages run one after the other:
    the tuning trials of the single-task references (when tuned), the references (the
    multi-task trials of a benchmark read them), then the tuning trials, then the multi-task
    trials (the final runs of tuned methods among them, once selected). A stage reads as the
    sequence of its trials."""

    kind: StageKind
    trials: tuple[Any, ...]  # mtlbench.trial.ResolvedTrial (the trial model sits above)

    @property
    def what(self) -> str:
        return _STAGE_TEXT[self.kind]

    def __iter__(self) -> typing.Iterator[Any]:
        return iter(self.trials)

    def __len__(self) -> int:
        return len(self.trials)

    def __getitem__(self, index: Any) -> Any:
        return self.trials[index]
