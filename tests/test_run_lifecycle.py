"""Runs that tell the truth (fast tests, no training): one writer per run directory (lock), liveness (pid, host,
heartbeat), `dead` for killed runs, signal handling, validation before anything is loaded or written, resume
bookkeeping (truncation rule, segments)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from workbench.config import ConfigError, to_dict, to_train_config
from workbench.runs import STATUS_DEAD, RunDir, RunInUse, now_iso, read_jsonl
from cli_asserts import one_line_error

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


# ----------------------------------------------------------------------------------------------- helpers


def _fake_run(tmp_path: Path, status: str = "running", **meta) -> RunDir:
    """A run directory as rl train leaves it (config.yaml, meta.json, a final/ model stub), without a model."""
    from workbench.compose import compose

    run = RunDir.create(tmp_path / "runs", "exp", "fake")
    cfg = to_train_config(compose("train", ["experiment=quickstart", "logger=none"]))
    run.config_file.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    run.start_meta(["rl", "train"], seed=0, project_root=tmp_path)
    run.write_meta(status=status, **meta)
    (run.final_dir).mkdir()
    (run.final_dir / "config.json").write_text("{}")
    return run


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from workbench.runs import RunDir
    run = RunDir(Path(sys.argv[1]))
    lock = run.acquire(command="holder")
    run.write_meta(status="running")
    lock.start_heartbeat(interval=0.2)
    print("ready", flush=True)
    time.sleep(600)
""")


