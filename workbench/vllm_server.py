"""Training with `algo.use_vllm=true algo.vllm_mode=server` on CPU: the vLLM server's weights follow the trained ones
through a file instead of TRL's NCCL group. Nothing here runs when the trainer has a CUDA device: there TRL's own
`VLLMClient` (NCCL weight transfer) stays, and the server is TRL's `trl vllm-serve` command as it is.

Why: TRL's server-mode weight sync streams the parameters over vLLM's NCCL weight-transfer engine, and
`VLLMClient.init_communicator` refuses any other device ("needs a CUDA device, got 'cpu'"), inside the trainer's
construction. So on CPU:

* **The server** (`serve_command`, run by `rl vllm-serve`) is TRL's own command line (`trl.scripts.vllm_serve.
  build_command`, i.e. `vllm serve` with TRL's settings and vLLM's dev-mode endpoints) plus three things: the
  worker extension `WeightFileExtension` (`--worker-extension-cls`: one method on each vLLM worker), eager mode,
  and the CPU environment defaults of `workbench.evaluation.vllm_backend.CPU_ENV` (KV cache 1 GiB, no core
  pinning, ...; the ones `rl train` and `rl eval` run with, and the tests' server). It serves the run's model
  folder in the run's `model.dtype` (vLLM would run float32 in bfloat16).
* **The trainer side** (`FileSyncClient`, a subclass of TRL's `VLLMClient` that `workbench.vllm_cpu` puts in
  place while TRL builds its `VLLMGeneration`; TRL's `sync_weights` is unchanged and calls it):
  `init_communicator` asks the server, through vLLM's `/collective_rpc` endpoint, whether it has the extension
  (one line naming `rl vllm-serve` if not) instead of joining an NCCL group; `update_named_params` writes the
  tensors TRL's `_iter_named_params` yields (LoRA merged, under vLLM's names) to one file (`torch.save`) and has
  every worker load it (`vllm_cpu.reload_weights`: vLLM's `model_runner.reload_weights`, the tied LM head
  re-tied), then deletes it. TRL then resets the server's prefix cache as usual.

The file lives in a temporary folder of the trainer's machine (`$RL_VLLM_WEIGHTS_DIR` if set), so the server must
see the same file system: the same machine, or a shared folder given in that variable.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import torch
from trl.generation.vllm_client import VLLMClient

#: The worker-extension class the server loads (`--worker-extension-cls`): the one place its name is written.
EXTENSION = "workbench.vllm_server.WeightFileExtension"
#: The extension's method names, called through `/collective_rpc`.
LOAD_METHOD = "workbench_load_weight_file"
PING_METHOD = "workbench_weight_file_sync"


class WeightFileExtension:
    """Mixed into each vLLM worker of the server (vLLM's `worker_extension_cls`): `self` is the worker."""

    def workbench_weight_file_sync(self) -> str:
        """The trainer's check that the server was started with this extension."""
        return "ok"

    def workbench_load_weight_file(self, path: str) -> str:
        """Load the weight file at `path` (a `torch.save`d dict of checkpoint-format names to tensors) into the
        served model."""
        from workbench.vllm_cpu import reload_weights

        start = time.perf_counter()
        weights = torch.load(path, map_location="cpu", weights_only=True)
        reload_weights(self.model_runner, iter(weights.items()))
        return f"{len(weights)} tensors in {time.perf_counter() - start:.3f} s"


def weights_dir() -> Path:
    """A fresh folder for this trainer's weight files, removed at exit (`$RL_VLLM_WEIGHTS_DIR` holds it if set)."""
    parent = os.environ.get("RL_VLLM_WEIGHTS_DIR") or None
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="rl-vllm-weights-", dir=parent))
    atexit.register(shutil.rmtree, folder, True)
    return folder


class FileSyncClient(VLLMClient):
    """TRL's client for a `rl vllm-serve` server on CPU: weight sync through a file (module docstring)."""

    def _rpc(self, method: str, *args: str, retries: bool = True) -> list[Any]:
        body = {"method": method, "args": list(args)}
        if retries:
            return self._post(f"{self.base_url}/collective_rpc", json=body)["results"]
        # once, without the session's retries (which back off for 14 s on a 500): the answer is the point
        request = urllib.request.Request(f"{self.base_url}/collective_rpc", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["results"]
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                reason = json.loads(text)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                reason = text.strip() or f"HTTP {exc.code}"
            raise RuntimeError(" ".join(reason.split())[:300]) from None

    def init_communicator(self, device: Any = 0) -> None:
        try:
            answers = self._rpc(PING_METHOD, retries=False)
        except Exception as exc:  # noqa: BLE001 - the server's reason goes into the one line
            raise RuntimeError(
                f"the vLLM server at {self.base_url} cannot load weight files ({exc}); on CPU start it with "
                f"`rl vllm-serve` and the run's overrides (it adds --worker-extension-cls {EXTENSION})"
            ) from None
        if not answers or any(a != "ok" for a in answers):
            raise RuntimeError(f"the vLLM server at {self.base_url} answered {answers!r} to {PING_METHOD}")
        self.weights_dir = weights_dir()
        self.last_sync: dict[str, Any] = {}

    def update_named_params(self, metadata: list, named_params: Iterator[tuple[str, Any]]) -> None:
        start = time.perf_counter()
        # cloned: with LoRA, TRL's iterator unmerges the adapter (in place) after the last tensor
        tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in named_params}
        path = self.weights_dir / "weights.pt"
        torch.save(tensors, path)
        try:
            answers = self._rpc(LOAD_METHOD, str(path))
        finally:
            path.unlink(missing_ok=True)
        self.last_sync = {"tensors": len(tensors), "seconds": time.perf_counter() - start, "server": answers}

    def close_communicator(self) -> None:
        folder = getattr(self, "weights_dir", None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


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
