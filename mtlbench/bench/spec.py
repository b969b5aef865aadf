"""What one contender of the bench runs (:class:`Spec`): the bottom of ``mtlbench.bench``, so
that the measurements (:mod:`.measure`) and the peer libraries' steps (:mod:`.peers`) both
read it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Spec:
    """What one contender runs: mtlbench's own training step with the engine's ``mode``
    (``batched``, ``sequential``, ``gramian``; ``next_step``: the batched engine and FAMO's
    next-step losses) and ``chunk`` size, or, with ``peer`` set, that
    library's step for the same method (``mode``: ``mtl_backward`` or ``autogram`` for TorchJD).
    Picklable, so that a fresh process can rebuild the contender for its memory."""

    method: str
    mode: str = "batched"
    chunk: int | None = None
    peer: str | None = None

    @property
    def label(self) -> str:
        if self.peer is not None:
            suffix = "" if self.mode == "mtl_backward" else f"-{self.mode}"
            return f"{self.method}@{self.peer}{suffix}"
        return self.method if self.mode == "batched" else f"{self.method}@{self.mode}"