class Holder:
    """A process that holds a run directory like a training does (lock + heartbeat), until killed."""

    def __init__(self, run: RunDir):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run.path)], cwd=ROOT, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def kill(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def holder(tmp_path):
    made = []

    def make(run):
        h = Holder(run)
        made.append(h)
        return h

    yield make
    for h in made:
        if h.proc.poll() is None:
            h.kill()


# ----------------------------------------------------------------------------------------------- lock + liveness


def test_lock_names_holder_and_dead_holder_is_recovered(tmp_path, holder):
    run = _fake_run(tmp_path)
    h = holder(run)
    with pytest.raises(RunInUse) as e:
        run.acquire(timeout=0.2)
    msg = str(e.value)
    assert f"pid {h.proc.pid}" in msg and socket.gethostname() in msg and "started 20" in msg
    assert run.lock_state() is True
    assert run.status == "running" and run.liveness()[0] is True
    time.sleep(0.5)
    assert run.read_meta()["pid"] == h.proc.pid  # the heartbeat thread writes meta.json
    beat = run.read_meta()["heartbeat"]

    h.kill()  # SIGKILL: nothing could mark the run, but the kernel dropped the lock
    assert run.read_meta()["status"] == "running" and run.read_meta()["heartbeat"] >= beat
    assert run.lock_state() is False
    assert run.status == STATUS_DEAD
    alive, why = run.liveness()
    assert alive is False and f"pid {h.proc.pid}" in why and "gone" in why
    lock = run.acquire(timeout=0.2)  # the stale lock of a dead process is simply free
    try:
        assert json.loads(run.lock_file.read_text())["pid"] == os.getpid()
        assert run.lock_state() is True  # a probe from the same process sees its own hold
    finally:
        lock.release()
    assert run.lock_state() is False


def test_liveness_without_lock_file_uses_pid_and_heartbeat(tmp_path):
    run = _fake_run(tmp_path)
    assert not run.lock_file.exists()  # a run from before locks
    assert run.status == "running"  # our own pid, alive
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.write_meta(pid=dead.pid)
    assert run.status == STATUS_DEAD
    # another host: the heartbeat decides
    run.write_meta(host="elsewhere", heartbeat=now_iso())
    assert run.liveness()[0] is True
    run.write_meta(heartbeat="2020-01-01T00:00:00+00:00")
    assert run.liveness()[0] is False and run.status == STATUS_DEAD


def test_lock_free_but_fresh_heartbeat_on_other_host_counts_as_live(tmp_path):
    """NFS without lock support: a free lock does not prove a run on another host dead while it beats."""
    run = _fake_run(tmp_path, host="node7", pid=4242, heartbeat=now_iso())
    run.lock_file.write_text("{}")
    assert run.lock_state() is False
    assert run.liveness()[0] is True
    with pytest.raises(RunInUse, match="pid 4242 on host node7"):
        run.acquire(timeout=0.1)
    assert run.lock_state() is False  # the refused acquire let go again


def test_heartbeat_thread_refreshes_meta(tmp_path):
    run = _fake_run(tmp_path, heartbeat="2020-01-01T00:00:00+00:00")
    lock = run.acquire()
    try:
        lock.start_heartbeat(interval=0.05)
        time.sleep(0.3)
        assert run.read_meta()["heartbeat"] > "2021"
    finally:
        lock.release()
    assert lock._thread is None and run.lock_state() is False


def test_compare_shows_killed_run_as_dead(tmp_path, holder):
    from workbench.compare import load_run

    run = _fake_run(tmp_path)
    h = holder(run)
    assert load_run(run.path).status == "running"
    h.kill()
    r = load_run(run.path)
    assert r.status == "dead" and "gone" in r.error


def test_resume_of_a_live_run_is_refused_naming_the_holder(tmp_path, holder):
    run = _fake_run(tmp_path)
    h = holder(run)
    before = run.meta_file.read_text()
    res = runner.invoke(app, ["train", "--resume", str(run.path)])
    one_line_error(res, "in use", f"pid {h.proc.pid}", socket.gethostname())
    assert json.loads(run.meta_file.read_text())["status"] == "running"
    assert json.loads(before)["command"] == json.loads(run.meta_file.read_text())["command"]


def test_eval_force_on_a_live_run_is_refused(tmp_path, holder):
    run = _fake_run(tmp_path)
    h = holder(run)
    res = runner.invoke(app, ["eval", str(run.path), "--force"])
    one_line_error(res, "in use", f"pid {h.proc.pid}")
    assert not run.eval_dir.exists()


def test_sweep_resume_leaves_live_jobs_alone(tmp_path, holder):
    from workbench import sweep as sw

    sweep_dir = tmp_path / "sweep"
    (sweep_dir / "jobs").mkdir(parents=True)
    run = RunDir.create(sweep_dir / "runs", "exp", "job0")
    run.write_meta(status="running")
    h = holder(run)
    for job in (0, 1):
        (sweep_dir / "jobs" / f"{job}.json").write_text(json.dumps(
            {"job": job, "status": "running", "name": f"job{job}", "experiment": "exp", "host": "elsewhere", "pid": 1}))
    (sweep_dir / "sweep.json").write_text(json.dumps({"kind": "grid", "jobs": [{"job": 0, "overrides": []},
                                                                                {"job": 1, "overrides": []}]}))
    live = sw.live_jobs(sweep_dir)
    assert list(live) == [0] and f"pid {h.proc.pid}" in live[0]
    assert sw.jobs_to_resume(sweep_dir) == [1]
    h.kill()
    assert sw.jobs_to_resume(sweep_dir) == [0, 1]


# ----------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        (["reward.format.weight=nan"], ["reward.format.weight=nan", "finite"]),
        (["reward.format.weight=inf"], ["reward.format.weight=inf", "finite"]),
        (["reward=[correctness,cost_tokens]", "reward.cost_tokens.price_completion=nan"],
         ["reward.cost_tokens.price_completion=nan"]),
        (["reward.format.weight=heavy"], ["reward.format.weight", "number"]),
        (["algo.max_steps=-5"], ["algo.max_steps=-5", ">= 1"]),
        (["algo.max_steps=0"], ["algo.max_steps=0"]),
        (["algo.max_steps=abc"], ["algo.max_steps", "integer"]),
        (["algo.learning_rate=fast"], ["algo.learning_rate", "number"]),
        (["algo.learning_rate=nan"], ["algo.learning_rate=nan", "finite"]),
        (["algo.learning_rate=-1e-4"], ["algo.learning_rate"]),
        (["algo.num_generations=1"], ["algo.num_generations=1"]),
        (["algo.beta=inf"], ["algo.beta=inf"]),
        (["eval.n=0"], ["eval.n=0"]),
        (["eval.num_problems=0"], ["eval.num_problems=0"]),
        (["eval.temperature=nan"], ["eval.temperature"]),
        (["price.completion_per_million=-1"], ["price.completion_per_million"]),
        (["samples_every=-1"], ["samples_every"]),
    ],
)
def test_bad_values_exit_2_before_anything_is_loaded_or_written(tmp_path, overrides, fragments):
    runs = tmp_path / "runs"
    for extra in ([], ["--dry-run"]):  # --dry-run runs the same checks
        res = runner.invoke(app, ["train", "experiment=quickstart", *overrides, f"runs_dir={runs}", *extra])
        one_line_error(res, *fragments)
        assert not runs.exists()


