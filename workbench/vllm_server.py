"""`rl vllm-serve`: the vLLM server that a training run with `algo.use_vllm=true algo.vllm_mode=server` connects to,
from the run's own overrides (`run_server_command`).

It is TRL's own command line (`trl.scripts.vllm_serve.build_command`, i.e. `vllm serve` with TRL's settings and
vLLM's dev-mode endpoints) for the run's model folder in the run's `model.dtype` (vLLM would run float32 in bfloat16)
at the run's `algo.vllm_server_host` / `algo.vllm_server_port`. On a CUDA machine nothing is added: the trainer
uses TRL's own `VLLMClient` and NCCL weight transfer. On CPU three things are added, because TRL's server weight
sync is NCCL-only ("needs a CUDA device, got 'cpu'") and the trainer syncs through a file instead
(`workbench.vllm_cpu`, "Server mode"): the worker extension `vllm_cpu.WeightFileExtension`
(`--worker-extension-cls`: the methods that load the weight file), eager mode, and the CPU environment defaults of
`workbench.evaluation.vllm_backend.CPU_ENV` (KV cache 1 GiB, no core pinning, ...; the ones `rl train` and
`rl eval` run with, and the tests' server).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from workbench.vllm_cpu import EXTENSION


def serve_command(folder: str, dtype: str, host: str, port: int, extra: list[str] | None = None,
                  cpu: bool = True) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of the vLLM server for a run: TRL's `trl vllm-serve` command line for `folder` in `dtype`
    on host:port; on CPU (`cpu`) with the worker extension, eager mode and the CPU environment defaults."""
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    from workbench.evaluation import vllm_backend

    args = ScriptArguments(model=folder, host=host, port=port, dtype=dtype, enforce_eager=cpu or None)
    argv = build_command(args, ["--worker-extension-cls", EXTENSION, *(extra or [])] if cpu else extra)
    env = dict(os.environ)
    env["VLLM_SERVER_DEV_MODE"] = "1"  # TRL's: the weight, prefix-cache and collective_rpc endpoints
    if cpu:
        for key, value in {**vllm_backend.COMMON_ENV, **vllm_backend.CPU_ENV}.items():
            env.setdefault(key, value)
    root = str(Path(__file__).resolve().parent.parent)  # the workers import this module (the extension)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    return argv, env


def server_address(options: dict[str, Any]) -> tuple[str, int]:
    """(host, port) the trainer connects to, from the run's `algo.*` keys: `vllm_server_base_url` if set, else
    `vllm_server_host` / `vllm_server_port` (TRL's GRPOConfig defaults when unset)."""
    from urllib.parse import urlparse

    from trl import GRPOConfig

    fields = GRPOConfig.__dataclass_fields__
    url = options.get("vllm_server_base_url")
    if url:
        parsed = urlparse(url)
        return parsed.hostname or fields["vllm_server_host"].default, parsed.port or 80
    return (str(options.get("vllm_server_host", fields["vllm_server_host"].default)),
            int(options.get("vllm_server_port", fields["vllm_server_port"].default)))


def run_server_command(cfg: Any, extra: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The server a training config's `algo.vllm_mode=server` run connects to (`rl vllm-serve`): the run's model
    (the tiny model's cache folder, a converted GGUF folder, a local folder or hub name; with LoRA the base model,
    the trainer syncs the merged weights before the first generation) in its `model.dtype`, at the run's address.
    Checked first as `rl train` checks it (`checks.check_vllm_train`)."""
    from workbench.checks import check_vllm_train
    from workbench.evaluation import vllm_backend
    from workbench.tasks import build_task

    check_vllm_train(cfg, "server")
    folder, _, _ = vllm_backend.model_folder(cfg.model, build_task(cfg.task) if cfg.model.kind == "tiny" else None)
    host, port = server_address(cfg.algo.trl)
    return serve_command(folder, cfg.model.dtype, host, port, extra, cpu=vllm_backend.on_cpu())
