"""Shaping terms for reward, advantage and loss. Importing this package registers every term.

Every module in this package is imported here (``import_submodules``), so its ``@register`` classes join the
registry: a new term is one class in a new or existing module of this package plus one ``conf/<kind>/<name>.yaml``
(``tests/test_shaping_registry.py`` keeps the two one to one). See ``workbench.shaping.base`` for the interface and
the registry.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from types import ModuleType

from workbench.shaping.base import KINDS, REGISTRY, build_terms, register  # noqa: F401


def import_submodules(package: ModuleType) -> list[str]:
    """Import every module of ``package`` (in name order; ``_private`` ones skipped) and return their names.

    An import error propagates: a broken term module should stop the run, not silently drop its terms.
    Modules already imported are not re-imported, so calling this again registers nothing twice.
    """
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package.__name__}.{name}")
    return names


import_submodules(sys.modules[__name__])
