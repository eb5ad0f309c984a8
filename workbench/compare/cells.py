"""The statistics of `rl compare`'s table: a cell per (group, metric) with the mean over seeds and its 95% interval,
the significance test against the baseline group (paired by seed where every run has a partner), the family's
multiple-comparison correction with the smallest resolvable difference (`correct`), and the best group per column
(its direction from `workbench.metric_catalog`). numpy/scipy come in through workbench.stats, only when a cell is computed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench import metric_catalog
from workbench.compare.display import format_number, number_spec
from workbench.compare.errors import CompareError
from workbench.compare.groups import Group, pair_runs, partner_count

ALPHA = 0.05
MARK_NOT_SIGNIFICANT = "≈"
MARK_UNTESTABLE = "?"
TESTS = ("welch", "permutation", "bootstrap")
#: Pairing of a group with the baseline by seed: auto (paired t-test when every run has a seed partner; `welch`
#: only) or off (Welch's t-test always). The first is the default.
PAIRINGS = ("auto", "off")


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
    runs: list[Any] = field(default_factory=list, repr=False)  # the runs behind `values`, in order
    p_adj: float = float("nan")  # p adjusted for the table's family of tests (the marker's p)
    pairs: int = 0  # > 0: tested paired over this many seed pairs; 0: unpaired
    partners: int = 0  # unpaired: how many of the group's runs have a seed partner (0 < partners: partial pairing)
    mde: float = float("nan")  # smallest difference the seeds resolve (at the family's alpha, power 0.8)
    seeds_needed: int | None = None  # seeds per group to resolve the --resolve target (None: not asked / > max)

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
            return Cell(metric, vals, srcs, mean, ci[0], ci[1], over="problems", runs=runs)
    return Cell(metric, vals, srcs, mean, low, high, runs=runs)


def significance(a: Sequence[float], b: Sequence[float], test: str = "welch") -> float:
    from workbench.stats import bootstrap_diff_test, permutation_test, welch_test

    if test == "welch":
        return welch_test(a, b)
    if test == "permutation":
        return permutation_test(a, b)
    if test == "bootstrap":
        return bootstrap_diff_test(a, b)
    raise CompareError(f"unknown test {test!r}; choose {', '.join(TESTS)}")


def describe_test(test: str, pairing: str = "auto") -> str:
    """The test in words, for the footer."""
    from workbench.stats import BOOTSTRAP_MIN_N

    return {
        "welch": ("the paired t-test on per-seed differences where a group shares its seeds with the baseline, "
                  "else Welch's t-test" if pairing == "auto" else "Welch's t-test"),
        "permutation": "exact permutation test on the difference of means",
        "bootstrap": (f"bootstrap test on the difference of means (10,000 resamples; the exact permutation test "
                      f"where a side has fewer than {BOOTSTRAP_MIN_N} seeds)"),
    }[test]


def metric_direction(name: str) -> str | None:
    """'max', 'min' or None (no better direction, e.g. entropy): the catalog's `better`, as the table ranks it."""
    return {metric_catalog.HIGHER: "max", metric_catalog.LOWER: "min"}.get(metric_catalog.better(name))


def paired_values(c: Cell, b: Cell) -> tuple[list[float], list[float]] | None:
    """The two cells' per-seed values aligned by seed partner (`groups.pair_runs`), or None when not every run on
    both sides has one."""
    pairs = pair_runs(c.runs, b.runs)
    if pairs is None:
        return None
    return [c.values[i] for i, _ in pairs], [b.values[j] for _, j in pairs]


def mark_cells(cells: dict[tuple[int, str], Cell], groups: Sequence[Group], metric: str, baseline: int, test: str,
               pairing: str = "auto") -> None:
    """One column: flag the best group's cell (by the metric's direction, when it has one and there are groups to
    rank) and test every other group against the baseline (the raw p; paired when `pairing` is auto, the test is
    the t-test and every run has a seed partner). The markers wait for the family's correction (`correct`)."""
    from workbench.stats import paired_t_test

    direction = metric_direction(metric)
    means = [cells[(g.index, metric)].mean for g in groups]
    finite = [x for x in means if math.isfinite(x)]
    if direction and finite and len(groups) > 1:
        best = max(finite) if direction == "max" else min(finite)
        for g in groups:
            c = cells[(g.index, metric)]
            c.best = math.isfinite(c.mean) and math.isclose(c.mean, best, rel_tol=1e-12, abs_tol=0.0)
    b = cells[(baseline, metric)]
    for g in groups:
        if g.index == baseline:
            continue
        c = cells[(g.index, metric)]
        pairs_apply = pairing == "auto" and test == "welch"
        aligned = paired_values(c, b) if pairs_apply else None
        if aligned is not None and len(aligned[0]) >= 2:
            c.pairs = len(aligned[0])
            c.p = paired_t_test(*aligned)
        else:
            c.partners = partner_count(c.runs, b.runs) if pairs_apply else 0
            c.p = significance(c.values, b.values, test)


def correct(tested: Sequence[tuple[Cell, Cell]], method: str, alpha: float,
            resolve: dict[str, float] | None = None) -> int:
    """Adjust the p-values of one family of tests (`workbench.stats.adjust_pvalues`), set each cell's marker from
    its adjusted p, its smallest resolvable difference at the family's per-test level (`family_alpha`, power 0.8,
    observed spread; paired: of the differences) and, for a metric in `resolve`, the seeds per group that resolve
    that target. `tested`: (cell, the baseline's cell of its metric) for every test of the table. Returns the family
    size m (tests with a p-value)."""
    from workbench.stats import adjust_pvalues, family_alpha, min_detectable_difference, seeds_to_resolve, std

    adjusted = adjust_pvalues([c.p for c, _ in tested], method)
    m = int(sum(math.isfinite(p) for p in adjusted))
    level = family_alpha(alpha, m, method)
    for (c, b), p in zip(tested, adjusted):
        c.p_adj = float(p)
        c.marker = MARK_UNTESTABLE if math.isnan(p) else (MARK_NOT_SIGNIFICANT if p >= alpha else "")
        if math.isnan(p):
            continue
        aligned = paired_values(c, b) if c.pairs else None
        if aligned is not None:
            diffs = [x - y for x, y in zip(*aligned)]
            c.mde = min_detectable_difference(diffs, alpha=level)
            sds: tuple[float, float | None] = (std(diffs), None)
        else:
            c.mde = min_detectable_difference(c.values, b.values, alpha=level)
            sds = (std(c.values), std(b.values))
        if resolve and c.metric in resolve:
            c.seeds_needed = seeds_to_resolve(resolve[c.metric], *sds, alpha=level)
    return m
