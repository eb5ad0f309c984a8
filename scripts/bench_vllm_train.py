"""Benchmark: a GRPO step with vLLM generation (`algo.use_vllm=true algo.vllm_mode=colocate`) against HF
`model.generate`, same model, config, seed and thread count; and the logprob gap TRL measures between vLLM's samples
and the trained policy (`sampling/sampling_logp_difference/mean`), the check that the weight sync is live.

    bash scripts/setup_vllm.sh
    OMP_NUM_THREADS=1 .venv-vllm/bin/python scripts/bench_vllm_train.py [--model tiny|smollm2] [--steps 12] [--repeats 2]

Each configuration runs in its own subprocess, alternating (hf, vllm, hf, vllm, ...) so slow drifts of a shared
machine hit both. Step time is the mean of TRL's step_time after the first `--skip` steps (vLLM's engine warms up on
step 1); the per-token ratio factors out different completion lengths. The tiny model is the test suite's small one
with hidden 128 / 4 heads (head size 32: vLLM's CPU attention has no kernel for the test model's 16).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COMMON = ["experiment=quickstart", "logger=none", "eval.at_start=false", "eval.at_end=false", "samples_every=0",
          "algo.learning_rate=1e-3", "algo.save_steps=100000"]
MODELS = {
    # the test suite's small tiny model (tests/conftest.py TINY) with head size 32 instead of 16
    "tiny": ["model.tiny.hidden_size=128", "model.tiny.num_layers=2", "model.tiny.intermediate_size=256",
             "model.tiny.warm_start_steps=150", "model.tiny.warm_start_batch_size=32", "task.train_size=200",
             "algo.per_device_train_batch_size=16", "algo.num_generations=4", "algo.max_completion_length=24"],
    # as scripts/bench_shaping.py --model smollm2, LoRA dropout off: TRL recomputes old logprobs in train mode
    "smollm2": ["model=smollm2-135m", "model.lora.enabled=true", "model.lora.dropout=0", "task.prompt_style=natural",
                "task.params.min_digits=1", "task.params.max_digits=1", "task.train_size=120", "task.eval_size=40",
                "algo.per_device_train_batch_size=8", "algo.num_generations=4", "algo.max_completion_length=32",
                "algo.temperature=0.7"],
}
BACKENDS = {"hf": [], "vllm": ["algo.use_vllm=true", "algo.vllm_mode=colocate"]}
GAP = "train/sampling/sampling_logp_difference/mean"


def run_one(backend: str, model: str, steps: int, runs_dir: str, threads: int) -> dict:
    from workbench.compose import compose
    from workbench.config import to_train_config
    from workbench.runs import read_jsonl
    from workbench.train import train

    overrides = [*COMMON, *MODELS[model], *BACKENDS[backend], f"algo.max_steps={steps}", f"runs_dir={runs_dir}",
                 f"threads={threads}"]
    run = train(to_train_config(compose("train", overrides)), overrides, argv=["bench"], progress=False)
    rows = [r for r in read_jsonl(run.metrics_file) if r.get("perf/step_time") is not None]
    return {"rows": [{"step_time": r["perf/step_time"], "length": r.get("length/mean"), "gap": r.get(GAP)}
                     for r in rows]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=sorted(MODELS), default="tiny")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--skip", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (fixed, so runs compare)")
    ap.add_argument("--runs-dir", default="/tmp/rl-bench-vllm-train")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print("RESULT " + json.dumps(run_one(a.one, a.model, a.steps, a.runs_dir, a.threads)))
        return
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M')}, model: {a.model}, torch threads: {a.threads}, "
          f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
    got: dict[str, list[dict]] = {b: [] for b in BACKENDS}
    for _ in range(a.repeats):
        for backend in BACKENDS:
            out = subprocess.run([sys.executable, __file__, "--one", backend, "--model", a.model, "--steps",
                                  str(a.steps), "--runs-dir", a.runs_dir, "--threads", str(a.threads)],
                                 capture_output=True, text=True, cwd=ROOT,
                                 env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if not line:
                print(out.stdout[-2000:], out.stderr[-4000:])
                raise SystemExit(f"{backend} failed")
            got[backend] += json.loads(line[0][7:])["rows"][a.skip:]
    res = {}
    for backend, rows in got.items():
        st = sum(r["step_time"] for r in rows) / len(rows)
        ln = sum(r["length"] for r in rows) / len(rows)
        gaps = [r["gap"] for r in rows if r["gap"] is not None]
        res[backend] = {"step": st, "len": ln, "per_token": st / ln, "gap": max(gaps) if gaps else None}
    print(f"\n{'backend':8} {'step s':>8} {'ratio':>6} {'len':>6} {'s/token ratio':>14} {'max logprob gap':>16}")
    for backend, r in res.items():
        gap = "-" if r["gap"] is None else f"{r['gap']:.2e}"
        print(f"{backend:8} {r['step']:8.3f} {r['step'] / res['hf']['step']:6.3f} {r['len']:6.1f} "
              f"{r['per_token'] / res['hf']['per_token']:14.3f} {gap:>16}")


if __name__ == "__main__":
    main()
