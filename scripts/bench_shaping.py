"""Benchmark: step time and peak memory of GRPO with and without shaping terms, as ratios to plain TRL GRPO.

    .venv/bin/python scripts/bench_shaping.py [--steps 12] [--skip 2] [--model tiny|smollm2] [--threads 1]

`--model smollm2`: SmolLM2-135M-Instruct (BPE, chat template, LoRA) on one-digit arithmetic in words, 8 rollouts of
at most 48 tokens per step, so `</think>` is three tokens and prompts go through the chat template.

Configurations (same tiny model, task, seed and GRPO settings; each in its own subprocess so peak RSS is its own):
  a  plain trl.GRPOTrainer with correctness + format reward functions (the baseline)
  a' the workbench's ShapedGRPOTrainer with the same two terms (the cost of the plumbing alone)
  b  every length and cost reward term: length_kimi, length_cosine, overlong_dapo, length_hapo, cost_tokens,
     cost_router, tool_calls
  c  PEAR + KL-Cov + EMPG (per-token entropies at reward time, read off the generation passes by an LM-head hook)
  drpo, disco, steer, gtpo, hapo_het, copo, epo: issue 21's methods that add no pass (target: within 3% of a)
  ares, empo, stcr, riskpo: issue 22's reward and advantage methods (ares needs reward-time entropies)
  knapsack, aepo, spear: samplers (aepo's second generation is the cost its paper pays too; spear replays stored rows)
  dads: View-R1's difficulty-weighted KL (a reference model: TRL's beta > 0 costs one reference pass per batch)
  lp_reg, siren_p: methods that read the logits (one more LM-head projection in the training pass)
  a_agentic, igpo: the agentic task with tools (workbench trainer) without and with IGPO's information-gain pass;
     igpo's own ratio is printed against a_agentic

Step time is the mean of TRL's step_time over the steps after the first `--skip` (warm-up). Generated lengths
differ a little between configurations once the policies diverge, so the script also reports the mean completion
length, and a per-token step time (step time / completion tokens) that factors that out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "a": ["reward=[correctness,format]"],
    "a'": ["reward=[correctness,format]"],
    "b": [
        "reward=[correctness,format,length_kimi,length_cosine,overlong_dapo,length_hapo,cost_tokens,cost_router,tool_calls]"
    ],
    "c": ["reward=[correctness,format,pear]", "regularizer=[kl_cov]", "advantage=[empg]"],
    # issue 21's loss-side methods, each beside the baseline's two reward terms
    "drpo": ["reward=[correctness,format]", "regularizer=[drpo]"],
    "disco": ["reward=[correctness,format]", "regularizer=[disco]"],
    "steer": ["reward=[correctness,format]", "regularizer=[steer]"],
    "gtpo": ["reward=[correctness,format]", "regularizer=[conflict_token_gtpo]"],
    "hapo_het": ["reward=[correctness,format]", "regularizer=[hetero_entropy_hapo]",
                 "advantage=[hetero_hapo_token_advantage]"],
    "copo": ["reward=[correctness,format]", "advantage=[copo_consistency]"],
    "epo": ["reward=[correctness,format]", "regularizer=[epo_entropy]"],
    # issue 22's reward and advantage methods
    "ares": ["reward=[correctness,format,ares_entropy]", "reward.ares_entropy.triggers=['+','-','=']"],
    "empo": ["reward=[empo_agreement,format]"],
    "stcr": ["reward=[correctness,format]", "advantage=[asym_stcr]"],
    "riskpo": ["reward=[correctness,format]", "advantage=[riskpo_mvar]", "advantage.riskpo_mvar.bundle_size=2"],
    # samplers (workbench/sampling.py): knapsack re-budgets groups, aepo generates the batch a second time
    "knapsack": ["reward=[correctness,format]", "sampler=knapsack"],
    "aepo": ["reward=[correctness,format]", "sampler=aepo"],
    # spear: past positive rows spliced over zero-advantage rows (no extra generation; buffer bookkeeping only)
    "spear": ["reward=[correctness,format]", "sampler=[spear_replay]", "sampler.spear_replay.tool_calls_only=false",
              "sampler.spear_replay.buffer_size=8"],
    # dads: TRL's beta > 0 keeps a reference model, one more no-grad forward pass per generation batch
    "dads": ["reward=[correctness,format]", "regularizer=[asym_dads_kl]"],
    # igpo: one no-grad teacher-forced pass per turn of each multi-turn rollout; on the agentic task (tools), so its
    # ratio is taken against the same task without the term ("a_agentic", the workbench trainer) as well as to a
    "a_agentic": ["experiment=agentic_plain"],
    "igpo": ["experiment=agentic_plain", "advantage=[igpo_info_gain]"],
    # these two need the logits (loss-batch field): one more LM-head projection inside TRL's training pass
    "lp_reg": ["reward=[correctness,format]", "regularizer=[lp_reg]"],
    "siren_p": ["reward=[correctness,format]", "regularizer=[siren]"],
}
#: `--configs a,a',drpo` runs a subset (a, the baseline, is always included)
COMMON = ["experiment=quickstart", "logger=none", "eval.at_start=false", "eval.at_end=false", "samples_every=0"]
MODELS = {
    "tiny": [],
    "smollm2": ["model=smollm2-135m", "model.lora.enabled=true", "task.prompt_style=natural", "task.params.min_digits=1",
                "task.params.max_digits=1", "task.train_size=120", "task.eval_size=40",
                "algo.per_device_train_batch_size=8", "algo.num_generations=4", "algo.max_completion_length=48",
                "algo.learning_rate=3e-4", "algo.temperature=0.7"],
}


def run_one(key: str, steps: int, runs_dir: str, model: str = "tiny", threads: int = 1) -> dict:
    import torch  # noqa: F401
    from workbench.compose import compose
    from workbench.config import to_train_config
    from workbench.progress import apply_threads
    from workbench.runs import read_jsonl
    from workbench.signals import completion_text
    from workbench.train import _to_dataset, prepare, train

    common = [o for o in COMMON if not o.startswith("experiment=")] if any(
        o.startswith("experiment=") for o in CONFIGS[key]) else COMMON  # a config may bring its own experiment
    overrides = [*common, *MODELS[model], *CONFIGS[key], f"algo.max_steps={steps}", f"runs_dir={runs_dir}",
                 "algo.save_steps=100000", f"threads={threads}"]
    cfg = to_train_config(compose("train", overrides))
    apply_threads(threads)
    t0 = time.time()
    if key == "a":
        from trl import GRPOTrainer

        from workbench.callbacks import canonical_metrics

        prepared = prepare(cfg, progress=False)
        task, train_examples, args = prepared.checked.task, prepared.checked.train_examples, prepared.checked.args
        model, tokenizer = prepared.model, prepared.tokenizer
        args.output_dir = os.path.join(runs_dir, "plain")
        args.report_to = []

        columns = [k for k in train_examples[0] if k != "prompt"]

        def correctness(prompts, completions, **kw):
            return [task.score(completion_text(c), {k: kw[k][i] for k in columns}) for i, c in enumerate(completions)]

        def fmt(prompts, completions, **kw):
            texts = [completion_text(c) for c in completions]
            return [1.0 if "</think>" in c and c.startswith("<think>") and c.split("</think>", 1)[1].strip() else 0.0
                    for c in texts]

        args.reward_weights = [1.0, 0.1]
        trainer = GRPOTrainer(model=model, reward_funcs=[correctness, fmt], args=args,
                              train_dataset=_to_dataset(train_examples, cfg.model.use_chat_template),
                              processing_class=tokenizer)
        trainer.train()
        logs = [canonical_metrics(h) for h in trainer.state.log_history if "step_time" in h]
        rows = [{"perf/step_time": r["perf/step_time"], "length/mean": r.get("train/completions/mean_length")} for r in logs]
    else:
        run = train(cfg, overrides, argv=["bench"], progress=False)
        rows = [r for r in read_jsonl(run.metrics_file) if r.get("perf/step_time") is not None]
    return {
        "rows": [{"step_time": r["perf/step_time"], "length": r.get("length/mean")} for r in rows],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "wall": time.time() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--skip", type=int, default=2)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--runs-dir", default="/tmp/rl-bench-shaping")
    ap.add_argument("--repeats", type=int, default=2, help="round-robin repeats of every configuration")
    ap.add_argument("--model", choices=sorted(MODELS), default="tiny")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (fixed, so runs compare)")
    ap.add_argument("--configs", default=None, help="comma-separated subset of the configurations (a always runs)")
    a = ap.parse_args()
    keys = list(CONFIGS) if not a.configs else ["a", *[k for k in a.configs.split(",") if k != "a"]]
    unknown = [k for k in keys if k not in CONFIGS]
    if unknown:
        raise SystemExit(f"--configs: unknown {', '.join(unknown)}; choose from: {', '.join(CONFIGS)}")
    if a.one:
        print("RESULT " + json.dumps(run_one(a.one, a.steps, a.runs_dir, a.model, a.threads)))
        return
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M')}, model: {a.model}, torch threads: {a.threads}, "
          f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
    # Round-robin (a, a', b, c, a, a', ...) so slow drifts of the machine hit every configuration alike.
    collected: dict[str, list[dict]] = {key: [] for key in keys}
    for _ in range(a.repeats):
        for key in keys:
            out = subprocess.run(
                [sys.executable, __file__, "--one", key, "--steps", str(a.steps), "--runs-dir", a.runs_dir,
                 "--model", a.model, "--threads", str(a.threads)],
                capture_output=True, text=True, cwd=ROOT,
            )
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if not line:
                print(out.stdout[-2000:], out.stderr[-4000:])
                raise SystemExit(f"config {key} failed")
            res = json.loads(line[0][7:])
            collected[key].append({"rows": res["rows"][a.skip:], "rss": res["peak_rss_mb"]})
    results = {}
    for key, runs in collected.items():
        rows = [r for run in runs for r in run["rows"]]
        st = sum(r["step_time"] for r in rows) / len(rows)
        ln = sum(r["length"] for r in rows) / len(rows)
        rss = max(run["rss"] for run in runs)
        results[key] = {"step_time": st, "length": ln, "per_token": st / ln, "rss": rss}
    base = results["a"]
    print(f"\n{'config':8} {'step s':>8} {'ratio':>6} {'len':>6} {'s/token ratio':>14} {'peak RSS MB':>12} {'ratio':>6}")
    for key, r in results.items():
        print(f"{key:8} {r['step_time']:8.3f} {r['step_time'] / base['step_time']:6.3f} {r['length']:6.1f} "
              f"{r['per_token'] / base['per_token']:14.3f} {r['rss']:12.0f} {r['rss'] / base['rss']:6.3f}")
    if "igpo" in results and "a_agentic" in results:
        own = results["a_agentic"]
        print(f"igpo vs a_agentic (same task, tools): step time x{results['igpo']['step_time'] / own['step_time']:.3f}, "
              f"per token x{results['igpo']['per_token'] / own['per_token']:.3f}")


if __name__ == "__main__":
    main()
