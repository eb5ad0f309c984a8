"""`rl sweep` with the submitit_slurm launcher, without a cluster: the resources --dry-run prints, the check of a
request against `sinfo` (a stand-in `sinfo` on PATH prints what a cluster would), and the job-side logic that lets
a stopped SLURM job continue its own run directory. The real cluster is tests/test_slurm_e2e.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from workbench import sweep as sw
from workbench.config import ConfigError, to_dict
from workbench.runs import RunDir, read_jsonl
from workbench.sweep.job import resume_point
from workbench.sweep.slurm import Partitions, check_slurm, describe_slurm, gpu_request, parse_sinfo

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
CPU_ONLY = "cpu*|(null)\n"
CPU_AND_GPU = "cpu*|(null)\ngpu|gpu:a100:4(S:0-1)\ngpu|gpu:h100:8\n"


def fake_tools(tmp_path: Path, monkeypatch, sinfo: str | None, sinfo_code: int = 0) -> Path:
    """A PATH holding only a `sinfo` that prints `sinfo` (None: no sinfo at all) and an `sbatch` that records that
    it was called; returns the file sbatch writes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch_calls"

    def script(name: str, body: str) -> None:
        f = bin_dir / name
        f.write_text("#!/bin/sh\n" + body)
        f.chmod(f.stat().st_mode | stat.S_IEXEC)

    if sinfo is not None:
        (tmp_path / "sinfo.out").write_text(sinfo)
        script("sinfo", f"/bin/cat '{tmp_path / 'sinfo.out'}'\nexit {sinfo_code}\n")
    script("sbatch", f"echo \"$@\" >> '{calls}'\necho 'Submitted batch job 1'\n")
    script("srun", "exit 0\n")
    monkeypatch.setenv("PATH", str(bin_dir))
    return calls


def rl(*args):
    return runner.invoke(app, ["sweep", *args], env={"COLUMNS": "250"})


def error_line(res) -> str:
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


# ----------------------------------------------------------------------------------------------- sinfo, parsing


def test_parse_sinfo_partitions_default_and_gpus():
    p = parse_sinfo(CPU_AND_GPU)
    assert p.default == "cpu" and list(p.gres) == ["cpu", "gpu"]
    assert p.gres["gpu"] == {"gpu:a100:4(S:0-1)", "gpu:h100:8"} and p.gres["cpu"] == set()
    assert not p.has_gpus("cpu") and p.has_gpus("gpu") and not p.has_gpus("nosuch")
    assert p.listing() == "cpu* (no GPUs), gpu (GPUs)"
    assert parse_sinfo("").gres == {}


def test_gpu_request_reads_every_way_to_ask_for_a_gpu():
    assert gpu_request({"gpus_per_node": None}) is None
    assert gpu_request({"gpus_per_node": 0, "gres": "tmpfs:10G"}) is None
    assert gpu_request({"gpus_per_node": 2}) == ("hydra.launcher.gpus_per_node", 2)
    assert gpu_request({"gpus_per_task": 1}) == ("hydra.launcher.gpus_per_task", 1)
    assert gpu_request({"gres": "gpu:1"}) == ("hydra.launcher.gres", "gpu:1")
    assert gpu_request({"additional_parameters": {"gpus": 4}}) == ("hydra.launcher.additional_parameters.gpus", 4)


def test_check_slurm_refuses_a_gpu_on_a_cpu_partition_and_an_unknown_partition():
    cpu_only, both = parse_sinfo(CPU_ONLY), parse_sinfo(CPU_AND_GPU)
    check_slurm({"partition": None, "gpus_per_node": None}, cpu_only)
    check_slurm({"partition": "gpu", "gpus_per_node": 1}, both)
    check_slurm({"partition": "cpu,gpu", "gpus_per_node": 1}, both)  # sbatch -p a,b: either may run it
    with pytest.raises(ConfigError, match=r"hydra.launcher.gpus_per_node=1: SLURM partition 'cpu' has no GPUs.*"
                                          r"hydra.launcher.partition=gpu"):
        check_slurm({"partition": None, "gpus_per_node": 1}, both)  # the default partition has none
    with pytest.raises(ConfigError, match="no such SLURM partition here; partitions \\(sinfo\\): cpu\\* \\(no GPUs\\)"):
        check_slurm({"partition": "a100", "gpus_per_node": None}, cpu_only)
    check_slurm({"partition": None, "gpus_per_node": 1}, Partitions())  # sinfo listed nothing: nothing to say


