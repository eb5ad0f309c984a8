"""A comparison: the groups, the metrics, the filled cells, and the words around them (row texts, the change against
the baseline, the footer with the rules) that the renderers (`workbench.compare.render`, `workbench.report`) share."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import metric_catalog
from workbench.compare import render
from workbench.compare.cells import (
    ALPHA, MARK_NOT_SIGNIFICANT, MARK_UNTESTABLE, PAIRINGS, TESTS, Cell, cell_for, correct, describe_test, mark_cells)
from workbench.compare.display import number_spec
from workbench.compare.errors import CompareError
from workbench.compare.groups import Group, find_baseline, group_runs
from workbench.compare.paths import Missing, load_runs
from workbench.compare.run import TAIL_ROWS, Run

LEARNING_CURVE_METRICS = ("train/reward", "train/accuracy", "length/mean", "entropy/mean", "cost/mean")


def default_metrics(available: set[str]) -> list[str]:
    """eval/pass@1 (else eval/accuracy), eval/length/mean (else length/mean), cost/mean, entropy/mean — those present."""
    wanted = [
        ("eval/pass@1", "eval/accuracy", "train/accuracy"),
        ("eval/length/mean", "length/mean"),
        ("cost/mean",),
        ("entropy/mean",),
    ]
    out = []
    for options in wanted:
        hit = next((m for m in options if m in available), None)
        if hit:
            out.append(hit)
    return out


@dataclass
class Comparison:
    groups: list[Group]
    excluded: list[Run | Missing]
    metrics: list[str]
    baseline: int
    cells: dict[tuple[int, str], Cell]
    columns: list[str]
    test: str
    alpha: float
    group_by: list[str] | None
    available: list[str]
    inputs: list[str]
    correction: str = "holm"
    pairing: str = "auto"
    family: int = 0  # tests corrected over (non-baseline cells with a p-value)
    resolve: dict[str, float] = field(default_factory=dict)  # metric -> target difference (--resolve)

    @property
    def runs(self) -> list[Run]:
        return [r for g in self.groups for r in g.runs]

    def cell(self, gi: int, metric: str) -> Cell:
        """A cell for any metric (cached; metrics outside the table get no significance marker)."""
        key = (gi, metric)
        if key not in self.cells:
            self.cells[key] = cell_for(self.groups[gi], metric)
        return self.cells[key]

    def test_name(self) -> str:
        return describe_test(self.test, self.pairing)

    def tested(self) -> list[tuple[int, str]]:
        """The (group, metric) cells tested against the baseline: the family the correction runs over."""
        return [(g.index, m) for m in self.metrics for g in self.groups if g.index != self.baseline]

    def family_level(self) -> float:
        """The per-test level a difference must reach whatever the other tests give (`stats.family_alpha`)."""
        from workbench.stats import family_alpha

        return family_alpha(self.alpha, self.family, self.correction)

    def difference_text(self, metric: str, d: float) -> str:
        """A difference of a metric's values: in points (of 100) for a rate, else at the value's precision."""
        if metric_catalog.is_fraction(metric):
            return f"{100 * d:.1f} pt"
        return f"{d:.3g}"

    def statistics_lines(self) -> list[str]:
        """The footer's lines on pairing, the multiple-comparison correction, the smallest resolvable difference and
        the seeds a --resolve target needs."""
        if len(self.groups) < 2:
            return []
        tested = [(gi, m, self.cells[(gi, m)]) for gi, m in self.tested()]
        lines = []
        if self.test == "welch":
            paired = {gi: c.pairs for gi, _, c in tested if c.pairs}
            unpaired = [(gi, c) for gi, _, c in tested if not c.pairs and math.isfinite(c.p)]
            parts = []
            if paired:
                parts.append("paired (n seeds): " + ", ".join(f"#{gi + 1} ({n})" for gi, n in sorted(paired.items())))
            if unpaired:
                first = {gi: c for gi, c in reversed(unpaired)}  # a group's first tested metric
                partial = [f"#{gi + 1} ({c.partners} of its {c.n} runs have one)" for gi, c in sorted(first.items())
                           if 0 < c.partners]
                parts.append("Welch: " + ", ".join(f"#{gi + 1}" for gi in sorted(first))
                             + ("; partial pairing (not every run on both sides has a seed partner), tested "
                                f"unpaired with every run: {', '.join(partial)}" if partial else ""))
            rule = ("a group is paired when every run on both sides has a baseline partner with the same seed and "
                    "the same values of any key that varies within the groups" if self.pairing == "auto"
                    else "pairing off (--pairing off)")
            lines.append(f"Test per group: {'; '.join(parts) or 'none testable'} ({rule}).")
        what = f"{self.family} test(s): {len(self.groups) - 1} group(s) × {len(self.metrics)} metric(s) against the baseline"
        if self.correction == "none":
            lines.append(f"Multiple comparisons: not corrected (--correction none); {what}, each at α = {self.alpha:g}.")
        else:
            name = {"holm": "Holm's step-down", "bonferroni": "Bonferroni"}[self.correction]
            lines.append(f"Multiple comparisons: {name} correction over {what}; {MARK_NOT_SIGNIFICANT} and p_adj use "
                         "the adjusted p-values (raw p: CSV column p_value, HTML tooltips; --correction none turns it off).")
        from workbench.stats import POWER

        level = self.family_level()
        per_metric = []
        for m in self.metrics:
            bits = [f"#{gi + 1} {self.difference_text(m, c.mde) if c.mde > 0 else 'any (no spread over seeds)'} "
                    f"({c.pairs or c.n} {'paired ' if c.pairs else ''}seeds)"
                    for gi, mm, c in tested if mm == m and math.isfinite(c.mde)]
            if bits:
                per_metric.append(f"{m}: " + ", ".join(bits))
        if per_metric:
            lines.append(f"Smallest resolvable difference (two-sided α = {level:.3g} per test, power {POWER:g}, the observed "
                         "spread over seeds; paired: of the per-seed differences; t-test power): "
                         + "; ".join(per_metric) + ".")
        for m, target in self.resolve.items():
            bits = [f"#{gi + 1} {c.seeds_needed if c.seeds_needed is not None else 'more than 10000'}"
                    for gi, mm, c in tested if mm == m and math.isfinite(c.mde)]
            lines.append(f"To resolve {self.difference_text(m, target)} in {m} (α = {level:.3g}, power {POWER:g}, "
                         "observed spread): needs N seeds per group: " + ", ".join(bits) + "." if bits else
                         f"To resolve {self.difference_text(m, target)} in {m}: no comparison has two seeds on both sides to "
                         "size it from (run at least 2 seeds per group).")
        return lines

    def footer(self) -> list[str]:
        base = self.groups[self.baseline]
        one_seed = any(c.over == "problems" for (_, m), c in self.cells.items() if m in self.metrics)
        lines = [
            f"Cells: mean over seeds ± half-width of the 95% Student-t interval"
            + ("; one seed: [low, high] = that run's own 95% interval over evaluation problems (rl eval), "
               "not over seeds. " if one_seed else " (one seed: mean only). ")
            + f"Baseline: {base.title}.",
            f"{MARK_NOT_SIGNIFICANT} = difference to the baseline not significant ({self.test_name()}, two-sided "
            f"p{'_adj' if self.correction != 'none' else ''} ≥ {self.alpha:g}, per-seed values); {MARK_UNTESTABLE} = "
            f"not testable (fewer than 2 seeds on one side); no mark = significant.",
            *self.statistics_lines(),
            "Best per column in bold: higher accuracy/pass@k/maj@k/reward, lower length/cost; entropy is not ranked.",
            "Per-run value: eval results of the final checkpoint (eval/... keys), else summary.json, else metrics.jsonl "
            f"(last value for eval/..., mean of the last {TAIL_ROWS} rows otherwise).",
        ]
        srcs: dict[str, int] = {}
        for (gi, m), c in self.cells.items():
            if m in self.metrics:
                for s in c.sources:
                    srcs[s.split(" (")[0] if s.startswith("metrics") else s] = srcs.get(s, 0) + 1
        if srcs:
            lines.append("Values read from: " + ", ".join(f"{k} ({v})" for k, v in sorted(srcs.items())) + ".")
        return lines

    def header(self) -> list[str]:
        return ["#", "runs", *self.columns, "n", *self.metrics]

    def row_texts(self, gi: int, bold: tuple[str, str] = ("", "")) -> list[str]:
        g = self.groups[gi]
        first = f"{gi + 1}" + (" (baseline)" if gi == self.baseline else "")
        row = [first, ", ".join(g.names), *(g.values[c] for c in self.columns), str(len(g.runs))]
        for m in self.metrics:
            c = self.cells[(gi, m)]
            t = c.text()
            if c.best:
                t = f"{bold[0]}{t}{bold[1]}"
            if c.marker:
                t += f" {c.marker}"
            row.append(t)
        return row

    def delta_text(self, gi: int, metric: str) -> str:
        """A group's change against the baseline: 'Δ -2.4 pt, p=0.41' for a rate (accuracy, pass@k, maj@k: points of
        100), 'Δ -26.4 (-60%), p=0.001' otherwise (the difference at the values' precision and in % of the
        baseline's mean); the p-value of the significance test on per-seed values (p_adj: after the table's
        multiple-comparison correction) is left out when untestable.
        '' for the baseline or a missing mean."""
        if gi == self.baseline or (gi, metric) not in self.cells:
            return ""
        c, b = self.cells[(gi, metric)], self.cell(self.baseline, metric)
        if not (math.isfinite(c.mean) and math.isfinite(b.mean)):
            return ""
        d = c.mean - b.mean
        if metric_catalog.is_fraction(metric):
            text = f"Δ {100 * d:+.1f} pt"
        else:
            text = f"Δ {format(d, '+' + number_spec(max(abs(c.mean), abs(b.mean))))}"
            if b.mean != 0:
                text += f" ({100 * d / abs(b.mean):+.0f}%)"
        if math.isfinite(c.p_adj):
            text += f", p{'_adj' if self.correction != 'none' else ''}={c.p_adj:.2g}"
        return text

    # the text renderers (workbench.compare.render); the HTML one is workbench.report
    def to_markdown(self) -> str:
        return render.markdown(self)

    def to_csv(self) -> str:
        return render.csv_text(self)

    def rich_tables(self) -> list[Any]:
        return render.rich_tables(self)


def compare(
    paths: Sequence[str | Path],
    metrics: Sequence[str] | None = None,
    group_by: Sequence[str] | None = None,
    baseline: str | None = None,
    test: str = "welch",
    alpha: float = ALPHA,
    correction: str = "holm",
    pairing: str = "auto",
    resolve: Sequence[str] | None = None,
) -> Comparison:
    """Load, group, and fill the table cells with means, intervals, best flags and significance markers.

    correction: `workbench.stats.CORRECTIONS` over every test of the table; pairing: `PAIRINGS`; resolve: targets
    'VALUE' (every metric of the table) or 'METRIC=VALUE', in the metric's units (0.02 = 2 points of a rate)."""
    from workbench.stats import CORRECTIONS

    if test not in TESTS:
        raise CompareError(f"unknown --test {test!r}; choose {', '.join(TESTS)}")
    if correction not in CORRECTIONS:
        raise CompareError(f"unknown --correction {correction!r}; choose {', '.join(CORRECTIONS)}")
    if pairing not in PAIRINGS:
        raise CompareError(f"unknown --pairing {pairing!r}; choose {', '.join(PAIRINGS)}")
    runs, excluded = load_runs(paths)
    if not runs:
        desc = ", ".join(f"{e.path} ({e.status})" for e in excluded[:5])
        raise CompareError(f"no completed runs to compare among {len(excluded)} run(s): {desc}")
    available: set[str] = set()
    for r in runs:
        available |= r.metric_names()
    if metrics:
        metrics = list(dict.fromkeys(metrics))
        unknown = [m for m in metrics if m not in available]
        if unknown:
            raise CompareError(f"no run has metric {', '.join(unknown)}; available: {', '.join(sorted(available))}")
    else:
        metrics = default_metrics(available)
        if not metrics:
            raise CompareError(f"none of the default metrics found; available: {', '.join(sorted(available))}; "
                               "pick with --metric")
    groups = group_runs(runs, list(group_by) if group_by else None)
    base = find_baseline(groups, baseline)
    cells: dict[tuple[int, str], Cell] = {}
    for g in groups:
        for m in metrics:
            cells[(g.index, m)] = cell_for(g, m)
    targets = parse_resolve(resolve or [], metrics)
    for m in metrics:
        mark_cells(cells, groups, m, base, test, pairing)
    tested = [(cells[(g.index, m)], cells[(base, m)]) for m in metrics for g in groups if g.index != base]
    family = correct(tested, correction, alpha, targets)
    columns = list(groups[0].values) if groups else []
    return Comparison(groups, excluded, list(metrics), base, cells, columns, test, alpha,
                      list(group_by) if group_by else None, sorted(available), [str(p) for p in paths],
                      correction, pairing, family, targets)


def parse_resolve(specs: Sequence[str], metrics: Sequence[str]) -> dict[str, float]:
    """--resolve targets: 'VALUE' for every metric of the table, 'METRIC=VALUE' for one (later specs win)."""
    out: dict[str, float] = {}
    for spec in specs:
        name, eq, raw = str(spec).rpartition("=")
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not math.isfinite(value) or value <= 0:
            raise CompareError(f"--resolve {spec!r}: want a positive difference, VALUE or METRIC=VALUE "
                               "(e.g. 0.02 or eval/accuracy=0.02)")
        if eq and name not in metrics:
            raise CompareError(f"--resolve {spec!r}: {name} is not a metric of the table; metrics: {', '.join(metrics)}")
        for m in ([name] if eq else metrics):
            out[m] = value
    return out


def first_present(comp: Comparison, options: Iterable[str]) -> str | None:
    avail = set(comp.available)
    return next((m for m in options if m in avail), None)
