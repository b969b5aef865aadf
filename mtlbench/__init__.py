"""mtlbench: comparative multi-task learning benchmarks.

Public API::

    from mtlbench import create_method, method_names, Method
    method = create_method("ldc_mtl", n_tasks=2, lamb=0.1)

The names below are loaded on first access (PEP 562), so that importing a light submodule
(``mtlbench.cli`` for ``mtlbench --help``, ``mtlbench.registry``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time see __getattr__
    from mtlbench.method import Aggregate, Method, Objective, StepContext
    from mtlbench.method import create as create_method
    from mtlbench.method import names as method_names

__version__ = "0.1.0"

# public name -> (module, attribute): the torch-dependent API, imported when first used
_LAZY = {
    "Aggregate": ("mtlbench.method", "Aggregate"),
    "Method": ("mtlbench.method", "Method"),
    "Objective": ("mtlbench.method", "Objective"),
    "StepContext": ("mtlbench.method", "StepContext"),
    "create_method": ("mtlbench.method", "create"),
    "method_names": ("mtlbench.method", "names"),
}

__all__ = [
    "Aggregate",
    "Method",
    "Objective",
    "StepContext",
    "create_method",
    "method_names",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """The public API's torch-dependent names, imported on first access (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'mtlbench' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
