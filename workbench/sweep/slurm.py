"""What a sweep's SLURM jobs ask for, and whether the cluster can give it, checked before anything is submitted.

`rl sweep --dry-run` prints `describe_slurm` for a submitit_slurm launcher. `check_slurm` asks `sinfo` (where
SLURM's tools are on PATH) for the partitions and their generic resources: a job that asks for a GPU on a partition
without one would otherwise fail inside sbatch ("Invalid generic resource (gres) specification"), after the sweep
directory was made; a partition that does not exist likewise. Without sinfo (a laptop preparing a sweep for a
cluster) nothing is checked.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from workbench.config import ConfigError

SLURM_TARGET_SUFFIX = "SlurmLauncher"  # hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher
GPU_KEYS = ("gpus_per_node", "gpus_per_task")  # keys of the launcher config that ask for GPUs


def is_slurm(launcher: dict[str, Any]) -> bool:
    return str(launcher.get("_target_", "")).endswith(SLURM_TARGET_SUFFIX)


def gpu_request(launcher: dict[str, Any]) -> tuple[str, Any] | None:
    """(the key, its value) of the first setting that asks each job for a GPU, or None."""
    for k in GPU_KEYS:
        if launcher.get(k) not in (None, 0, "0"):
            return f"hydra.launcher.{k}", launcher[k]
    if "gpu" in str(launcher.get("gres") or "").lower():
        return "hydra.launcher.gres", launcher["gres"]
    extra = launcher.get("additional_parameters") or {}
    for k in ("gpus", "gpus_per_node", "gpus-per-node", "gpus_per_task", "gres"):
        v = extra.get(k)
        if v not in (None, 0, "0") and (k != "gres" or "gpu" in str(v).lower()):
            return f"hydra.launcher.additional_parameters.{k}", v
    return None


def describe_slurm(launcher: dict[str, Any], default_partition: str | None = None) -> str:
    """What each SLURM job asks for, in the launcher's own key names (so each can be overridden as printed):
    'each job: partition=<default: cpu>, nodes=1, tasks_per_node=1, no GPU, cpus_per_task=1, mem_gb=2,
    timeout_min=60 (USR2 120 s before: checkpoint, requeue, at most 3 times); at most 32 at once (array_parallelism)'.
    """
    partition = launcher.get("partition")
    if partition is None:
        partition = f"<default: {default_partition}>" if default_partition else "<the cluster's default>"
    req = gpu_request(launcher)
    parts = [f"partition={partition}", f"nodes={launcher.get('nodes', 1)}",
             f"tasks_per_node={launcher.get('tasks_per_node', 1)}"]
    parts.append("no GPU" if req is None else f"{req[0].removeprefix('hydra.launcher.')}={req[1]}")
    parts.append(f"cpus_per_task={launcher.get('cpus_per_task') or '<default: 1>'}")
    mem = [k for k in ("mem_gb", "mem_per_cpu", "mem_per_gpu") if launcher.get(k) is not None]
    parts += [f"{k}={launcher[k]}" for k in mem] or ["mem_gb=<the partition's default>"]
    parts += [f"{k}={launcher[k]}" for k in ("account", "qos", "constraint", "exclude") if launcher.get(k) is not None]
    requeues = int(launcher.get("max_num_timeout") or 0)
    delay = launcher.get("signal_delay_s")
    limit = f"timeout_min={launcher.get('timeout_min')} " + (
        f"(USR2 {delay} s before: checkpoint, requeue, at most {requeues} times)" if requeues else
        f"(max_num_timeout=0: a job at its limit fails)")
    return (f"each job: {', '.join(parts)}, {limit}; at most {launcher.get('array_parallelism')} at once "
            f"(array_parallelism)")


@dataclass
class Partitions:
    """What `sinfo` says: partition -> generic resources of its nodes (e.g. {'gpu:a100:4'}), and the default."""

    gres: dict[str, set[str]] = field(default_factory=dict)
    default: str | None = None

    def has_gpus(self, partition: str) -> bool:
        return any("gpu" in g.lower() for g in self.gres.get(partition, ()))

    def listing(self) -> str:
        return ", ".join(f"{p}{'*' if p == self.default else ''} ({'GPUs' if self.has_gpus(p) else 'no GPUs'})"
                         for p in self.gres)


def parse_sinfo(text: str) -> Partitions:
    """`sinfo -h -o %P|%G` output: one line per partition and distinct gres; the default partition ends in '*'."""
    out = Partitions()
    for line in text.splitlines():
        if "|" not in line:
            continue
        name, gres = line.strip().split("|", 1)
        if name.endswith("*"):
            name = name[:-1]
            out.default = name
        out.gres.setdefault(name, set())
        if gres and gres != "(null)":
            out.gres[name].update(g for g in gres.split(",") if g)
    return out


def sinfo_partitions(timeout: float = 15.0) -> tuple[Partitions | None, str | None]:
    """(partitions, None) from sinfo; (None, None) without sinfo on PATH; (None, why) when sinfo fails."""
    exe = shutil.which("sinfo")
    if exe is None:
        return None, None
    try:
        res = subprocess.run([exe, "-h", "-o", "%P|%G"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"sinfo failed ({type(e).__name__})"
    if res.returncode != 0:
        lines = [x.strip() for x in (res.stderr or res.stdout or "").splitlines() if x.strip()]
        # the fatal line says why ("Could not establish a configuration source": no slurm.conf, no SLURM_CONF)
        line = next((x for x in lines if "fatal:" in x), lines[0] if lines else f"exit code {res.returncode}")
        return None, f"sinfo failed: {line[:200]}"
    return parse_sinfo(res.stdout), None


def check_slurm(launcher: dict[str, Any], partitions: Partitions) -> None:
    """Refuse, before submission, a partition the cluster lacks and a GPU request on a partition without GPUs."""
    req = gpu_request(launcher)
    gpu_parts = [p for p in partitions.gres if partitions.has_gpus(p)]
    fits = ("hydra/launcher=slurm_cpu (or hydra.launcher.gpus_per_node=null)" if not gpu_parts else
            f"hydra.launcher.partition={gpu_parts[0]}" + (", or hydra/launcher=slurm_cpu" if req else ""))
    partition = launcher.get("partition")
    # sbatch --partition=a,b: the job runs on whichever of them can start it first
    names = [p for p in str(partition).split(",") if p] if partition is not None else []
    missing = [p for p in names if p not in partitions.gres]
    if missing:
        hint = f"; for this job: {fits}" if req else "; or hydra.launcher.partition=null (the default partition)"
        raise ConfigError(f"hydra.launcher.partition={missing[0]!r}: no such SLURM partition here; partitions "
                          f"(sinfo): {partitions.listing() or 'none'}{hint}")
    where = names or ([partitions.default] if partitions.default else [])
    if req is not None and where and not any(partitions.has_gpus(p) for p in where):
        raise ConfigError(f"{req[0]}={req[1]}: SLURM partition {','.join(where)!r} has no GPUs (sinfo: "
                          f"{partitions.listing()}); use {fits}")
