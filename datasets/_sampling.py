"""Seeded sampling shared by every benchmark: the order of a training epoch, and loaders that
carry the epoch to their dataset.

One rule for all the benchmarks: epoch ``e`` of a trial with seed ``s`` visits the training
samples in the order ``torch.randperm(n)`` drawn from a ``torch.Generator`` seeded with the
32-bit state that numpy's ``SeedSequence([s, e])`` derives (its hash mixing keeps nearby
``(s, e)`` pairs apart); evaluation splits are visited in order. The order therefore depends on
``(seed, epoch)`` only, neither on the epochs run before (a resumed trial sees the same batches)
nor on the number of loader workers. The fixed splits of the datasets (drawn once, the same for
every trial) are :func:`permutation` of their ``split_seed`` / ``data_seed``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from mtlbench.benchmark import tensor_batches


def derive_seed(*keys: int) -> int:
    """A 32-bit seed from non-negative integer keys (numpy's ``SeedSequence`` mixing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def permutation(n: int, seed: int) -> Tensor:
    """``randperm(n)`` drawn from a generator seeded with ``seed`` (the fixed data splits)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that shuffles epoch ``epoch`` of a trial with seed ``seed``."""
    return torch.Generator().manual_seed(derive_seed(seed, epoch))


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> Tensor:
    """The visiting order of ``n`` samples in one epoch: ``randperm(n)`` drawn from
    :func:`epoch_generator` when ``shuffle``, else ``arange(n)``."""
    if not shuffle:
        return torch.arange(n)
    return permutation(n, derive_seed(seed, epoch))


def epoch_batches(
    tensors: Sequence[Tensor], batch_size: int, shuffle: bool, seed: int, epoch: int
) -> Iterator[tuple[Tensor, ...]]:
    """Mini-batches of in-memory tensors in the order of :func:`epoch_order`."""
    generator = epoch_generator(seed, epoch) if shuffle else None
    return tensor_batches(tensors, batch_size, shuffle, generator)


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(position, epoch)`` in the order of :func:`epoch_order`.

    The epoch travels with each item, so a dataset can seed per-sample randomness by it, and a
    loader with persistent workers can be re-used across epochs (the sampler runs in the main
    process; ``set_epoch`` before iterating).
    """

    def __init__(self, n: int, shuffle: bool, seed: int) -> None:
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = epoch_order(self.n, self.seed, self.epoch, self.shuffle).tolist()
        return ((i, self.epoch) for i in order)


def epoch_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int
) -> tuple[DataLoader, EpochSampler]:
    """A DataLoader over ``dataset`` (indexed by ``(position, epoch)``) and its sampler:
    persistent workers when ``num_workers > 0``, pinned memory when CUDA is available."""
    sampler = EpochSampler(len(dataset), shuffle, seed)  # type: ignore[arg-type]
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
    )
    return loader, sampler
