"""Helpers shared by the tests that drive `rl train` processes and signal them (importable: pytest puts tests/ on
sys.path, it has no __init__.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from workbench.runs import RunDir


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for a process started with `err_file` (its stderr, a file: a pipe nobody reads could fill up)."""
    proc.wait(timeout=timeout)
    proc.err_file.seek(0)
    return proc.err_file.read()


def run_dir(runs: Path) -> RunDir | None:
    """The one run directory under `runs` (None before it exists)."""
    dirs = [p.parent for p in runs.rglob("config.yaml")] if runs.exists() else []
    assert len(dirs) <= 1, dirs
    return RunDir(dirs[0]) if dirs else None


def wandb_exit_codes(run: RunDir) -> list[str]:
    """The exit codes W&B's offline segments of the run were finished with (their debug.log)."""
    out = []
    for log in sorted(run.wandb_dir.glob("offline-run-*/logs/debug.log")):
        out += [line.rsplit("got exitcode:", 1)[1].strip() for line in log.read_text().splitlines()
                if "got exitcode:" in line]
    return out
