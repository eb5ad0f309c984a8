"""One run on several processes: `rl train --num-processes N [--accelerate-config PRESET]` (the config keys
`launch.num_processes`, `launch.accelerate_config`, so a sweep or a resumed run launches the same way).

The CLI process becomes a small supervisor around `accelerate launch` (which runs torchrun's elastic agent in its own
process, and that starts the N workers: `python -m cli.main train ...`). Accelerate and torchrun do the distribution;
this module only fixes what a batch script meets around them:

* **Exit codes.** torchrun exits 1 whenever a worker exits non-zero, so a run stopped by SIGTERM (every rank exits
  143) looked failed and `[ $? -eq 143 ] && scontrol requeue` never requeued it. Each worker writes the code it exits
  with into a folder (`RL_EXIT_CODE_DIR`); the supervisor exits with rank 0's code (the rank that owns the run
  directory and its status), else the first non-zero one, else the launcher's.
* **Signals.** SIGTERM, SIGHUP and SIGINT to the supervisor are forwarded once to each worker; the workers stop
  together at the end of a step (`workbench.lifecycle`; SIGINT at once). torchrun's own forwarding is turned off for
  them (its handler also SIGKILLs the workers 30 s later, mid-checkpoint, and exits before they have recorded how the
  run ended): the agent ignores the three. Its shutdown wait is set to `RL_STOP_GRACE` + 60 s
  (TORCH_ELASTIC_SHUTDOWN_TIMEOUT); when one worker exits before the others, torchrun still gives them only 30 s
  (that path ignores the setting, torch 2.13), which suffices because the ranks stop at the same step and only
  record the end after it. A scheduler that signals every process of the job step (SLURM's `--signal`, `scancel`, preemption) reaches the workers directly as well; the duplicate is
  absorbed by `lifecycle.DUPLICATE_WINDOW`.
* **Output.** torchrun reports every non-zero worker exit as a failure, with its own traceback ("ChildFailedError",
  a "Failures:" table), also for a run that every rank stopped on purpose with 143. The launcher's stderr passes
  through line by line, but from its first elastic-agent log line or traceback on, it is held back, and printed only
  if some worker did not record how it ended (a segfault, a SIGKILL: then torchrun's report is the information).
* **Ports.** A free local port per launch, so two runs on one node do not collide (`RL_MAIN_PROCESS_PORT` sets it,
  as a multi-node launch needs the same port everywhere).

Import-light (no torch): the supervisor never imports it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Iterator

LAUNCHED_ENV = "RL_LAUNCHED"  # set in the workers: this process is one of N, do not launch again
EXIT_DIR_ENV = "RL_EXIT_CODE_DIR"  # where each worker writes `rank<k>` with its exit code, rank 0 also `run_dir`
CONFIG_ENV = "RL_LAUNCH_CONFIG"  # the supervisor's resolved config (yaml) that the workers train, for a new run
# Several machines (a multi-node SLURM job, one supervisor per node; scripts/slurm/train.slurm sets them from SLURM's
# variables): RL_NUM_MACHINES, RL_MACHINE_RANK (else SLURM_NODEID), RL_MAIN_PROCESS_IP, RL_MAIN_PROCESS_PORT.
FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def launched() -> bool:
    """True in a process that is already one of several (our workers, or a user's own torchrun/accelerate launch)."""
    return os.environ.get(LAUNCHED_ENV) == "1" or "LOCAL_RANK" in os.environ


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accelerate_command(config_file: Path, num_processes: int, train_args: list[str],
                       env: dict[str, str] | None = None) -> list[str]:
    """The `accelerate launch` command line that runs `rl train TRAIN_ARGS` on `num_processes` processes per machine
    (times RL_NUM_MACHINES machines, when set)."""
    env = os.environ if env is None else env
    machines = int(env.get("RL_NUM_MACHINES") or 1)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
           "--num_processes", str(num_processes * machines),
           "--main_process_port", str(env.get("RL_MAIN_PROCESS_PORT") or free_port())]
    if machines > 1:
        rank = env.get("RL_MACHINE_RANK") or env.get("SLURM_NODEID") or 0  # srun: one supervisor per node
        cmd += ["--num_machines", str(machines), "--machine_rank", str(rank),
                "--main_process_ip", str(env.get("RL_MAIN_PROCESS_IP") or "127.0.0.1")]
    return [*cmd, "-m", "cli.main", "train", *train_args]


