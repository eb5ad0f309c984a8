"""How `rl compare` writes values: config values inline (`weight=0.5`, `-` where absent) and numbers at a precision
that follows their magnitude (a table column mixes rates, lengths and dollars; an interval prints at its mean's
precision). One value of a known metric at its own precision is `workbench.metric_catalog.fmt`."""

from __future__ import annotations

import math
from typing import Any

from workbench.grouping import flatten

ABSENT = "-"
MISSING = object()  # get_nested's answer for a key that is not there (None is a value)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def finite_or_none(v: Any) -> float | None:
    if not is_number(v):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def get_nested(d: Any, dotted: str) -> Any:
    """d["a"]["b"] for "a.b"; MISSING where a part is absent."""
    cur = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return MISSING
        cur = cur[part]
    return cur


def format_value(v: Any) -> str:
    """A config value for display: subtrees inline as k=v, missing as '-'."""
    if v is MISSING:
        return ABSENT
    if isinstance(v, dict):
        if not v:
            return "{}"
        return ", ".join(f"{k}={format_value(x)}" for k, x in flatten(v).items())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def number_spec(v: float) -> str:
    """The format spec for a number by its magnitude: 0.781, 44.0, 1234, 2.61e-05."""
    a = abs(v)
    if a == 0:
        return ".3f"
    if a >= 1000:
        return ".0f"
    if a >= 10:
        return ".1f"
    if a >= 0.01:
        return ".3f"
    return ".2e"


def format_number(v: float | None, spec: str | None = None) -> str:
    """Display precision by magnitude (0.781, 44.0, 2.61e-05), or `spec` (to print an interval like its mean)."""
    if v is None or not math.isfinite(v):
        return "nan" if v is not None and math.isnan(v) else ("inf" if v > 0 else "-inf") if v is not None else "n/a"
    if v == 0 and spec is None:
        return "0"
    return format(v, spec or number_spec(v))
