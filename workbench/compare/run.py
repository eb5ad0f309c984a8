"""One run as `rl compare` sees it: read once through `workbench.runs.RunDir` (the one reader of the run-directory
contract), and a metric's value for the run by the rule in `workbench.compare`'s docstring."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.compare.display import MISSING, finite_or_none, is_number
from workbench.grouping import flatten
from workbench.runs import RunDir, read_jsonl

TAIL_ROWS = 10  # train-side fallback: mean over the last TAIL_ROWS rows of metrics.jsonl that log the key
# Numeric keys of metrics.jsonl and summary.json that are bookkeeping, not metrics.
NOT_METRICS = {"step", "time", "seed", "steps", "train_seconds", "epoch"}


@dataclass
class Run:
    """One run directory, read once (metrics rows and samples lazily)."""

    path: Path
    config: dict[str, Any]
    meta: dict[str, Any]
    status: str
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    eval_metrics: dict[str, Any] = field(default_factory=dict)
    eval_checkpoint: str | None = None
    eval_dir: Path | None = None
    _rows: list[dict[str, Any]] | None = None

    @property
    def seed(self) -> Any:
        return self.config.get("seed", self.meta.get("seed"))

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            self._rows = RunDir(self.path).read_metrics()
        return self._rows

    def flat_config(self) -> dict[str, Any]:
        return flatten(self.config)

    def value(self, metric: str) -> tuple[float | None, str | None]:
        """(value, source) by the rule in the package docstring; (None, None) if the run lacks the metric."""
        if metric.startswith("eval/"):
            v = self.eval_metrics.get(metric, MISSING)
            if v is not MISSING and is_number(v):
                return float(v), f"eval/{self.eval_checkpoint}"
        v = self.summary.get(metric)
        if is_number(v):
            return float(v), "summary.json"
        vals = [float(r[metric]) for r in self.rows() if is_number(r.get(metric))]
        if not vals:
            return None, None
        if metric.startswith("eval/"):
            return vals[-1], "metrics.jsonl (last)"
        tail = vals[-TAIL_ROWS:]
        return sum(tail) / len(tail), f"metrics.jsonl (last {len(tail)})"

    def interval(self, metric: str) -> tuple[float, float] | None:
        """This run's own 95% interval of a metric over evaluation problems (rl eval's `<metric>/ci_low` and
        `/ci_high`), from the source `value` reads the metric from; None when that source has none."""
        for source in (self.eval_metrics if metric.startswith("eval/") and is_number(self.eval_metrics.get(metric))
                       else None, self.summary if is_number(self.summary.get(metric)) else None):
            if source is not None:
                lo, hi = finite_or_none(source.get(metric + "/ci_low")), finite_or_none(source.get(metric + "/ci_high"))
                return (lo, hi) if lo is not None and hi is not None else None
        return None

    def metric_names(self) -> set[str]:
        names = {k for k, v in self.eval_metrics.items() if is_number(v) or v is None}
        names |= {k for k, v in self.summary.items() if is_number(v)}
        for r in self.rows():
            names |= {k for k, v in r.items() if is_number(v)}
        names -= NOT_METRICS
        return {n for n in names if not n.endswith(("/ci_low", "/ci_high"))}

    def series(self, metric: str) -> tuple[list[float], list[float]]:
        """(steps, values) of a metric over metrics.jsonl rows that log it."""
        steps, vals = [], []
        for i, r in enumerate(self.rows()):
            v = finite_or_none(r.get(metric))
            if v is not None:
                steps.append(float(r.get("step", i)))
                vals.append(v)
        return steps, vals

    def samples(self) -> list[dict[str, Any]]:
        return RunDir(self.path).read_samples()

    def eval_samples(self) -> list[dict[str, Any]]:
        return read_jsonl(self.eval_dir / "samples.jsonl") if self.eval_dir else []


def load_run(path: str | Path) -> Run:
    """Read one run directory (tolerant: a torn or missing file leaves that part empty)."""
    import yaml

    p = Path(path)
    rd = RunDir(p)
    try:
        config = rd.read_config()
    except (OSError, yaml.YAMLError) as e:
        return Run(p, {}, {}, "unreadable", error=f"config.yaml: {e}")
    try:
        meta = rd.read_meta()
    except (OSError, ValueError) as e:
        meta = {"error": f"meta.json: {e}"}
    status, error = rd.state(meta)
    summary = rd.read_summary() or {}
    result = rd.final_eval()
    if result is None:
        return Run(p, config, meta, status, error, summary)
    return Run(p, config, meta, status, error, summary, result.metrics, result.checkpoint, result.path)
