"""What `rl sweep` shows: the plan (--dry-run), the live monitor while jobs run, the summary table at the end.

rich is imported inside the functions (and by SweepMonitor's render): `rl --help` imports the CLI.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from workbench.runs import STATUS_COMPLETED, STATUS_FAILED, STATUS_RUNNING
from workbench.sweep import (
    STATUS_PENDING,
    counts,
    describe_objective,
    index_rows,
    read_definition,
    read_records,
    read_study,
    running_step,
)


def fmt_value(v: Any) -> str:
    """An objective or metric value for a table: 4 significant digits, lists comma-separated, None as '-'."""
    if v is None:
        return "-"
    if isinstance(v, list):
        return ", ".join(fmt_value(x) for x in v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def short_override(override: str) -> str:
    """'a.b=0.45247205937195945' -> 'a.b=0.4525' (display only; the index keeps the exact value)."""
    key, _, value = override.partition("=")
    try:
        f = float(value)
    except ValueError:
        return override
    return f"{key}={f:.4g}" if len(value) > 8 else override


def console():
    from rich.console import Console

    return Console()


def print_plan(plan, sweep_root: str) -> None:
    from rich.table import Table

    out = console()
    where = f"{sweep_root}/sweeps/<timestamp>_{plan.name}/"
    if plan.kind == "grid":
        out.print(f"[bold]grid sweep {plan.name!r}[/bold]: {len(plan.jobs)} jobs, launcher {plan.launcher}, "
                  f"into {where}")
        table = Table(show_header=True, header_style="bold")
        table.add_column("job", justify="right")
        for key in plan.swept_keys:
            table.add_column(key)
        for job in plan.jobs:
            values = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in job.overrides}
            table.add_row(str(job.job), *[values.get(k, "") for k in plan.swept_keys])
        out.print(table)
    else:
        out.print(f"[bold]Optuna sweep {plan.name!r}[/bold]: {plan.n_trials} trials ({plan.sampler}), "
                  f"{'/'.join(plan.directions)} {describe_objective(plan.objective)}, launcher {plan.launcher}, "
                  f"into {where}")
        table = Table(show_header=True, header_style="bold")
        table.add_column("parameter")
        table.add_column("search space")
        for k, v in plan.params.items():
            table.add_row(k, v)
        out.print(table)
        out.print("[dim]trials are sampled by Optuna while the sweep runs[/dim]")
    if plan.base_overrides:
        out.print(f"[dim]every job: {' '.join(plan.base_overrides)}[/dim]")
    if plan.hydra_overrides:
        out.print(f"[dim]hydra: {' '.join(plan.hydra_overrides)}[/dim]")
    out.print(f"launcher {plan.launcher}: {describe_resources(plan)}", soft_wrap=True, highlight=False)
    if plan.slurm_checked:
        out.print(f"[dim]SLURM request {plan.slurm_checked}[/dim]", soft_wrap=True, highlight=False)
    print_warnings(plan)


def describe_resources(plan) -> str:
    """'each job: partition=gpu, nodes=1, gpus_per_node=1, ..., timeout_min=240; at most 32 at once
    (array_parallelism)': the launcher's settings that are set, per job, then how many jobs run at once."""
    if plan.launcher == "basic":
        return "jobs run one after another in this process"
    if plan.slurm:  # a SLURM job's resources, signal and requeues (workbench.sweep.slurm)
        return plan.slurm
    at_once = {"array_parallelism": "array_parallelism", "n_jobs": "n_jobs"}
    per_job = ", ".join(f"{k}={v}" for k, v in plan.resources.items() if k not in at_once)
    parts = [f"each job: {per_job}" if per_job else "each job in its own worker process"]
    parts += [f"at most {plan.resources[k]} at once ({k})" for k in at_once if k in plan.resources]
    return "; ".join(parts)


def print_warnings(plan) -> None:
    from rich.console import Console

    err = Console(stderr=True)
    for w in plan.warnings:
        err.print(f"[yellow]warning:[/yellow] {w}", soft_wrap=True, markup=True, highlight=False)


def print_summary(sweep_dir: Path, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    out = console()
    definition = read_definition(sweep_dir)
    with_objective = definition.get("objective") is not None
    wide = out.width >= 140
    table = Table(title=f"rl sweep: {definition['id']}", show_header=True, header_style="bold")
    table.add_column("job", justify="right", no_wrap=True)
    table.add_column("overrides", overflow="fold", ratio=3)
    table.add_column("status", no_wrap=True)
    if with_objective:
        table.add_column("objective", justify="right", no_wrap=True)
    table.add_column("accuracy", justify="right", no_wrap=True)
    table.add_column("length", justify="right", no_wrap=True)
    if wide:
        table.add_column("run directory", overflow="fold", ratio=2)
    styles = {"completed": "green", "failed": "red", "running": "yellow", "pending": "dim"}
    for r in rows:
        m = r.get("metrics") or {}
        status = r["status"] + (f" -> job {r['retried_as']}" if r.get("retried_as") is not None else "")
        cells = [str(r["job"]), "\n".join(short_override(o) for o in r["overrides"]),
                 Text(status, style=styles.get(r["status"], ""))]
        if with_objective:
            cells.append(fmt_value(r.get("objective")))
        cells += [fmt_value(m.get("eval/accuracy")), fmt_value(m.get("eval/length/mean"))]
        if wide:
            cells.append(r.get("run_dir") or "")
        table.add_row(*cells)
    out.print(table)
    for r in rows:
        if r.get("error"):
            out.print(f"[red]job {r['job']} failed[/red]: {r['error']}"
                      + (f" ({r['run_dir']}/error.txt)" if r.get("run_dir") else ""), highlight=False)
    c = counts(rows)
    parts = [f"[green]{c['completed']} completed[/green]",
             f"[red]{c['failed']} failed[/red]" if c["failed"] else "0 failed"]
    if c["running"]:
        parts.append(f"[yellow]{c['running']} still running or lost[/yellow]")
    if c["pending"]:
        parts.append(f"{c['pending']} not run")
    out.print(f"{sum(c.values())} jobs: " + ", ".join(parts))
    if definition["kind"] == "optuna":
        study = read_study(sweep_dir)
        if study.get("best_params") is not None:
            out.print(f"best (job {study['best_job']}): {study['best_value']:.4g} with "
                      + " ".join(f"{k}={fmt_value(v)}" for k, v in study["best_params"].items()), highlight=False)
        for t in study.get("best_trials", []):
            out.print(f"pareto (job {t['job']}): {fmt_value(t['values'])} with "
                      + " ".join(f"{k}={fmt_value(v)}" for k, v in t["params"].items()), highlight=False)
    out.print(f"sweep directory: [bold]{sweep_dir}[/bold]  (index.jsonl; run_dir paths are relative to it)",
              soft_wrap=True)
    if c["failed"] or c["running"] or c["pending"]:
        out.print(f"rerun what is missing or failed: [bold]rl sweep --resume {sweep_dir}[/bold]", soft_wrap=True)


class SweepMonitor:
    """A rich renderable that reads the sweep directory on every refresh (so it sees jobs of any launcher:
    in-process, joblib workers, submitit/SLURM jobs): a bar of jobs done and a table of running/failed/recent jobs."""

    def __init__(self, sweep_dir: Path, total: int, title: str, max_rows: int = 16) -> None:
        self.sweep_dir = Path(sweep_dir)
        self.total = total
        self.title = title
        self.max_rows = max_rows
        self.start = time.time()
        self.baseline = {r["job"]: (r.get("attempts", 0), r["status"]) for r in index_rows(self.sweep_dir)
                         if r["status"] != STATUS_PENDING}
        self.with_objective = read_definition(self.sweep_dir).get("objective") is not None

    def _step(self, rec: dict[str, Any]) -> str:
        at = running_step(self.sweep_dir, rec)
        if at is None:
            return ""
        step, total = at
        return f"{step}/{total}" if total else str(step)

    def __rich__(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        rows = index_rows(self.sweep_dir)
        # only this launch's jobs: those whose attempt count or status changed since it started
        fresh = [r for r in rows if r["status"] != STATUS_PENDING
                 and self.baseline.get(r["job"]) != (r.get("attempts", 0), r["status"])]
        c = counts(fresh)
        done = c[STATUS_COMPLETED] + c[STATUS_FAILED]
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.time() - self.start))
        head = Table.grid(padding=(0, 2))
        head.add_row(Text(self.title, style="bold"), Text(elapsed, style="dim"))
        head.add_row(ProgressBar(total=max(self.total, 1), completed=done, width=40),
                     Text.assemble(f"{done}/{self.total} done   ", (f"{c[STATUS_COMPLETED]} completed", "green"), "  ",
                                   (f"{c[STATUS_RUNNING]} running", "cyan"), "  ",
                                   (f"{c[STATUS_FAILED]} failed", "red" if c[STATUS_FAILED] else "dim")))
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False, expand=False)
        table.add_column("job", justify="right", no_wrap=True)
        table.add_column("overrides", overflow="fold", max_width=60)
        table.add_column("status", no_wrap=True)
        table.add_column("step", justify="right", no_wrap=True)
        if self.with_objective:
            table.add_column("objective", justify="right", no_wrap=True)
        table.add_column("accuracy", justify="right", no_wrap=True)
        table.add_column("time", justify="right", no_wrap=True)
        table.add_column("error", overflow="fold", max_width=50)
        records = read_records(self.sweep_dir)
        order = {STATUS_RUNNING: 0, STATUS_FAILED: 1, STATUS_COMPLETED: 2}
        shown = sorted(fresh, key=lambda r: (order.get(r["status"], 3), -(r["job"])))[: self.max_rows]
        for r in sorted(shown, key=lambda r: r["job"]):
            style = {STATUS_RUNNING: "cyan", STATUS_FAILED: "red", STATUS_COMPLETED: "green"}.get(r["status"], "")
            step = self._step(records.get(r["job"], {})) if r["status"] == STATUS_RUNNING else ""
            cells = [str(r["job"]), " ".join(short_override(o) for o in r["overrides"]), Text(r["status"], style=style),
                     step]
            if self.with_objective:
                cells.append(fmt_value(r.get("objective")))
            cells += [fmt_value((r.get("metrics") or {}).get("eval/accuracy")),
                      f"{r['seconds']:.0f}s" if r.get("seconds") is not None else "", (r.get("error") or "")[:200]]
            table.add_row(*cells)
        hidden = len(fresh) - len(shown)
        parts = [head, table]
        if hidden > 0:
            parts.append(Text(f"... and {hidden} more completed", style="dim"))
        return Group(*parts)
