"""SegNet-MTAN: the Multi-Task Attention Network on a SegNet trunk, as the NYU-v2 and Cityscapes
experiments of MTAN, CAGrad, Nash-MTL, FAMO and LDC-MTL use it.

Written from the description of ``experiments/nyuv2/models.py::_SegNet`` in Cranial-XIX/FAMO
@0a6ad06 (itself MTAN's ``im2im_pred/model_segnet_mtan.py``, lorenmt/mtan; Liu, Johns & Davison,
"End-to-End Multi-Task Learning with Attention", CVPR 2019); protocols.md section 4.1.

Architecture, with filters ``f = [64, 128, 256, 512, 512]`` and levels ``l = 0..4``:

* **Shared SegNet.** Every block is conv3x3 -> BatchNorm -> ReLU. Encoder level ``l``:
  ``e0 = in_block(x)`` (``3 -> f0`` or ``f[l-1] -> f[l]``), ``e1 = conv_block(e0)`` (one block at
  levels 0, 1, two at 2..4), then a 2x2 max-pool that keeps its indices. Decoder level ``l``
  (from 4 down to 0): max-unpool with the encoder's indices, ``d0 = in_block`` (``f[l] ->
  f[l-1]``, ``f0 -> f0`` at level 0), ``d1 = conv_block(d0)`` (one block at levels 0, 1, two at
  2..4, width ``f[l-1]``).
* **Task attention** (one branch per task). A mask is 1x1 conv -> BN -> ReLU -> 1x1 conv -> BN
  -> sigmoid. Encoder level ``l``: ``mask(cat(e0, a_prev))`` (``mask(e0)`` at level 0) times
  ``e1``, then a *shared* conv block (``f[l] -> f[l+1]``, ``512 -> 512`` at level 4) and a 2x2
  max-pool gives ``a_prev`` of the next level. Decoder level ``l``: bilinear x2 up-sampling
  (align_corners) of the previous attention feature, a *shared* conv block (``f[l] ->
  f[l-1]``), ``mask(cat(unpooled, that))`` times ``d1``.
* **Heads**: conv3x3(64 -> 64) then conv1x1(64 -> C), no normalisation between; segmentation
  takes a log-softmax, normals an L2 normalisation, depth stays raw.
* **Initialisation**: Xavier-normal weights and zero biases for every conv (and linear),
  BatchNorm weight 1 and bias 0.

Parameter split (:class:`MtanModel`): as the reference's ``shared_parameters`` (every parameter
whose name does not contain ``pred``), the ``encoder`` holds the SegNet trunk *and* the
attention branches; the ``heads`` are the two-conv prediction layers. Gradient methods
therefore see the attention parameters as shared (their rows of J are zero for the other
tasks), exactly as in FAMO / Nash-MTL.

Representation: the forward returns the **shared** decoder output ``d1`` of level 0
(``B x 64 x H x W``), the last feature all tasks share (``feature_dim = 64``). The reference
exposes the three task-specific attention features instead; the heads here consume those, so
a method that reads the representation (LDC-MTL's router, MGDA-UB Gramians) sees the shared
feature, while the update always back-propagates through everything.

Inputs must have a height and width divisible by 32 (five 2x2 poolings with unpooling).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlbench.benchmark import MultiTaskModel

FILTERS = (64, 128, 256, 512, 512)
Activation = Literal["log_softmax", "none", "l2_normalize"]


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """conv3x3 (with bias) -> BatchNorm -> ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


def attention_mask(cin: int, cmid: int, cout: int) -> nn.Sequential:
    """1x1 conv -> BN -> ReLU -> 1x1 conv -> BN -> sigmoid: a soft mask in (0, 1)."""
    return nn.Sequential(
        nn.Conv2d(cin, cmid, 1),
        nn.BatchNorm2d(cmid),
        nn.ReLU(),
        nn.Conv2d(cmid, cout, 1),
        nn.BatchNorm2d(cout),
        nn.Sigmoid(),
    )


