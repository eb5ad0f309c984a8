"""Fault injection on a real 2-process run (`rl train --num-processes 2`, gloo on CPU): however SIGTERM reaches the
ranks (the supervisor, every rank at once, one rank then the other, one rank only, before the first step), every rank
stops at the same step with one checkpoint of it, meta.json says `interrupted`, W&B is closed, the command exits 143,
and `rl train --resume` ends in the same metrics as an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from procs import finish as _finish, run_dir as _run_dir, wandb_exit_codes as _wandb_exit_codes
from workbench.runs import RunDir, read_jsonl

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
STEPS = 40
TIMING = ("time", "perf/step_time", "perf/tokens_per_s")


def _base(tiny_overrides) -> list[str]:
    # logger=wandb (offline): the test checks that every segment's W&B run was finished
    return ["train", "experiment=quickstart", *[o for o in tiny_overrides if not o.startswith("runs_dir=")],
            f"algo.max_steps={STEPS}", "algo.save_steps=1000", "eval.at_end=false", "--num-processes", "2", "--quiet"]


def _rl(args) -> subprocess.Popen:
    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=err, text=True)
    proc.err_file = err
    return proc






def _ranks(proc) -> dict[int, psutil.Process]:
    """The training workers under the supervisor, by RANK (accelerate's process runs torchrun's agent)."""
    out = {}
    for p in psutil.Process(proc.pid).children(recursive=True):
        try:
            env = p.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "RANK" in env and "cli.main" in " ".join(p.cmdline()):
            out[int(env["RANK"])] = p
    return out


def _wait(cond, proc, what, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before {what}: {_finish(proc)[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no {what} within {timeout} s")


def _wait_for_step(runs, proc, step):
    def reached():
        run = _run_dir(runs)
        return run if run is not None and any(r.get("step", 0) >= step for r in read_jsonl(run.metrics_file)) else None

    return _wait(reached, proc, f"step {step}")




@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-process run of the same config (metrics to compare the resumed runs with)."""
    from conftest import TINY

    runs = tmp_path_factory.mktemp("ref")
    proc = _rl([*_base(TINY), f"runs_dir={runs}"])
    err = _finish(proc)
    assert proc.returncode == 0, err[-3000:]
    run = _run_dir(runs)
    assert run.read_meta()["num_processes"] == 2
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run.metrics_file)]


def _deliver(case: str, proc) -> None:
    """Send SIGTERM the way `case` says."""
    ranks = _wait(lambda: (lambda r: r if len(r) == 2 else None)(_ranks(proc)), proc, "two ranks")
    if case == "supervisor":  # `kill <pid of rl>`: it forwards to both ranks
        proc.send_signal(signal.SIGTERM)
    elif case == "all_at_once":  # what SLURM's --signal and scancel do: every process of the step, launcher included
        for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
    elif case == "staggered":  # the failure: rank 1, then rank 0 1.5 s later
        ranks[1].send_signal(signal.SIGTERM)
        time.sleep(1.5)
        ranks[0].send_signal(signal.SIGTERM)
    elif case == "one_rank":
        ranks[1].send_signal(signal.SIGTERM)
    else:
        raise AssertionError(case)


