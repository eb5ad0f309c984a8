"""Shaping terms for reward, advantage and loss. Importing this package registers every term.

See `workbench.shaping.base` for the interface and the registry.
"""

from workbench.shaping import task_rewards  # noqa: F401
from workbench.shaping import advantage, cost, entropy, length, regularizers, transforms  # noqa: F401
from workbench.shaping.base import KINDS, REGISTRY, build_terms, register  # noqa: F401
