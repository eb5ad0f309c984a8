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
        # with tools / modes: the start values of the cost measures the summary table shows
        **{f"{k}_start": v for k, v in start.items()
           if k in ("eval/cost_of_pass", "eval/tools/calls_per_problem") or
           (k.startswith("eval/modes/") and not k.endswith(("/ci_low", "/ci_high")))},
        **{k: v for k, v in end.items() if not k.endswith(("/ci_low", "/ci_high")) or k.startswith("eval/accuracy/")},
        **{k: tail_mean(k) for k in TAIL_METRICS},
    }


def print_summary(summary: dict[str, Any]) -> None:
    """The summary as a table on stdout: metric, start, end."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False)
    table = Table(title=f"rl train: {summary['experiment']}/{Path(summary['run_dir']).name}", show_header=True)
    table.add_column("metric")
    table.add_column("start", justify="right")
    table.add_column("end", justify="right")

    def fmt(v, spec=".3f"):
        return "-" if v is None else format(v, spec)

    def with_ci(prefix):
        v, lo, hi = (summary.get(prefix + s) for s in ("", "/ci_low", "/ci_high"))
        return fmt(v) if lo is None or hi is None else f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]"

    table.add_row("held-out accuracy (eval/accuracy, 95% CI)", with_ci("eval/accuracy_start"), with_ci("eval/accuracy"))
    table.add_row("held-out length, tokens", fmt(summary.get("eval/length/mean_start"), ".1f"), fmt(summary.get("eval/length/mean"), ".1f"))
    table.add_row("train reward (last 10 steps)", "", fmt(summary.get("train/reward")))
    table.add_row("train accuracy (last 10 steps)", "", fmt(summary.get("train/accuracy")))
    table.add_row("completion length (length/mean)", "", fmt(summary.get("length/mean"), ".1f"))
    table.add_row("token entropy (entropy/mean)", "", fmt(summary.get("entropy/mean")))
    table.add_row("cost per rollout, $ (cost/mean)", "", fmt(summary.get("cost/mean"), ".2e"))
    if "eval/tools/calls_per_problem" in summary:  # tools ran: the papers' cost measures, held out
        table.add_row("held-out cost of pass, $ (eval/cost_of_pass)", fmt(summary.get("eval/cost_of_pass_start"), ".2e"),
                      fmt(summary.get("eval/cost_of_pass"), ".2e"))
        table.add_row("held-out tool calls per problem", fmt(summary.get("eval/tools/calls_per_problem_start"), ".2f"),
                      fmt(summary.get("eval/tools/calls_per_problem"), ".2f"))
    modes = [k.rsplit("/", 1)[1] for k in summary
             if k.startswith("eval/modes/") and k.count("/") == 2 and not k.endswith("_start")]
    for mode in modes:
        table.add_row(f"held-out share of mode {mode}", fmt(summary.get(f"eval/modes/{mode}_start"), ".2f"),
                      fmt(summary.get(f"eval/modes/{mode}"), ".2f"))
    table.add_row("steps / seconds", "", f"{summary['steps']} / {summary['train_seconds']:.0f}")
    console.print(table)
    console.print(f"run directory: [bold]{summary['run_dir']}[/bold]")
