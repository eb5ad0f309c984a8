"""Run directories: the contract between rl train, eval, sweep and compare (DESIGN.md).

runs/<experiment>/<YYYY-MM-DD_HH-MM-SS>_<name>/
  config.yaml, overrides.txt, meta.json, metrics.jsonl, samples.jsonl, checkpoints/, final/, eval/, wandb/,
  summary.json (written last: its presence means the run completed)

Import-light (no torch): `rl compare` and the CLI read run directories without a model.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.config import ConfigError

STATUS_RUNNING, STATUS_COMPLETED, STATUS_FAILED = "running", "completed", "failed"
_PACKAGES = ("torch", "transformers", "trl", "accelerate", "peft", "hydra-core", "wandb", "reasoning-gym")


def sanitize_name(name: str) -> str:
    """Keep [A-Za-z0-9._-]; path separators and anything else become '-'. Never empty, never '.' or '..'."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return clean or "run"


def _json_safe(obj: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, then rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared like any other file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(_json_safe(data), indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a torn last line (killed writer) is skipped."""
    rows = []
    if not path.exists():
        return rows
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(_json_safe(row)) + "\n")
        f.flush()


def git_info(cwd: Path) -> dict[str, Any]:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        )
        return {"sha": sha or None, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def now_iso() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass
class RunDir:
    path: Path

    # files
    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def meta_file(self) -> Path:
        return self.path / "meta.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def samples_file(self) -> Path:
        return self.path / "samples.jsonl"

    @property
    def summary_file(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def final_dir(self) -> Path:
        return self.path / "final"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def wandb_dir(self) -> Path:
        return self.path / "wandb"

    # creation / opening
    @classmethod
    def create(cls, runs_dir: str | Path, experiment: str, name: str) -> RunDir:
        """Create a new, empty run directory. Two runs started in the same second get distinct directories
        (mkdir is atomic: the loser of a race takes the next suffix)."""
        base = Path(runs_dir) / sanitize_name(experiment)
        base.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        stem = f"{stamp}_{sanitize_name(name)}"
        for i in range(1000):
            path = base / (stem if i == 0 else f"{stem}-{i}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return cls(path)
        raise RuntimeError(f"could not create a run directory under {base}")

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        p = Path(path)
        if not p.is_dir():
            raise ConfigError(f"run directory not found: {p}")
        if not (p / "config.yaml").exists():
            raise ConfigError(f"not a run directory (no config.yaml): {p}")
        return cls(p)

    # meta
    def write_meta(self, **fields: Any) -> dict[str, Any]:
        meta = self.read_meta()
        meta.update(fields)
        atomic_write_json(self.meta_file, meta)
        return meta

    def read_meta(self) -> dict[str, Any]:
        return read_json(self.meta_file) if self.meta_file.exists() else {}

    def start_meta(self, argv: list[str], seed: int, project_root: Path) -> dict[str, Any]:
        return self.write_meta(
            command=" ".join(argv),
            git=git_info(project_root),
            packages=package_versions(),
            python=sys.version.split()[0],
            host=socket.gethostname(),
            platform=platform.platform(),
            seed=seed,
            start_time=now_iso(),
            end_time=None,
            status=STATUS_RUNNING,
            error=None,
        )

    def mark_completed(self, summary: dict[str, Any]) -> None:
        self.write_meta(status=STATUS_COMPLETED, end_time=now_iso(), error=None)
        atomic_write_json(self.summary_file, summary)  # last: its presence means the run completed

    def mark_failed(self, error: str) -> None:
        self.write_meta(status=STATUS_FAILED, end_time=now_iso(), error=error)

    @property
    def status(self) -> str:
        meta = self.read_meta()
        if self.summary_file.exists() and meta.get("status") == STATUS_COMPLETED:
            return STATUS_COMPLETED
        return meta.get("status", "unknown")

    def checkpoints(self) -> list[Path]:
        """Checkpoint folders sorted by step."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for p in self.checkpoints_dir.glob("checkpoint-*"):
            m = re.fullmatch(r"checkpoint-(\d+)", p.name)
            if m and p.is_dir() and (p / "trainer_state.json").exists():
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def last_checkpoint(self) -> Path | None:
        cps = self.checkpoints()
        return cps[-1] if cps else None

    def truncate_metrics(self, max_step: int) -> None:
        """Drop metric and sample rows logged after `max_step` (they will be logged again on resume)."""
        for f in (self.metrics_file, self.samples_file):
            if f.exists():
                rows = [r for r in read_jsonl(f) if r.get("step", 0) <= max_step]
                atomic_write_text(f, "".join(json.dumps(r) + "\n" for r in rows))
