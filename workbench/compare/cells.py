"""The statistics of `rl compare`'s table: a cell per (group, metric) with the mean over seeds and its 95% interval,
the significance test against the baseline group, and the best group per column (its direction from
`workbench.metric_catalog`). numpy/scipy come in through workbench.stats, only when a cell is computed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from workbench import metric_catalog
from workbench.compare.display import format_number, number_spec
from workbench.compare.errors import CompareError
from workbench.compare.groups import Group

ALPHA = 0.05
MARK_NOT_SIGNIFICANT = "≈"
MARK_UNTESTABLE = "?"
TESTS = ("welch", "permutation", "bootstrap")


@dataclass
class Cell:
    metric: str
    values: list[float]
    sources: list[str]
    mean: float
    low: float
    high: float
    p: float = float("nan")  # vs the baseline group
    marker: str = ""
    best: bool = False
    over: str = "seeds"  # what the interval is over: "seeds" (Student t), or "problems" (one run's eval interval)

    @property
    def n(self) -> int:
        return len(self.values)

    def text(self) -> str:
        """'0.781 ± 0.031' (half-width of the 95% interval over seeds); for one seed '0.515 [0.470, 0.560]' (the
        run's own interval over evaluation problems, asymmetric in general), or the mean alone."""
        if not math.isfinite(self.mean):
            return "n/a"
        spec = number_spec(self.mean)
        s = format_number(self.mean, spec)
        if math.isfinite(self.low) and math.isfinite(self.high):
            if self.over == "problems":
                s += f" [{format_number(self.low, spec)}, {format_number(self.high, spec)}]"
            else:
                s += f" ± {format_number((self.high - self.low) / 2, spec)}"
        return s


def cell_for(group: Group, metric: str) -> Cell:
    from workbench.stats import mean_ci

    vals, srcs, runs = [], [], []
    for r in group.runs:
        v, src = r.value(metric)
        if v is not None and math.isfinite(v):
            vals.append(v)
            srcs.append(src or "")
            runs.append(r)
    mean, low, high = mean_ci(vals)
    if len(runs) == 1:  # no spread over seeds: the run's own interval over evaluation problems, when it has one
        ci = runs[0].interval(metric)
        if ci is not None:
            return Cell(metric, vals, srcs, mean, ci[0], ci[1], over="problems")
    return Cell(metric, vals, srcs, mean, low, high)


def significance(a: Sequence[float], b: Sequence[float], test: str = "welch") -> float:
    from workbench.stats import bootstrap_diff_test, permutation_test, welch_test

    if test == "welch":
        return welch_test(a, b)
    if test == "permutation":
        return permutation_test(a, b)
    if test == "bootstrap":
        return bootstrap_diff_test(a, b)
    raise CompareError(f"unknown test {test!r}; choose {', '.join(TESTS)}")


def describe_test(test: str) -> str:
    """The test in words, for the footer."""
    from workbench.stats import BOOTSTRAP_MIN_N

    return {
        "welch": "Welch's t-test",
        "permutation": "exact permutation test on the difference of means",
        "bootstrap": (f"bootstrap test on the difference of means (10,000 resamples; the exact permutation test "
                      f"where a side has fewer than {BOOTSTRAP_MIN_N} seeds)"),
    }[test]


def metric_direction(name: str) -> str | None:
    """'max', 'min' or None (no better direction, e.g. entropy): the catalog's `better`, as the table ranks it."""
    return {metric_catalog.HIGHER: "max", metric_catalog.LOWER: "min"}.get(metric_catalog.better(name))


def mark_cells(cells: dict[tuple[int, str], Cell], groups: Sequence[Group], metric: str, baseline: int, test: str,
               alpha: float) -> None:
    """One column: flag the best group's cell (by the metric's direction, when it has one and there are groups to
    rank) and test every other group against the baseline (p, and the ≈ / ? marker)."""
    direction = metric_direction(metric)
    means = [cells[(g.index, metric)].mean for g in groups]
    finite = [x for x in means if math.isfinite(x)]
    if direction and finite and len(groups) > 1:
        best = max(finite) if direction == "max" else min(finite)
        for g in groups:
            c = cells[(g.index, metric)]
            c.best = math.isfinite(c.mean) and math.isclose(c.mean, best, rel_tol=1e-12, abs_tol=0.0)
    for g in groups:
        if g.index == baseline:
            continue
        c = cells[(g.index, metric)]
        c.p = significance(c.values, cells[(baseline, metric)].values, test)
        c.marker = MARK_UNTESTABLE if math.isnan(c.p) else (MARK_NOT_SIGNIFICANT if c.p >= alpha else "")
