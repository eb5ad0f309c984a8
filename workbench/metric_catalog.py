"""The workbench's metric vocabulary: one table of every metric name with its meaning, better direction, display
format, short label and unit. The README's Metrics table documents the same rows, word for word
(`tests/test_metric_catalog.py` parses it and keeps the two equal).

Readers: the trainer callbacks (`canonical_metrics`' namespaces and TRL rename, the progress line), `rl eval`'s
tables, `rl compare` (best-per-column direction, Δ in points for rates) and its HTML report (axis labels, the range
an interval is drawn within).

A row's names are exact names or patterns: `<term>`, `<key>`, `<mode>`, `<difficulty>` stand for one path segment,
`<name>`, `<metric>` and `...` for any rest, and `@k` for a number (`eval/pass@4`). Three rows derive a name from
another metric (`eval/by/<difficulty>/<metric>`, `<metric>_start`, `<metric>/ci_low`): `lookup` answers with the
base metric's format, label and unit, and its direction where the row says `as the metric`.

Import-light (no torch, no numpy): `rl --help` stays fast.

>>> better("eval/pass@4"), better("eval/length/mean"), better("entropy/mean")
('higher', 'lower', None)
>>> fmt("eval/cost_of_pass", 2.5e-05), fmt("eval/by/hard/length/mean", 41.25), label("train/accuracy")
('2.500e-05', '41.2', 'acc')
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

HIGHER, LOWER = "higher", "lower"
AS_METRIC = "as the metric"  # a derived row (eval/by/<difficulty>/..., <metric>_start): the base metric's direction
DIRECTIONS = (HIGHER, LOWER, None)

# Units: what a value counts. FRACTION: a success rate in [0, 1] (accuracy, pass@k, maj@k), whose differences read
# in points of 100; SHARE: any other proportion in [0, 1].
FRACTION, SHARE, TOKENS, NATS, DOLLARS, SECONDS, COUNT, PER_SECOND = (
    "fraction", "share", "tokens", "nats", "dollars", "seconds", "count", "per second")
# Display precision of one value by unit (rl eval's tables, the progress line): lengths in tenths of a token, $ in
# three significant digits (a rollout costs ~1e-5 $), everything else to three decimals.
UNIT_SPEC = {TOKENS: ".1f", DOLLARS: ".3e", PER_SECOND: ".1f", COUNT: ".3f"}
DEFAULT_SPEC = ".3f"
SCALE_FREE = ".3g"  # a term's weighted contribution or diagnostic: any scale (a cost term's is ~1e-5 $ x its weight)

#: Namespaces a logged key keeps as is (`canonical_metrics`); any other TRL/Trainer key goes under `train/`.
NAMESPACES = ("train/", "eval/", "length/", "entropy/", "cost/", "shaping/", "sampler/", "perf/", "tools/", "modes/", "turns/")
#: TRL/Trainer log keys renamed into the workbench's namespaces (the rest: `train/<key>`).
TRL_RENAME = {
    "entropy": "entropy/mean",
    "step_time": "perf/step_time",
    "num_tokens": "perf/num_tokens",
    "train_runtime": "perf/train_runtime",
    "train_samples_per_second": "perf/train_samples_per_second",
    "train_steps_per_second": "perf/train_steps_per_second",
}


@dataclass(frozen=True)
class Metric:
    """One metric name (or pattern) of the table."""

    name: str
    meaning: str
    better: str | None = None  # HIGHER, LOWER, None (no better direction: entropy, diagnostics), or AS_METRIC
    unit: str = ""
    spec: str = ""  # format spec of one value; "" = by unit (UNIT_SPEC, else DEFAULT_SPEC)
    label: str = ""  # short label (progress line, table column); "" = the name's last segment
    axis: str = ""  # a plot axis: the quantity and its unit; "" = the name
    title: str = ""  # a plot or table title: what the quantity is, in words; "" = the name

    @property
    def format_spec(self) -> str:
        return self.spec or UNIT_SPEC.get(self.unit, DEFAULT_SPEC)

    @property
    def bounds(self) -> tuple[float, float]:
        """The values the metric can take: [0, 1] for rates and shares, [0, inf) for amounts, else unbounded."""
        if self.unit in (FRACTION, SHARE):
            return 0.0, 1.0
        if self.unit:
            return 0.0, math.inf
        return -math.inf, math.inf


@dataclass(frozen=True)
class Row:
    """One row of the README table: names that share a meaning and a direction."""

    names: tuple[str, ...]
    meaning: str
    better: str | None = None


def _row(names: str | tuple[str, ...], meaning: str, better: str | None = None, unit: str = "",
         **each: dict[str, Any]) -> tuple[Row, list[Metric]]:
    """A README row and its metrics; `each` holds per-name fields by name (label, axis, title, spec)."""
    names = (names,) if isinstance(names, str) else names
    unknown = set(each) - set(names)
    if unknown:
        raise ValueError(f"fields for {sorted(unknown)} outside row {names}")
    return Row(names, meaning, better), [Metric(n, meaning, better, unit, **each.get(n, {})) for n in names]


_TABLE = [
    _row("train/reward", "mean summed (weighted) reward of the step's rollouts", HIGHER,
         **{"train/reward": dict(label="reward", axis="reward (weighted sum)")}),
    _row("train/reward_std", "its standard deviation"),
    _row("train/accuracy", "fraction of the step's rollouts the task scorer accepts", HIGHER, FRACTION,
         **{"train/accuracy": dict(label="acc", axis="accuracy (fraction correct)")}),
    _row("train/kl", "KL to the reference model (only when `algo.beta > 0`)", LOWER, NATS),
    _row(("train/loss", "train/grad_norm", "train/learning_rate"), "optimiser quantities"),
    _row("train/rewards/<term>/mean", "a reward term's raw (unweighted) mean over the step's rollouts; "
         "`train/rewards/total/mean` is TRL's mean of the one reward column it receives, the weighted sum", HIGHER),
    _row("train/frac_reward_zero_std", "fraction of groups whose rewards are all equal (no GRPO signal)", None, SHARE),
    _row("train/<name>", "any other TRL/Trainer log key, under its TRL name (e.g. `train/completions/mean_length`, "
         "`train/clip_ratio/region_mean`)"),
    _row("shaping/<term>/mean", "a reward term's weighted contribution to the reward",
         **{"shaping/<term>/mean": dict(spec=SCALE_FREE)}),
    _row("shaping/<term>/<key>", "extra per-term diagnostics (e.g. selected-token fraction of a regularizer)",
         **{"shaping/<term>/<key>": dict(spec=SCALE_FREE)}),
    _row("sampler/<name>/<key>", "a sampler's diagnostics (e.g. APO's forced share and compliance; workbench/sampling.py)",
         **{"sampler/<name>/<key>": dict(spec=SCALE_FREE)}),
    _row("length/mean", "mean completion length in tokens", LOWER, TOKENS,
         **{"length/mean": dict(label="len", axis="tokens per completion")}),
    _row("length/clip_ratio", "fraction of completions that hit `max_completion_length` without EOS", LOWER, SHARE),
    _row(("length/correct_mean", "length/incorrect_mean"), "mean length of correct / incorrect completions", LOWER,
         TOKENS),
    _row("entropy/mean", "mean per-token entropy of the policy on the training batch (TRL's training forward pass)",
         None, NATS, **{"entropy/mean": dict(label="H", axis="entropy (nats per token)", title="policy entropy, nats")}),
    _row(("entropy/think", "entropy/answer"), "the same over tokens up to and including `</think>` / after it", None,
         NATS),
    _row("cost/mean", "$ per rollout at the configured token prices (`price.*`)", LOWER, DOLLARS,
         **{"cost/mean": dict(axis="$ per rollout")}),
    _row("cost/per_correct", "$ spent on the step's rollouts per correct one", LOWER, DOLLARS),
    _row(("tools/calls_mean", "turns/mean"), "with `task.tools`: real tool calls per rollout, assistant turns", None,
         COUNT),
    _row("tools/error_rate", "with `task.tools`: share of tool calls that returned an error", LOWER, SHARE),
    _row("cost/tool_mean", "with `task.tools`: $ on tools per rollout", LOWER, DOLLARS),
    _row(("tools/call_frequency", "tools/failure_frequency"), "TRL's own tool metrics, logged too (its failure "
         "frequency stays 0 because our tools answer errors as text)"),
    _row(("modes/<mode>", "modes/none"), "with a task that has modes: share of rollouts that opened with each mode "
         "tag (none: no valid tag)", None, SHARE),
    _row("eval/accuracy", "held-out sampled accuracy (rl eval; also start/end of `rl train` and every `eval.every` "
         "steps)", HIGHER, FRACTION,
         **{"eval/accuracy": dict(label="accuracy", axis="accuracy (fraction correct)", title="held-out accuracy")}),
    _row(("eval/pass@k", "eval/maj@k"), "unbiased pass@k; majority vote over k samples' extracted answers", HIGHER,
         FRACTION),
    _row(("eval/length/mean", "eval/length/median", "eval/length/p90", "eval/length/correct_mean",
          "eval/length/incorrect_mean"), "held-out completion lengths", LOWER, TOKENS,
         **{"eval/length/mean": dict(label="length", axis="tokens per completion", title="held-out length, tokens")}),
    _row("eval/truncation_rate", "fraction of samples cut at the token budget", LOWER, SHARE,
         **{"eval/truncation_rate": dict(label="trunc")}),
    _row(("eval/entropy/mean", "eval/entropy/think", "eval/entropy/answer"),
         "mean token entropy of the sampling distribution", None, NATS,
         **{"eval/entropy/mean": dict(label="entropy")}),
    _row(("eval/cost/mean", "eval/cost_of_pass"), "$ per sample; $ per correct answer (mean cost / pass rate); with "
         "tools both include tool results read back and tool prices", LOWER, DOLLARS,
         **{"eval/cost_of_pass": dict(label="$/correct")}),
    _row(("eval/tools/calls_per_problem", "eval/turns/mean"), "with tools: calls per sample, assistant turns", None,
         COUNT, **{"eval/tools/calls_per_problem": dict(label="calls")}),
    _row("eval/tools/dollars_mean", "with tools: $ on tools per sample", LOWER, DOLLARS),
    _row("eval/modes/<mode>", "share of samples in each mode (tasks with modes)", None, SHARE),
    _row("eval/shaping/<term>/mean", "the run's reward term on the held-out samples, weighted as in training (rl eval "
         "of a run; each problem's samples form one group)", **{"eval/shaping/<term>/mean": dict(spec=SCALE_FREE)}),
    _row("eval/by/<difficulty>/...", "accuracy, cost, cost of pass, calls and mode shares per difficulty (examples "
         "with a `difficulty`, e.g. easy / hard)", AS_METRIC),
    _row("<metric>_start", "the held-out evaluation before training (summary.json: `eval/accuracy_start`, "
         "`eval/length/mean_start`, ...)", AS_METRIC),
    _row(("<metric>/ci_low", "<metric>/ci_high"), "95% interval over problems: bootstrap, or Wilson for proportions "
         "(see [Evaluation](#evaluation-rl-eval); rl eval files, summary.json)"),
    _row("perf/step_time", "seconds per optimizer step", LOWER, SECONDS),
    _row("perf/tokens_per_s", "completion tokens per second of step time", HIGHER, PER_SECOND),
    _row("perf/num_tokens", "tokens seen so far", None, COUNT, **{"perf/num_tokens": dict(spec=".0f")}),
    _row(("perf/train_runtime", "perf/train_samples_per_second", "perf/train_steps_per_second"),
         "the Trainer's end-of-training totals (W&B only; summary.json has `train_seconds`)"),
]

#: The README table's rows, in order.
ROWS: tuple[Row, ...] = tuple(row for row, _ in _TABLE)
#: Every metric name and pattern, in table order.
METRICS: tuple[Metric, ...] = tuple(m for _, ms in _TABLE for m in ms)

# Derived names: (regex, the base metric's name from its groups, the row). Tried before the plain patterns.
_DERIVED = (
    (re.compile(r"(.+)/ci_low"), r"\1", "<metric>/ci_low"),
    (re.compile(r"(.+)/ci_high"), r"\1", "<metric>/ci_high"),
    (re.compile(r"(.+)_start"), r"\1", "<metric>_start"),
    (re.compile(r"eval/by/[^/]+/(.+)"), r"eval/\1", "eval/by/<difficulty>/..."),
)
_BY_NAME = {m.name: m for m in METRICS}


def _pattern(name: str) -> re.Pattern[str]:
    out = ""
    for part in re.split(r"(<[a-z]+>|\.\.\.|@k)", name):
        if part in ("<name>", "<metric>", "..."):
            out += ".+"
        elif part == "@k":
            out += r"@\d+"
        elif part.startswith("<"):
            out += "[^/]+"
        else:
            out += re.escape(part)
    return re.compile(out)


_PATTERNS = tuple((_pattern(m.name), m) for m in METRICS
                  if re.search(r"<|\.\.\.|@k", m.name) and not m.name.startswith("<") and "/by/" not in m.name)


class UnknownMetric(KeyError):
    """A name no row of the table covers."""

    def __str__(self) -> str:
        return str(self.args[0])


def find(name: str) -> Metric | None:
    """The catalog's entry for a logged name, or None. Derived names (`eval/by/easy/accuracy`,
    `eval/accuracy_start`, `eval/accuracy/ci_low`) answer with their base metric's unit, format and label; the
    direction is the base metric's for `eval/by/...` and `_start`, none for an interval's end."""
    if name in _BY_NAME and "<" not in name:
        return _BY_NAME[name]
    for rx, base_name, row_name in _DERIVED:
        m = rx.fullmatch(name)
        if m:
            base = find(m.expand(base_name))
            if base is None:
                continue
            row = _BY_NAME[row_name]
            return dataclasses.replace(base, name=name, meaning=f"{row.meaning} ({base.name})",
                                       better=base.better if row.better == AS_METRIC else row.better)
    for rx, metric in _PATTERNS:
        if rx.fullmatch(name):
            return metric
    return None


def lookup(name: str) -> Metric:
    """The catalog's entry for a logged name; UnknownMetric (one line, the table's names) if no row covers it."""
    m = find(name)
    if m is None:
        raise UnknownMetric(f"unknown metric {name!r}; the catalog knows: {', '.join(m.name for m in METRICS)}")
    return m


def better(name: str) -> str | None:
    """'higher', 'lower' or None (no better direction, or a name the catalog does not know)."""
    m = find(name)
    return m.better if m is not None else None


def fmt(name: str, value: Any) -> str:
    """One value at the metric's precision; None as '-'; unknown names to three decimals."""
    if value is None:
        return "-"
    m = find(name)
    return format(value, m.format_spec if m is not None else DEFAULT_SPEC)


