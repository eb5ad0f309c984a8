"""The single-run batch script `scripts/slurm/train.slurm` on a real SLURM cluster (scripts/slurm_cluster.sh): one
node x 2 processes (`rl train --num-processes 2`), a 2-minute limit with `--signal=TERM@60`. SIGTERM reaches every
process of the job step 30-59 s in; the ranks stop together with a checkpoint, the job exits 143 and requeues itself,
the next attempt resumes the run directory, and the run ends `completed` with the same metrics as an uninterrupted
2-process run."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.runs import RunDir, read_jsonl

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TIMING = ("time", "perf/step_time", "perf/tokens_per_s")
# ~0.3 s a step with 2 processes here: ~90 s of training, longer than the 30-59 s before SLURM's signal, so the first
# attempt is always interrupted; each attempt trains at least ~10 s, so the run always ends.
STEPS = 300


def _overrides(tiny_overrides) -> list[str]:
    return ["experiment=quickstart", *[o for o in tiny_overrides if not o.startswith("runs_dir=")], "logger=none",
            f"algo.max_steps={STEPS}", "algo.save_steps=1000", "eval.at_end=false", "samples_every=0"]


def _job(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def test_batch_script_requeues_at_the_time_limit_and_resumes(slurm_cluster, tiny_overrides, tmp_path):
    overrides = _overrides(tiny_overrides)
    ref_runs = tmp_path / "ref"
    ref = subprocess.run([sys.executable, "-m", "cli.main", "train", *overrides, f"runs_dir={ref_runs}",
                          "--num-processes", "2", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert ref.returncode == 0, ref.stderr[-3000:]
    (ref_dir,) = [p.parent for p in ref_runs.rglob("config.yaml")]
    want = [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(ref_dir / "metrics.jsonl")]

    runs = tmp_path / "runs"
    log = tmp_path / "job.out"
    sub = subprocess.run(
        ["sbatch", "--parsable", f"--partition={slurm_cluster}", "--time=2", "--signal=TERM@60", "--cpus-per-task=2",
         "--mem=4G", f"--output={log}", f"--chdir={ROOT}",
         f"--export=ALL,NPROC=2,RUNS_DIR={runs},RL={sys.executable} -m cli.main",
         str(ROOT / "scripts" / "slurm" / "train.slurm"), "tl", *overrides],
        capture_output=True, text=True, timeout=60)
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip().split(";")[0]
    deadline = time.time() + 900
    info: dict[str, str] = {}
    while time.time() < deadline:
        info = _job(job_id)
        if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            break
        time.sleep(2)
    else:
        subprocess.run(["scancel", job_id])
        pytest.fail(f"job {job_id} did not end in 15 min: {info}; log: {log.read_text()[-3000:]}")
    text = log.read_text()
    assert info["JobState"] == "COMPLETED", f"{info}\n{text[-4000:]}"
    restarts = int(info.get("Restarts", "0"))
    assert restarts >= 1, text[-3000:]  # requeued at least once (SLURM_RESTART_COUNT of the last attempt)
    attempts = re.findall(r"\[train.slurm\] job \d+ exit code (\d+)", text)
    assert attempts[-1] == "0" and set(attempts[:-1]) == {"143"} and len(attempts) == restarts + 1, text[-3000:]
    assert "collective mismatch" not in text and "Traceback" not in text, text[-4000:]

    (run_dir,) = [p.parent for p in runs.rglob("config.yaml")]
    run = RunDir(run_dir)
    meta = run.read_meta()
    assert meta["status"] == "completed" and meta["num_processes"] == 2
    outcomes = [s["outcome"] for s in meta["segments"]]
    assert outcomes == ["interrupted (SIGTERM)"] * restarts + ["completed"], outcomes
    # each resume started from the checkpoint of the step its predecessor stopped at
    stops = [s["to_step"] for s in meta["segments"][:-1]]
    assert [r["from_step"] for r in meta["resumes"]] == stops and all(0 < s < STEPS for s in stops)
    got = [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run.metrics_file)]
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    assert got == want
    print(f"job {job_id}: {restarts} requeue(s), stopped at steps {stops}")
