"""The one interface every task-balancing method implements.

A method turns K task losses into one update. It declares what it needs and the trainer (through
:class:`mtlbench.gradients.GradientEngine`) provides exactly that; nothing outside a method knows
its name.

* ``needs = "losses"`` (:class:`LossWeighting`, O(1)): ``objective(losses, ctx)`` returns the
  scalar to back-propagate and the task weights it used.
* ``needs = "gramian"`` (:class:`GramianWeighting`, O(K)): ``weights(gramian, losses)`` maps the
  K x K Gramian ``G = J J^T`` to task weights ``w``; the update is ``w^T J``.
* ``needs = "jacobian"`` (:class:`JacobianMethod`, O(K)): ``aggregate(jacobian, losses)`` maps
  the K x P Jacobian to a P-vector.

Every gradient-based method exposes the same pure functional core, ``aggregate(jacobian,
losses) -> Aggregate`` (a K x P matrix to a P-vector), testable on hand-made matrices and usable
in anyone's training loop.

Methods are :class:`torch.nn.Module` s, so their parameters (UW's log-variances, LDC-MTL's
router) and state (buffers, or ``get_extra_state`` for Python-side state such as an internal
optimizer) go into checkpoints with ``state_dict``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from mtlbench.plugins import load_installed
from mtlbench.precision import combine64, gramian64
from mtlbench.registry import Registry
from mtlbench.space import Space

Need = Literal["losses", "gramian", "jacobian"]
Scale = Literal["sum", "mean"]


@dataclass
class StepContext:
    """What the trainer knows about the current step, for methods that need it.

    ``features`` is the shared representation of the batch (not detached), given only to
    methods with ``uses_features = True`` (LDC-MTL's feature-conditioned router).
    """

    step: int = 0
    epoch: int = 0
    features: Tensor | None = None


@dataclass
class Objective:
    """A loss-weighting method's output: the scalar to back-propagate and the weights used."""

    loss: Tensor
    weights: Tensor


@dataclass
class Aggregate:
    """A gradient method's output.

    ``update`` is the aggregated P-vector for the shared parameters. ``weights`` are the task
    weights used (for logging; for Gramian methods ``update == weights @ J``). ``head_weights``
    are the coefficients ``c`` that the task heads are trained with under the ``weighted`` head
    policy: each head gets the gradient of ``sum_k c_k l_k``.
    """

    update: Tensor
    weights: Tensor
    head_weights: Tensor


class Method(nn.Module):
    """Base class of all methods. Subclass one of the three kinds below, not this one.

    Class attributes declare what the framework must provide and how to describe the method:

    * ``needs``: ``"losses"``, ``"gramian"`` or ``"jacobian"``.
    * ``cost``: ``"O(1)"`` or ``"O(K)"``, shown by ``mtlbench list methods``.
    * ``paper``: the citation.
    * ``uses_features``: pass the shared representation in ``StepContext.features``.
    * ``post_step_losses``: call :meth:`after_step` with the losses of the same batch recomputed
      after the optimizer step (FAMO).
    * ``scale``: whether the method's update is naturally a sum over tasks (weights summing to K,
      like LS) or a convex combination (weights summing to 1, like MGDA's min-norm point).
    * ``reference_scale``: the scale its reference code uses (nash-mtl's MGDA rescales its
      convex weights by K); the trainer's ``update_scale`` policy picks one (see
      :func:`scale_factor`).
    * ``search_space``: the hyper-parameters its paper or reference code tunes, with the values
      they report or sweep (:mod:`mtlbench.space`; cited in the method's docstring). The
      protocol's learning rate is added for every method by the framework
      (:data:`mtlbench.space.PROTOCOL_SPACE`); the tuning stage samples from both.
    """

    needs: ClassVar[Need]
    cost: ClassVar[str] = "O(1)"
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one short sentence, for `mtlbench list methods`
    uses_features: ClassVar[bool] = False
    post_step_losses: ClassVar[bool] = False
    scale: ClassVar[Scale] = "sum"
    reference_scale: ClassVar[Scale | None] = None
    # Per-benchmark defaults of the method's reference code: {"celeba": {"lamb": 0.01, ...}}.
    # A "protocol" entry overrides the benchmark's protocol for this method (e.g. its lr).
    benchmark_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    search_space: ClassVar[dict[str, Space]] = {}
    # Hyper-parameters that are the suite's additions, not the paper's (LDC-MTL's
    # ``router_warmup``): a run that sets one away from its default names it in its report
    # label, even when it is the method's only variant.
    not_in_paper: ClassVar[tuple[str, ...]] = ()
    name: ClassVar[str] = ""
    # For the shared property tests: a stochastic method (RLW, PCGrad's random order, GradDrop)
    # is exempt from exact permutation equivariance; a non-conflicting one promises
    # ``update . g_k >= 0`` for every task k (MGDA, UPGrad, ...).
    # ``scale_equivariant``: scaling J by c > 0 scales the update by c (a promise the property
    # tests check; loss-dependent or normalising methods such as MoCo or Nash-MTL do not make it).
    stochastic: ClassVar[bool] = False
    non_conflicting: ClassVar[bool] = False
    scale_equivariant: ClassVar[bool] = False
    # ``ordered_tasks``: task 0 plays a distinct role (PCD's primary objective); permutation
    # equivariance then holds among tasks 1..K-1 only.
    ordered_tasks: ClassVar[bool] = False
    # ``linear_under_scaling``: A(diag(a + b) J) = A(diag(a) J) + A(diag(b) J) for positive
    # a, b (TorchJD's property: the weights do not depend on the rows' scales; UPGrad, ConFIG).
    linear_under_scaling: ClassVar[bool] = False
    # ``zero_at_zero``: a zero Jacobian gives a zero update (every Gramian method: w^T 0 = 0).
    zero_at_zero: ClassVar[bool] = False
    # ``positive_losses``: the objective needs l > l* (a log of the losses, as SI and GLS); the
    # conformance kit then does not feed it zero losses.
    positive_losses: ClassVar[bool] = False
    # Every promise above is checked by ``mtlbench.conformance.check_method`` on hard inputs
    # (docs/methods.md, "Declared properties").

    def __init__(self, n_tasks: int) -> None:
        super().__init__()
        if n_tasks < 1:
            raise ValueError(f"n_tasks must be positive, got {n_tasks}")
        self.n_tasks = n_tasks
        # Solver fallbacks (a failed or non-finite solve replaced by the last / uniform weights);
        # the trainer copies the count into the run record.
        self.fallbacks = 0

    def register_min_losses(self, min_losses: list[float] | None) -> None:
        """Register ``l*`` (FAMO's lower bounds of the losses, 0 by default) as the non-persistent
        float64 buffer ``min_losses``; log-loss methods take ``log(l - l*)``."""
        if min_losses is not None and len(min_losses) != self.n_tasks:
            raise ValueError(f"min_losses has {len(min_losses)} values, expected {self.n_tasks}")
        shift = min_losses if min_losses is not None else [0.0] * self.n_tasks
        self.register_buffer("min_losses", torch.tensor(shift, dtype=torch.float64), False)

    def fallback(self, weights: Tensor) -> Tensor:
        """Count one solver fallback and return ``weights`` (the last or uniform ones)."""
        self.fallbacks += 1
        return weights

    # Learning rate for the method's own parameters in the trainer's optimizer; None means the
    # model's learning rate (LDC-MTL's router is stepped with the model, UW's at 0.025).
    param_lr: float | None = None

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Parameter groups for the trainer's optimizer (empty when the method has none)."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return []
        group: dict[str, Any] = {"params": params}
        if self.param_lr is not None:
            group["lr"] = self.param_lr
        return [group]

    def on_epoch_start(self, epoch: int) -> None:
        """Hook called by the trainer before each training epoch."""

    def after_step(self, new_losses: Tensor) -> None:
        """Hook called after the optimizer step when ``post_step_losses`` is set."""


class LossWeighting(Method):
    """O(1) methods: one backward pass of a scalar objective built from the losses."""

    needs: ClassVar[Need] = "losses"
    cost: ClassVar[str] = "O(1)"

    def objective(self, losses: Tensor, ctx: StepContext) -> Objective:
        raise NotImplementedError


class GradientMethod(Method):
    """O(K) methods that see per-task gradients. ``log_losses`` turns a method into its
    log-loss variant (log-MGDA, log-CAGrad, ...): the gradient of ``log l_k`` is ``g_k / l_k``,
    so rows of J are divided by the losses, exactly and without a second backward pass."""

    cost: ClassVar[str] = "O(K)"

    def __init__(self, n_tasks: int, log_losses: bool = False) -> None:
        super().__init__(n_tasks)
        self.log_losses = log_losses

    def loss_transform(self, losses: Tensor) -> Tensor:
        """Per-task factors applied to the Jacobian rows (``1 / l`` for log losses)."""
        if self.log_losses:
            return 1.0 / (losses.detach() + 1e-8)
        return torch.ones_like(losses)

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Aggregate:
        raise NotImplementedError


_BLAS: Any = None


@contextlib.contextmanager
def single_thread_blas() -> Iterator[None]:
    """Run the block with NumPy's and SciPy's BLAS on one thread (torch's threads untouched).

    The solvers work on K x K matrices, where the BLAS thread pool costs far more than it
    saves: on a 2-core CPU, CAGrad's SLSQP at K = 40 took 0.54 s with two OpenBLAS threads and
    0.013 s with one, UPGrad's solve 24 ms and 0.7 ms (docs/performance.md). The controller is
    built at the first call, once the methods have imported SciPy; where ``threadpoolctl``
    cannot inspect the loaded libraries, this does nothing.
    """
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
        except Exception:  # unable to inspect the loaded libraries
            _BLAS = False
    if _BLAS is False:
        yield
        return
    with _BLAS.limit(limits=1, user_api="blas"):
        yield


class GramianWeighting(GradientMethod):
    """Methods whose weights depend on the Gramian only; the update is ``w^T J``.

    ``weights`` receives ``G`` in float64 on the CPU (K x K), accumulated in float64 from the
    Jacobian whatever its dtype (:mod:`mtlbench.precision`), and the losses, and returns K
    weights. The engine may compute ``G`` without materialising ``J`` (representation
    gradients, chunked Jacobians).
    """

    needs: ClassVar[Need] = "gramian"
    zero_at_zero: ClassVar[bool] = True

    def weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        raise NotImplementedError

    def gramian_weights(self, gramian: Tensor, losses: Tensor) -> Tensor:
        """Weights on the *raw* losses' gradients, the log-loss transform included."""
        d = self.loss_transform(losses).to(gramian)
        with single_thread_blas():
            w = self.weights(gramian * d[:, None] * d[None, :], losses)
        return w.to(gramian) * d

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Aggregate:
        """``w^T J`` with ``w`` from ``G``, under the precision policy (:mod:`mtlbench.precision`):
        ``G`` accumulated in float64, the weights solved in float64, the update formed in float64
        and returned in the Jacobian's dtype."""
        gramian = gramian64(jacobian)
        w = self.gramian_weights(gramian, losses.detach().to("cpu", torch.float64))
        update = combine64(w, jacobian)
        w = w.to(jacobian)
        return Aggregate(update=update, weights=w, head_weights=w)


class JacobianMethod(GradientMethod):
    """Methods that need the rows of J themselves (DB-MTL, GradDrop, MoCo); PCGrad, GradVac and
    SDMGrad work from the Gramian alone and are :class:`GramianWeighting` methods."""

    needs: ClassVar[Need] = "jacobian"


def sanitize(matrix: Tensor) -> Tensor:
    """Replace NaN by 0 and +-inf by the largest finite value of the dtype (torch's default for
    ``nan_to_num``), before a solver sees ``matrix``."""
    return torch.nan_to_num(matrix, nan=0.0)


def all_finite(tensor: Tensor) -> bool:
    """Whether every entry of ``tensor`` is finite, in one read of it in the usual case: a NaN or
    an infinity anywhere makes the sum non-finite, so a finite sum proves it; only a non-finite
    sum (which finite entries can also give, by overflow) pays the elementwise check
    (``torch.isfinite`` takes four passes and K x P temporaries on a Jacobian)."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def scale_factor(method: Method, policy: str) -> float:
    """Factor that brings a method's update to the scale the ``update_scale`` policy asks for.

    ``"reference"`` keeps the scale of the method's reference code; ``"sum"`` makes weights sum
    to K (like LS, nash-mtl's MGDA); ``"mean"`` makes them sum to 1 (like LibMTL's MGDA).
    Under SGD this is a factor K on the effective learning rate (methods.md, pitfall 2).
    """
    if policy == "reference":
        target = method.reference_scale or method.scale
    elif policy in ("sum", "mean"):
        target = policy
    else:
        raise ValueError(f"update_scale must be reference, sum or mean, got {policy!r}")
    if target == method.scale:
        return 1.0
    return float(method.n_tasks) if target == "sum" else 1.0 / method.n_tasks


# The hook each kind must implement (a kind's own stub raises NotImplementedError).
_HOOKS = {"losses": "objective", "gramian": "weights", "jacobian": "aggregate"}


def entry_problem(factory: Any) -> str | None:
    """What keeps ``factory`` from being a method (checked when it is registered): not a
    :class:`Method` subclass, none of the three kinds, or the kind's hook not implemented."""
    kinds = "subclass LossWeighting, GramianWeighting or JacobianMethod"
    if not (isinstance(factory, type) and issubclass(factory, Method)):
        return f"is not a subclass of mtlbench.method.Method: {kinds}"
    need = getattr(factory, "needs", None)
    if need not in _HOOKS:
        return f"declares no `needs` (it subclasses Method directly): {kinds}"
    base = {"losses": LossWeighting, "gramian": GramianWeighting, "jacobian": GradientMethod}
    hook = _HOOKS[need]
    if getattr(factory, hook) is getattr(base[need], hook):
        return f"does not implement `{hook}`, which a {need!r} method must define"
    return None


METHODS: Registry[Method] = Registry("method", ("n_tasks", "feature_dim"), entry_problem)
register = METHODS.register


def create(name: str, n_tasks: int, feature_dim: int | None = None, **hparams: Any) -> Method:
    """Build a registered method by name, validating its hyper-parameters.

    ``feature_dim`` (the size of the pooled shared representation) is passed to methods whose
    constructor takes it (feature-conditioned routers).
    """
    import inspect

    import mtlbench.methods  # noqa: F401  (registers the built-in methods)

    load_installed()
    cls = METHODS.get(name)
    checked = METHODS.validate(name, hparams)
    if "feature_dim" in inspect.signature(cls.__init__).parameters:
        checked["feature_dim"] = feature_dim
    return cls(n_tasks, **checked)


def names() -> list[str]:
    """Every registered method: the built-ins and the installed plug-ins (entry points of
    ``mtlbench.methods`` / ``mtlbench.benchmarks``, :func:`mtlbench.plugins.load_installed`)."""
    import mtlbench.methods  # noqa: F401

    load_installed()
    return METHODS.names()