@pytest.mark.parametrize("case", ["supervisor", "all_at_once", "staggered", "one_rank"])
def test_ranks_stop_together_then_resume_to_the_same_metrics(tiny_overrides, tmp_path, reference, case):
    runs = tmp_path / "runs"
    proc = _rl([*_base(tiny_overrides), f"runs_dir={runs}"])
    # past the first epoch (200 prompts / 8 per step = 25 steps): a resumed epoch must keep its data order
    run = _wait_for_step(runs, proc, 26)
    _deliver(case, proc)
    err = _finish(proc, timeout=300)
    assert proc.returncode == 143, f"{case}: rc {proc.returncode}: {err[-3000:]}"
    assert "interrupted by SIGTERM" in err and f"rl train --resume {run.path}" in err
    assert err.count("interrupted by SIGTERM") == 1  # one line, from rank 0
    assert "collective mismatch" not in err, err[-3000:]
    if case != "all_at_once":
        assert "Traceback" not in err, err[-3000:]

    meta = run.read_meta()
    steps = [r["step"] for r in read_jsonl(run.metrics_file)]
    stopped = steps[-1]
    assert 26 <= stopped < STEPS and steps == list(range(1, stopped + 1)), (case, steps)
    assert meta["status"] == "interrupted" and meta["signal"] == "SIGTERM", meta
    assert [p.name for p in run.checkpoints()] == [f"checkpoint-{stopped}"] == [meta["interrupted_checkpoint"]]
    # both ranks saved the same step: TRL writes one rng state file per process into the checkpoint
    assert sorted(p.name for p in (run.checkpoints_dir / f"checkpoint-{stopped}").glob("rng_state*")) == \
        ["rng_state_0.pth", "rng_state_1.pth"]
    if case == "all_at_once":
        # W&B's service process got the SIGTERM too and died of it (as under SLURM): the run stopped cleanly all the
        # same, and metrics.jsonl has every row (compared after the resume below)
        assert "W&B stopped logging" in err or _wandb_exit_codes(run) == ["143"], err[-3000:]
    else:
        assert _wandb_exit_codes(run) == ["143"]
    assert run.lock_state() is False

    res = subprocess.run([sys.executable, "-m", "cli.main", "train", "--resume", str(run.path), "--quiet"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = run.read_meta()
    assert meta["status"] == "completed" and meta["num_processes"] == 2
    got = [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run.metrics_file)]
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    assert got == reference, case
    assert [s["outcome"] for s in meta["segments"]] == ["interrupted (SIGTERM)", "completed"]


def test_signal_before_the_first_step_stops_every_rank(tiny_overrides, tmp_path):
    """SIGTERM to rank 1 alone while rank 0 still evaluates the start model: both stop before training, together."""
    runs = tmp_path / "runs"
    tiny = [o for o in _base(tiny_overrides) if not o.startswith(("eval.num_problems", "eval.n="))]
    proc = _rl([*tiny, "eval.num_problems=200", "eval.n=4", f"runs_dir={runs}"])  # a start evaluation of seconds
    run = _wait(lambda: _run_dir(runs), proc, "the run directory")
    ranks = _wait(lambda: (lambda r: r if len(r) == 2 else None)(_ranks(proc)), proc, "two ranks")
    ranks[1].send_signal(signal.SIGTERM)
    err = _finish(proc, timeout=300)
    assert proc.returncode == 143, err[-3000:]
    meta = run.read_meta()
    assert meta["status"] == "interrupted" and meta["signal"] == "SIGTERM"
    assert read_jsonl(run.metrics_file) == [] and run.checkpoints() == []
    assert "collective mismatch" not in err and "Traceback" not in err, err[-3000:]
    assert json.loads(json.dumps(meta["segments"]))[-1]["outcome"] == "interrupted (SIGTERM)"


def test_sweep_job_trains_on_two_processes(tiny_overrides, tmp_path):
    """`launch.num_processes=2` in a sweep: each job is supervised the same way (workbench.train.train)."""
    from workbench.sweep.directory import read_records

    res = subprocess.run([sys.executable, "-m", "cli.main", "sweep", "experiment=quickstart", *tiny_overrides,
                          "logger=none", "launch.num_processes=2", "seed=1,2"], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    (sweep,) = (tmp_path / "runs" / "sweeps").iterdir()
    records = read_records(sweep)
    assert sorted(r["status"] for r in records.values()) == ["completed", "completed"]
    for r in records.values():
        run = RunDir(sweep / r["run_dir"])
        assert run.read_meta()["num_processes"] == 2 and run.summary_file.exists()
