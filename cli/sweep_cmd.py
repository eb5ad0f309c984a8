"""`rl sweep`: parse, plan (validates every job, writes nothing), launch through Hydra, print. Wiring only.

The work is in workbench.sweep; what it prints is in cli.sweep_view. Module level imports typer only: `rl --help`
must not import hydra or torch.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cli.common import fail, override_completer
from workbench.compose import group_options

_LAUNCHER_PLUGINS = {
    "joblib": "hydra_plugins.hydra_joblib_launcher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
    "ray": "hydra_plugins.hydra_ray_launcher",
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _launchers() -> list[str]:
    names = ["basic"] + [n for n, mod in _LAUNCHER_PLUGINS.items() if _installed(mod)]
    presets = group_options("hydra/launcher")
    return names + [p for p in presets if p not in names]


def _epilog() -> str:
    presets = group_options("sweep")  # no hydra import here
    return (
        "Examples:\n\n"
        "  rl sweep reward.length_kimi.weight=0.1,0.3,1.0 seed=1,2,3 experiment=length_shaping   # grid, 9 runs\n\n"
        "  rl sweep sweep=length_weight_optuna   # Optuna search; presets live in conf/sweep/\n\n"
        "  rl sweep length_weight_grid seed=4,5   # a preset's name alone works too\n\n"
        "  rl sweep seeds experiment=quickstart hydra/launcher=joblib hydra.launcher.n_jobs=2   # parallel\n\n"
        "  rl sweep length_weight_grid hydra/launcher=slurm_gpu hydra.launcher.partition=gpu   # SLURM, 1 GPU a job\n\n"
        "  rl sweep --resume runs/sweeps/2026-11-22_10-00-00_length_weight_grid   # missing + failed jobs\n\n"
        "Grid: key=a,b,c / range(1,4) / choice(a,b) values, and a preset's hydra.sweeper.params, expand to their "
        "cartesian product (Hydra's BasicSweeper). Optuna: hydra/sweeper=optuna with key=interval(a,b), "
        "tag(log,interval(a,b)), choice(...) and an objective from summary.json (--objective or the preset's "
        "sweep.objective; hydra.sweeper.direction=maximize|minimize, hydra.sweeper.n_trials=N).\n\n"
        "Each job is an ordinary run directory under the sweep directory runs/sweeps/<timestamp>_<name>/ "
        "(sweep.json, index.jsonl with one line per job, jobs/, runs/); `rl compare SWEEP_DIR` and `rl eval RUN_DIR` "
        "accept them. W&B groups runs by their config without the seed (the seeds of one setting), as rl compare "
        "does, and tags each with sweep:<sweep directory name>. Exit code 1 if any job failed.\n\n"
        f"sweep (presets, sweep=NAME): {', '.join(presets) or '(none)'}\n\n"
        f"hydra/launcher: {', '.join(_launchers())}  (ray: pip install hydra-ray-launcher where a Ray cluster exists)"
    )


SWEEP_EPILOG = _epilog()


def _merge_hydra(saved: list[str], extra: list[str]) -> list[str]:
    """Resume-time hydra overrides replace saved ones with the same key (a new launcher drops the old one's keys)."""
    from workbench.sweep import override_key

    keys = {override_key(o) for o in extra}
    new_launcher = "hydra/launcher" in keys
    kept = [o for o in saved if override_key(o) not in keys
            and not (new_launcher and override_key(o).startswith("hydra.launcher."))]
    return kept + extra


def _run_with_monitor(sweep_dir: Path, total: int, title: str, quiet: bool, fn) -> None:
    from rich.live import Live

    from cli.sweep_view import SweepMonitor, console

    out = console()
    if quiet or not out.is_terminal:
        fn()
        return
    with Live(SweepMonitor(sweep_dir, total, title), console=out, refresh_per_second=1, transient=True):
        fn()


def sweep_command(
    overrides: Annotated[
        Optional[list[str]],
        typer.Argument(help="Hydra overrides with sweeps: seed=1,2,3 reward.length_kimi.weight=0.1,0.3 sweep=PRESET "
                            "hydra/launcher=joblib ...",
                       autocompletion=override_completer(lambda: {"sweep": group_options("sweep"),
                                                                   "hydra/launcher": _launchers()})),
    ] = None,
    name: Annotated[
        Optional[str], typer.Option("--name", "-n", help="Sweep label for its directory (sanitised).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the jobs (or the search space); write nothing.")
    ] = False,
    resume: Annotated[
        Optional[Path],
        typer.Option("--resume", help="Rerun the missing and failed jobs of SWEEP_DIR (only hydra overrides allowed)."),
    ] = None,
    objective: Annotated[
        Optional[str],
        typer.Option("--objective", help="summary.json metric an Optuna sweep optimises (and the index reports), "
                                         "e.g. eval/accuracy; METRIC,METRIC for multi-objective; a preset's "
                                         "sweep.objective may be a weighted sum {metric: weight}."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress display.")] = False,
) -> None:
    """Run a grid or Optuna sweep as a Hydra multirun; every job is an `rl train` run directory."""
    from cli.sweep_view import print_plan, print_summary, print_warnings
    from workbench.config import ConfigError

    overrides = list(overrides or [])
    if overrides and "=" not in overrides[0] and not overrides[0].startswith(("-", "~")):
        overrides[0] = f"sweep={overrides[0]}"  # `rl sweep PRESET ...` is `rl sweep sweep=PRESET ...`
    try:
        from workbench import sweep as sw

        if resume is not None:
            if name or objective:
                fail("--resume takes no --name or --objective: a resumed sweep keeps its definition")
            bad = [o for o in overrides if not sw.is_hydra(o)]
            if bad:
                fail(f"--resume accepts only hydra overrides (e.g. hydra/launcher=joblib), got {bad[0]!r}")
            sw.check_hydra_overrides(overrides)
            sweep_dir = resume.resolve()
            definition = sw.read_definition(sweep_dir)
            sw.rebuild_index(sweep_dir)
            if definition["kind"] == "grid":
                todo = sw.jobs_to_resume(sweep_dir)
                for job, who in sorted(sw.live_jobs(sweep_dir).items()):
                    typer.echo(f"job {job} is still running ({who}); left alone", err=True)
                total = len(todo)
                desc = "job(s) " + ", ".join(str(j) for j in todo)
            else:
                state = sw.optuna_resume_state(sweep_dir)
                total = state["remaining"]
                desc = (f"{total} trial(s)" + (f", first retrying failed job(s) {', '.join(map(str, state['retried']))}"
                                               if state["retried"] else ""))
            if total == 0:
                typer.echo(f"nothing to resume: every job of {sweep_dir} is completed")
                print_summary(sweep_dir, sw.read_index(sweep_dir))
                return
            hydra_now = _merge_hydra(definition["hydra_overrides"], overrides)
            sw.check_resume_launcher(definition, hydra_now)  # a SLURM request the cluster cannot meet: exit 2 here
            if dry_run:
                typer.echo(f"would rerun {desc} of {sweep_dir}")
                return
            _set_hydra(sweep_dir, definition, hydra_now)

            def go() -> None:
                if definition["kind"] == "grid":
                    sw.launch_grid(sweep_dir, job_ids=todo)
                else:
                    sw.launch_optuna(sweep_dir, resume=True)

            typer.echo(f"resuming {sweep_dir.name}: {desc}")
        else:
            # a comma-separated list is a multi-objective (one hydra.sweeper.direction each)
            goal: Any = [o.strip() for o in objective.split(",")] if objective and "," in objective else objective
            plan = sw.plan_sweep(overrides, name=name, objective=goal)
            if dry_run:
                print_plan(plan, plan.runs_dir)
                return
            print_warnings(plan)
            sweep_dir = sw.create_sweep_dir(plan, ["rl", *sys.argv[1:]] if sys.argv[0].endswith("rl") else
                                            ["rl", "sweep", *overrides])
            total = plan.total

            def go() -> None:
                if plan.kind == "grid":
                    sw.launch_grid(sweep_dir)
                else:
                    sw.launch_optuna(sweep_dir)

            typer.echo(f"{plan.kind} sweep: {total} {'jobs' if plan.kind == 'grid' else 'trials'} "
                       f"(launcher {plan.launcher}) in {sweep_dir}")
        code = 0
        try:
            _run_with_monitor(sweep_dir, total, f"rl sweep {sweep_dir.name}", quiet, go)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP stopping an in-process job (RunInterrupted)
            code = getattr(e, "exit_code", 130)
        except ConfigError:
            raise
        except Exception as e:  # a launcher/Hydra failure (a job's own failure never gets here)
            msg = " ".join(str(e).split())
            typer.secho(f"error: sweep launch failed: {type(e).__name__}: {msg[:500]}", err=True, fg=typer.colors.RED)
            code = 1
        rows = sw.finalize(sweep_dir)
        print_summary(sweep_dir, rows)
        c = sw.counts(rows)
        if code == 0 and (c["failed"] or c["running"] or c["pending"]):
            code = 1
        if code:
            raise typer.Exit(code)
    except ConfigError as e:
        fail(str(e))


def _set_hydra(sweep_dir: Path, definition: dict[str, Any], hydra_overrides: list[str]) -> None:
    """Resume with different hydra overrides (e.g. another launcher): they become the sweep's from now on."""
    if hydra_overrides == definition["hydra_overrides"]:
        return
    from workbench.sweep import write_definition

    definition["hydra_overrides"] = hydra_overrides
    write_definition(sweep_dir, definition)