def label(name: str) -> str:
    """The metric's short label (progress line, table column): `acc`, `len`, `$/correct`, else the name's last
    segment (`eval/pass@4` -> `pass@4`, `eval/modes/agentic` -> `agentic`)."""
    m = find(name)
    return m.label if m is not None and m.label else name.rsplit("/", 1)[-1]


def axis(name: str) -> str:
    """A plot axis for the metric: the quantity and its unit (`tokens per completion`), else the name."""
    m = find(name)
    return m.axis if m is not None and m.axis else name


def title(name: str) -> str:
    """What the metric is, in words (`held-out accuracy`), else the name."""
    m = find(name)
    return m.title if m is not None and m.title else name


def is_fraction(name: str) -> bool:
    """Whether the metric is a success rate (accuracy, pass@k, maj@k), whose differences read in points of 100."""
    m = find(name)
    return m is not None and m.unit == FRACTION


def bounds(name: str) -> tuple[float, float]:
    """The range of values a metric can take (Metric.bounds); unbounded for an unknown name."""
    m = find(name)
    return m.bounds if m is not None else (-math.inf, math.inf)


def canonical_name(key: str) -> str:
    """A TRL/Trainer log key under the workbench's name: TRL_RENAME, a key already in NAMESPACES as is, else
    `train/<key>`."""
    if key in TRL_RENAME:
        return TRL_RENAME[key]
    return key if key.startswith(NAMESPACES) else "train/" + key
