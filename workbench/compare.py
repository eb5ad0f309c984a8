"""`rl compare`: load run directories, group runs that differ only by seed, and compare metrics across groups.

Reads only run directories (config.yaml, meta.json, summary.json, metrics.jsonl, samples.jsonl, eval/<ckpt>/);
works offline; imports no torch. numpy/scipy come in through workbench.stats; matplotlib only in
workbench.report.

Rules (also printed in the table footer and the HTML report):

Inputs
  Each PATH may be a run directory (a folder holding config.yaml and meta.json), a glob (expanded here when the
  shell did not), a sweep directory holding index.jsonl (its lines' "run_dir" entries are opened: absolute,
  relative to the current directory, or relative to the sweep directory), or any other folder, which is searched
  recursively for run directories. A PATH that yields no run is an error.

Status
  Only completed runs (meta.json status "completed" and summary.json present) are compared. Failed, interrupted,
  still running, dead (meta.json says running but no process holds the run) or incomplete runs, and sweep jobs
  without a run directory, are listed separately.

Groups
  Runs whose resolved configs are equal except for the keys in IGNORED_KEYS (seed, name, runs_dir, logger,
  hydra, TRL's copies of the seed, output/logging dirs, timestamps) form one group: the seeds of one setting.
  `--group-by KEY` (repeatable) instead groups by the listed key prefixes only (`reward` = the whole reward
  subtree). Groups are ordered by first appearance in the inputs; the baseline is the first group unless
  `--baseline KEY=VALUE` names another (VALUE is parsed as YAML; `null` matches a missing key).

Differing keys
  The flattened config keys whose values are not equal across all groups. When a whole subtree is missing
  in some group (e.g. a reward term only some groups use), the subtree is shown as one column with its
  settings inline (`weight=0.5`) and "-" where absent.

A metric's value for one run
  1. eval/... metrics: the eval results of the run's final checkpoint (eval/final/metrics.json, else the eval
     with the largest step), if they hold the metric;
  2. else summary.json, if it holds the metric;
  3. else metrics.jsonl: for eval/... keys the last logged value; for train-side keys the mean of the last 10
     rows that log the key (summary.json's own rule).
  A group's cell is the mean over its runs (seeds) with a 95% Student-t interval (workbench.stats.mean_ci). A
  group of one run has no spread over seeds; its cell shows that run's own 95% interval over evaluation problems
  (`<metric>/ci_low`, `/ci_high` in its eval results or summary.json) as [low, high], when the run has one.

Significance
  Each group's per-seed values are compared to the baseline group's with Welch's t-test (default), the exact
  permutation test, or a bootstrap test on the difference of means (which falls back to the exact permutation test
  below 5 seeds on a side); "≈" marks p >= 0.05 (not significant), "?" marks an untestable cell (fewer than two
  seeds on one side). Best per column: highest accuracy/pass@k/maj@k/reward, lowest
  length/cost/KL/time; entropy and other metrics have no "better" direction and are not highlighted.
"""

from __future__ import annotations

import csv
import glob as _glob
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.runs import RunDir, read_json, read_jsonl


class CompareError(ValueError):
    """Bad input to rl compare (no runs, unknown metric, ambiguous baseline). The CLI prints one line, exit 2."""


# Config keys that never split groups: run identity, paths, logging, and copies of the seed.
IGNORED_KEYS = (
    "seed",
    "name",
    "runs_dir",
    "logger",
    "hydra",
    "timestamp",
    "run_dir",
    "algo.seed",
    "algo.data_seed",
    "algo.output_dir",
    "algo.logging_dir",
    "algo.run_name",
    "algo.report_to",
)
TAIL_ROWS = 10  # train-side fallback: mean over the last TAIL_ROWS rows of metrics.jsonl that log the key
ALPHA = 0.05
MARK_NOT_SIGNIFICANT = "≈"
MARK_UNTESTABLE = "?"
ABSENT = "-"

