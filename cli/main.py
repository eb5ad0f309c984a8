"""The `rl` command line: parse, compose the config, hand over to workbench. Wiring only.

torch and trl are imported inside the commands, never at module level, so `rl --help` answers at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.common import fail, override_completer
from workbench.compose import config_groups
from workbench.config import ConfigError


def _groups_help() -> str:
    lines = []
    for group, options in config_groups().items():
        lines.append(f"{group}: {', '.join(options) if options else '(none)'}")
    return "\n\n".join(lines)


app = typer.Typer(
    name="rl",
    help=(
        "rl: an experiment workbench for RL fine-tuning of language models (GRPO/RLOO on TRL) with entropy, "
        "length and cost shaping.\n\n"
        "Compose experiments from Hydra config groups (group=option, key=value), e.g.\n\n"
        "  rl train experiment=quickstart algo.max_steps=20 seed=3 --name lr-test\n\n"
        "Every run lives in runs/<experiment>/<timestamp>_<name>/ (config.yaml, meta.json, metrics.jsonl, "
        "samples.jsonl, checkpoints/, final/, summary.json)."
    ),
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion; overrides complete group=option names
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    def v(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    typer.echo(f"rl {v('rl-workbench')} (trl {v('trl')}, transformers {v('transformers')}, torch {v('torch')}, "
               f"hydra-core {v('hydra-core')}, wandb {v('wandb')})")
    raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the versions and exit.")
    ] = False,
) -> None:
    """Workbench for RL fine-tuning of LMs: rl train | rl --help."""


TRAIN_EPILOG = (
    "Config groups and their options (pick with group=option; lists with group=\\[a,b]):\n\n"
    + _groups_help()
    + "\n\nAny key can be overridden: algo.learning_rate=1e-4, task.train_size=500, logger=none. "
    "Every key of trl.GRPOConfig is reachable under algo. (algo.loss_type=dr_grpo, algo.beta=0.04)."
)


@app.command(epilog=TRAIN_EPILOG)
def train(
    overrides: Annotated[
        Optional[list[str]], typer.Argument(help="Hydra overrides: experiment=quickstart algo.max_steps=20 seed=3",
                                            autocompletion=override_completer())
    ] = None,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Run label (sanitised) for the run directory.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and run every check a real run makes before it loads the model; nothing is written.")] = False,
    resume: Annotated[
        Optional[Path],
        typer.Option("--resume", help="Continue RUN_DIR from its last checkpoint (same config, same W&B run id)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    num_processes: Annotated[
        Optional[int],
        typer.Option("--num-processes", min=1, help="Train on N processes (GPUs; gloo on CPU) through accelerate launch: "
                     "one run directory, ranks stop together on SIGTERM. Same as launch.num_processes=N."),
    ] = None,
    accelerate_config: Annotated[
        Optional[str],
        typer.Option("--accelerate-config", help="With --num-processes: ddp (default) | fsdp2 | zero2 | zero3 "
                     "(conf/accelerate/) or a path to an accelerate config yaml. Same as launch.accelerate_config=."),
    ] = None,
) -> None:
    """Train a policy with GRPO (or RLOO) and the selected shaping terms; prints a summary at the end."""
    from workbench.launch import record_exit_code

    with record_exit_code():  # in a worker of --num-processes: tell the supervisor how this rank ended
        _train_command(list(overrides or []), name, dry_run, resume, quiet, num_processes, accelerate_config)


def _train_command(overrides: list[str], name: str | None, dry_run: bool, resume: Path | None, quiet: bool,
                   num_processes: int | None, accelerate_config: str | None) -> None:
    from workbench.compose import compose
    from workbench.config import to_train_config

    if num_processes is not None:
        overrides.append(f"launch.num_processes={num_processes}")
    if accelerate_config is not None:
        overrides.append(f"launch.accelerate_config={accelerate_config}")
    try:
        if resume is not None:
            if overrides or name:
                fail("--resume takes no overrides, --name, --num-processes or --accelerate-config: a resumed run "
                     "keeps its own config")
            from workbench.runs import RunDir, load_run_config

            run = RunDir.open(resume)
            if run.status == "completed":
                fail(f"run already completed: {resume} (summary.json exists); start a new run instead")
            from workbench.launch import launched

            # a live process trains in it (train() takes the lock for real later). Not in the workers of a
            # supervised launch: the supervisor checked, and rank 0 may hold the lock already when rank 1 looks.
            if not launched() and run.lock_state():
                from workbench.runs import RunInUse

                raise RunInUse(run, run.lock_holder())
            cfg = load_run_config(run)
        else:
            data = compose("train", overrides)
            if name is not None:
                data["name"] = name
            cfg = to_train_config(data)
        from workbench.launch import launch_config, launched

        cfg = launch_config() or cfg  # a worker of `--num-processes`: the supervisor's exact config
        if dry_run:
            import yaml

            from workbench.checks import check_train
            from workbench.config import to_dict

            check_train(cfg, new_run=resume is None)  # the checks a real run makes before it loads the model
            typer.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False), nl=False)
            if cfg.launch.num_processes > 1:
                from workbench.parallel import accelerate_config_path

                typer.echo(f"launch: {cfg.launch.num_processes} processes, accelerate config "
                           f"{accelerate_config_path(cfg.launch.accelerate_config)}", err=True)
            typer.echo("dry run: config valid; nothing written", err=True)
            return
        from workbench.summary import print_summary
        from workbench.train import train as run_train

        # with launch.num_processes > 1 this process supervises N workers that run this same command (workbench.launch)
        supervised = cfg.launch.num_processes > 1 and not launched()
        run = run_train(cfg, overrides, argv=["rl", *sys.argv[1:]], resume=resume, progress=not quiet)
    except typer.Exit:  # fail() above: already said
        raise
    except BaseException as e:
        if getattr(e, "reported", False):  # the supervisor's workers said it (rank 0's one line); exit with their code
            raise typer.Exit(getattr(e, "exit_code", 1)) from None
        _train_error(e)
    if os.environ.get("RANK", "0") == "0" and not supervised:  # rank 0 owns the run directory (and printed it)
        import json

        print_summary(json.loads(run.summary_file.read_text()))


def _train_error(e: BaseException) -> None:
    """The one line for a training that did not complete, and its exit code (from rank 0 only, when there are
    several processes: the others exit with the same code, silently)."""
    if os.environ.get("RANK", "0") != "0" and isinstance(e, Exception):
        raise typer.Exit(2 if isinstance(e, ConfigError) else 1) from None
    try:
        raise e
    except ConfigError as e:
        fail(str(e))
    except KeyboardInterrupt as e:  # SIGINT, SIGTERM, SIGHUP (workbench.lifecycle.RunInterrupted)
        signame, code = getattr(e, "signame", "SIGINT"), getattr(e, "exit_code", 130)
        if os.environ.get("RANK", "0") != "0":  # one line from rank 0 says it for every rank
            raise typer.Exit(code)
        run_dir = getattr(e, "run_dir", None)
        if run_dir is None:
            fail(f"interrupted by {signame} before the run directory was written", code=code)
        step = getattr(e, "step", None)
        at = f" at step {step}" if step is not None else ""
        fail(f"interrupted by {signame}{at}; the run is marked interrupted; continue with: rl train --resume {run_dir}",
             code=code)
    except Exception as e:  # a crash: a run directory, if one was written, says failed and error.txt has the traceback
        msg = " ".join(str(e).split())
        where = getattr(e, "run_dir", None)
        hint = f" (traceback in {where}/error.txt)" if where is not None else ""
        fail(f"training failed: {type(e).__name__}: {msg[:500]}{hint}", code=1)


from cli.compare_cmd import compare_command  # noqa: E402
app.command("compare")(compare_command)


from cli.eval_cmd import EVAL_EPILOG, eval_command  # noqa: E402
app.command("eval", epilog=EVAL_EPILOG)(eval_command)

from cli.sweep_cmd import SWEEP_EPILOG, sweep_command  # noqa: E402
app.command("sweep", epilog=SWEEP_EPILOG)(sweep_command)

from cli.vllm_cmd import VLLM_SERVE_EPILOG, vllm_serve_command  # noqa: E402
app.command("vllm-serve", epilog=VLLM_SERVE_EPILOG)(vllm_serve_command)

if __name__ == "__main__":
    app()
