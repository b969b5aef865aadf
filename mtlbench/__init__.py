"""mtlbench: comparative multi-task learning benchmarks.

Public API::

    from mtlbench import create_method, method_names, Method
    method = create_method("ldc_mtl", n_tasks=2, lamb=0.1)
"""

from mtlbench.method import Aggregate, Method, Objective, StepContext
from mtlbench.method import create as create_method
from mtlbench.method import names as method_names

__version__ = "0.1.0"

__all__ = [
    "Aggregate",
    "Method",
    "Objective",
    "StepContext",
    "create_method",
    "method_names",
    "__version__",
]
