"""A training run's bookkeeping in its run directory (`workbench.runs.RunDir`): how a new run directory starts, how a
resumed one is reopened, the segments in meta.json, and how a run that did not complete records why.

- **Segments.** Every process that trains in a run directory (the first one and each `--resume`) adds one segment
  to meta.json's `segments`: pid, host, start, command, from_step, and at its end: seconds, to_step and the outcome
  (`completed`, `failed`, `interrupted (SIGTERM)`, ...). A segment whose process died without recording its end
  (SIGKILL, a machine crash) is closed on the next resume as `dead`, lasting until its last sign of life. The
  summary's `train_seconds` is the sum over segments.
- **Resume.** The run continues from its last checkpoint: metrics.jsonl rows after that step are dropped (they are
  redone), the status is `running` again, and summary.json goes (it is written anew at the end).
- **Lock and heartbeat.** The process holds the run directory's lock from its creation (or, resuming, from before
  the model loads) to the end, and refreshes meta.json's heartbeat meanwhile (`RunDir.acquire`, `start_heartbeat`).
- **The end.** `record_exit` marks a run that raised: `interrupted` (a signal or Ctrl-C: the step and the last
  checkpoint, to resume from) or `failed` (error.txt holds the traceback).

Import-light: no torch, no transformers (accelerate loads inside `open_run`, with several processes).
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

from workbench.config import ConfigError, TrainConfig, to_dict
from workbench.lifecycle import RunInterrupted
from workbench.runs import STATUS_RUNNING, RunDir, heartbeat_age, now_iso, read_jsonl

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # whose git state meta.json records


def new_segment(argv: list[str]) -> dict[str, Any]:
    """This process's segment, as meta.json records it; `from_step` is set when a resumed run is reopened."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": now_iso(), "start_ts": time.time(),
            "from_step": 0, "command": " ".join(argv), "end": None, "seconds": None, "outcome": None}


