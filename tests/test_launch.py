"""The multi-process supervisor (workbench/launch.py) without training: its command line, exit codes, output filter,
and the CLI's checks before it launches anything."""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from cli_asserts import one_line_error
from workbench import launch

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def test_accelerate_command_one_machine_and_several():
    cfg = ROOT / "conf" / "accelerate" / "ddp.yaml"
    cmd = launch.accelerate_command(cfg, 2, ["experiment=quickstart", "--quiet"], env={})
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--config_file") + 1] == str(cfg) and cmd[cmd.index("--num_processes") + 1] == "2"
    assert int(cmd[cmd.index("--main_process_port") + 1]) > 0 and "--num_machines" not in cmd
    assert cmd[-5:] == ["-m", "cli.main", "train", "experiment=quickstart", "--quiet"]
    # a 2-node SLURM job, one supervisor per node: 8 GPUs each -> 16 processes, the node's rank from SLURM
    env = {"RL_NUM_MACHINES": "2", "SLURM_NODEID": "1", "RL_MAIN_PROCESS_IP": "node01", "RL_MAIN_PROCESS_PORT": "29500"}
    cmd = launch.accelerate_command(cfg, 8, [], env=env)
    got = {k: cmd[cmd.index(k) + 1] for k in ("--num_processes", "--num_machines", "--machine_rank",
                                              "--main_process_ip", "--main_process_port")}
    assert got == {"--num_processes": "16", "--num_machines": "2", "--machine_rank": "1",
                   "--main_process_ip": "node01", "--main_process_port": "29500"}


def test_exit_code_prefers_rank0_then_first_nonzero_then_launcher(tmp_path):
    assert launch.exit_code(tmp_path, 1) == 1  # nobody recorded anything: torchrun's code
    (tmp_path / "rank1").write_text("143")
    assert launch.exit_code(tmp_path, 1) == 143  # what the workers said, not torchrun's 1
    (tmp_path / "rank0").write_text("0")
    assert launch.exit_code(tmp_path, 1) == 0
    (tmp_path / "rank0").write_text("143")
    assert launch.exit_code(tmp_path, 1) == 143
    assert launch.worker_codes(tmp_path) == {0: 143, 1: 143}


@pytest.mark.parametrize("raise_, code", [(None, 0), (SystemExit(2), 2), (RuntimeError("x"), 1), (SystemExit(None), 0)])
def test_record_exit_code_writes_this_ranks_code(tmp_path, monkeypatch, raise_, code):
    monkeypatch.setenv(launch.EXIT_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(type(raise_)) if raise_ is not None else _nothing():
        with launch.record_exit_code():
            if raise_ is not None:
                raise raise_
    assert (tmp_path / "rank3").read_text() == str(code)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_stderr_filter_holds_back_torchruns_failure_report():
    lines = ["start: held-out accuracy 0.5\n",
             "error: interrupted by SIGTERM at step 10; the run is marked interrupted\n",
             "W1201 21:28:29.335000 6180 .venv/lib/python3.11/site-packages/torch/distributed/elastic/multiprocessing/"
             "api.py:1028] Sending process 6187 closing signal SIGTERM\n",
             "Traceback (most recent call last):\n", "torch.distributed.elastic...ChildFailedError:\n"]
    out = io.StringIO()
    f = launch._StderrFilter(io.StringIO("".join(lines)), out)
    f.run()
    assert out.getvalue() == "".join(lines[:2])
    f.release()  # a worker that did not record its exit: torchrun's report is shown
    assert out.getvalue() == "".join(lines)


def test_launched_detects_workers(monkeypatch):
    monkeypatch.delenv(launch.LAUNCHED_ENV, raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert not launch.launched()
    monkeypatch.setenv("LOCAL_RANK", "0")  # a user's own torchrun: train in place
    assert launch.launched()


def test_supervisor_forwards_signals_and_returns_the_workers_code(tmp_path, monkeypatch):
    """A real supervisor around a stand-in launcher (two sleeping workers that record 143 when SIGTERM reaches them):
    the launcher itself ignores SIGTERM, each worker gets it once, the exit code is theirs, not the launcher's 1."""
    import threading
    import time

    worker = ("import os, signal, sys, time, pathlib\n"
              "def h(s, f):\n"
              "    pathlib.Path(os.environ['RL_EXIT_CODE_DIR'], 'rank' + sys.argv[1]).write_text('143'); sys.exit(143)\n"
              "signal.signal(signal.SIGTERM, h)\n"
              "time.sleep(60)\n")
    fake = ("import subprocess, sys, time\n"
            f"ws = [subprocess.Popen([sys.executable, '-c', {worker!r}, str(r)]) for r in range(2)]\n"
            "codes = [w.wait() for w in ws]\n"
            "sys.exit(1)\n")  # torchrun's code when workers exit non-zero
    monkeypatch.setattr(launch, "accelerate_command", lambda *a, **k: [sys.executable, "-c", fake])
    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM))  # `kill <supervisor>`, once it runs
    timer.start()
    before = signal.getsignal(signal.SIGTERM)
    t0 = time.time()
    try:
        rc, run_dir = launch.run([], 2, Path("x.yaml"))
    finally:
        timer.cancel()
    assert rc == 143 and run_dir is None and time.time() - t0 < 30
    assert signal.getsignal(signal.SIGTERM) is before


def test_cli_checks_the_launch_before_anything_runs(tmp_path):
    res = runner.invoke(app, ["train", "experiment=quickstart", f"runs_dir={tmp_path}", "--num-processes", "2",
                              "--accelerate-config", "nope", "--dry-run"])
    one_line_error(res, "launch.accelerate_config", "ddp", "fsdp2")
    res = runner.invoke(app, ["train", "experiment=quickstart", f"runs_dir={tmp_path}", "launch.num_processes=0"])
    one_line_error(res, "launch.num_processes")
    res = runner.invoke(app, ["train", "--resume", str(tmp_path), "--num-processes", "2"])
    one_line_error(res, "--resume", "--num-processes")
    res = runner.invoke(app, ["train", "experiment=quickstart", f"runs_dir={tmp_path}", "--num-processes", "2",
                              "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "num_processes: 2" in res.output and "launch: 2 processes, accelerate config" in res.output
    assert not any(tmp_path.iterdir())