def test_unwritable_runs_dir_fails_up_front(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    res = runner.invoke(app, ["train", "experiment=quickstart", f"runs_dir={blocker}/runs"])
    one_line_error(res, "runs_dir", "not a directory")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        res = runner.invoke(app, ["train", "experiment=quickstart", f"runs_dir={ro}/runs"])
        one_line_error(res, "runs_dir", "not writable")


def test_dry_run_checks_and_writes_nothing(tmp_path):
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["train", "experiment=quickstart", "algo.max_steps=7", f"runs_dir={runs}", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "max_steps: 7" in res.output and "config valid" in res.output
    assert not runs.exists()


def test_check_trl_options_types_and_ranges():
    from workbench.checks import check_trl_options

    assert check_trl_options("grpo", {"max_steps": -1, "learning_rate": 1, "lr_scheduler_type": "constant"}) == {
        "max_steps": -1, "learning_rate": 1.0, "lr_scheduler_type": "constant"}
    for bad in ({"max_steps": 2.5}, {"save_steps": 0}, {"top_p": 1.5}, {"epsilon": float("nan")},
                {"gradient_checkpointing": "yes"}, {"num_iterations": 0}):
        with pytest.raises(ConfigError, match="algo." + next(iter(bad))):
            check_trl_options("grpo", bad)
    with pytest.raises(ConfigError, match="algo.max_steps"):
        check_trl_options("rloo", {"max_steps": 0})


def test_non_finite_numbers_rejected_at_conversion():
    from workbench.compose import compose

    data = compose("train", ["experiment=quickstart"])
    data["model"]["tiny"]["warm_start_lr"] = float("inf")
    with pytest.raises(ConfigError, match="model.tiny.warm_start_lr=inf"):
        to_train_config(data)


# ----------------------------------------------------------------------------------------------- signals


def test_stop_signals_graceful_then_immediate(monkeypatch):
    from workbench import lifecycle
    from workbench.lifecycle import RunInterrupted, StopSignals

    before = signal.getsignal(signal.SIGTERM)
    s = StopSignals(grace=30).install()
    try:
        with pytest.raises(RunInterrupted) as e:  # outside TRL's loop: at once
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(1)
        assert e.value.signame == "SIGHUP" and e.value.exit_code == 129
    finally:
        s.restore()
    s = StopSignals(grace=30).install()
    try:
        s.graceful = True
        os.kill(os.getpid(), signal.SIGTERM)  # inside the loop: only asks for a stop at the end of the step
        time.sleep(0.1)
        assert s.stopping and s.received == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)  # the same delivery twice (scheduler + launcher): still graceful
        time.sleep(0.1)
        monkeypatch.setattr(lifecycle, "DUPLICATE_WINDOW", 0.0)
        with pytest.raises(RunInterrupted) as e:  # a second signal, later, stops at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert e.value.exit_code == 143
    finally:
        s.restore()
    assert signal.getsignal(signal.SIGTERM) is before


def test_stop_signals_with_several_ranks_defer_and_agree():
    """sync (several processes): a signal outside the training loop is only noted; agree() alone (no process group)
    returns it, stop_if_agreed raises it. A stop learnt from the other ranks leaves this rank's own first signal
    graceful (it must not abort the checkpoint all ranks are saving)."""
    from workbench.lifecycle import RunInterrupted, StopSignals

    s = StopSignals(grace=30, sync=True).install()
    try:
        assert s.agree() is None
        s.stop_if_agreed()  # nobody signalled: nothing happens
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert s.stopping and s.agree() == signal.SIGTERM
        with pytest.raises(RunInterrupted) as e:
            s.stop_if_agreed(step=0)
        assert e.value.signame == "SIGTERM" and e.value.step == 0
    finally:
        s.restore()
    s = StopSignals(grace=30, sync=True).install()
    try:
        s.received, s.stopping = signal.SIGTERM, True  # what agree() sets when another rank was signalled
        s.graceful = True
        os.kill(os.getpid(), signal.SIGTERM)  # this rank's own signal arrives later, while the checkpoint is saved
        time.sleep(0.1)  # no RunInterrupted
    finally:
        s.restore()


def test_stop_signals_grace_expires():
    from workbench.lifecycle import RunInterrupted, StopSignals

    s = StopSignals(grace=0.2).install()
    try:
        s.graceful = True
        t0 = time.time()
        with pytest.raises(RunInterrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            while time.time() - t0 < 5:  # a step that never ends
                time.sleep(0.01)
        assert 0.15 < time.time() - t0 < 3
        s.hold()  # while the run records its end, signals are only noted
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    finally:
        s.restore()


def test_graceful_callback_saves_and_stops():
    from transformers import TrainerControl, TrainerState

    from workbench.lifecycle import StopSignals, graceful_stop_callback

    s = StopSignals()
    cb = graceful_stop_callback(s)
    state, control = TrainerState(), TrainerControl()
    state.global_step = 7
    cb.on_step_end(None, state, control)
    assert not control.should_save and not control.should_training_stop
    s.stopping = True
    cb.on_step_end(None, state, control)
    assert control.should_save and control.should_training_stop and control.should_log and cb.stopped_at == 7


# ----------------------------------------------------------------------------------------------- resume bookkeeping


def test_resume_truncation_rule(tmp_path):
    """metrics rows are logged at the end of their step; samples rows are labelled with the step before the one
    whose rollouts they are, so the rows labelled with the checkpoint step come back on resume."""
    run = RunDir.create(tmp_path, "exp", "x")
    run.metrics_file.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 8)))
    run.samples_file.write_text("".join(json.dumps({"step": s, "i": i}) + "\n" for s in range(0, 7) for i in range(2)))
    run.truncate_metrics(4)
    assert [r["step"] for r in read_jsonl(run.metrics_file)] == [1, 2, 3, 4]
    assert sorted({r["step"] for r in read_jsonl(run.samples_file)}) == [0, 1, 2, 3]