LEARNING_CURVE_METRICS = ("train/reward", "train/accuracy", "length/mean", "entropy/mean", "cost/mean")

_MISSING = object()


# ----------------------------------------------------------------------------------------------- helpers


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite_or_none(v: Any) -> float | None:
    if not _is_number(v):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": [1, 2]} -> {"a.b": 1, "c": [1, 2]}. An empty dict stays as a leaf {}."""
    out: dict[str, Any] = {}
    if isinstance(d, dict) and (d or not prefix):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = d
    return out


def _key_matches(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def _ignored(key: str) -> bool:
    return any(_key_matches(key, p) for p in IGNORED_KEYS)


def _hashable(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def get_nested(d: Any, dotted: str) -> Any:
    cur = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def format_value(v: Any) -> str:
    """A config value for display: subtrees inline as k=v, missing as '-'."""
    if v is _MISSING:
        return ABSENT
    if isinstance(v, dict):
        if not v:
            return "{}"
        return ", ".join(f"{k}={format_value(x)}" for k, x in flatten(v).items())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _number_spec(v: float) -> str:
    a = abs(v)
    if a == 0:
        return ".3f"
    if a >= 1000:
        return ".0f"
    if a >= 10:
        return ".1f"
    if a >= 0.01:
        return ".3f"
    return ".2e"


def format_number(v: float | None, spec: str | None = None) -> str:
    """Display precision by magnitude (0.781, 44.0, 2.61e-05), or `spec` (to print an interval like its mean)."""
    if v is None or not math.isfinite(v):
        return "nan" if v is not None and math.isnan(v) else ("inf" if v > 0 else "-inf") if v is not None else "n/a"
    if v == 0 and spec is None:
        return "0"
    return format(v, spec or _number_spec(v))


def metric_direction(name: str) -> str | None:
    """'max', 'min' or None (no better direction, e.g. entropy)."""
    n = name.lower()
    if n.endswith(("/ci_low", "/ci_high")) or "entropy" in n or n.endswith("_std") or "/std" in n:
        return None
    if "tokens_per_s" in n or "samples_per_second" in n:
        return "max"
    if any(s in n for s in ("accuracy", "pass@", "maj@")) or re.search(r"(^|/)reward(s)?(/|$)", n):
        return "max"
    if any(s in n for s in ("length", "cost", "clip_ratio", "truncation", "/kl", "step_time", "seconds")):
        return "min"
    return None


# ----------------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One run directory, read once (metrics rows and samples lazily)."""

    path: Path
    config: dict[str, Any]
    meta: dict[str, Any]
    status: str
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    eval_metrics: dict[str, Any] = field(default_factory=dict)
    eval_checkpoint: str | None = None
    eval_dir: Path | None = None
    _rows: list[dict[str, Any]] | None = None

    @property
    def seed(self) -> Any:
        return self.config.get("seed", self.meta.get("seed"))

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            self._rows = read_jsonl(self.path / "metrics.jsonl")
        return self._rows

    def flat_config(self) -> dict[str, Any]:
        return flatten(self.config)

    def value(self, metric: str) -> tuple[float | None, str | None]:
        """(value, source) by the rule in the module docstring; (None, None) if the run lacks the metric."""
        if metric.startswith("eval/"):
            v = self.eval_metrics.get(metric, _MISSING)
            if v is not _MISSING and _is_number(v):
                return float(v), f"eval/{self.eval_checkpoint}"
        v = self.summary.get(metric)
        if _is_number(v):
            return float(v), "summary.json"
        vals = [float(r[metric]) for r in self.rows() if _is_number(r.get(metric))]
        if not vals:
            return None, None
        if metric.startswith("eval/"):
            return vals[-1], "metrics.jsonl (last)"
        tail = vals[-TAIL_ROWS:]
        return sum(tail) / len(tail), f"metrics.jsonl (last {len(tail)})"

    def interval(self, metric: str) -> tuple[float, float] | None:
        """This run's own 95% interval of a metric over evaluation problems (rl eval's `<metric>/ci_low` and
        `/ci_high`), from the source `value` reads the metric from; None when that source has none."""
        for source in (self.eval_metrics if metric.startswith("eval/") and _is_number(self.eval_metrics.get(metric))
                       else None, self.summary if _is_number(self.summary.get(metric)) else None):
            if source is not None:
                lo, hi = _finite_or_none(source.get(metric + "/ci_low")), _finite_or_none(source.get(metric + "/ci_high"))
                return (lo, hi) if lo is not None and hi is not None else None
        return None

    def metric_names(self) -> set[str]:
        names = {k for k, v in self.eval_metrics.items() if _is_number(v) or v is None}
        names |= {k for k, v in self.summary.items() if _is_number(v)}
        for r in self.rows():
            names |= {k for k, v in r.items() if _is_number(v)}
        names -= {"step", "time", "seed", "steps", "train_seconds", "epoch"}
        return {n for n in names if not n.endswith(("/ci_low", "/ci_high"))}

    def series(self, metric: str) -> tuple[list[float], list[float]]:
        """(steps, values) of a metric over metrics.jsonl rows that log it."""
        steps, vals = [], []
        for i, r in enumerate(self.rows()):
            v = _finite_or_none(r.get(metric))
            if v is not None:
                steps.append(float(r.get("step", i)))
                vals.append(v)
        return steps, vals

    def samples(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "samples.jsonl")

    def eval_samples(self) -> list[dict[str, Any]]:
        return read_jsonl(self.eval_dir / "samples.jsonl") if self.eval_dir else []


def _read_eval(path: Path) -> tuple[dict[str, Any], str | None, Path | None]:
    """Metrics of the final checkpoint's eval: eval/final if present, else the largest step (then newest)."""
    root = path / "eval"
    if not root.is_dir():
        return {}, None, None
    found = []
    for d in sorted(root.iterdir()):
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
        is_final = ckpt == "final" or d.name == "final"
        found.append(((is_final, step if _is_number(step) else -1, f.stat().st_mtime), metrics, ckpt, d))
    if not found:
        return {}, None, None
    _, metrics, ckpt, d = max(found, key=lambda t: t[0])
    return dict(metrics), ckpt, d


def load_run(path: str | Path) -> Run:
    """Read one run directory (tolerant: a torn or missing file leaves that part empty)."""
    import yaml

    p = Path(path)
    rd = RunDir(p)
    try:
        config = yaml.safe_load(rd.config_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        return Run(p, {}, {}, "unreadable", error=f"config.yaml: {e}")
    if not isinstance(config, dict):
        config = {}
    try:
        meta = rd.read_meta()
    except (OSError, ValueError) as e:
        meta = {}
        meta["error"] = f"meta.json: {e}"
    status = str(meta.get("status") or "unknown")
    summary: dict[str, Any] = {}
    if rd.summary_file.exists():
        try:
            s = read_json(rd.summary_file)
            summary = s if isinstance(s, dict) else {}
        except (OSError, ValueError):
            summary = {}
    if status == "completed" and not summary:
        status = "incomplete"  # meta says completed but summary.json (written last) is missing or torn
    error = meta.get("error")
    if status == "running":  # or is it? a SIGKILLed run never got to say otherwise
        alive, why = rd.liveness(meta)
        if alive is False:
            status, error = "dead", why
    eval_metrics, ckpt, eval_dir = _read_eval(p)
    return Run(p, config, meta, status, error, summary, eval_metrics, ckpt, eval_dir)


def is_run_dir(p: Path) -> bool:
    return p.is_dir() and (p / "config.yaml").is_file() and (p / "meta.json").is_file()


def _find_run_dirs(root: Path) -> list[Path]:
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


@dataclass
class Missing:
    """A sweep job listed in index.jsonl whose run directory does not exist (yet)."""

    path: str
    status: str
    error: str | None = None


def _expand_index(sweep: Path) -> tuple[list[Path], list[Missing]]:
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
            targets = [Path(t) for t in sorted(_glob.glob(s))]
        else:
            raise CompareError(f"path not found: {s}")
        runs: list[Path] = []
        for t in targets:
            if is_run_dir(t):
                runs.append(t)
            elif t.is_dir() and (t / "index.jsonl").is_file():
                f, m = _expand_index(t)
                runs += f
                missing += m
            elif t.is_dir():
                runs += _find_run_dirs(t)
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


# ----------------------------------------------------------------------------------------------- groups


@dataclass
class Group:
    index: int
    runs: list[Run]
    config: dict[str, Any]  # nested config of the grouping keys (representative: the first run)
    flat: dict[str, Any]  # flattened grouping keys
    values: dict[str, str] = field(default_factory=dict)  # differing column -> display value
    label: str = ""

    @property
    def title(self) -> str:
        return f"#{self.index + 1} {self.label}".strip()

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(r.name for r in self.runs))


def seed_free(flat: dict[str, Any]) -> dict[str, Any]:
    """A flattened config without the keys that never split groups (IGNORED_KEYS: seed, name, paths, logger)."""
    return {k: v for k, v in flat.items() if not _ignored(k)}


def config_group_id(config: dict[str, Any]) -> str:
    """The name of a run's group: `<experiment_name>-<8 hex digits>`, a hash of its resolved config without the keys
    that never split groups. Runs with equal ids are the seeds of one setting, exactly as `group_runs` groups them;
    rl train uses it as the W&B group, so W&B and rl compare agree.

    >>> config_group_id({"experiment_name": "x", "seed": 1}) == config_group_id({"experiment_name": "x", "seed": 2})
    True
    """
    import hashlib

    digest = hashlib.sha256(_hashable(seed_free(flatten(config))).encode()).hexdigest()[:8]
    return f"{config.get('experiment_name') or 'default'}-{digest}"


def grouping_flat(run: Run, group_by: Sequence[str] | None) -> dict[str, Any]:
    flat = run.flat_config()
    if group_by:
        return {k: v for k, v in flat.items() if any(_key_matches(k, p) for p in group_by)}
    return seed_free(flat)


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in flat.items():
        parts = k.split(".")
        cur = out
        for p in parts[:-1]:
            nxt = cur.get(p)
            if not isinstance(nxt, dict):
                nxt = cur[p] = {}
            cur = nxt
        cur[parts[-1]] = v
    return out


def group_runs(runs: Sequence[Run], group_by: Sequence[str] | None = None) -> list[Group]:
    """Runs with equal grouping keys form a group; groups in order of first appearance."""
    if group_by:
        known = set()
        for r in runs:
            known |= set(r.flat_config())
        for p in group_by:
            if not any(_key_matches(k, p) for k in known):
                tops = sorted({k.split(".")[0] for k in known})
                raise CompareError(f"--group-by {p!r} matches no config key; top-level keys: {', '.join(tops)}")
    groups: dict[str, Group] = {}
    for r in runs:
        flat = grouping_flat(r, group_by)
        key = _hashable(flat)
        if key not in groups:
            groups[key] = Group(len(groups), [], _unflatten(flat), flat)
        groups[key].runs.append(r)
    out = list(groups.values())
    _describe(out)
    return out


def differing_keys(flat_configs: Sequence[dict[str, Any]]) -> list[str]:
    """Flattened keys whose value (or presence) is not the same in every config, in first-seen order."""
    keys = list(dict.fromkeys(k for c in flat_configs for k in c))
    return [k for k in keys if len({_hashable(c.get(k, "\0missing")) for c in flat_configs}) > 1]


def display_columns(nested: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[str]:
    """Differing keys for display: a key under a subtree that is absent in some config collapses to that subtree."""
    cols: list[str] = []
    for k in keys:
        parts = k.split(".")
        col = k
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if any(get_nested(c, prefix) is _MISSING for c in nested):
                col = prefix
                break
        if col not in cols:
            cols.append(col)
    return cols


def _describe(groups: list[Group]) -> None:
    """Fill each group's differing values and a short label."""
    keys = differing_keys([g.flat for g in groups]) if len(groups) > 1 else []
    cols = display_columns([g.config for g in groups], keys)
    for g in groups:
        g.values = {c: format_value(get_nested(g.config, c)) for c in cols}
    # Label: the run name when every group has one distinct name, else the differing values (the value alone when
    # one key differs).
    names = [g.names for g in groups]
    if all(len(n) == 1 for n in names) and len({n[0] for n in names}) == len(groups):
        for g in groups:
            g.label = g.names[0]
        return
    for g in groups:
        if len(cols) == 1 and g.values[cols[0]] != ABSENT:  # one differing key (e.g. --group-by experiment_name)
            g.label = g.values[cols[0]][:60]
            continue
        parts = [f"{c}={v}" for c, v in g.values.items() if v != ABSENT]
        label = "; ".join(parts) if parts else ", ".join(g.names)
        g.label = label if len(label) <= 60 else label[:57] + "..."


def _parse_scalar(text: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):  # YAML 1.1 reads 5e-5 as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def find_baseline(groups: Sequence[Group], spec: str | None) -> int:
    """Index of the baseline group: 0, or the one group whose runs have KEY=VALUE (VALUE as YAML; null = absent)."""
    if not spec:
        return 0
    if "=" not in spec:
        raise CompareError(f"--baseline must be KEY=VALUE (e.g. reward.length_kimi.weight=0.5), got {spec!r}")
    key, _, raw = spec.partition("=")
    key, want = key.strip(), _parse_scalar(raw.strip())
    hits = []
    for g in groups:
        for r in g.runs:
            have = get_nested(r.config, key)
            have = None if have is _MISSING else have
            if have == want or (have is not None and format_value(have) == str(raw.strip())):
                hits.append(g.index)
                break
    if not hits:
        raise CompareError(f"--baseline {spec}: no group has {key}={raw.strip()}; groups: "
                           + "; ".join(g.title for g in groups))
    if len(hits) > 1:
        raise CompareError(f"--baseline {spec} matches {len(hits)} groups ("
                           + "; ".join(groups[i].title for i in hits) + "); use a more specific KEY=VALUE")
    return hits[0]


# ----------------------------------------------------------------------------------------------- statistics


@dataclass
class Cell:
    metric: str
    values: list[float]
    sources: list[str]
    mean: float
    low: float
    high: float
    p: float = float("nan")  # vs the baseline group
    marker: str = ""
    best: bool = False
    over: str = "seeds"  # what the interval is over: "seeds" (Student t), or "problems" (one run's eval interval)

    @property
    def n(self) -> int:
        return len(self.values)

    def text(self) -> str:
        """'0.781 ± 0.031' (half-width of the 95% interval over seeds); for one seed '0.515 [0.470, 0.560]' (the
        run's own interval over evaluation problems, asymmetric in general), or the mean alone."""
        if not math.isfinite(self.mean):
            return "n/a"
        spec = _number_spec(self.mean)
        s = format_number(self.mean, spec)
        if math.isfinite(self.low) and math.isfinite(self.high):
            if self.over == "problems":
                s += f" [{format_number(self.low, spec)}, {format_number(self.high, spec)}]"
            else:
                s += f" ± {format_number((self.high - self.low) / 2, spec)}"
        return s


def cell_for(group: Group, metric: str) -> Cell:
    from workbench.stats import mean_ci

    vals, srcs, runs = [], [], []
    for r in group.runs:
        v, src = r.value(metric)
        if v is not None and math.isfinite(v):
            vals.append(v)
            srcs.append(src or "")
            runs.append(r)
    mean, low, high = mean_ci(vals)
    if len(runs) == 1:  # no spread over seeds: the run's own interval over evaluation problems, when it has one
        ci = runs[0].interval(metric)
        if ci is not None:
            return Cell(metric, vals, srcs, mean, ci[0], ci[1], over="problems")
    return Cell(metric, vals, srcs, mean, low, high)


TESTS = ("welch", "permutation", "bootstrap")


def significance(a: Sequence[float], b: Sequence[float], test: str = "welch") -> float:
    from workbench.stats import bootstrap_diff_test, permutation_test, welch_test

    if test == "welch":
        return welch_test(a, b)
    if test == "permutation":
        return permutation_test(a, b)
    if test == "bootstrap":
        return bootstrap_diff_test(a, b)
    raise CompareError(f"unknown test {test!r}; choose {', '.join(TESTS)}")


def default_metrics(available: set[str]) -> list[str]:
    """eval/pass@1 (else eval/accuracy), eval/length/mean (else length/mean), cost/mean, entropy/mean — those present."""
    wanted = [
        ("eval/pass@1", "eval/accuracy", "train/accuracy"),
        ("eval/length/mean", "length/mean"),
        ("cost/mean",),
        ("entropy/mean",),
    ]
    out = []
    for options in wanted:
        hit = next((m for m in options if m in available), None)
        if hit:
            out.append(hit)
    return out


@dataclass
class Comparison:
    groups: list[Group]
    excluded: list[Run | Missing]
    metrics: list[str]
    baseline: int
    cells: dict[tuple[int, str], Cell]
    columns: list[str]
    test: str
    alpha: float
    group_by: list[str] | None
    available: list[str]
    inputs: list[str]

    @property
    def runs(self) -> list[Run]:
        return [r for g in self.groups for r in g.runs]

    def cell(self, gi: int, metric: str) -> Cell:
        """A cell for any metric (cached; metrics outside the table get no significance marker)."""
        key = (gi, metric)
        if key not in self.cells:
            self.cells[key] = cell_for(self.groups[gi], metric)
        return self.cells[key]

    def test_name(self) -> str:
        from workbench.stats import BOOTSTRAP_MIN_N

        return {
            "welch": "Welch's t-test",
            "permutation": "exact permutation test on the difference of means",
            "bootstrap": (f"bootstrap test on the difference of means (10,000 resamples; the exact permutation test "
                          f"where a side has fewer than {BOOTSTRAP_MIN_N} seeds)"),
        }[self.test]

    def footer(self) -> list[str]:
        base = self.groups[self.baseline]
        one_seed = any(c.over == "problems" for (_, m), c in self.cells.items() if m in self.metrics)
        lines = [
            f"Cells: mean over seeds ± half-width of the 95% Student-t interval"
            + ("; one seed: [low, high] = that run's own 95% interval over evaluation problems (rl eval), "
               "not over seeds. " if one_seed else " (one seed: mean only). ")
            + f"Baseline: {base.title}.",
            f"{MARK_NOT_SIGNIFICANT} = difference to the baseline not significant ({self.test_name()}, two-sided "
            f"p ≥ {self.alpha:g}, per-seed values); {MARK_UNTESTABLE} = not testable (fewer than 2 seeds on one side); "
            f"no mark = significant.",
            "Best per column in bold: higher accuracy/pass@k/maj@k/reward, lower length/cost; entropy is not ranked.",
            "Per-run value: eval results of the final checkpoint (eval/... keys), else summary.json, else metrics.jsonl "
            f"(last value for eval/..., mean of the last {TAIL_ROWS} rows otherwise).",
        ]
        srcs: dict[str, int] = {}
        for (gi, m), c in self.cells.items():
            if m in self.metrics:
                for s in c.sources:
                    srcs[s.split(" (")[0] if s.startswith("metrics") else s] = srcs.get(s, 0) + 1
        if srcs:
            lines.append("Values read from: " + ", ".join(f"{k} ({v})" for k, v in sorted(srcs.items())) + ".")
        return lines

    # ------------------------------------------------------------------ rendering: markdown, csv, rich
    def header(self) -> list[str]:
        return ["#", "runs", *self.columns, "n", *self.metrics]

    def row_texts(self, gi: int, bold: tuple[str, str] = ("", "")) -> list[str]:
        g = self.groups[gi]
        first = f"{gi + 1}" + (" (baseline)" if gi == self.baseline else "")
        row = [first, ", ".join(g.names), *(g.values[c] for c in self.columns), str(len(g.runs))]
        for m in self.metrics:
            c = self.cells[(gi, m)]
            t = c.text()
            if c.best:
                t = f"{bold[0]}{t}{bold[1]}"
            if c.marker:
                t += f" {c.marker}"
            row.append(t)
        return row

    def delta_text(self, gi: int, metric: str) -> str:
        """A group's change against the baseline: 'Δ -2.4 pt, p=0.41' for a rate (accuracy, pass@k, maj@k: points of
        100), 'Δ -26.4 (-60%), p=0.001' otherwise (the difference at the values' precision and in % of the
        baseline's mean); the p-value of the significance test on per-seed values is left out when untestable.
        '' for the baseline or a missing mean."""
        if gi == self.baseline or (gi, metric) not in self.cells:
            return ""
        c, b = self.cells[(gi, metric)], self.cell(self.baseline, metric)
        if not (math.isfinite(c.mean) and math.isfinite(b.mean)):
            return ""
        d = c.mean - b.mean
        if any(s in metric.lower() for s in ("accuracy", "pass@", "maj@")):
            text = f"Δ {100 * d:+.1f} pt"
        else:
            text = f"Δ {format(d, '+' + _number_spec(max(abs(c.mean), abs(b.mean))))}"
            if b.mean != 0:
                text += f" ({100 * d / abs(b.mean):+.0f}%)"
        if math.isfinite(c.p):
            text += f", p={c.p:.2g}"
        return text

    def to_markdown(self) -> str:
        def esc(s: str) -> str:  # table pipes, and no raw HTML when pasted into a PR or paper
            s = s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
            return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

        head = self.header()
        lines = ["| " + " | ".join(esc(h) for h in head) + " |",
                 "|" + "|".join("---:" if i >= len(head) - len(self.metrics) - 1 else "---" for i in range(len(head))) + "|"]
        for gi in range(len(self.groups)):
            cells = [esc(t) for t in self.row_texts(gi)]
            for j, m in enumerate(self.metrics):
                k = len(head) - len(self.metrics) + j
                if self.cells[(gi, m)].best:
                    c = self.cells[(gi, m)]
                    cells[k] = f"**{esc(c.text())}**" + (f" {c.marker}" if c.marker else "")
                delta = self.delta_text(gi, m)
                if delta:
                    cells[k] += f" ({esc(delta)})"
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines += [esc(f) for f in self.footer()]
        if len(self.groups) > 1:
            lines.append("Δ = the group's mean minus the baseline's: in points (of 100) for accuracy, pass@k and maj@k, "
                         "else also in % of the baseline's mean; p = the test's two-sided p-value on per-seed values.")
        if self.excluded:
            lines.append("")
            lines.append("Not compared (not completed):")
            for e in self.excluded:
                err = f" ({esc(' '.join(str(e.error).split())[:200])})" if e.error else ""
                lines.append(f"- {esc(str(e.path))}: {esc(e.status)}{err}")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        head = ["group", "label", "baseline", "runs", "seeds", *self.columns, "n"]
        for m in self.metrics:
            head += [m, f"{m}/ci_low", f"{m}/ci_high", f"{m}/ci_over", f"{m}/n", f"{m}/p_value"]
        w.writerow(head)
        for gi, g in enumerate(self.groups):
            row: list[Any] = [gi + 1, g.label, gi == self.baseline, ";".join(str(r.path) for r in g.runs),
                              ";".join(str(s) for s in g.seeds), *(g.values[c] for c in self.columns), len(g.runs)]
            for m in self.metrics:
                c = self.cells[(gi, m)]
                row += [_csv_num(c.mean), _csv_num(c.low), _csv_num(c.high),
                        c.over if math.isfinite(c.low) else "", c.n, _csv_num(c.p)]
            w.writerow(row)
        return buf.getvalue()

    def rich_tables(self) -> list[Any]:
        from rich.table import Table
        from rich.text import Text

        t = Table(title=f"rl compare: {len(self.groups)} group(s), {len(self.runs)} run(s)", show_lines=False)
        for j, h in enumerate(self.header()):
            right = j >= len(self.header()) - len(self.metrics) - 1
            t.add_column(Text(h), justify="right" if right else "left", overflow="fold")
        for gi in range(len(self.groups)):
            texts = self.row_texts(gi)
            cells = [Text(x) for x in texts[: len(texts) - len(self.metrics)]]
            for m in self.metrics:
                c = self.cells[(gi, m)]
                txt = Text(c.text(), style="bold green" if c.best else "")
                if c.marker:
                    txt.append(f" {c.marker}", style="yellow")
                cells.append(txt)
            t.add_row(*cells, style="cyan" if gi == self.baseline else None)
        t.caption = Text("\n".join(self.footer()), justify="left")
        out = [t]
        if self.excluded:
            x = Table(title="not compared (not completed)")
            x.add_column("run directory", overflow="fold")
            x.add_column("status")
            x.add_column("error", overflow="fold")
            for e in self.excluded:
                x.add_row(Text(str(e.path)), Text(e.status), Text(" ".join(str(e.error or "").split())[:200]))
            out.append(x)
        return out


def _csv_num(v: float) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


def compare(
    paths: Sequence[str | Path],
    metrics: Sequence[str] | None = None,
    group_by: Sequence[str] | None = None,
    baseline: str | None = None,
    test: str = "welch",
    alpha: float = ALPHA,
) -> Comparison:
    """Load, group, and fill the table cells with means, intervals, best flags and significance markers."""
    if test not in TESTS:
        raise CompareError(f"unknown --test {test!r}; choose {', '.join(TESTS)}")
    runs, excluded = load_runs(paths)
    if not runs:
        desc = ", ".join(f"{e.path} ({e.status})" for e in excluded[:5])
        raise CompareError(f"no completed runs to compare among {len(excluded)} run(s): {desc}")
    available: set[str] = set()
    for r in runs:
        available |= r.metric_names()
    if metrics:
        metrics = list(dict.fromkeys(metrics))
        unknown = [m for m in metrics if m not in available]
        if unknown:
            raise CompareError(f"no run has metric {', '.join(unknown)}; available: {', '.join(sorted(available))}")
    else:
        metrics = default_metrics(available)
        if not metrics:
            raise CompareError(f"none of the default metrics found; available: {', '.join(sorted(available))}; "
                               "pick with --metric")
    groups = group_runs(runs, list(group_by) if group_by else None)
    base = find_baseline(groups, baseline)
    cells: dict[tuple[int, str], Cell] = {}
    for g in groups:
        for m in metrics:
            cells[(g.index, m)] = cell_for(g, m)
    for m in metrics:
        direction = metric_direction(m)
        means = [cells[(g.index, m)].mean for g in groups]
        finite = [x for x in means if math.isfinite(x)]
        if direction and finite and len(groups) > 1:
            best = max(finite) if direction == "max" else min(finite)
            for g in groups:
                c = cells[(g.index, m)]
                c.best = math.isfinite(c.mean) and math.isclose(c.mean, best, rel_tol=1e-12, abs_tol=0.0)
        for g in groups:
            if g.index == base:
                continue
            c = cells[(g.index, m)]
            c.p = significance(c.values, cells[(base, m)].values, test)
            c.marker = MARK_UNTESTABLE if math.isnan(c.p) else (MARK_NOT_SIGNIFICANT if c.p >= alpha else "")
    columns = list(groups[0].values) if groups else []
    return Comparison(groups, excluded, list(metrics), base, cells, columns, test, alpha,
                      list(group_by) if group_by else None, sorted(available), [str(p) for p in paths])


def first_present(comp: Comparison, options: Iterable[str]) -> str | None:
    avail = set(comp.available)
    return next((m for m in options if m in avail), None)
