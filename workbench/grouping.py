"""Which runs are the seeds of one setting: the group identity that `rl compare` groups runs by and `rl train` names
its W&B group after (`workbench.tracking`), so the two always agree.

Two runs belong to one group when their resolved configs are equal except for IGNORED_KEYS (seed, name, paths,
logger, TRL's copies of the seed, timestamps). `setting_key` is that equality as a string; `config_group_id` is its
short, readable name.

Import-light (no yaml, no numpy).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Config keys that never split groups: run identity, paths, logging, and copies of the seed.
IGNORED_KEYS = (
    "seed",
    "name",
    "runs_dir",
    "logger",
    "hydra",
    "timestamp",
    "run_dir",
    "algo.seed",
    "algo.data_seed",
    "algo.output_dir",
    "algo.logging_dir",
    "algo.run_name",
    "algo.report_to",
)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": [1, 2]} -> {"a.b": 1, "c": [1, 2]}. An empty dict stays as a leaf {}."""
    out: dict[str, Any] = {}
    if isinstance(d, dict) and (d or not prefix):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = d
    return out


def key_matches(key: str, prefix: str) -> bool:
    """Whether a dotted key is `prefix` or lies under it (`reward.length.weight` under `reward`)."""
    return key == prefix or key.startswith(prefix + ".")


def canonical(value: Any) -> str:
    """A value as canonical JSON (sorted keys): equal values, equal strings."""
    return json.dumps(value, sort_keys=True, default=str)


def seed_free(flat: dict[str, Any]) -> dict[str, Any]:
    """A flattened config without the keys that never split groups (IGNORED_KEYS: seed, name, paths, logger)."""
    return {k: v for k, v in flat.items() if not any(key_matches(k, p) for p in IGNORED_KEYS)}


def setting_key(flat: dict[str, Any]) -> str:
    """The identity of a run's setting from its flattened grouping keys (`seed_free(flatten(config))` by default):
    runs with equal keys are the seeds of one setting."""
    return canonical(flat)


def config_group_id(config: dict[str, Any]) -> str:
    """The name of a run's group: `<experiment_name>-<8 hex digits>`, a hash of its `setting_key`. Runs with equal
    ids are the seeds of one setting, exactly as `rl compare` groups them; rl train uses it as the W&B group, so W&B
    and rl compare agree.

    >>> config_group_id({"experiment_name": "x", "seed": 1}) == config_group_id({"experiment_name": "x", "seed": 2})
    True
    """
    digest = hashlib.sha256(setting_key(seed_free(flatten(config))).encode()).hexdigest()[:8]
    return f"{config.get('experiment_name') or 'default'}-{digest}"
