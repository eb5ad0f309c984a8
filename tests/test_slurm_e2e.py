"""`rl sweep hydra/launcher=slurm_cpu` on a real single-node SLURM cluster (scripts/slurm_cluster.sh: Debian's
slurm-wlm + munge, no accounting database, so scripts/slurm/sacct answers submitit): every job is a SLURM job of an
array, a job that fails inside training is recorded failed while the others finish, `--resume` after a scancel runs
only what is unfinished (continuing the cancelled job's run directory), and a job that reaches its time limit saves
a checkpoint, is requeued by submitit (SLURM_RESTART_COUNT=1), resumes its own run directory and ends with the same
metrics as an uninterrupted run.

`rl sweep` runs as a subprocess with SLURM_CONF and scripts/slurm/ on PATH (what `scripts/slurm_cluster.sh env`
prints), as a user's shell would; this process's environment is left alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY
from workbench.runs import RunDir, read_json, read_jsonl

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
TIMING = ("time", "perf/step_time", "perf/tokens_per_s")  # wall-clock fields of a metrics row
# conftest's tiny run, no start-of-training evaluation
SMALL = [o for o in TINY if not o.startswith(("algo.max_steps=", "algo.save_steps="))] + ["eval.at_start=false"]
FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL")


def _cluster_env() -> dict[str, str]:
    out = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True, check=True).stdout
    conf = re.search(r"export SLURM_CONF=(\S+)", out).group(1)
    return {**os.environ, "SLURM_CONF": os.environ.get("SLURM_CONF", conf),
            "PATH": str(ROOT / "scripts" / "slurm") + os.pathsep + os.environ.get("PATH", ""),
            "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def _node_up(env: dict[str, str]) -> bool:
    res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env)
    return res.returncode == 0 and any(s.strip() in ("idle", "mixed", "allocated") for s in res.stdout.splitlines())


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    """The environment of a shell that uses the cluster; starts the cluster (as root) when it is not up."""
    root = os.geteuid() == 0
    if shutil.which("sinfo") is None and not root:
        pytest.skip("SLURM's tools are not installed (as root: bash scripts/slurm_cluster.sh start installs them)")
    env = _cluster_env()
    if shutil.which("sinfo") is None or not _node_up(env):
        if not root:
            pytest.skip("no SLURM cluster up (bash scripts/slurm_cluster.sh start, as root)")
        res = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, env=env, timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
        env = _cluster_env()
    assert _node_up(env), "the SLURM node is not up after scripts/slurm_cluster.sh start"
    assert shutil.which("sacct", path=env["PATH"]) == str(ROOT / "scripts" / "slurm" / "sacct")
    return env


def rl_sweep(env, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", "sweep", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def sacct(env, *job_ids: str) -> dict[str, dict[str, str]]:
    """{JobID: row} from `sacct -o JobID,State,NodeList,Restarts --parsable2 -j ...` (the stand-in)."""
    out = subprocess.run(["sacct", "-o", "JobID,State,NodeList,Restarts", "--parsable2",
                          *[a for j in job_ids for a in ("-j", j)]], capture_output=True, text=True, env=env,
                         check=True).stdout.splitlines()
    names = out[0].split("|")
    return {r["JobID"]: r for r in (dict(zip(names, line.split("|"))) for line in out[1:])}


def finished(env, array: str, ids: list[str], timeout: float = 120) -> dict[str, dict[str, str]]:
    """sacct's rows once every one of `ids` has ended: a job's process writes its result, and `rl sweep` returns,
    a moment before SLURM has finished the job (its batch script, the step's teardown)."""
    return wait_for(f"SLURM to end {ids}", lambda: (lambda rows: rows if all(
        rows.get(i, {}).get("State", "").split(" ")[0] in FINISHED for i in ids) else None)(sacct(env, array)),
        timeout)


def only_sweep(runs: Path) -> Path:
    (sweep_dir,) = (runs / "sweeps").iterdir()
    return sweep_dir


def records(sweep_dir: Path) -> list[dict]:
    return [read_json(f) for f in sorted((sweep_dir / "jobs").glob("*.json"), key=lambda f: int(f.stem))]


def wait_for(what: str, cond, timeout: float, proc: subprocess.Popen | None = None, poll: float = 1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"rl sweep ended (exit {proc.returncode}) before {what}:\n{out[-3000:]}\n{err[-3000:]}")
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def test_every_job_is_a_slurm_job_and_a_failing_one_is_recorded(slurm_env, tmp_path):
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed: the 8-bit optimizer would not crash")
    runs = tmp_path / "runs"
    # 4 jobs: two seeds x two optimizers, of which the 8-bit one passes every up-front check and crashes inside
    # training (bitsandbytes is not installed)
    res = rl_sweep(slurm_env, "experiment=quickstart", *SMALL, "algo.max_steps=2", "algo.save_steps=1", "logger=none",
                   "seed=1,2", "+algo.optim=adamw_torch,adamw_bnb_8bit", f"runs_dir={runs}",
                   "hydra/launcher=slurm_cpu", "--quiet")
    assert res.returncode == 1, res.stdout + res.stderr  # a job failed: the sweep says so in its exit code
    assert "4 jobs: 2 completed, 2 failed" in res.stdout, res.stdout
    sweep_dir = only_sweep(runs)
    rows = read_jsonl(sweep_dir / "index.jsonl")
    assert [r["overrides"] for r in rows] == [["seed=1", "+algo.optim=adamw_torch"],
                                              ["seed=1", "+algo.optim=adamw_bnb_8bit"],
                                              ["seed=2", "+algo.optim=adamw_torch"],
                                              ["seed=2", "+algo.optim=adamw_bnb_8bit"]]
    assert [r["status"] for r in rows] == ["completed", "failed", "completed", "failed"]
    assert all("bitsandbytes" in rows[i]["error"] for i in (1, 3))
    for i in (0, 2):
        assert rows[i]["metrics"]["steps"] == 2 and RunDir(sweep_dir / rows[i]["run_dir"]).status == "completed"
    assert RunDir(sweep_dir / rows[1]["run_dir"]).status == "failed"

    # each job ran as a task of one SLURM array, under SLURM (its record names the task), on the cluster's node
    recs = records(sweep_dir)
    ids = [r["slurm_job"] for r in recs]
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_{i}" for i in range(4)], ids
    assert all(r["slurm_restarts"] == 0 and r["pid"] != os.getpid() for r in recs)
    for i in ids:  # submitit's folder per task: its log and its result pickle
        assert (sweep_dir / ".submitit" / i / f"{i}_0_log.out").is_file()
        assert (sweep_dir / ".submitit" / i / f"{i}_0_result.pkl").is_file()
    states = finished(slurm_env, array, ids)
    # a failed training is a recorded result, not a failed SLURM job: every task ended normally
    assert {i: states[i]["State"] for i in ids} == {i: "COMPLETED" for i in ids}, states
    assert {states[i]["NodeList"] for i in ids} == {subprocess.check_output(["hostname", "-s"], text=True).strip()}
    print(f"array {array}: {[(i, states[i]['State'], r['status']) for i, r in zip(ids, rows)]}")


def test_resume_after_scancel_runs_only_the_unfinished_jobs(slurm_env, tmp_path):
    runs = tmp_path / "runs"
    steps = 100
    args = ["experiment=quickstart", *SMALL, f"algo.max_steps={steps}", "algo.save_steps=1000", "samples_every=0",
            "logger=none", "seed=1,2,3", f"runs_dir={runs}", "hydra/launcher=slurm_cpu",
            "hydra.launcher.array_parallelism=1"]  # one job at a time: job 2 has not started when job 1 is cancelled
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "sweep", *args, "--quiet"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=slurm_env)
    try:
        sweep_dir = wait_for("the sweep directory", lambda: (runs / "sweeps").is_dir() and only_sweep(runs), 120, proc)

        def job1_training():  # job 0 completed and job 1 past 10 steps
            recs = {r["job"]: r for r in records(sweep_dir)}
            if recs.get(0, {}).get("status") != "completed" or recs.get(1, {}).get("status") != "running":
                return None
            found = list((sweep_dir / "runs").glob("quickstart/*_job1/metrics.jsonl"))
            return recs[1] if found and len(read_jsonl(found[0])) >= 10 else None

        rec1 = wait_for("job 1 to train", job1_training, 600, proc)
        array = rec1["slurm_job"].split("_")[0]
        subprocess.run(["scancel", array], check=True, env=slurm_env)  # the whole array: job 1 and the pending job 2
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out + err
    assert "3 jobs: 1 completed, 1 failed" in out and "1 not run" in out, out
    rows = read_jsonl(sweep_dir / "index.jsonl")
    assert [r["status"] for r in rows] == ["completed", "failed", "pending"]
    m = re.fullmatch(r"interrupted by SIGTERM at step (\d+)", rows[1]["error"])
    assert m, rows[1]["error"]
    stopped = int(m.group(1))
    assert 10 <= stopped < steps
    run1 = RunDir(sweep_dir / rows[1]["run_dir"])
    assert run1.status == "interrupted" and run1.read_meta()["interrupted_checkpoint"]
    states = finished(slurm_env, array, [f"{array}_{i}" for i in range(3)])
    assert states[f"{array}_0"]["State"] == "COMPLETED" and states[f"{array}_1"]["State"].startswith("CANCELLED")
    assert states[f"{array}_2"]["State"].startswith("CANCELLED"), states

    res = rl_sweep(slurm_env, "--resume", str(sweep_dir), "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resuming" in res.stdout and "job(s) 1, 2" in res.stdout
    rows = read_jsonl(sweep_dir / "index.jsonl")
    assert [r["status"] for r in rows] == ["completed"] * 3
    assert [r["attempts"] for r in rows] == [1, 2, 1]  # job 0 did not run again
    assert [launch["jobs"] for launch in read_json(sweep_dir / "sweep.json")["launches"]] == [[0, 1, 2], [1, 2]]
    recs = records(sweep_dir)
    assert recs[0]["slurm_job"] == f"{array}_0"
    second = recs[1]["slurm_job"].split("_")[0]
    assert second != array and recs[2]["slurm_job"] == f"{second}_1"  # a new array of the two jobs left
    # job 1 continued its run directory from the checkpoint of the step it was stopped at
    assert sweep_dir / rows[1]["run_dir"] == run1.path and recs[1]["resumed_from"] == rows[1]["run_dir"]
    meta = run1.read_meta()
    assert meta["status"] == "completed" and [r["from_step"] for r in meta["resumes"]] == [stopped]
    assert [r["step"] for r in read_jsonl(run1.metrics_file)] == list(range(1, steps + 1))
    again = finished(slurm_env, second, [f"{second}_0", f"{second}_1"])
    assert [again[f"{second}_{i}"]["State"] for i in (0, 1)] == ["COMPLETED", "COMPLETED"]
    print(f"array {array} cancelled at job 1 step {stopped}: {states}; resumed as array {second}: {again}")


def test_a_job_at_its_time_limit_checkpoints_is_requeued_and_resumes(slurm_env, tmp_path):
    # A 2-minute limit with USR2 45 s before it, which SLURM delivers up to 30 s early: 45-75 s into each attempt.
    # 0.09-0.25 s a step here (0.09 on a quiet machine): 800 steps are 72-200 s of training plus the start, so the
    # first attempt is always stopped (600 steps once finished inside the first attempt on a quiet CI machine); an
    # attempt starts training within ~15-30 s (imports, the tiny model from its cache, the checkpoint), so each one
    # makes progress and the run ends within a few requeues (max_num_timeout=8).
    steps = 800
    overrides = ["experiment=quickstart", *SMALL, f"algo.max_steps={steps}", "algo.save_steps=100000", "samples_every=0",
                 "eval.at_end=false", "logger=none"]
    # the uninterrupted reference, alongside (one core each)
    ref = subprocess.Popen([sys.executable, "-m", "cli.main", "train", *overrides, "seed=1",
                            f"runs_dir={tmp_path / 'ref'}", "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=slurm_env)
    runs = tmp_path / "runs"
    t0 = time.time()
    res = rl_sweep(slurm_env, *overrides, "seed=choice(1)", f"runs_dir={runs}", "hydra/launcher=slurm_cpu",
                   "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=45",
                   "hydra.launcher.max_num_timeout=8", "--quiet", timeout=1500)
    took = time.time() - t0
    ref_out, ref_err = ref.communicate(timeout=600)
    assert ref.returncode == 0, ref_err[-3000:]
    assert res.returncode == 0, res.stdout + res.stderr
    sweep_dir = only_sweep(runs)
    (row,) = read_jsonl(sweep_dir / "index.jsonl")
    (rec,) = records(sweep_dir)
    assert row["status"] == "completed" and row["error"] is None
    restarts = rec["slurm_restarts"]  # SLURM_RESTART_COUNT of the attempt that finished
    assert restarts >= 1 and rec["attempts"] == restarts + 1, rec
    job_id = rec["slurm_job"]
    state = finished(slurm_env, job_id, [job_id])[job_id]
    assert state["State"] == "COMPLETED" and state["Restarts"] == str(restarts), state
    log = (sweep_dir / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()  # submitit logs INFO to stdout
    assert len(re.findall(rf"Requeued job {job_id}", log)) == restarts, log[-3000:]  # submitit's requeue, each time

    run = RunDir(sweep_dir / row["run_dir"])
    meta = run.read_meta()
    assert meta["status"] == "completed"
    assert [s["outcome"] for s in meta["segments"]] == ["interrupted (SIGTERM)"] * restarts + ["completed"]
    stops = [s["to_step"] for s in meta["segments"][:-1]]
    assert [r["from_step"] for r in meta["resumes"]] == stops and all(0 < s < steps for s in stops), meta
    assert rec["resumed_from"] == row["run_dir"]
    # the same training as the uninterrupted run: every step once, the same numbers
    (ref_dir,) = [p.parent for p in (tmp_path / "ref").rglob("config.yaml")]
    want = [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(ref_dir / "metrics.jsonl")]
    got = [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run.metrics_file)]
    assert [r["step"] for r in got] == list(range(1, steps + 1))
    differ = next((g["step"] for g, w in zip(got, want) if g != w), None)
    assert differ is None, (f"step {differ} differs (stops at {stops}): "
                            f"{ {k: (got[differ - 1].get(k), want[differ - 1].get(k)) for k in got[differ - 1] if got[differ - 1].get(k) != want[differ - 1].get(k)} }")
    assert got == want
    summary, ref_summary = read_json(run.summary_file), read_json(ref_dir / "summary.json")
    assert summary["steps"] == ref_summary["steps"] == steps and summary["segments"] == restarts + 1
    print(f"job {job_id}: {restarts} requeue(s), stopped at steps {stops}, sweep took {took:.0f} s")
    print(json.dumps({k: rec[k] for k in ("slurm_job", "slurm_restarts", "attempts", "resumed_from")}))
