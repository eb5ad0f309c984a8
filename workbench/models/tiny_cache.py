"""The tiny model's cache: `<cache>/tiny/<hash>/`, keyed by the tiny config and a fingerprint of the task's text
(`collect_task_material`, `cache_key`), built once under a per-entry file lock into a temp folder that is renamed into
place (`ensure_cached`), so a killed build never leaves a half-written entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from workbench.config import ConfigError, TinyModelConfig
from workbench.models.tiny_arch import build_model, check_tiny_config
from workbench.models.tiny_tokenizer import build_tokenizer, uses_tools
from workbench.models.tiny_warm_start import greedy_accuracy, warm_start, warm_start_trace
from workbench.progress import BUILD_THREADS, build_threads
from workbench.signals import completion_transcript
from workbench.tasks.base import THINK_CLOSE, THINK_OPEN, Task

# Bump when the build recipe (tokenizer, architecture, warm-start loop) changes, so stale caches miss.
CACHE_FORMAT = 2
META_FILE = "warm_start.json"
# Held-out examples for the greedy accuracy measured after the warm start (~2 s on 2 cores).
EVAL_EXAMPLES = 100
# Training examples whose traces enter the cache fingerprint verbatim (all prompts/answers always do).
FINGERPRINT_TRACES = 64


@dataclasses.dataclass
class TaskMaterial:
    """What the tiny model needs from a task: its examples, its characters and a fingerprint for the cache."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    chars: set[str]
    fingerprint: str
    max_completion_chars: int


def collect_task_material(task: Task, tiny: TinyModelConfig) -> TaskMaterial:
    """Generate a concise and a verbose trace for every training example (cheap: string formatting).

    Raises ConfigError if the task provides no warm-start traces (with the task's `no_traces_reason(example)`, if it
    has one).
    """
    name = getattr(task, "name", type(task).__name__)
    train = list(task.examples("train"))
    if not train:
        raise ConfigError(f"model=tiny needs training examples to warm-start on; task '{name}' has none")
    try:
        evals = list(task.examples("eval"))[:EVAL_EXAMPLES]
    except (KeyError, ValueError):
        evals = []
    rng = random.Random(f"tiny-vocab-{tiny.seed}")  # separate stream: does not shift the warm-start data
    chars: set[str] = set()
    digest = hashlib.sha256()
    longest = 0
    for i, ex in enumerate(train):
        traces = [warm_start_trace(task, ex, rng, verbose, tiny.verbose_style) for verbose in (False, True)]
        if traces[0] is None or traces[1] is None:
            explain = getattr(task, "no_traces_reason", None)  # optional: a task that can say why
            why = f": {explain(ex)}" if callable(explain) else ""
            raise ConfigError(
                f"model=tiny needs a task that provides warm-start traces; task '{name}' does not{why} (use model=hf)"
            )
        # a message trace (tool calls) as text, with its calls and results written out (the markup is ASCII)
        for text in (str(ex["prompt"]), *map(completion_transcript, traces)):
            chars.update(text.replace(THINK_OPEN, "").replace(THINK_CLOSE, ""))
        longest = max(longest, *(len(completion_transcript(t)) for t in traces))
        record = [str(ex["prompt"]), str(ex["answer"])]
        if i < FINGERPRINT_TRACES:  # a change in the trace format changes the key
            record += traces
        digest.update(json.dumps(record).encode())
    for ex in evals:
        chars.update(str(ex["prompt"]))
        digest.update(json.dumps(["eval", str(ex["prompt"]), str(ex["answer"])]).encode())
    extra = getattr(task, "fingerprint", None)  # optional task-provided identity (e.g. its config)
    if callable(extra):
        extra = extra()
    if extra is not None:
        digest.update(json.dumps(["task-fingerprint", extra], sort_keys=True, default=str).encode())
    return TaskMaterial(train, evals, chars, digest.hexdigest(), longest)


def cache_key(tiny: TinyModelConfig, task: Task, material: TaskMaterial) -> dict[str, Any]:
    """The JSON object whose sha256 names the cache directory."""
    fields = dataclasses.asdict(tiny)
    if fields.get("verbose_style") == "steps":  # the default is left out: caches built before the key existed hit
        del fields["verbose_style"]
    key = {
        "cache_format": CACHE_FORMAT,
        "tiny": fields,
        "task": {"name": getattr(task, "name", type(task).__name__), "fingerprint": material.fingerprint},
    }
    threads = build_threads()
    if threads != BUILD_THREADS:  # a build on another thread count may differ in the last bits: its own entry
        key["build_threads"] = threads
    key["build_env"] = build_environment()
    return key


