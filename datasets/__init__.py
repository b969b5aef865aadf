"""Built-in benchmarks, one module each; importing this package registers them all.

Modules whose name starts with ``_`` hold shared code (models, transforms) and register nothing.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