def test_segments_sum_and_dead_segment_closed(tmp_path):
    from workbench.run_lifecycle import close_dead_segment, end_segment

    run = RunDir.create(tmp_path, "exp", "x")
    t = time.time()
    segs = [{"pid": 1, "start_ts": t - 100, "seconds": 30.0, "outcome": "interrupted (SIGTERM)"},
            {"pid": 2, "start_ts": t - 50, "seconds": None}]  # killed: never recorded its end
    run.metrics_file.write_text(json.dumps({"step": 3, "time": t - 20}) + "\n")
    meta = {"segments": segs, "heartbeat": "2020-01-01T00:00:00+00:00"}
    closed = close_dead_segment(run, meta)
    assert closed[0] == segs[0]
    assert closed[1]["outcome"] == "dead" and abs(closed[1]["seconds"] - 30) < 1  # until its last metrics row
    run.write_meta(segments=[*closed, {"pid": os.getpid(), "start_ts": t, "seconds": None}])
    total = end_segment(run, "completed", 9, time.time() - 5)
    assert abs(total - 65) < 1
    assert run.read_meta()["segments"][-1]["outcome"] == "completed"


def test_record_exit_marks_failed_or_interrupted(tmp_path):
    """A run that raised says why: a crash is `failed` with error.txt, Ctrl-C or a signal is `interrupted` with the
    step and the last checkpoint; either exception carries run_dir for the CLI's one line."""
    from workbench.lifecycle import RunInterrupted
    from workbench.run_lifecycle import new_segment, record_exit

    run = RunDir.create(tmp_path, "exp", "crash")
    run.write_meta(segments=[new_segment(["rl", "train"])])
    try:
        raise ValueError("boom")
    except ValueError as e:
        assert record_exit(e, run, True, 3, time.time() - 2) is None
        assert e.run_dir == run.path
    meta = run.read_meta()
    assert meta["status"] == "failed" and meta["error"] == "ValueError: boom"
    assert "raise ValueError(\"boom\")" in run.path.joinpath("error.txt").read_text()
    assert meta["segments"][-1]["outcome"] == "failed" and meta["segments"][-1]["to_step"] == 3

    run = RunDir.create(tmp_path, "exp", "stopped")
    run.write_meta(segments=[new_segment(["rl", "train"])])
    (run.checkpoints_dir / "checkpoint-2").mkdir(parents=True)
    (run.checkpoints_dir / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as e:
        stop = record_exit(e, run, True, 2, time.time())
    assert isinstance(stop, RunInterrupted) and stop.signame == "SIGINT" and stop.exit_code == 130
    assert stop.step == 2 and stop.run_dir == run.path
    meta = run.read_meta()
    assert meta["status"] == "interrupted" and meta["interrupted_checkpoint"] == "checkpoint-2"
    assert meta["segments"][-1]["outcome"] == "interrupted (SIGINT)"
    assert not run.path.joinpath("error.txt").exists()
    sigterm = RunInterrupted(signal.SIGTERM, step=2)
    assert record_exit(sigterm, run, True, 2, time.time()) is sigterm


def test_open_run_creates_then_reopens(tmp_path):
    """A new run directory: config, overrides, meta (W&B run id only with the wandb backend, the first segment) and
    a held lock; reopened for a resume: metrics after the last checkpoint dropped, a second segment from its step,
    the same W&B run id, summary.json gone."""
    import types

    from workbench.compose import compose
    from workbench.run_lifecycle import lock_for_resume, open_run

    state = types.SimpleNamespace(is_main_process=True, num_processes=1)
    cfg = to_train_config(compose("train", ["model=tiny", f"runs_dir={tmp_path}", "logger=wandb"]))
    run, run_id, lock = open_run(cfg, ["seed=0"], ["rl", "train"], state, threads={"threads": 1}, model={"x": 1})
    try:
        meta = run.read_meta()
        assert run.path.joinpath("overrides.txt").read_text() == "seed=0\n" and run.config_file.exists()
        assert meta["wandb_run_id"] == run_id and meta["threads"] == {"threads": 1} and meta["num_processes"] == 1
        assert [s["from_step"] for s in meta["segments"]] == [0] and run.lock_state()
    finally:
        lock.release()
    (run.checkpoints_dir / "checkpoint-2").mkdir(parents=True)
    (run.checkpoints_dir / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    run.metrics_file.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3)))
    run.summary_file.write_text("{}")
    resumed, lock = lock_for_resume(run.path, ["rl", "train", "--resume"])
    again, again_id, held = open_run(cfg, [], ["rl", "train", "--resume"], state, resumed=resumed, lock=lock)
    try:
        assert again.path == run.path and again_id == run_id and held is lock
        meta = again.read_meta()
        assert [s["from_step"] for s in meta["segments"]] == [0, 2] and meta["status"] == "running"
        assert [r["step"] for r in read_jsonl(run.metrics_file)] == [1, 2] and not run.summary_file.exists()
    finally:
        lock.release()
    none = to_train_config(compose("train", ["model=tiny", f"runs_dir={tmp_path}", "logger=none"]))
    other, _, lock = open_run(none, [], ["rl", "train"], state)
    lock.release()
    assert other.read_meta()["wandb_run_id"] is None