def _ignore_forwarded() -> None:  # in the launcher's process, before exec: see the module docstring
    # SIGUSR1/2 too: submitit's time-limit signal (--signal=USR2@...) reaches every process of the job step, and a
    # process without a handler dies of it; it is the supervisor's (workbench.sweep.job turns it into SIGTERM, which
    # reaches the workers the usual way). Ignored dispositions survive exec, so the workers ignore them as well.
    for s in (*FORWARDED, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, signal.SIG_IGN)


def worker_codes(exit_dir: Path) -> dict[int, int]:
    """{rank: exit code} of the workers that recorded theirs."""
    codes: dict[int, int] = {}
    for f in Path(exit_dir).glob("rank*"):
        with contextlib.suppress(ValueError):
            codes[int(f.name[4:])] = int(f.read_text().strip())
    return codes


def launch_config():
    """In a worker of a new run: the TrainConfig the supervisor resolved (so a config built in Python, e.g. a sweep
    job's with its runs_dir, name and W&B tags, reaches every rank as it is); else None."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return None
    import yaml

    from workbench.config import to_train_config

    return to_train_config(yaml.safe_load(Path(path).read_text()))


def train_on_processes(cfg, overrides: list[str], resume: str | Path | None = None, progress: bool = True):
    """`workbench.train.train` for `cfg.launch.num_processes` > 1 (the CLI and sweep jobs both come here): check,
    supervise the N workers, return the run directory. A run the workers stopped or that failed raises what
    `train` raises (RunInterrupted, or an exception), with `run_dir`, `exit_code` and `reported` (rank 0 printed the
    one line already)."""
    import yaml

    from workbench.checks import check_train
    from workbench.config import to_dict
    from workbench.lifecycle import RunInterrupted
    from workbench.parallel import accelerate_config_path
    from workbench.runs import RunDir

    check_train(cfg, new_run=resume is None)  # bad input (the launch too): one line here, before N processes start
    config_file = accelerate_config_path(cfg.launch.accelerate_config)
    env: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="rl-launch-") as tmp:
        if resume is None:
            env[CONFIG_ENV] = str(Path(tmp) / "config.yaml")
            Path(env[CONFIG_ENV]).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        args = [*overrides, *(["--resume", str(resume)] if resume is not None else []),
                *([] if progress else ["--quiet"])]
        code, run_dir = run(args, cfg.launch.num_processes, config_file, threads=cfg.threads, extra_env=env)
    if code == 0 and run_dir is not None:
        return RunDir(Path(run_dir))
    if code - 128 in (int(signal.SIGTERM), int(signal.SIGHUP), int(signal.SIGINT)):
        err: BaseException = RunInterrupted(code - 128)
    else:
        err = RuntimeError(f"training on {cfg.launch.num_processes} processes ended with exit code {code} (its "
                           f"workers' output says why)")
        err.exit_code = code  # type: ignore[attr-defined]  (RunInterrupted's is 128 + its signal already)
    err.run_dir = run_dir  # type: ignore[attr-defined]
    err.reported = True  # type: ignore[attr-defined]
    raise err


def exit_code(exit_dir: Path, launcher_code: int) -> int:
    """Rank 0's exit code, else the first non-zero worker code, else the launcher's."""
    codes = worker_codes(exit_dir)
    if 0 in codes:
        return codes[0]
    nonzero = [codes[r] for r in sorted(codes) if codes[r]]
    return nonzero[0] if nonzero else launcher_code


# torchrun's agent logs ("W1201 21:28:29.335000 6180 .../torch/distributed/elastic/...") and tracebacks
_LAUNCHER_NOISE = re.compile(r"^[IWE]\d{4} [\d:.]+ +\d+ .*torch/distributed/elastic/|^Traceback \(most recent call last\)")


class _StderrFilter(threading.Thread):
    """Pass the launcher's stderr (the workers' too: they inherit it) through, holding back torchrun's failure
    report from its first line on (module docstring, Output)."""

    def __init__(self, pipe: IO[str], out: IO[str]):
        super().__init__(daemon=True)
        self.pipe, self.out, self.held, self.holding = pipe, out, [], False

    def run(self) -> None:
        for line in self.pipe:
            if not self.holding and _LAUNCHER_NOISE.search(line):
                self.holding = True
            if self.holding:
                self.held.append(line)
            else:
                self.out.write(line)
                self.out.flush()

    def release(self) -> None:
        self.out.writelines(self.held)
        self.out.flush()


def run(train_args: list[str], num_processes: int, config_file: Path, threads: int = 0,
        stderr: IO[str] | None = None, extra_env: dict[str, str] | None = None) -> tuple[int, str | None]:
    """Run `rl train TRAIN_ARGS` on N processes through accelerate; wait; return the code to exit with and the run
    directory rank 0 trained in (None if it never had one).

    `threads`: the run's `threads` setting; with 0 (automatic) each worker gets its share of this node's free cores
    (`progress.choose_threads`), passed as OMP_NUM_THREADS (torchrun would otherwise set 1, with a warning)."""
    import psutil  # a dependency of accelerate

    from workbench.lifecycle import grace_seconds
    from workbench.progress import choose_threads

    exit_dir = Path(tempfile.mkdtemp(prefix="rl-exit-"))
    env = dict(os.environ)
    env.update({
        LAUNCHED_ENV: "1",
        EXIT_DIR_ENV: str(exit_dir),
        "PET_SIGNALS_TO_HANDLE": "SIGQUIT",  # torchrun's --signals-to-handle: not the ones we forward (docstring)
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(int(grace_seconds() + 60)),
        "OMP_NUM_THREADS": str(choose_threads(threads, processes=num_processes)[0]),
        **(extra_env or {}),
    })
    cmd = accelerate_command(config_file, num_processes, train_args, env)
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_ignore_forwarded,
                            stderr=subprocess.PIPE, text=True, errors="replace")
    errors = _StderrFilter(proc.stderr, stderr or sys.stderr)
    errors.start()
    got: list[int] = []  # the signals this supervisor received, in order
    sent: dict[int, int] = {}  # worker pid -> how many of them it has been sent (each gets each one once)

    def note(signum, frame):
        got.append(signum)

    old = {s: signal.signal(s, note) for s in FORWARDED}
    try:
        while True:
            try:
                rc = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if not got:
                continue
            try:
                workers = psutil.Process(proc.pid).children()  # torchrun's agent runs inside accelerate's process
            except psutil.NoSuchProcess:
                workers = []
            for w in workers:
                while sent.get(w.pid, 0) < len(got):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        w.send_signal(got[sent.get(w.pid, 0)])
                    sent[w.pid] = sent.get(w.pid, 0) + 1
        errors.join(timeout=10)
        if len(worker_codes(exit_dir)) < num_processes:  # a worker ended without saying how: show torchrun's report
            errors.release()
        run_dir = exit_dir / "run_dir"
        return exit_code(exit_dir, rc), (run_dir.read_text() if run_dir.exists() else None)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for f in exit_dir.glob("*"):
            f.unlink()
        exit_dir.rmdir()


def note_run_dir(path: str | Path | None) -> None:
    """In rank 0 of `run`: tell the supervisor which run directory this training used."""
    folder = os.environ.get(EXIT_DIR_ENV)
    if path is not None and folder and os.path.isdir(folder) and os.environ.get("RANK", "0") == "0":
        _write(Path(folder) / "run_dir", str(path))


def _write(f: Path, text: str) -> None:
    tmp = f.with_name(f.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(f)


@contextlib.contextmanager
def record_exit_code() -> Iterator[None]:
    """In a worker of `run`: write the code this process exits with (a `typer.Exit`'s, SystemExit's, 1 for a crash,
    0 otherwise) into RL_EXIT_CODE_DIR/rank<RANK>. Outside a launch it does nothing."""
    folder = os.environ.get(EXIT_DIR_ENV)
    code = 1
    try:
        yield
        code = 0
    except BaseException as e:
        value = getattr(e, "exit_code", getattr(e, "code", 1))
        code = value if isinstance(value, int) else (0 if value is None else 1)
        raise
    finally:
        if folder and os.path.isdir(folder):
            _write(Path(folder) / f"rank{os.environ.get('RANK', '0')}", str(code))
