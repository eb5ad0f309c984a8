"""How a training ends when it is asked to: SIGTERM, SIGHUP and SIGINT.

SIGTERM and SIGHUP (a scheduler's preemption or time limit, a closed terminal) stop the run the way Ctrl-C does,
with one difference: while TRL is training, the first one asks the Trainer to save a checkpoint at the end of the
current step and stop there (a TrainerCallback sets `should_save` and `should_training_stop`), so
`rl train --resume` loses at most the step in flight. If that step has not ended after `RL_STOP_GRACE` seconds
(default 60), or a second signal arrives, or the signal comes outside the training loop (model loading, the start or
end evaluation, the final save), the run stops at once. Either way the run is marked `interrupted` with the signal's
name, W&B is finished, and the process exits with 128 + the signal number (SIGTERM 143, SIGHUP 129, SIGINT 130).

Import-light: no torch, no transformers at import.
"""

from __future__ import annotations

import _thread
import os
import signal
import threading
from typing import Any

GRACE_ENV = "RL_STOP_GRACE"
DEFAULT_GRACE = 60.0
HANDLED = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, n))


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

    def __init__(self, grace: float | None = None):
        self.grace = grace_seconds() if grace is None else grace
        self.received: int | None = None  # the first signal's number
        self.graceful = False  # True while TRL's training loop runs: stop at the end of the step
        self.stopping = False  # a graceful stop has been asked for
        self.held = False  # the run is recording its end: note further signals, do not interrupt that
        self._old: dict[int, Any] = {}
        self._timer: threading.Timer | None = None

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
        if self.received is None:
            self.received = signum
        if self.held:
            return
        if signum != signal.SIGINT and self.graceful and not self.stopping and self.grace > 0:
            self.stopping = True  # GracefulStopCallback stops the Trainer at the end of this step
            self._timer = threading.Timer(self.grace, self._expire)
            self._timer.daemon = True
            self._timer.start()
            return
        raise RunInterrupted(self.received)

    def _expire(self) -> None:
        # the step did not end within the grace period: deliver the signal again, which stops at once (a no-op once
        # the handler has been restored)
        if self.received is not None and self._old:
            _thread.interrupt_main(self.received)


def graceful_stop_callback(signals: StopSignals):
    """A TrainerCallback: once a signal asked for a stop, save a checkpoint at the end of the step and stop."""
    from transformers import TrainerCallback

    class GracefulStopCallback(TrainerCallback):
        def __init__(self):
            self.stopped_at: int | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if signals.stopping:
                control.should_log = True  # the step's metrics row, so metrics.jsonl reaches the checkpoint
                control.should_save = True
                control.should_training_stop = True
                self.stopped_at = int(state.global_step)
            return control

    return GracefulStopCallback()
