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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.config import ConfigError, TrainConfig, to_train_config

STATUS_RUNNING, STATUS_COMPLETED, STATUS_FAILED = "running", "completed", "failed"
STATUS_INTERRUPTED = "interrupted"  # stopped by a signal (SIGINT, SIGTERM, SIGHUP); meta.json says which
STATUS_DEAD = "dead"  # never written: meta.json says running, but no process holds the run any more (SIGKILL, crash)
STATUS_INCOMPLETE = "incomplete"  # never written: meta.json says completed, but summary.json is missing or torn
LOCK_FILE = ".lock"
HEARTBEAT_SECONDS = 30.0  # how often a training refreshes meta.json's heartbeat
STALE_SECONDS = 120.0  # a heartbeat older than this, with no lock to ask, means the process is gone
_META_LOCK = threading.RLock()  # meta.json is read-modify-written by the main thread and the heartbeat thread
_PACKAGES = ("torch", "transformers", "trl", "accelerate", "peft", "hydra-core", "wandb", "reasoning-gym")


def sanitize_name(name: str) -> str:
    """Keep [A-Za-z0-9._-]; path separators and anything else become '-'. Never empty, never '.' or '..'."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return clean or "run"


def json_safe(obj: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
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
    atomic_write_text(path, json.dumps(json_safe(data), indent=2, sort_keys=False) + "\n")


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
        f.write(json.dumps(json_safe(row)) + "\n")
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

    def is_run_dir(self) -> bool:
        """Whether the folder is a run directory: it holds config.yaml and meta.json (written before training)."""
        return self.path.is_dir() and self.config_file.is_file() and self.meta_file.is_file()

    # reading results (rl compare, the report); readers of a live run tolerate a torn or missing file
    def read_config(self) -> dict[str, Any]:
        """config.yaml as a plain dict ({} for an empty or non-mapping file); OSError / yaml.YAMLError when it
        cannot be read. `load_run_config` validates it into a TrainConfig instead."""
        import yaml

        config = yaml.safe_load(self.config_file.read_text()) or {}
        return config if isinstance(config, dict) else {}

    def read_summary(self) -> dict[str, Any] | None:
        """summary.json, or None when it is missing or torn (not a JSON object)."""
        try:
            summary = read_json(self.summary_file)
        except (OSError, ValueError):
            return None
        return summary if isinstance(summary, dict) else None

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_file)

    def read_samples(self) -> list[dict[str, Any]]:
        return read_jsonl(self.samples_file)

    def final_eval(self) -> EvalResult | None:
        """The `rl eval` results of the run's final model: eval/final if present, else the evaluated checkpoint with
        the largest step (then the newest file); None without any readable eval/<checkpoint>/metrics.json."""
        if not self.eval_dir.is_dir():
            return None
        found = []
        for d in sorted(self.eval_dir.iterdir()):
            f = d / "metrics.json"
            if not (d.is_dir() and f.is_file()):
                continue
            try:
                data = read_json(f)
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict):
                continue
            metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else data
            ckpt = str(data.get("checkpoint") or d.name)
            step = data.get("step")
            step = step if isinstance(step, (int, float)) and not isinstance(step, bool) else -1
            found.append(((ckpt == "final" or d.name == "final", step, f.stat().st_mtime), EvalResult(ckpt, d, dict(metrics))))
        return max(found, key=lambda t: t[0])[1] if found else None

    # meta
    def write_meta(self, **fields: Any) -> dict[str, Any]:
        with _META_LOCK:
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
            pid=os.getpid(),
            platform=platform.platform(),
            seed=seed,
            start_time=now_iso(),
            end_time=None,
            heartbeat=now_iso(),
            status=STATUS_RUNNING,
            error=None,
            signal=None,
        )

    def mark_completed(self, summary: dict[str, Any]) -> None:
        self.write_meta(status=STATUS_COMPLETED, end_time=now_iso(), error=None)
        atomic_write_json(self.summary_file, summary)  # last: its presence means the run completed

    def mark_failed(self, error: str) -> None:
        self.write_meta(status=STATUS_FAILED, end_time=now_iso(), error=error)

    def mark_interrupted(self, signal_name: str, step: int | None = None, checkpoint: str | None = None) -> None:
        self.write_meta(status=STATUS_INTERRUPTED, end_time=now_iso(), signal=signal_name,
                        error=f"interrupted by {signal_name}" + (f" at step {step}" if step is not None else ""),
                        interrupted_checkpoint=checkpoint)

    @property
    def status(self) -> str:
        """meta.json's status, except that a `running` run whose process is gone reads `dead` and a `completed` run
        without a readable summary.json (written last) reads `incomplete` (`state`)."""
        return self.state()[0]

    def state(self, meta: dict[str, Any] | None = None) -> tuple[str, str | None]:
        """(status, why): meta.json's status and error, except `dead` (with the liveness reason) for a running run
        whose process is gone and `incomplete` for a completed one whose summary.json is missing, torn or empty."""
        meta = self.read_meta() if meta is None else meta
        status, error = str(meta.get("status") or "unknown"), meta.get("error")
        if status == STATUS_COMPLETED and not self.read_summary():
            return STATUS_INCOMPLETE, error
        if status == STATUS_RUNNING:  # or is it? a SIGKILLed run never got to say otherwise
            alive, why = self.liveness(meta)
            if alive is False:
                return STATUS_DEAD, why
        return status, error

    # one writer: the lock and the liveness of a run
    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    def lock_holder(self) -> dict[str, Any]:
        """Who took the lock last (pid, host, since, command), as written into the lock file by `acquire`."""
        try:
            data = json.loads(self.lock_file.read_text() or "{}")
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def lock_state(self) -> bool | None:
        """True: a live process holds the run's lock; False: nobody does; None: cannot tell (no lock file: a run
        from before locks; or the lock cannot be taken here, e.g. a read-only file system).

        The probe takes the lock for an instant with a fresh descriptor, so it also sees a holder in this process.
        """
        from filelock import FileLock, Timeout

        if not self.lock_file.is_file():
            return None
        probe = FileLock(str(self.lock_file), timeout=0, fallback_to_soft=False, preserve_lock_file=True)
        try:
            probe.acquire()
        except Timeout:
            return True
        except (OSError, RuntimeError):
            return None
        probe.release()
        return False

    def liveness(self, meta: dict[str, Any] | None = None) -> tuple[bool | None, str]:
        """(alive, why) for a run whose meta.json says running: True alive, False dead, None unknown.

        The lock decides where it can (the kernel drops a flock when its process dies, however it dies). A run on
        another host with a fresh heartbeat counts as alive even when its lock looks free, because some network
        file systems do not carry locks between hosts (NFS mounted with `nolock`). Without a lock file (runs from
        before locks) the pid on this host, else the heartbeat's age, decides.
        """
        meta = self.read_meta() if meta is None else meta
        pid, host = meta.get("pid"), meta.get("host")
        holder = f"pid {pid} on {host}" if pid else f"a process on {host}"
        age = heartbeat_age(meta)
        beat = "no heartbeat" if age is None else f"last heartbeat {_ago(age)} ago"
        held = self.lock_state()
        if held:
            return True, f"{holder} holds the run ({beat})"
        here = host == socket.gethostname()
        if held is False:
            if not here and age is not None and age < STALE_SECONDS:
                return True, f"{holder} ({beat}; its lock is not visible from this host)"
            return False, f"{holder} is gone ({beat})"
        if here and pid:
            return (True, f"{holder} is alive ({beat})") if pid_alive(int(pid)) else (False, f"{holder} is gone ({beat})")
        if age is None:
            return None, f"{holder}: cannot tell (no lock file, no heartbeat)"
        return (age < STALE_SECONDS), f"{holder} ({beat})"

    def acquire(self, timeout: float = 5.0, command: str | None = None) -> RunLock:
        """Take the run's lock for this process (one writer per run directory), or raise RunInUse naming the holder.

        The lock file holds the new holder's pid, host, start time and command. A lock left by a dead process is
        free (the kernel released it), so a killed run is taken over without any manual cleanup.
        """
        from filelock import FileLock, Timeout

        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": now_iso(), "command": command}

        def write_holder(fd: int) -> None:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(info) + "\n").encode())

        # fallback_to_soft=False: where flock is missing (some network file systems) fail loudly rather than
        # silently switch to a marker file that a SIGKILL would leave behind
        lock = FileLock(str(self.lock_file), fallback_to_soft=False, preserve_lock_file=True, on_acquired=write_holder)
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise RunInUse(self, self.lock_holder()) from None
        meta = self.read_meta()
        if meta.get("status") == STATUS_RUNNING and meta.get("host") != socket.gethostname():
            age = heartbeat_age(meta)
            if age is not None and age < STALE_SECONDS:  # the lock may not reach across hosts: trust the heartbeat
                lock.release()
                raise RunInUse(self, {"pid": meta.get("pid"), "host": meta.get("host"),
                                      "since": meta.get("start_time"), "heartbeat": age})
        return RunLock(self, lock)

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
        """Before resuming from checkpoint `max_step`: drop the rows the resumed run will write again.

        metrics.jsonl rows are logged at the end of their step: rows up to `max_step` stay. samples.jsonl rows
        carry the global step at generation time, i.e. the rollouts of step s+1 are labelled s (TRL generates a
        step's batch before it increments global_step), so the rows labelled `max_step` were generated after the
        checkpoint and are generated again on resume: only rows before `max_step` stay.
        """
        for f, keep in ((self.metrics_file, lambda s: s <= max_step), (self.samples_file, lambda s: s < max_step)):
            if f.exists():
                rows = [r for r in read_jsonl(f) if keep(r.get("step", 0))]
                atomic_write_text(f, "".join(json.dumps(r) + "\n" for r in rows))


@dataclass
class EvalResult:
    """One evaluation of a run's model (RUN_DIR/eval/<checkpoint>/metrics.json, written by rl eval)."""

    checkpoint: str
    path: Path  # the eval/<checkpoint>/ folder (metrics.json, samples.jsonl)
    metrics: dict[str, Any]


def load_run_config(run: RunDir) -> TrainConfig:
    """A run's config.yaml as a validated TrainConfig: what rl train --resume and rl eval read."""
    import yaml

    with open(run.config_file) as f:
        return to_train_config(yaml.safe_load(f))


class RunInUse(ConfigError):
    """Another process holds the run directory (rl train --resume, rl eval --force): one line naming it."""

    def __init__(self, run: RunDir, holder: dict[str, Any]):
        self.run, self.holder = run, holder
        who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        since = f", started {holder['since']}" if holder.get("since") else ""
        beat = f", last heartbeat {_ago(holder['heartbeat'])} ago" if holder.get("heartbeat") is not None else ""
        super().__init__(f"run directory in use by {who}{since}{beat}: {run.path} (stop that process first, "
                         f"or wait for it to end)")


class RunLock:
    """The held lock of a run directory, plus the heartbeat thread that keeps meta.json's `heartbeat` fresh."""

    def __init__(self, run: RunDir, lock: Any):
        self.run, self._lock = run, lock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_heartbeat(self, interval: float = HEARTBEAT_SECONDS) -> None:
        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    self.run.write_meta(heartbeat=now_iso())
                except Exception:  # noqa: BLE001 - a missed beat must never disturb training
                    pass

        self.run.write_meta(heartbeat=now_iso(), pid=os.getpid(), host=socket.gethostname())
        self._thread = threading.Thread(target=beat, name="rl-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def release(self) -> None:
        self.stop_heartbeat()
        if self._lock.is_locked:
            self._lock.release(force=True)


def heartbeat_age(meta: dict[str, Any]) -> float | None:
    """Seconds since meta.json's heartbeat (None without one)."""
    hb = meta.get("heartbeat")
    if not hb:
        return None
    try:
        return max(0.0, time.time() - dt.datetime.fromisoformat(hb).timestamp())
    except (TypeError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
