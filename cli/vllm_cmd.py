"""`rl vllm-serve`: the vLLM server that `rl train ... algo.use_vllm=true algo.vllm_mode=server` connects to. Wiring
only (the command line is `workbench.vllm_server.run_server_command`'s); torch/trl load inside the command."""

from __future__ import annotations

import os
import shlex
from typing import Annotated, Optional

import typer

from cli.common import fail, override_completer
from workbench.config import ConfigError

VLLM_SERVE_EPILOG = (
    "Give the same overrides as the training run, e.g.\n\n"
    "  rl vllm-serve experiment=smollm2_arithmetic algo.vllm_server_port=8000     (then, in another shell:)\n\n"
    "  rl train experiment=smollm2_arithmetic algo.use_vllm=true algo.vllm_mode=server algo.vllm_server_port=8000\n\n"
    "It serves the run's model in its model.dtype at algo.vllm_server_host:algo.vllm_server_port (TRL's defaults "
    "0.0.0.0:8000) with TRL's `trl vllm-serve` settings. On CPU it adds the workbench's weight-file worker "
    "extension (the trainer syncs weights through a file: TRL's NCCL sync needs CUDA), eager mode and the CPU "
    "environment defaults. Extra `vllm serve` flags go after --, e.g. -- --max-model-len 2048."
)


def vllm_serve_command(
    args: Annotated[
        Optional[list[str]],
        typer.Argument(help="The training run's Hydra overrides; after --, extra `vllm serve` flags.",
                       autocompletion=override_completer()),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command and its environment settings; "
                                          "start nothing.")] = False,
) -> None:
    """Serve the run's model with vLLM for algo.vllm_mode=server (blocks until stopped)."""
    from workbench.compose import compose
    from workbench.config import to_train_config

    before = dict(os.environ)  # the settings printed are those the command adds (checks set vLLM's defaults)
    args = list(args or [])
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    extra = [a for a in args if a not in overrides]
    try:
        cfg = to_train_config(compose("train", overrides))
        from workbench.vllm_server import run_server_command

        argv, env = run_server_command(cfg, extra)
    except ConfigError as e:
        fail(str(e))
    changed = {k: v for k, v in env.items() if before.get(k) != v and (k.startswith("VLLM_") or k == "PYTHONPATH")}
    print(" ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(changed.items())), shlex.join(argv), flush=True)
    if dry_run:
        return
    os.execve(argv[0], argv, env)
