"""The end of `rl train`: summary.json (`summarize`: what the run reached, the numbers sweeps and `rl compare` read)
and the table the CLI prints from it (`print_summary`).

summary.json holds the identity of the run (experiment, name, seed, algo), its steps and wall-clock seconds over all
segments, the held-out evaluation at the start (`<metric>_start`) and at the end (the end evaluation's keys as
they are, intervals of eval/accuracy only), and the training metrics as means over the last 10 logged steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.config import TrainConfig
from workbench.runs import RunDir, read_jsonl

TAIL = 10  # the training metrics: means over this many last logged steps, less noisy than the last step alone
TAIL_METRICS = ("train/reward", "train/accuracy", "length/mean", "entropy/mean", "cost/mean", "perf/step_time")


def summarize(run: RunDir, cfg: TrainConfig, start: dict, end: dict, seconds: float, steps: int) -> dict[str, Any]:
    """summary.json of a completed run: `start`/`end` are the held-out evaluations, `seconds` the run's seconds over
    all segments, `steps` the optimizer steps reached."""
    rows = read_jsonl(run.metrics_file)
    last: dict[str, Any] = {}
    for r in rows:
        last.update({k: v for k, v in r.items() if v is not None})
    tail = rows[-TAIL:]

    def tail_mean(key):
        vals = [r[key] for r in tail if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    return {
        "run_dir": str(run.path),
        "experiment": cfg.experiment_name,
        "name": cfg.name,
        "seed": cfg.seed,
        "algo": cfg.algo.name,
        "steps": int(steps),
        # wall-clock seconds of every segment of the run (resumes included, with steps redone after a kill)
        "train_seconds": round(seconds, 1),
        "segments": max(1, len(run.read_meta().get("segments", []))),
        "perf/num_tokens": last.get("perf/num_tokens"),  # cumulative in TRL's state: spans resumed segments
        "eval/accuracy_start": start.get("eval/accuracy"),
        "eval/accuracy_start/ci_low": start.get("eval/accuracy/ci_low"),
        "eval/accuracy_start/ci_high": start.get("eval/accuracy/ci_high"),
        "eval/length/mean_start": start.get("eval/length/mean"),
        # the start values of pass@k (a collapse shows as pass@16 falling), the entropies, and with tools / modes
        # the cost measures the summary table shows
        **{f"{k}_start": v for k, v in start.items()
           if k in ("eval/cost_of_pass", "eval/tools/calls_per_problem") or
           (k.startswith(("eval/modes/", "eval/pass@", "eval/entropy/")) and not k.endswith(("/ci_low", "/ci_high")))},
        **{k: v for k, v in end.items() if not k.endswith(("/ci_low", "/ci_high")) or k.startswith("eval/accuracy/")},
        **{k: tail_mean(k) for k in TAIL_METRICS},
    }


#: The rows of the printed table: (metric, whether it has a start value, a note). The words come from the metric
#: catalog (`workbench.metric_catalog.title`: "held-out accuracy"; a metric without one shows its name), and so do
#: the formats (by unit).
TABLE_ROWS = (
    ("eval/accuracy", True, "95% CI"),
    ("eval/length/mean", True, ""),
    *((name, False, "") for name in TAIL_METRICS if name != "perf/step_time"),
)
#: With tools (the papers' cost measures, held out): rows shown when the end evaluation has them; modes likewise.
TOOL_ROWS = ("eval/cost_of_pass", "eval/tools/calls_per_problem")


def row_label(name: str, note: str = "") -> str:
    """A table row's label: the catalog's title with the name and note in brackets, else the name (and note)."""
    from workbench.metric_catalog import title

    words = title(name)
    inner = ", ".join(x for x in (name if words != name else "", note) if x)
    return f"{words} ({inner})" if inner else words


def print_summary(summary: dict[str, Any]) -> None:
    """The summary as a table on stdout: metric, start, end."""
    from rich.console import Console
    from rich.table import Table

    from workbench.metric_catalog import fmt

    console = Console(stderr=False)
    table = Table(title=f"rl train: {summary['experiment']}/{Path(summary['run_dir']).name}", show_header=True,
                  caption=f"training metrics: means over the last {TAIL} logged steps")
    table.add_column("metric")
    table.add_column("start", justify="right")
    table.add_column("end", justify="right")

    def value(key: str) -> str:  # with its interval where summary.json has one
        v, lo, hi = (summary.get(key + s) for s in ("", "/ci_low", "/ci_high"))
        return fmt(key, v) if lo is None or hi is None else f"{fmt(key, v)} [{fmt(key, lo)}, {fmt(key, hi)}]"

    def add(name: str, has_start: bool, note: str = "") -> None:
        table.add_row(row_label(name, note), value(name + "_start") if has_start else "", value(name))

    for name, has_start, note in TABLE_ROWS:
        add(name, has_start, note)
    if "eval/tools/calls_per_problem" in summary:  # tools ran
        for name in TOOL_ROWS:
            add(name, True)
    for name in [k for k in summary if k.startswith("eval/modes/") and k.count("/") == 2 and not k.endswith("_start")]:
        add(name, True)
    table.add_row("steps / seconds", "", f"{summary['steps']} / {summary['train_seconds']:.0f}")
    console.print(table)
    console.print(f"run directory: [bold]{summary['run_dir']}[/bold]")