def lock_for_resume(path: str | Path, argv: list[str]):
    """The run directory to resume and its lock (held from here, before the model loads)."""
    run = RunDir.open(path)
    if not os.access(run.path, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot resume {run.path}: the directory is not writable")
    return run, run.acquire(command=" ".join(argv))  # a live process holding it: RunInUse (a ConfigError)


def open_run(cfg: TrainConfig, overrides: list[str], argv: list[str], state: Any, resumed: RunDir | None = None,
             lock: Any = None, **meta: Any):
    """The run directory a training writes into, on every rank: rank 0 (`state`: accelerate's PartialState) creates
    it (`create`, with `meta` for meta.json) or reopens `resumed` (`reopen`; its `lock` taken already), starts the
    heartbeat, and the path and W&B run id are broadcast to the other ranks. Returns (run, W&B run id, the lock
    rank 0 holds, else None)."""
    from workbench.tracking import new_run_id

    segment = new_segment(argv)
    shared: list[Any] = [None, None]
    taken = None
    if state.is_main_process and resumed is not None:
        previous = reopen(resumed, segment)
        shared = [str(resumed.path), previous.get("wandb_run_id") or new_run_id()]
    elif state.is_main_process:
        run_id = new_run_id()
        run, taken = create(cfg, overrides, argv, segment, run_id if cfg.logger.backend == "wandb" else None, **meta,
                            num_processes=state.num_processes)
        lock, shared = taken, [str(run.path), run_id]
    try:
        if lock is not None:
            lock.start_heartbeat()
        if state.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(shared)
    except BaseException:
        if taken is not None:  # the caller never gets it
            taken.release()
        raise
    return RunDir(Path(shared[0])), shared[1], lock


def create(cfg: TrainConfig, overrides: list[str], argv: list[str], segment: dict[str, Any], run_id: str | None,
           **meta: Any):
    """A new run directory, locked before anything is written into it: config.yaml, overrides.txt and meta.json
    (the start, `segment`, `run_id` as the W&B run id, and `meta`). Returns the run and its lock."""
    run = RunDir.create(cfg.runs_dir, cfg.experiment_name, cfg.name)
    lock = run.acquire(command=" ".join(argv))
    try:
        with open(run.config_file, "w") as f:
            yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
        run.path.joinpath("overrides.txt").write_text("".join(o + "\n" for o in overrides))
        run.start_meta(argv, cfg.seed, PROJECT_ROOT)
        run.write_meta(**meta, wandb_run_id=run_id, segments=[segment])
    except BaseException:
        lock.release()  # the caller never gets it
        raise
    return run, lock


def reopen(run: RunDir, segment: dict[str, Any]) -> dict[str, Any]:
    """A resumed run directory made ready to continue from its last checkpoint (see the module docstring); `segment`
    gets its from_step. Returns meta.json as it was before."""
    meta = run.read_meta()
    last = run.last_checkpoint()
    step = 0
    if last is not None:
        step = json.loads((last / "trainer_state.json").read_text())["global_step"]
    segments = close_dead_segment(run, meta)
    run.truncate_metrics(step)
    segment["from_step"] = step
    run.write_meta(status=STATUS_RUNNING, error=None, signal=None, interrupted_checkpoint=None,
                   end_time=None, pid=os.getpid(),
                   host=socket.gethostname(), heartbeat=now_iso(),
                   resumes=[*meta.get("resumes", []), {"time": time.time(), "from_step": step}],
                   segments=[*segments, segment])
    if run.summary_file.exists():
        run.summary_file.unlink()
    return meta


def close_dead_segment(run: RunDir, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """meta.json's segments, the last one closed if its process died without recording its end (SIGKILL, a crash of
    the machine): it lasted until its last sign of life, the later of its heartbeat and its last metrics row."""
    segments = [dict(s) for s in meta.get("segments", [])]
    if segments and segments[-1].get("seconds") is None and segments[-1].get("start_ts"):
        last = segments[-1]
        ends = []
        age = heartbeat_age(meta)
        if age is not None:
            ends.append(time.time() - age)
        rows = read_jsonl(run.metrics_file)
        ends += [r["time"] for r in rows if isinstance(r.get("time"), (int, float)) and r["time"] >= last["start_ts"]]
        end = max(ends) if ends else last["start_ts"]
        last.update(seconds=round(max(0.0, end - last["start_ts"]), 1), outcome="dead",
                    to_step=max([r.get("step", 0) for r in rows], default=None))
    return segments


def end_segment(run: RunDir, outcome: str, step: int | None, t0: float) -> float:
    """Record the end of this process's segment in meta.json (its seconds: since `t0`); returns the seconds of all
    segments together."""
    segments = [dict(s) for s in run.read_meta().get("segments", [])]
    if segments and segments[-1].get("pid") == os.getpid() and segments[-1].get("seconds") is None:
        segments[-1].update(end=now_iso(), seconds=round(time.time() - t0, 1), outcome=outcome, to_step=step)
        run.write_meta(segments=segments)
    return sum(float(s.get("seconds") or 0.0) for s in segments)


def record_exit(e: BaseException, run: RunDir, main: bool, step: int | None, t0: float) -> RunInterrupted | None:
    """Call while handling `e`, an exception that ended the training at `step`: the run directory records why (rank
    0 writes it; `main`). Ctrl-C or a signal: `interrupted`, and the RunInterrupted to raise instead of `e` is
    returned. Anything else: `failed`, error.txt with the traceback, and None (re-raise `e`). Either exception
    carries `run_dir`, so the CLI can point at the run."""
    if isinstance(e, KeyboardInterrupt):  # RunInterrupted too: SIGINT, SIGTERM, SIGHUP
        import signal

        stop = e if isinstance(e, RunInterrupted) else RunInterrupted(signal.SIGINT, step=step)
        if main and run.status != "completed":
            last = run.last_checkpoint()
            run.mark_interrupted(stop.signame, step=step, checkpoint=last.name if last is not None else None)
            end_segment(run, f"interrupted ({stop.signame})", step, t0)
        stop.run_dir = run.path
        return stop
    if main:
        run.mark_failed(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
        run.path.joinpath("error.txt").write_text(traceback.format_exc())
        end_segment(run, "failed", step, t0)
        try:
            e.run_dir = run.path  # the CLI points at error.txt only when there is one
        except AttributeError:
            pass
    return None
