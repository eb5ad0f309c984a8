"""Which run directories `rl compare`'s PATH arguments name: run directories, globs, sweep directories (index.jsonl)
and folders searched recursively (the Inputs rule in `workbench.compare`'s docstring)."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from workbench.compare.errors import CompareError
from workbench.compare.run import Run, load_run
from workbench.runs import RunDir, read_jsonl


@dataclass
class Missing:
    """A sweep job listed in index.jsonl whose run directory does not exist (yet)."""

    path: str
    status: str
    error: str | None = None


def is_run_dir(p: Path) -> bool:
    return RunDir(p).is_run_dir()


def find_run_dirs(root: Path) -> list[Path]:
    """Run directories under root (not descending into a run directory)."""
    out = []

    def walk(d: Path) -> None:
        if is_run_dir(d):
            out.append(d)
            return
        try:
            children = sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
        except OSError:
            return
        for c in children:
            walk(c)

    walk(root)
    return out


def expand_index(sweep: Path) -> tuple[list[Path], list[Missing]]:
    """The run directories a sweep's index.jsonl names (absolute, relative to the current directory, or relative
    to the sweep directory), and its jobs without one."""
    found, missing = [], []
    for row in read_jsonl(sweep / "index.jsonl"):
        rd = row.get("run_dir")
        if not rd:
            missing.append(Missing(str(row.get("job", row.get("overrides", "?"))), str(row.get("status", "no run_dir")),
                                   row.get("error")))
            continue
        candidates = [Path(rd)] if Path(rd).is_absolute() else [Path.cwd() / rd, sweep / rd]
        hit = next((c for c in candidates if is_run_dir(c)), None)
        if hit is None:
            missing.append(Missing(str(rd), str(row.get("status", "missing")), row.get("error")))
        else:
            found.append(hit)
    return found, missing


def resolve_paths(paths: Sequence[str | Path]) -> tuple[list[Path], list[Missing]]:
    """Run directories named by the inputs, in input order, without duplicates. Raises CompareError for a path
    that matches no run."""
    if not paths:
        raise CompareError("no paths given: pass run directories, globs or sweep directories")
    out: list[Path] = []
    seen: set[Path] = set()
    missing: list[Missing] = []
    for raw in paths:
        s = str(raw)
        if Path(s).exists():
            targets = [Path(s)]
        elif any(c in s for c in "*?["):
            targets = [Path(t) for t in sorted(glob.glob(s))]
        else:
            raise CompareError(f"path not found: {s}")
        runs: list[Path] = []
        for t in targets:
            if is_run_dir(t):
                runs.append(t)
            elif t.is_dir() and (t / "index.jsonl").is_file():
                f, m = expand_index(t)
                runs += f
                missing += m
            elif t.is_dir():
                runs += find_run_dirs(t)
        if not runs:
            if any(t.is_dir() and (t / "index.jsonl").is_file() for t in targets) and missing:
                continue  # a sweep whose jobs have no run directory yet: reported under excluded runs
            raise CompareError(f"no run directory (config.yaml + meta.json) found at {s}")
        for r in runs:
            key = r.resolve()
            if key not in seen:
                seen.add(key)
                out.append(r)
    return out, missing


def load_runs(paths: Sequence[str | Path]) -> tuple[list[Run], list[Run | Missing]]:
    """(completed runs, excluded runs and missing sweep jobs)."""
    dirs, missing = resolve_paths(paths)
    runs = [load_run(d) for d in dirs]
    done = [r for r in runs if r.completed]
    excluded: list[Run | Missing] = [r for r in runs if not r.completed]
    return done, excluded + list(missing)