def xavier_init(module: nn.Module) -> None:
    """Xavier-normal conv / linear weights with zero bias; BatchNorm weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SegNetMtanTrunk(nn.Module):
    """The shared SegNet plus ``n_tasks`` attention branches.

    ``forward(x)`` returns ``(shared, features)``: the shared level-0 decoder output and one
    attention-masked level-0 feature per task, all ``B x f0 x H x W``.
    """

    def __init__(self, n_tasks: int, filters: Sequence[int] = FILTERS) -> None:
        super().__init__()
        f = list(filters)
        levels = len(f)
        self.n_tasks = n_tasks
        self.levels = levels
        # Shared SegNet encoder / decoder, indexed by level (0 = full resolution).
        self.enc_in = nn.ModuleList(
            [conv_block(3 if i == 0 else f[i - 1], f[i]) for i in range(levels)]
        )
        self.enc_conv = nn.ModuleList([self._convs(f[i], 1 if i < 2 else 2) for i in range(levels)])
        self.dec_in = nn.ModuleList(
            [conv_block(f[i], f[i - 1] if i > 0 else f[0]) for i in range(levels)]
        )
        self.dec_conv = nn.ModuleList(
            [self._convs(f[i - 1] if i > 0 else f[0], 1 if i < 2 else 2) for i in range(levels)]
        )
        # Shared convs of the attention path, between levels.
        self.enc_att_conv = nn.ModuleList(
            [conv_block(f[i], f[i + 1] if i + 1 < levels else f[i]) for i in range(levels)]
        )
        self.dec_att_conv = nn.ModuleList(
            [conv_block(f[i], f[i - 1] if i > 0 else f[0]) for i in range(levels)]
        )
        # Task-specific attention masks.
        self.enc_att = nn.ModuleList(
            nn.ModuleList(
                [attention_mask(f[i] if i == 0 else 2 * f[i], f[i], f[i]) for i in range(levels)]
            )
            for _ in range(n_tasks)
        )
        dec_width = [f[0]] + f[:-1]  # channels of d1 at each level
        self.dec_att = nn.ModuleList(
            nn.ModuleList(
                [
                    attention_mask(f[i] + dec_width[i], dec_width[i], dec_width[i])
                    for i in range(levels)
                ]
            )
            for _ in range(n_tasks)
        )
        xavier_init(self)

    @staticmethod
    def _convs(width: int, n: int) -> nn.Sequential:
        return nn.Sequential(*[conv_block(width, width) for _ in range(n)])

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        factor = 2**self.levels
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"SegNet-MTAN needs a height and width divisible by {factor}, got "
                f"{tuple(x.shape[-2:])}"
            )
        # Shared encoder: keep e0 / e1 of each level for the attention branches.
        e0, e1, indices = [], [], []
        h = x
        for i in range(self.levels):
            a = self.enc_in[i](h)
            b = self.enc_conv[i](a)
            h, idx = F.max_pool2d(b, 2, 2, return_indices=True)
            e0.append(a)
            e1.append(b)
            indices.append(idx)
        # Shared decoder, from the deepest level up: unpooled input u and output d1 per level.
        up: list[Tensor] = [h] * self.levels
        d1: list[Tensor] = [h] * self.levels
        for i in reversed(range(self.levels)):
            up[i] = F.max_unpool2d(h, indices[i], 2, 2, output_size=e1[i].shape[-2:])
            h = self.dec_conv[i](self.dec_in[i](up[i]))
            d1[i] = h
        shared = h
        features = []
        for t in range(self.n_tasks):
            prev = None
            for i in range(self.levels):
                g = e0[i] if prev is None else torch.cat((e0[i], prev), dim=1)
                masked = self.enc_att[t][i](g) * e1[i]
                prev = F.max_pool2d(self.enc_att_conv[i](masked), 2, 2)
            for i in reversed(range(self.levels)):
                assert prev is not None
                z = F.interpolate(prev, scale_factor=2, mode="bilinear", align_corners=True)
                z = self.dec_att_conv[i](z)
                prev = self.dec_att[t][i](torch.cat((up[i], z), dim=1)) * d1[i]
            assert prev is not None
            features.append(prev)
        return shared, features


class PredictionHead(nn.Module):
    """conv3x3(c -> c) then conv1x1(c -> out), followed by the task's output activation."""

    def __init__(self, channels: int, out: int, activation: Activation = "none") -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, out, 1)
        )
        self.activation = activation
        xavier_init(self)

    def forward(self, feature: Tensor) -> Tensor:
        y = self.conv(feature)
        if self.activation == "log_softmax":
            return F.log_softmax(y, dim=1)
        if self.activation == "l2_normalize":
            return y / torch.linalg.vector_norm(y, ord=2, dim=1, keepdim=True)
        return y


class MtanModel(MultiTaskModel):
    """A :class:`MultiTaskModel` whose heads read their own attention features.

    ``encoder`` is the :class:`SegNetMtanTrunk` (shared parameters, attention included, as the
    reference); ``heads`` the prediction layers. ``forward`` returns ``(shared decoder
    output, [head_k(feature_k)])``. This overrides ``MultiTaskModel.forward``, whose heads all
    read the representation, because MTAN's heads do not.
    """

    encoder: SegNetMtanTrunk

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:  # type: ignore[override]
        shared, features = self.encoder(x)
        return shared, [head(f) for head, f in zip(self.heads, features, strict=True)]


def segnet_mtan(outputs: Sequence[tuple[int, Activation]]) -> MtanModel:
    """SegNet-MTAN with one head per ``(channels, activation)`` in ``outputs``."""
    trunk = SegNetMtanTrunk(len(outputs))
    heads = [PredictionHead(FILTERS[0], c, act) for c, act in outputs]
    return MtanModel(trunk, heads)
