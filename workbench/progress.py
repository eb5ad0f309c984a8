"""Progress for long work (warm start, training, evaluation) that a user can see, in a terminal or in a log file.

In a terminal: a rich progress bar. When stdout is not a terminal (a log file, `nohup`, a SLURM job), a rich bar
prints nothing until it ends, so a 15-minute evaluation looked dead; there we print a plain line instead, at most
every `RL_PROGRESS_INTERVAL` seconds (default 30) and once at the end:

    [eval final] 96/400 (24%)  elapsed 0:01:10  eta 0:03:42  acc 0.41

Also the one place for thread policy: `choose_threads`/`apply_threads`, the CPU thread count for torch (`threads=` in
conf/train.yaml and conf/eval.yaml), and `build_threads`, the fixed count the tiny model is built with (so a build
does not depend on the load); and `quiet_imports`, which keeps a stray line of transformers' out of our output.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

DEFAULT_INTERVAL = 30.0


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def is_terminal(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """`update(done, stats="")` and `close()`; a rich bar in a terminal, throttled plain lines elsewhere."""

    def __init__(self, label: str, total: int | None, enabled: bool = True, interval: float | None = None,
                 transient: bool = False, stream: Any = None):
        self.label, self.total, self.enabled = label, total, enabled
        self.stream = stream or sys.stdout
        env = os.environ.get("RL_PROGRESS_INTERVAL")
        self.interval = float(env) if env else (DEFAULT_INTERVAL if interval is None else interval)
        self.start = time.monotonic()
        self.last_print = self.start
        self.done, self.stats = 0, ""
        self._printed_done = -1
        self._bar = self._task = None
        if enabled and is_terminal(self.stream):
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn(f"[bold]{label}[/bold]"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                     transient=transient)
            self._bar.start()
            self._task = self._bar.add_task(label, total=total, stats="")

    def update(self, done: int, stats: str | None = None) -> None:
        if not self.enabled:
            return
        self.done = done
        if stats is not None:
            self.stats = stats
        if self._bar is not None:
            self._bar.update(self._task, completed=done, stats=self.stats)
            return
        now = time.monotonic()
        if now - self.last_print >= self.interval:
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self.start
        parts = [f"[{self.label}]"]
        if self.total:
            pct = 100.0 * self.done / self.total
            eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
            parts += [f"{self.done}/{self.total} ({pct:.0f}%)", f"elapsed {_hms(elapsed)}", f"eta {_hms(eta)}"]
        else:
            parts += [str(self.done), f"elapsed {_hms(elapsed)}"]
        if self.stats:
            parts.append(self.stats)
        print("  ".join(parts), file=self.stream, flush=True)
        self.last_print = now
        self._printed_done = self.done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self.enabled and self._printed_done != self.done:
            self._line(time.monotonic())
        self.enabled = False


def num_cores() -> int:
    """CPU cores this process may run on (its affinity mask on Linux)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def choose_threads(setting: int = 0, processes: int | None = None) -> tuple[int, str]:
    """(torch CPU threads, why). `setting` > 0 is used as is; 0 means automatic:

    * `OMP_NUM_THREADS` when the user set it;
    * otherwise the cores this process may use (divided among the processes of a torchrun/accelerate launch on this
      node), minus the cores other processes keep busy (the 1-minute load average): on a 2-core machine with one
      other busy process, 2 threads ran ~10x slower than 1 (every op waits for the descheduled thread), so a busy
      machine gets fewer threads. Never below 1. `processes`: the processes this node will run (the supervisor of
      `rl train --num-processes` asks before they exist), else LOCAL_WORLD_SIZE.
    """
    if setting > 0:
        return int(setting), "threads=" + str(setting)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    cores = num_cores()
    local = max(1, processes or int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    per_process = max(1, cores // local)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    idle = max(1, int(math.floor(cores - load + 0.5)) // local)
    n = max(1, min(per_process, idle))
    return n, f"auto: {cores} cores, {local} process(es), load {load:.1f}"


def apply_threads(setting: int = 0) -> tuple[int, str]:
    """Set torch's intra-op threads by `choose_threads` (CUDA work is unaffected); returns (threads, why)."""
    import torch

    n, why = choose_threads(setting)
    torch.set_num_threads(n)
    return n, why


#: torch's intra-op thread count for building the tiny model (warm start and the greedy accuracy after it), whatever
#: the cores, the load or OMP_NUM_THREADS. Float sums can depend on how work is split across threads, so a build whose
#: thread count followed the load (the measured chooser this replaced) was not guaranteed to give the same weights on
#: another machine or at another time. 1 because every machine has it, and because under load it is also the fastest
#: (measured on this 2-core machine beside two training processes: 0.4-0.75 s a step on 1 thread, 4.2 s on 2); on an
#: idle 2-core machine it costs ~1.4x (0.38 vs 0.27 s a step: ~4.5 instead of ~3 min for the default 700 steps).
BUILD_THREADS = 1
#: Override of BUILD_THREADS (a positive integer); a build made with another count has its own cache key.
BUILD_THREADS_ENV = "RL_TINY_BUILD_THREADS"


def build_threads() -> int:
    """The tiny model's build thread count: `$RL_TINY_BUILD_THREADS` when set, else BUILD_THREADS."""
    raw = os.environ.get(BUILD_THREADS_ENV, "").strip()
    if not raw:
        return BUILD_THREADS
    if not raw.isdigit() or int(raw) < 1:
        from workbench.errors import ConfigError

        raise ConfigError(f"{BUILD_THREADS_ENV}={raw!r} must be a positive integer (default {BUILD_THREADS})")
    return int(raw)


def quiet_imports() -> None:
    """Import transformers' integrations once with stdout muted: with WANDB_MODE=offline it prints an
    "[INFO] Running in WANDB offline mode" line on import, which would land in the middle of our output."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        import transformers.integrations.integration_utils  # noqa: F401
