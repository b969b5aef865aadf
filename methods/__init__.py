"""Built-in methods, one module each; importing this package registers them all.

A new method is one new module here (registered with ``@mtlbench.method.register("name")``)
plus its tests; nothing else changes.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
