"""End-to-end: signals and kills on a real (tiny) `rl train`. SIGTERM/SIGHUP end a run as `interrupted` with a
checkpoint at the step they stopped; repeated SIGKILLs + resumes end in the same run directory as an uninterrupted
run (steps, metrics rows, samples rows, W&B id)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from procs import finish as _finish, run_dir as _run_dir, wandb_exit_codes as _wandb_exit_codes
from workbench.runs import RunDir, read_jsonl

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
RL = Path(sys.executable).parent / "rl"


def _rl(args) -> subprocess.Popen:
    """`rl ARGS` in the background; stderr goes to a file (a pipe nobody reads while polling could fill up)."""
    import tempfile

    cmd = [str(RL)] if RL.exists() else [sys.executable, "-m", "cli.main"]
    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([*cmd, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True)
    proc.err_file = err
    return proc






def _wait_for_step(runs: Path, proc: subprocess.Popen, step: int, timeout: float = 300) -> RunDir:
    """Poll metrics.jsonl until it has a row for `step` (or later)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = _run_dir(runs)
        if run is not None and any(r.get("step", 0) >= step for r in read_jsonl(run.metrics_file)):
            return run
        if proc.poll() is not None:
            pytest.fail(f"training ended (rc {proc.returncode}) before step {step}: {_finish(proc)[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no step {step} within {timeout} s")


def _steps(run: RunDir, f: Path | None = None) -> list[int]:
    return [r["step"] for r in read_jsonl(f or run.metrics_file)]




@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_ends_run_interrupted_with_checkpoint_then_resumes(tiny_overrides, tmp_path, sig, code):
    from workbench.compare import load_run

    runs = tmp_path / "runs"
    # no periodic checkpoint: the one the signal asks for is the only one
    args = ["train", "experiment=quickstart", *tiny_overrides, "algo.max_steps=30", "algo.save_steps=1000", "--quiet"]
    proc = _rl(args)
    run = _wait_for_step(runs, proc, 2)
    proc.send_signal(sig)
    err = _finish(proc, timeout=120)
    assert proc.returncode == code, err[-2000:]
    name = signal.Signals(sig).name
    assert f"interrupted by {name}" in err and f"rl train --resume {run.path}" in err

    meta = run.read_meta()
    steps = _steps(run)
    stopped = steps[-1]
    assert 2 <= stopped < 30 and steps == list(range(1, stopped + 1))
    assert meta["status"] == "interrupted" and meta["signal"] == name and f"at step {stopped}" in meta["error"]
    assert [p.name for p in run.checkpoints()] == [f"checkpoint-{stopped}"] == [meta["interrupted_checkpoint"]]
    assert meta["segments"][-1]["outcome"] == f"interrupted ({name})"
    assert _wandb_exit_codes(run) == [str(code)]  # W&B was finished, with the exit code
    assert run.status == "interrupted" and load_run(run.path).status == "interrupted"
    assert run.lock_state() is False

    if sig == signal.SIGHUP:
        return  # one resume is enough
    res = subprocess.run([*([str(RL)] if RL.exists() else [sys.executable, "-m", "cli.main"]), "train", "--resume",
                          str(run.path), "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    meta = run.read_meta()
    assert meta["status"] == "completed" and meta["signal"] is None
    assert _steps(run) == list(range(1, 31))
    samples = _steps(run, run.samples_file)
    assert sorted(set(samples)) == list(range(0, 30)) and len(samples) == 30 * 8  # no repeat of the stop step
    summary = json.loads(run.summary_file.read_text())
    assert summary["segments"] == 2
    assert summary["train_seconds"] == pytest.approx(sum(s["seconds"] for s in meta["segments"]), abs=0.2)


def test_repeated_sigkill_and_resume_equals_uninterrupted_run(tiny_overrides, tmp_path):
    """Fault injection: 3 SIGKILLs at random steps of a 12-step run (checkpoint every 2), each followed by
    `rl train --resume`; the final run directory matches an uninterrupted run of the same config."""
    seed = int(os.environ.get("RL_FAULT_SEED", time.time()))
    rng = random.Random(seed)
    base = ["train", "experiment=quickstart", *[o for o in tiny_overrides if not o.startswith("runs_dir=")],
            "algo.max_steps=12", "algo.save_steps=2", "eval.at_end=false", "--quiet"]

    ref_runs = tmp_path / "ref"
    ref = _rl([*base, f"runs_dir={ref_runs}"])
    err = _finish(ref)
    assert ref.returncode == 0, err[-2000:]
    want = _run_dir(ref_runs)

    runs = tmp_path / "runs"
    proc = _rl([*base, f"runs_dir={runs}"])
    kills = []
    for _ in range(3):
        run = _run_dir(runs)
        done = max(_steps(run), default=0) if run is not None else 0
        target = min(10, done + rng.randint(1, 3))
        run = _wait_for_step(runs, proc, target)
        proc.send_signal(signal.SIGKILL)
        _finish(proc)
        kills.append(max(_steps(run)))
        assert run.read_meta()["status"] == "running" and run.status == "dead", f"seed {seed}"
        proc = _rl(["train", "--resume", str(run.path), "--quiet"])
    err = _finish(proc)
    assert proc.returncode == 0, f"seed {seed}, kills at {kills}: {err[-2000:]}"
    got = _run_dir(runs)
    info = f"seed {seed}, killed after steps {kills}"

    a, b = json.loads(want.summary_file.read_text()), json.loads(got.summary_file.read_text())
    assert a["steps"] == b["steps"] == 12, info
    assert _steps(got) == _steps(want) == list(range(1, 13)), info  # one row per step: no duplicate, no gap

    def content(rows, drop=("time", "perf/step_time", "perf/tokens_per_s")):
        return [{k: v for k, v in r.items() if k not in drop} for r in rows]

    assert content(read_jsonl(got.metrics_file)) == content(read_jsonl(want.metrics_file)), info
    sa, sb = read_jsonl(want.samples_file), read_jsonl(got.samples_file)
    assert [r["step"] for r in sb] == [r["step"] for r in sa], info
    assert [(r["prompt"], r["completion"]) for r in sb] == [(r["prompt"], r["completion"]) for r in sa], info
    assert b["perf/num_tokens"] == a["perf/num_tokens"], info

    meta = got.read_meta()
    run_id = meta["wandb_run_id"]
    assert run_id and all(p.name.endswith("-" + run_id) for p in got.wandb_dir.glob("offline-run-*")), info
    assert len(list(got.wandb_dir.glob("offline-run-*"))) == 4, info  # one W&B segment per process, one id
    segs = meta["segments"]
    assert [s["outcome"] for s in segs] == ["dead", "dead", "dead", "completed"], info
    assert all(s["seconds"] is not None and s["seconds"] >= 0 for s in segs), info
    assert b["train_seconds"] == pytest.approx(sum(s["seconds"] for s in segs), abs=0.2), info
    assert [r["from_step"] for r in meta["resumes"]] == [s["from_step"] for s in segs[1:]], info