# ----------------------------------------------------------------------------------------------- rl sweep


def test_dry_run_prints_each_slurm_jobs_resources(tmp_path, monkeypatch):
    fake_tools(tmp_path, monkeypatch, CPU_ONLY)
    res = rl("seed=1,2", "hydra/launcher=slurm_cpu", f"runs_dir={tmp_path / 'runs'}", "--dry-run")
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("launcher slurm_cpu:"))
    assert line == ("launcher slurm_cpu: each job: partition=<default: cpu>, nodes=1, tasks_per_node=1, "
                    "no GPU, cpus_per_task=1, mem_gb=2, timeout_min=60 (USR2 120 s before: checkpoint, "
                    "requeue, at most 3 times); at most 32 at once (array_parallelism)")
    assert "checked against this cluster's partitions (sinfo): cpu* (no GPUs)" in res.output
    assert not (tmp_path / "runs").exists()
    # every printed key is the launcher's own, so it can be overridden as printed
    res = rl("seed=1,2", "hydra/launcher=slurm_cpu", "hydra.launcher.timeout_min=5", "hydra.launcher.mem_gb=4",
             "hydra.launcher.max_num_timeout=0", "hydra.launcher.array_parallelism=1", "hydra.launcher.partition=cpu",
             f"runs_dir={tmp_path / 'runs'}", "--dry-run")
    assert res.exit_code == 0, res.output
    assert ("partition=cpu, nodes=1, tasks_per_node=1, no GPU, cpus_per_task=1, mem_gb=4, timeout_min=5 "
            "(max_num_timeout=0: a job at its limit fails); at most 1 at once") in res.output


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_gpu_preset_on_a_partition_without_gpus_is_refused_before_submission(tmp_path, monkeypatch, dry_run):
    calls = fake_tools(tmp_path, monkeypatch, CPU_ONLY)
    res = rl("seed=1,2", "logger=none", "hydra/launcher=slurm_gpu", "hydra.launcher.partition=cpu",
             f"runs_dir={tmp_path / 'runs'}", *(["--dry-run"] if dry_run else []))
    line = error_line(res)
    assert line.startswith("error: hydra.launcher.gpus_per_node=1: SLURM partition 'cpu' has no GPUs"), line
    assert "hydra/launcher=slurm_cpu" in line
    assert not calls.exists() and not (tmp_path / "runs").exists()  # sbatch never ran; no sweep directory


