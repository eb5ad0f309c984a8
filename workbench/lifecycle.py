"""How a training ends when it is asked to: SIGTERM, SIGHUP and SIGINT.

SIGTERM and SIGHUP (a scheduler's preemption or time limit, a closed terminal) stop the run the way Ctrl-C does,
with one difference: while TRL is training, the first one asks the Trainer to save a checkpoint at the end of the
current step and stop there (a TrainerCallback sets `should_save` and `should_training_stop`), so
`rl train --resume` loses at most the step in flight. If that step has not ended after `RL_STOP_GRACE` seconds
(default 60), or a second signal arrives, or the signal comes outside the training loop (model loading, the start or
end evaluation, the final save), the run stops at once. Either way the run is marked `interrupted` with the signal's
name, W&B is finished, and the process exits with 128 + the signal number (SIGTERM 143, SIGHUP 129, SIGINT 130).

Several processes (torchrun, accelerate launch, `rl train --num-processes N`): a rank may only stop where every other
rank stops too, or the next collective of the others hangs or aborts ("Is there a distributed collective mismatch").
So with more than one process (`StopSignals.sync`) a SIGTERM/SIGHUP is never acted on alone, whenever it comes: it is
noted, and the ranks agree on it at fixed points that every rank passes (`StopSignals.agree`, an all-reduce of one
integer): the end of every optimizer step (then all ranks save the same checkpoint and stop), and outside the training
loop after the run directory is shared, before the trainer is built and after training. However the signal reached the
processes (all at once, one by one, one rank only), they stop at the same step. The grace timer still bounds the wait.

One signal often arrives twice: a scheduler signals every process of a job step while a launcher forwards the same
signal to its workers. A repeat of the first signal within `DUPLICATE_WINDOW` seconds is taken as the same delivery,
not as the "second signal" that stops at once.

Import-light: no torch, no transformers at import (torch is imported inside `agree`, which only runs in training).
"""

from __future__ import annotations

import _thread
import os
import signal
import threading
import time
from typing import Any

GRACE_ENV = "RL_STOP_GRACE"
DEFAULT_GRACE = 60.0
HANDLED = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, n))
# A repeat of the first signal this soon is the same delivery reaching us twice (the scheduler signals every process of
# the step and the launcher forwards it: the two land milliseconds apart); a person's second `kill` comes later.
DUPLICATE_WINDOW = 2.0


class RunInterrupted(KeyboardInterrupt):
    """A training stopped by a signal. A KeyboardInterrupt, so code that lets Ctrl-C through lets it through too."""

    def __init__(self, signum: int, step: int | None = None):
        self.signum = int(signum)
        self.signame = signal.Signals(self.signum).name
        self.step = step
        super().__init__(self.signame)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def grace_seconds() -> float:
    raw = os.environ.get(GRACE_ENV)
    if raw is None or raw == "":
        return DEFAULT_GRACE
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_GRACE
    return value if value >= 0 else DEFAULT_GRACE


class StopSignals:
    """Handlers for SIGTERM, SIGHUP and SIGINT for the life of one training (main thread only; elsewhere, e.g. in a
    worker thread of a launcher, Python cannot install handlers and the defaults stay). SIGINT stops at once, as
    Ctrl-C always did (it raises RunInterrupted, a KeyboardInterrupt); the others stop gracefully where they can."""

    def __init__(self, grace: float | None = None, sync: bool = False):
        self.grace = grace_seconds() if grace is None else grace
        self.received: int | None = None  # the first signal's number (or, with sync, the one the ranks agreed on)
        self.graceful = False  # True while TRL's training loop runs: stop at the end of the step
        self.sync = sync  # several processes: a signal is only acted on where the ranks agree (agree())
        self.stopping = False  # a graceful stop has been asked for
        self.held = False  # the run is recording its end: note further signals, do not interrupt that
        self._old: dict[int, Any] = {}
        self._timer: threading.Timer | None = None
        self._own: int | None = None  # the first signal this process itself received
        self._own_at: float | None = None  # and when (monotonic)
        self._expired = False  # the grace period ran out: the next delivery stops at once

    @property
    def signame(self) -> str | None:
        return None if self.received is None else signal.Signals(self.received).name

    def install(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        for s in HANDLED:
            try:
                self._old[s] = signal.signal(s, self._handle)
            except (ValueError, OSError):
                pass
        return self

    def restore(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for s, old in self._old.items():
            try:
                signal.signal(s, old if old is not None else signal.SIG_DFL)
            except (ValueError, OSError):
                pass
        self._old = {}

    def hold(self) -> None:
        """From now on a signal is only noted: the run is writing its final status."""
        self.held = True
        self.graceful = False
        if self._timer is not None:
            self._timer.cancel()

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if (self._own == signum and self._own_at is not None and now - self._own_at < DUPLICATE_WINDOW
                and not self._expired):
            return  # our first signal again, delivered twice (see DUPLICATE_WINDOW)
        first = self._own is None  # this process's own first signal (a stop the ranks agreed on does not count)
        if first:
            self._own, self._own_at = signum, now
        if self.received is None:
            self.received = signum
        if self.held:
            return
        deferred = self.graceful or self.sync  # in the training loop, or several ranks that must stop together
        if signum != signal.SIGINT and deferred and first and not self._expired and self.grace > 0:
            self.stopping = True  # GracefulStopCallback / agree() stop the run at the next point the ranks share
            if self._timer is None:
                self._timer = threading.Timer(self.grace, self._expire)
                self._timer.daemon = True
                self._timer.start()
            return
        raise RunInterrupted(self.received)

    def _expire(self) -> None:
        # the step did not end within the grace period: deliver the signal again, which stops at once (a no-op once
        # the handler has been restored)
        self._expired = True
        if self.received is not None and self._old:
            _thread.interrupt_main(self.received)

    def agree(self, device: Any = None) -> int | None:
        """The signal any rank has asked to stop for, agreed by all ranks (an all-reduce, so every rank must call it
        at the same point); it becomes this rank's signal too. None if nobody was signalled. Alone (one process, no
        process group) it is this process's own pending stop."""
        if self.sync:
            import torch
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                flag = torch.tensor([self.received if self.stopping and self.received else 0], dtype=torch.int64,
                                    device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # the largest signal number, if several differ
                agreed = int(flag.item())
                if agreed:
                    if self.received is None:
                        self.received = agreed
                    self.stopping = True
                return agreed or None
        return self.received if self.stopping else None

    def stop_if_agreed(self, device: Any = None, step: int | None = None) -> None:
        """At a point every rank passes outside the training loop: raise RunInterrupted on all ranks at once if any
        rank was signalled."""
        if self.agree(device) is not None:
            raise RunInterrupted(self.received, step=step)


def graceful_stop_callback(signals: StopSignals):
    """A TrainerCallback: once a signal asked for a stop, save a checkpoint at the end of the step and stop."""
    from transformers import TrainerCallback

    class GracefulStopCallback(TrainerCallback):
        def __init__(self):
            self.stopped_at: int | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if signals.sync:
                signals.agree(args.device)  # every rank, every step: they stop at the same step or not at all
            if signals.stopping:
                control.should_log = True  # the step's metrics row, so metrics.jsonl reaches the checkpoint
                control.should_save = True
                control.should_training_stop = True
                self.stopped_at = int(state.global_step)
            return control

    return GracefulStopCallback()
