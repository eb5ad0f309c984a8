"""`rl eval`: parse, plan (validates everything, writes nothing), execute, print. Wiring only.

torch/transformers load inside the command, never at import: `rl --help` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cli.common import override_completer
from workbench.compose import config_groups
from workbench.config import ConfigError
from workbench.metric_catalog import fmt, label


def _epilog() -> str:
    groups = config_groups()
    return (
        "Examples:\n\n"
        "  rl eval runs/quickstart/2026-11-22_10-00-00_run                  (the run's final model)\n\n"
        "  rl eval runs/quickstart/2026-11-22_10-00-00_run --checkpoint all eval.n=16   (a curve over steps)\n\n"
        "  rl eval model=hf model.name_or_path=/path/to/model task=arithmetic eval.n=16 eval.k=\\[1,4,16]\n\n"
        "Results: RUN_DIR/eval/<checkpoint>/{metrics.json, samples.jsonl}; a model without a run directory gets "
        "runs/eval/<model>_<hash>/eval/model/. Same settings again: the results are reused (--force re-evaluates).\n\n"
        "Keys (conf/eval.yaml): eval.n, eval.k, eval.maj_k, eval.temperature, eval.max_new_tokens, eval.batch_size, "
        "eval.num_problems, eval.backend (hf|vllm), eval.n_boot, eval.seed, price.*; with a run directory also "
        "task.* (e.g. task.eval_size=500).\n\n"
        f"model: {', '.join(groups.get('model', [])) or '(none)'}\n\n"
        f"task: {', '.join(groups.get('task', [])) or '(none)'}"
    )


EVAL_EPILOG = _epilog()


def _split_args(args: list[str]) -> tuple[str | None, list[str]]:
    """RUN_DIR (a first argument that is not key=value) and the overrides."""
    run_dir = None
    rest = list(args)
    if rest and "=" not in rest[0]:
        run_dir = rest.pop(0)
    for a in rest:
        if "=" not in a:
            raise ConfigError(f"unexpected argument {a!r}: give at most one RUN_DIR, first, then key=value overrides")
    return run_dir, rest


def _ci(metrics: dict[str, Any], key: str) -> str:
    lo, hi = metrics.get(key + "/ci_low"), metrics.get(key + "/ci_high")
    if lo is None and hi is None:
        return ""
    return f"[{fmt(key, lo)}, {fmt(key, hi)}]"


def _cop(metrics: dict[str, Any]) -> Any:
    """Cost of pass, with 'no correct answer' shown as inf (JSON stores it as null)."""
    v = metrics.get("eval/cost_of_pass")
    if v is None and metrics.get("eval/accuracy") == 0:
        return float("inf")
    return v


#: Per-group metrics (eval/by/<difficulty>/...): a table of their own, not rows of the main one.
BY_PREFIX = "eval/by/"
CI = "95% CI"  # the accuracy interval's column in the tables below (the other columns are metric names)
_REUSED = {"all": " (reused)", "samples": " (metrics recomputed from saved samples)", "none": ""}


def _print_one(console: Any, res: dict[str, Any]) -> None:
    from rich.table import Table

    m = res["metrics"]
    step = f", step {res['step']}" if res.get("step") is not None else ""
    title = (f"rl eval: {res['checkpoint']}{step} - {res['num_problems']} problems x {res['n']} samples"
             f"{_REUSED.get(res.get('reused', 'none'), '')}")
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    for key, value in m.items():
        if key.endswith(("/ci_low", "/ci_high")) or key.startswith(BY_PREFIX):
            continue
        if key == "eval/cost_of_pass":
            value = _cop(m)
        table.add_row(key, fmt(key, value), _ci(m, key))
    console.print(table)
    _print_groups(console, m)
    perf = res.get("perf") or {}
    if perf.get("tokens_per_s") and res.get("reused") == "none":
        console.print(f"[dim]{perf['completion_tokens']} completion tokens in {perf['generate_seconds']:.1f} s "
                      f"({perf['tokens_per_s']:.0f} tokens/s, backend {perf.get('backend')}"
                      + (f", chunks of {perf['batch_size']}" if perf.get("batch_size") else "") + ")[/dim]")


def _print_groups(console: Any, m: dict[str, Any]) -> None:
    """eval/by/<group>/... (e.g. per difficulty) as one compact table: a row per group; intervals only for
    accuracy (all of them are in metrics.json)."""
    from rich import box
    from rich.table import Table

    groups = list(dict.fromkeys(k[len(BY_PREFIX):].split("/", 1)[0] for k in m if k.startswith(BY_PREFIX)))
    if not groups:
        return
    first = BY_PREFIX + groups[0] + "/"
    modes = [k[len(first) + len("modes/"):] for k in m if k.startswith(first + "modes/") and "/ci_" not in k]
    keys = ["accuracy", CI, "cost_of_pass", "tools/calls_per_problem", *(f"modes/{mode}" for mode in modes)]
    cols = [(CI if k == CI else label("eval/" + k), k) for k in keys if k == CI or first + k in m]
    table = Table(title="by group (eval/by/<group>/...; modes: share of samples)", box=box.SIMPLE_HEAD)
    table.add_column("group", no_wrap=True)
    for header, _ in cols:
        table.add_column(header, justify="right", no_wrap=True)
    for g in groups:
        # the group's metrics under the plain eval/ names, so fmt, _ci and _cop read them as they read the totals
        head = f"{BY_PREFIX}{g}/"
        sub = {"eval/" + k[len(head):]: v for k, v in m.items() if k.startswith(head)}
        cells = [_ci(sub, "eval/accuracy") if k == CI else
                 fmt("eval/" + k, _cop(sub) if k == "cost_of_pass" else sub.get("eval/" + k)) for _, k in cols]
        table.add_row(g, *cells)
    console.print(table)


def _print_curve(console: Any, results: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.table import Table

    m0 = results[0]["metrics"]
    pass_key = ([k for k in m0 if k.startswith("eval/pass@") and "/ci_" not in k] or [None])[-1]
    maj_key = ([k for k in m0 if k.startswith("eval/maj@") and "/ci_" not in k] or [None])[-1]
    keys = ["eval/accuracy", CI, pass_key, maj_key, "eval/length/mean", "eval/truncation_rate", "eval/entropy/mean",
            "eval/cost_of_pass"]
    if "eval/tools/calls_per_problem" in m0:  # tools ran: calls, and the share of each mode the task has
        keys.append("eval/tools/calls_per_problem")
    keys += [k for k in m0 if k.startswith("eval/modes/") and k.count("/") == 2 and not k.endswith("/none")]
    cols = [(CI if k == CI else label(k), k) for k in keys if k]
    r0 = results[0]
    table = Table(title=f"rl eval: {len(results)} models, {r0['num_problems']} problems x {r0['n']} samples",
                  box=box.SIMPLE_HEAD)
    table.add_column("checkpoint", no_wrap=True)
    table.add_column("step", justify="right", no_wrap=True)
    for header, _ in cols:
        table.add_column(header, justify="right", no_wrap=True)
    for res in results:
        m = res["metrics"]
        cells = []
        for header, key in cols:
            if key == CI:  # the accuracy CI
                cells.append(_ci(m, "eval/accuracy"))
            else:
                cells.append(fmt(key, _cop(m) if key == "eval/cost_of_pass" else m.get(key)))
        row_name = res["checkpoint"] + (" *" if res.get("reused") != "none" else "")
        table.add_row(row_name, "-" if res.get("step") is None else str(res["step"]), *cells)
    console.print(table)
    if any(r.get("reused") != "none" for r in results):
        console.print("[dim]* reused from an earlier evaluation with the same settings (--force re-evaluates)[/dim]")


def eval_command(
    args: Annotated[
        Optional[list[str]],
        typer.Argument(help="RUN_DIR (optional, first) and Hydra overrides: eval.n=16 'eval.k=[1,4,16]' task=arithmetic",
                       show_default=False, autocompletion=override_completer()),
    ] = None,
    checkpoint: Annotated[
        Optional[str],
        typer.Option("--checkpoint", "-c",
                     help="With RUN_DIR: final (default) | last | all (every checkpoint + final) | checkpoint-N | N."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-evaluate even if the same evaluation already exists.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the resolved plan; write nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Evaluate a run's final model, its checkpoints, or any model (pass@k, maj@k, length, entropy, cost of pass).

    Scored by the task's own scorer, the one training rewards use; every metric gets a bootstrap 95% CI over problems.
    """
    from cli.common import fail

    try:
        run_dir, overrides = _split_args(list(args or []))
        from workbench.evaluation import runner

        if run_dir is not None:
            plan = runner.plan_run_eval(run_dir, overrides, checkpoint)
        else:
            if checkpoint is not None:
                raise ConfigError("--checkpoint needs a RUN_DIR (rl eval RUN_DIR --checkpoint all)")
            plan = runner.plan_model_eval(overrides)
        if force and plan.run is not None and plan.run.lock_state():
            # a training holds the run: its checkpoints and final/ are still being written
            from workbench.runs import RunInUse

            raise RunInUse(plan.run, plan.run.lock_holder())
        if dry_run:
            import dataclasses

            import yaml

            typer.echo(yaml.safe_dump(dataclasses.asdict(plan.cfg), sort_keys=False), nl=False)
            for t in plan.targets:
                typer.echo(f"# {t.label}: {t.model.name_or_path or t.model.kind} -> {t.out_dir}")
            return
        from rich.console import Console

        console = Console()
        if not console.is_terminal:  # piped or captured: do not squeeze the tables into 80 columns
            console = Console(width=max(console.width, 120))
        results = runner.execute(plan, force=force, progress=not quiet, command=" ".join(["rl", *sys.argv[1:]]))
    except ConfigError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted; the unfinished evaluation wrote no metrics.json", code=130)
    except Exception as e:  # noqa: BLE001 - anything else is a crash: one line, exit 1
        msg = " ".join(str(e).split())
        fail(f"evaluation failed: {type(e).__name__}: {msg[:500]}", code=1)
    if len(results) == 1:
        _print_one(console, results[0])
    else:
        _print_curve(console, results)
    folders = [Path(r["path"]).parent for r in results]
    where = str(folders[0]) if len(folders) == 1 else f"{folders[0].parent}/{{{','.join(f.name for f in folders)}}}"
    console.print(f"results: [bold]{where}[/bold] (metrics.json, samples.jsonl)", soft_wrap=True)
    # a model without a run directory has no W&B run to sit beside; results reused whole were logged when computed
    if plan.run is not None and any(r.get("reused") != "all" for r in results):
        _log_to_wandb(console, plan, results)


def _log_to_wandb(console: Any, plan: Any, results: list[dict[str, Any]]) -> None:
    """The results into W&B next to the run's training curves (workbench.tracking.log_eval), when the run logs to
    W&B; a W&B failure is a warning: the results are already on disk."""
    import dataclasses

    from workbench.tracking import log_eval

    try:
        folder = log_eval(plan.run, results, eval_settings=dataclasses.asdict(plan.cfg.eval))
    except Exception as e:  # noqa: BLE001
        typer.secho(f"warning: results not logged to W&B: {type(e).__name__}: {' '.join(str(e).split())[:300]}",
                    err=True, fg=typer.colors.YELLOW)
        return
    if folder is not None:
        console.print(f"[dim]W&B: {folder} (job_type eval, in the training run's group"
                      + ("; upload with: wandb sync " + str(folder) if folder.name.startswith("offline-") else "")
                      + ")[/dim]", soft_wrap=True)