def test_the_gpu_presets_own_partition_missing_from_the_cluster(tmp_path, monkeypatch):
    fake_tools(tmp_path, monkeypatch, CPU_ONLY)
    line = error_line(rl("seed=1,2", "hydra/launcher=slurm_gpu", f"runs_dir={tmp_path / 'runs'}", "--dry-run"))
    assert "hydra.launcher.partition='gpu': no such SLURM partition here" in line and "cpu* (no GPUs)" in line
    assert "hydra/launcher=slurm_cpu" in line
    # on a cluster that has it, the same command is fine
    (tmp_path / "sinfo.out").write_text(CPU_AND_GPU)
    res = rl("seed=1,2", "hydra/launcher=slurm_gpu", f"runs_dir={tmp_path / 'runs'}", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "partition=gpu, nodes=1, tasks_per_node=1, gpus_per_node=1, cpus_per_task=8, mem_gb=64" in res.output


@pytest.mark.parametrize("sinfo,code,why", [(None, 0, "no sinfo on PATH"),
                                            ("slurm_load_partitions: Unable to contact slurm controller\n", 1,
                                             "sinfo failed: slurm_load_partitions: Unable to contact")])
def test_without_a_cluster_to_ask_nothing_is_checked(tmp_path, monkeypatch, sinfo, code, why):
    fake_tools(tmp_path, monkeypatch, sinfo, code)
    res = rl("seed=1,2", "hydra/launcher=slurm_gpu", "hydra.launcher.partition=cpu", f"runs_dir={tmp_path}",
             "--dry-run")
    assert res.exit_code == 0, res.output
    assert "gpus_per_node=1" in res.output and f"not checked against a cluster ({why}" in res.output


def test_describe_slurm_names_the_default_partition_only_when_known():
    launcher = {"nodes": 2, "tasks_per_node": 4, "gpus_per_task": 1, "mem_per_gpu": "40G", "timeout_min": 30,
                "signal_delay_s": 90, "max_num_timeout": 1, "array_parallelism": 8, "account": "lab"}
    text = describe_slurm(launcher)
    assert text.startswith("each job: partition=<the cluster's default>, nodes=2, tasks_per_node=4, gpus_per_task=1, "
                           "cpus_per_task=<default: 1>, mem_per_gpu=40G, account=lab, timeout_min=30 (USR2 90 s")
    assert "partition=<default: batch>" in describe_slurm(launcher, "batch")


# ----------------------------------------------------------------------------------------------- the job's side


def _run_dir(tmp_path: Path, status: str, summary: bool = False) -> Path:
    run = RunDir.create(tmp_path / "sweep" / "runs", "quickstart", "job0")
    run.config_file.write_text("seed: 1\n")
    run.start_meta(["rl"], 1, ROOT)
    run.acquire(command="rl train").release()  # a lock file that nobody holds: a `running` run reads dead
    if status == "interrupted":
        run.mark_interrupted("SIGTERM", step=3)
    elif status == "failed":
        run.mark_failed("RuntimeError: boom")
    elif status == "completed" or summary:
        run.mark_completed({"steps": 3})
    # "running" left as is: no process holds its lock, so it reads dead
    return run.path


@pytest.mark.parametrize("status,resumes", [("interrupted", True), ("running", True), ("failed", False),
                                            ("completed", False)])
def test_resume_point_is_a_stopped_run_not_a_failed_or_finished_one(tmp_path, status, resumes):
    path = _run_dir(tmp_path, status)
    sweep_dir = tmp_path / "sweep"
    if status == "running":
        assert RunDir(path).status == "dead"
    rec = {"run_dir": os.path.relpath(path, sweep_dir)}
    assert resume_point(sweep_dir, rec) == (path.resolve() if resumes else None)
    # a record written before its run directory was: found by the job's name and experiment
    assert resume_point(sweep_dir, {"name": "job0", "experiment": "quickstart"}) == (
        path.resolve() if resumes else None)
    assert resume_point(sweep_dir, {}) is None


class StoppableTrain:
    """A stand-in for workbench.train.train: the first call is stopped by SIGTERM after step 2 (its run directory
    is marked interrupted, RunInterrupted is raised, as the real one does); a call with `resume` finishes that
    run directory."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, cfg, overrides, argv=None, resume=None, progress=True):
        import signal

        from workbench.lifecycle import RunInterrupted

        self.calls.append({"name": cfg.name, "resume": resume, "argv": argv})
        if resume is None:
            run = RunDir.create(cfg.runs_dir, cfg.experiment_name, cfg.name)
            run.config_file.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            run.start_meta(argv or [], cfg.seed, ROOT)
            run.mark_interrupted("SIGTERM", step=2)
            e = RunInterrupted(signal.SIGTERM, step=2)
            e.run_dir = run.path
            raise e
        run = RunDir.open(resume)
        run.mark_completed({"run_dir": str(run.path), "seed": cfg.seed, "steps": 4, "eval/accuracy": 0.5})
        return run


def test_a_submitit_job_stopped_by_a_signal_is_recorded_and_resume_continues_its_run_dir(tmp_path, monkeypatch):
    """As scancel does to a SLURM job: the job records itself failed (the sweep goes on and reports it), and
    rl sweep --resume hands the job's interrupted run directory to train(resume=...) instead of a fresh run."""
    import workbench.train

    fake = StoppableTrain()
    monkeypatch.setattr(workbench.train, "train", fake)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")  # the job runs in a submitit process of its own
    res = rl("seed=1,2", "logger=none", f"runs_dir={tmp_path / 'runs'}")
    assert res.exit_code == 1, res.output
    (sweep_dir,) = (tmp_path / "runs" / "sweeps").iterdir()
    rows = read_jsonl(sweep_dir / "index.jsonl")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert rows[0]["error"] == "interrupted by SIGTERM at step 2"
    first = [sweep_dir / r["run_dir"] for r in rows]
    assert all(RunDir(p).status == "interrupted" for p in first)

    monkeypatch.delenv("SUBMITIT_EXECUTOR")
    res = rl("--resume", str(sweep_dir))
    assert res.exit_code == 0, res.output
    rows = read_jsonl(sweep_dir / "index.jsonl")
    assert [r["status"] for r in rows] == ["completed", "completed"] and [r["attempts"] for r in rows] == [2, 2]
    assert [sweep_dir / r["run_dir"] for r in rows] == first  # the same run directories, continued
    assert [c["resume"] for c in fake.calls[2:]] == [p.resolve() for p in first]
    assert fake.calls[2]["argv"] == ["rl", "train", "--resume", str(first[0].resolve())]
    records = [sw.read_records(sweep_dir)[j] for j in (0, 1)]
    assert [r["resumed_from"] for r in records] == [os.path.relpath(p.resolve(), sweep_dir) for p in first]
    assert all(r["slurm_job"] is None and r["slurm_restarts"] is None for r in records)  # not under SLURM


class SignalledTrain:
    """A stand-in for workbench.train.train that, like the real one, stops on SIGTERM through
    workbench.lifecycle.StopSignals, and sends itself submitit's time-limit signal (USR2) first."""

    def __init__(self):
        self.calls = 0

    def __call__(self, cfg, overrides, argv=None, resume=None, progress=True):
        import signal

        from workbench.lifecycle import StopSignals

        self.calls += 1
        signals = StopSignals().install()
        try:
            run = RunDir.create(cfg.runs_dir, cfg.experiment_name, cfg.name)
            run.config_file.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            run.start_meta(argv or [], cfg.seed, ROOT)
            try:
                signal.raise_signal(signal.SIGUSR2)  # as SLURM sends it signal_delay_s before the limit
            except KeyboardInterrupt as e:  # RunInterrupted from StopSignals: the run is marked, as train() does
                run.mark_interrupted(e.signame, step=1)
                raise
            raise AssertionError("the time-limit signal did not stop the training")
        finally:
            signals.restore()


@pytest.mark.parametrize("outcome", ["requeued", "refused"])
def test_the_time_limit_signal_stops_training_then_hands_over_to_submitits_requeue(tmp_path, monkeypatch, outcome):
    """In a submitit SLURM job, USR2 becomes the training's SIGTERM (a graceful stop), and only then is submitit's own
    USR2 handler (checkpoint + scontrol requeue + exit) called; when submitit refuses (no timeouts left), the job is
    recorded failed with submitit's reason."""
    import signal

    import workbench.train

    calls = []

    def submitit_handler(signum, frame):  # submitit's SignalHandler.checkpoint_and_try_requeue stands here
        calls.append(signum)
        if outcome == "requeued":
            raise SystemExit(-1)  # requeued: submitit exits the job's process
        raise RuntimeError("Job not requeued because: timed-out too many times.")

    monkeypatch.setattr(workbench.train, "train", SignalledTrain())
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    old = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        res = rl("seed=choice(1)", "logger=none", f"runs_dir={tmp_path / 'runs'}")
        assert signal.getsignal(signal.SIGUSR2) is submitit_handler  # put back after the training
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert calls == [signal.SIGUSR2]
    (sweep_dir,) = (tmp_path / "runs" / "sweeps").iterdir()
    (rec,) = sw.read_records(sweep_dir).values()
    if outcome == "requeued":
        assert res.exit_code == -1  # the process ends here; SLURM starts the job again
        assert rec["status"] == "pending" and rec["error"] == "SLURM's time-limit (or preemption) signal: requeued"
    else:
        assert res.exit_code == 1, res.output
        assert rec["status"] == "failed" and rec["error"] == (
            "SLURM's time-limit signal, not requeued: Job not requeued because: timed-out too many times.")
    run = RunDir(sweep_dir / rec["run_dir"])
    assert run.status == "interrupted" and run.read_meta()["signal"] == "SIGTERM"  # USR2 became SIGTERM
    assert resume_point(sweep_dir, rec) == run.path.resolve()  # the requeued job continues this run directory


def test_resume_on_a_launcher_the_cluster_cannot_serve_is_refused_before_submission(tmp_path, monkeypatch):
    plan = sw.plan_sweep(["seed=1,2", "logger=none", f"runs_dir={tmp_path / 'runs'}"])
    sweep_dir = sw.create_sweep_dir(plan, ["rl", "sweep", "seed=1,2"])
    calls = fake_tools(tmp_path, monkeypatch, CPU_ONLY)
    line = error_line(rl("--resume", str(sweep_dir), "hydra/launcher=slurm_gpu", "hydra.launcher.partition=cpu"))
    assert "hydra.launcher.gpus_per_node=1: SLURM partition 'cpu' has no GPUs" in line, line
    assert not calls.exists() and sw.read_definition(sweep_dir)["hydra_overrides"] == []  # nothing changed
    res = rl("--resume", str(sweep_dir), "hydra/launcher=slurm_cpu", "--dry-run")
    assert res.exit_code == 0 and "would rerun job(s) 0, 1" in res.output, res.output
