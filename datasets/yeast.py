"""Yeast (14 binary tasks): gene functional classes from expression and phylogenetic profiles.

Data: ``river.datasets.Yeast``, the MULAN version of Elisseeff & Weston's yeast data ("A
kernel method for multi-labelled classification", NeurIPS 2001): 2,417 genes x 103 numeric
features, 14 functional classes; river ships it as ``yeast.csv.gz`` inside the package (the
``data`` extra), so it is read offline from the file (columns ``Att1..Att103``,
``Class1..Class14`` with values 0 / 1). Tasks ``class1`` .. ``class14``.

**Split** (seeded by ``data_seed``, fixed across trials): the genes are permuted and cut 60 %
/ 20 % / 20 % into train / validation / test (1,450 / 483 / 484). MULAN's fixed 1,500 / 917
train / test files have no validation split and are not in river's single file.
**Features** standardised with the training split's mean and standard deviation.

**Model**: an MLP trunk 103 -> 256 -> 256 (ReLU after each layer; representation ``(B,
256)``, ``feature_dim`` 256) and one Linear(256, 1) logit per class. **Loss**: binary
cross-entropy per class (batch mean).

**Metrics.** The per-task metric is the class's balanced accuracy ``bacc_<class>``, the mean of
its true-positive and true-negative rates (Brodersen, Ong, Stephan & Buhmann, "The balanced
accuracy and its posterior distribution", ICPR 2010): a class-balanced measure, as the multi-
label literature on Yeast uses class-balanced (macro) averages beside Hamming loss (Tsoumakas,
Katakis & Vlahavas, "Mining multi-label data", 2010; Madjarov et al., "An extensive experimental
comparison of methods for multi-label learning", Pattern Recognition 2012; Zhang & Zhou, "A
review on multi-label learning algorithms", IEEE TKDE 2014, whose label-based macro-F1 is the
usual one). Plain accuracy cannot be the metric: several classes are rare (class9 7.4 %, class14
1.4 % of the genes), and a constant "no" predictor scores 0.9401 and 0.9835 on their test split,
exactly what every method of the first Yeast leaderboard scored. Per-class F1, the literature's
own choice, cannot be either: Δm% divides by the reference, and the single-task models predict
no positive of class9 and class14 at all (test F1 0 at lr 1e-3 and 1e-2, 60 epochs, selected on
validation F1 or balanced accuracy, measured for issue 21), so every method's Δm% would be
undefined; their balanced accuracy is 0.5, a defined reference. Every constant predictor scores
0.5 whatever the prevalence. Plain accuracy ``acc_<class>``, F1 ``f1_<class>`` (CelebA's
formula), the ``macro_bacc``, ``macro_f1`` and ``micro_f1`` and the Hamming loss are kept as
diagnostics: in the curves of every run and in a multi-task run's test metrics. No published
reference: the suite's STL mode produces it.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlbench.benchmark import (
    Benchmark,
    DataUnavailable,
    Evaluator,
    Metric,
    MultiTaskModel,
    Protocol,
    Split,
    register,
)
from mtlbench.datasets._sampling import epoch_batches, permutation
from mtlbench.registry import NonNegativeInt

N_FEATURES = 103
CLASSES = tuple(f"class{i}" for i in range(1, 15))
FRACTIONS = {"train": 0.6, "val": 0.2}
MISSING = "river is not installed: pip install 'mtlbench[data]' (yeast is read from river's copy)"


@functools.lru_cache(maxsize=1)
def load_yeast() -> tuple[Tensor, Tensor]:
    """Features ``(2417, 103)`` float32 and labels ``(2417, 14)`` float32 in {0, 1}."""
    if importlib.util.find_spec("river") is None:
        raise DataUnavailable(MISSING)
    import pandas as pd
    from river.datasets import Yeast

    frame = pd.read_csv(Yeast().path)
    features = frame[[f"Att{i}" for i in range(1, N_FEATURES + 1)]].to_numpy(np.float32)
    labels = frame[[f"Class{i}" for i in range(1, 15)]].to_numpy(np.float32)
    return torch.from_numpy(features), torch.from_numpy(labels)


@functools.lru_cache(maxsize=4)
def build(data_seed: int) -> dict[str, tuple[Tensor, Tensor]]:
    """``{split: (standardised features, labels)}``, the split seeded by ``data_seed``."""
    x, y = load_yeast()
    n = len(y)
    order = permutation(n, data_seed)
    n_train, n_val = round(FRACTIONS["train"] * n), round(FRACTIONS["val"] * n)
    index = {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }
    mean = x[index["train"]].mean(dim=0)
    std = x[index["train"]].std(dim=0).clamp(min=1e-8)
    return {split: ((x[i] - mean) / std, y[i]) for split, i in index.items()}


def f1_scores(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    """F1 from counts with CelebA's 1e-8 guards (0 when a class has no positive at all)."""
    precision = tp / (tp + fp + 1e-8)
    recall = tp / (tp + fn + 1e-8)
    return 2 * precision * recall / (precision + recall + 1e-8)