def build_environment() -> dict[str, str]:
    """What besides the recipe decides a build's bits: the torch and transformers versions and the CPU's vector ISA
    (torch's kernel dispatch: e.g. AVX2 vs AVX512 reductions round differently). Measured: the quickstart model built
    on 1 thread came out byte-identical under other loads and thread settings on one machine, but 69% greedy
    held-out accuracy instead of 72% on another machine (AVX2, transformers 5.24.0), so a cache entry copied
    between environments is not reused as if it were the same model. Not captured: two CPUs with the same ISA
    whose kernels still differ."""
    return {"torch": torch.__version__, "transformers": _transformers_version(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def cache_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def is_complete(path: Path) -> bool:
    """A cache entry is complete when its metadata file exists (it is written last, before the rename)."""
    return (path / META_FILE).is_file()


def build_into(directory: Path, tiny: TinyModelConfig, task: Task, material: TaskMaterial, key: dict[str, Any],
               progress: bool) -> None:
    """Build tokenizer + model, warm-start, evaluate and save everything into `directory` (which exists)."""
    saved_threads = torch.get_num_threads()
    threads = build_threads()
    try:
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG state untouched
            torch.manual_seed(tiny.seed)
            tokenizer = build_tokenizer(material.chars, max_length=tiny.max_positions, tools=uses_tools(task))
            model = build_model(tiny, tokenizer)
            start = time.perf_counter()
            losses = warm_start(model, tokenizer, task, material.train, tiny, progress=progress, threads=threads)
            train_seconds = time.perf_counter() - start
            # Room for the longest trace (characters >= tokens) plus slack, within the position budget.
            longest_prompt = max((len(tokenizer(str(ex["prompt"]))["input_ids"]) for ex in material.eval), default=0)
            max_new = max(1, min(material.max_completion_chars + 8, tiny.max_positions - longest_prompt))
            torch.set_num_threads(threads)
            start = time.perf_counter()
            if uses_tools(task):  # single-turn greedy decoding cannot run tools: rl eval measures these models
                accuracy, completions = float("nan"), []
            else:
                accuracy, completions = greedy_accuracy(model, tokenizer, task, material.eval, max_new)
            eval_seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(saved_threads)

    tail = losses[-min(10, len(losses)) :] if losses else []
    meta = {
        "cache_format": CACHE_FORMAT,
        "key": key,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "num_params": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "warm_start_steps": tiny.warm_start_steps,
        "warm_start_seconds": round(train_seconds, 3),
        "warm_start_seconds_per_step": round(train_seconds / max(1, len(losses)), 4),
        "build_threads": threads,  # torch threads of the warm start and the greedy accuracy (progress.build_threads)
        # initial = loss of the first step (the untrained model); final = mean of the last <=10 steps
        "warm_start_loss_initial": losses[0] if losses else None,
        "warm_start_loss_final": sum(tail) / len(tail) if tail else None,
        # None: the task has no eval split, or uses tools (greedy single-turn decoding cannot run them)
        "warm_start_accuracy": accuracy if material.eval and not uses_tools(task) else None,
        "warm_start_eval_examples": len(material.eval),
        "warm_start_eval_seconds": round(eval_seconds, 3),
        "losses": [round(x, 5) for x in losses],
        "samples": [
            {"prompt": ex["prompt"], "answer": ex["answer"], "completion": c}
            for ex, c in zip(material.eval[:8], completions[:8])
        ],
    }
    with quiet_transformers():
        model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, default=str))


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-shard tqdm bars ("Writing model shards", "Loading weights") for a 4 MB model."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def ensure_cached(cache_root: Path, tiny: TinyModelConfig, task: Task, progress: bool = True) -> tuple[Path, bool]:
    """Return (cache entry directory, whether it already existed), building it if needed."""
    check_tiny_config(tiny)
    material = collect_task_material(task, tiny)
    key = cache_key(tiny, task, material)
    digest = cache_hash(key)
    base = Path(cache_root) / "tiny"
    base.mkdir(parents=True, exist_ok=True)
    final = base / digest
    if is_complete(final):
        return final, True
    with FileLock(base / f".{digest}.lock"):  # parallel runs of one config build the cache once
        if is_complete(final):  # another process built it while we waited
            return final, True
        # Leftovers of killed builds of this entry (we hold its lock, so nobody else is writing them).
        for stale in base.glob(f".tmp-{digest}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # incomplete entry (should not happen with the rename, but never trust it)
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{digest}-", dir=base))
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the final entry should look like any other folder
        say = _console().print if progress else (lambda *a, **k: None)
        say(f"tiny model: not cached, building {final} ({tiny.warm_start_steps} warm-start steps; "
            f"cached afterwards)")
        try:
            build_into(tmp, tiny, task, material, key, progress)
            os.rename(tmp, final)  # atomic on one filesystem: the entry appears complete or not at all
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        meta = json.loads((final / META_FILE).read_text())
        acc = meta.get("warm_start_accuracy")
        say(f"tiny model: warm start took {meta['warm_start_seconds']:.0f} s; greedy held-out accuracy "
            + (f"{100 * acc:.1f}% on {meta['warm_start_eval_examples']} problems" if acc is not None else "n/a"))
    return final, False