def balanced_accuracy(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
    """Per class, the mean of the true-positive rate ``tp / (tp + fn)`` and the true-negative
    rate ``tn / (tn + fp)`` (Brodersen et al., ICPR 2010): 0.5 for every constant predictor,
    whatever the class's prevalence. A rate whose class is absent from the split (no positive,
    or no negative) is undefined and left out, as scikit-learn's ``balanced_accuracy_score``
    leaves out a class absent from ``y_true``: the other rate is the value."""
    tpr = tp / (tp + fn)
    tnr = tn / (tn + fp)
    return torch.stack([tpr, tnr]).nanmean(dim=0)


class MultiLabelEvaluator(Evaluator):
    """Counts per class over a split (logits thresholded at 0) -> ``bacc_<class>`` (the
    metrics), and as diagnostics ``acc_<class>``, ``f1_<class>``, ``macro_bacc``,
    ``macro_f1``, ``micro_f1`` and ``hamming_loss`` (one minus the mean accuracy)."""

    def __init__(self) -> None:
        self.counts = torch.zeros(4, len(CLASSES), dtype=torch.float64)  # tp, fp, fn, tn

    def update(self, outputs: list[Tensor], batch: Any) -> None:
        pred = (torch.cat(outputs, dim=1).detach() > 0).double().cpu()
        y = batch[1].double().cpu()
        self.counts += torch.stack(
            [
                (pred * y).sum(0),
                (pred * (1 - y)).sum(0),
                ((1 - pred) * y).sum(0),
                ((1 - pred) * (1 - y)).sum(0),
            ]
        )

    def compute(self) -> dict[str, float]:
        tp, fp, fn, tn = self.counts
        n = float((tp + fp + fn + tn)[0])
        if n == 0:
            raise RuntimeError("no batch was evaluated")
        bacc = balanced_accuracy(tp, fp, fn, tn)
        accuracy = (tp + tn) / n
        f1 = f1_scores(tp, fp, fn)
        values = {f"bacc_{c}": float(v) for c, v in zip(CLASSES, bacc, strict=True)}
        values.update({f"acc_{c}": float(a) for c, a in zip(CLASSES, accuracy, strict=True)})
        values.update({f"f1_{c}": float(v) for c, v in zip(CLASSES, f1, strict=True)})
        values["macro_bacc"] = float(bacc.mean())
        values["macro_f1"] = float(f1.mean())
        values["micro_f1"] = float(f1_scores(tp.sum(), fp.sum(), fn.sum()))
        values["hamming_loss"] = float(1 - accuracy.mean())
        return values


class MLPTrunk(nn.Module):
    """103 -> 256 -> 256 with ReLU: the shared representation ``(B, 256)``."""

    def __init__(self, width: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(N_FEATURES, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@dataclass
class YeastProtocol(Protocol):
    """``data_seed`` fixes the 60 / 20 / 20 split."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    data_seed: NonNegativeInt = 0


@register("yeast")
class Yeast(Benchmark):
    tasks = CLASSES
    metrics = tuple(Metric(f"bacc_{c}", c, higher_is_better=True) for c in CLASSES)
    protocol_type = YeastProtocol
    paper = "Yeast: Elisseeff & Weston, A kernel method for multi-labelled classification, 2001"
    description = "yeast gene functions (river's copy): 103 features, 14 binary classes; MLP"
    feature_dim = 256
    protocol: YeastProtocol

    @classmethod
    def smoke_protocol(cls) -> dict[str, Any]:
        return {"epochs": 1, "max_steps": 2}

    def check_data(self) -> list[str]:
        return [] if importlib.util.find_spec("river") is not None else [MISSING]

    def build_model(self) -> MultiTaskModel:
        return MultiTaskModel(MLPTrunk(256), [nn.Linear(256, 1) for _ in CLASSES])

    def batches(self, split: Split, epoch: int = 0) -> Iterator[tuple[Tensor, ...]]:
        x, y = build(self.protocol.data_seed)[split]
        return epoch_batches((x, y), self.protocol.batch_size, split == "train", self.seed, epoch)

    def task_losses(self, outputs: list[Tensor], batch: Any) -> Tensor:
        logits = torch.cat(outputs, dim=1)
        return F.binary_cross_entropy_with_logits(logits, batch[1], reduction="none").mean(0)

    def evaluator(self) -> Evaluator:
        return MultiLabelEvaluator()
