"""The metric catalog (workbench/metric_catalog.py) against the README's Metrics table, row for row, and the
catalog's lookups on the names the workbench really logs."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from workbench import metric_catalog as mc

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_rows() -> list[tuple[tuple[str, ...], str, str | None]]:
    """(names, meaning, better) of every row of the table under '## Metrics'."""
    text = README.read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    assert lines[0].replace(" ", "") == "|name|meaning|better|", lines[0]
    rows = []
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip().strip("|").split(" | ")]
        assert len(cells) == 3, ln
        names = tuple(re.findall(r"`([^`]+)`", cells[0]))
        assert names and re.sub(r"`[^`]+`|,|\s", "", cells[0]) == "", cells[0]
        rows.append((names, cells[1], cells[2] or None))
    return rows


def test_readme_table_and_catalog_are_the_same_rows():
    readme = readme_rows()
    catalog = [(r.names, r.meaning, r.better) for r in mc.ROWS]
    assert [r[0] for r in readme] == [r[0] for r in catalog]  # every row, in order, both ways
    for got, want in zip(readme, catalog):
        assert got == want, f"README row {got[0]} differs from the catalog"


def test_every_catalog_metric_is_documented_once():
    names = [m.name for m in mc.METRICS]
    assert len(names) == len(set(names))
    documented = {n for names, _, _ in readme_rows() for n in names}
    assert set(names) == documented
    assert all(m.better in mc.DIRECTIONS + (mc.AS_METRIC,) for m in mc.METRICS)


@pytest.mark.parametrize("name, better, spec, label", [
    ("train/reward", "higher", ".3f", "reward"),
    ("train/accuracy", "higher", ".3f", "acc"),
    ("length/mean", "lower", ".1f", "len"),
    ("entropy/mean", None, ".3f", "H"),
    ("eval/pass@16", "higher", ".3f", "pass@16"),
    ("eval/maj@4", "higher", ".3f", "maj@4"),
    ("eval/length/p90", "lower", ".1f", "p90"),
    ("eval/cost_of_pass", "lower", ".3e", "$/correct"),
    ("eval/tools/dollars_mean", "lower", ".3e", "dollars_mean"),
    ("eval/tools/calls_per_problem", None, ".3f", "calls"),
    ("eval/modes/agentic", None, ".3f", "agentic"),
    ("train/rewards/correctness/mean", "higher", ".3f", "mean"),
    ("shaping/length_kimi/mean", None, ".3g", "mean"),
    ("shaping/entropy_adv/clip_frac", None, ".3g", "clip_frac"),
    ("eval/shaping/cost_tokens/mean", None, ".3g", "mean"),
    ("train/completions/mean_length", None, ".3f", "mean_length"),
    ("perf/num_tokens", None, ".0f", "num_tokens"),
])
def test_lookup_of_logged_names(name, better, spec, label):
    m = mc.lookup(name)
    assert (m.better, m.format_spec, mc.label(name)) == (better, spec, label)


def test_derived_names_take_their_base_metric():
    by = mc.lookup("eval/by/hard/cost_of_pass")
    assert (by.better, by.format_spec, by.label, by.name) == ("lower", ".3e", "$/correct", "eval/by/hard/cost_of_pass")
    assert mc.better("eval/accuracy_start") == "higher" and mc.is_fraction("eval/accuracy_start")
    assert mc.better("eval/by/easy/length/mean") == "lower"
    # an interval's end is never ranked, but prints like its metric
    assert mc.better("eval/accuracy/ci_low") is None and mc.fmt("eval/cost/mean/ci_high", 1.5e-5) == "1.500e-05"
    assert mc.better("eval/by/easy/accuracy/ci_high") is None


def test_unknown_names():
    assert mc.find("no/such") is None and mc.better("no/such") is None
    assert mc.fmt("no/such", 0.5) == "0.500" and mc.label("no/such") == "such" and mc.axis("no/such") == "no/such"
    assert mc.bounds("no/such") == (-math.inf, math.inf)
    with pytest.raises(mc.UnknownMetric) as e:
        mc.lookup("eval/nope")
    assert "'eval/nope'" in str(e.value) and "eval/accuracy" in str(e.value) and "\n" not in str(e.value)


def test_formats_bounds_and_fractions():
    assert mc.fmt("eval/accuracy", None) == "-" and mc.fmt("eval/cost_of_pass", math.inf) == "inf"
    assert mc.fmt("eval/length/mean", 41.25) == "41.2" and mc.fmt("eval/accuracy", 0.5) == "0.500"
    assert mc.bounds("eval/truncation_rate") == (0.0, 1.0) and mc.bounds("entropy/mean") == (0.0, math.inf)
    assert mc.is_fraction("eval/pass@1") and not mc.is_fraction("eval/truncation_rate")
    assert mc.axis("length/mean") == "tokens per completion" and mc.title("eval/accuracy") == "held-out accuracy"


def test_trl_names():
    assert mc.canonical_name("entropy") == "entropy/mean" and mc.canonical_name("reward") == "train/reward"
    assert mc.canonical_name("shaping/x/mean") == "shaping/x/mean"
    assert set(mc.TRL_RENAME.values()) <= {m.name for m in mc.METRICS}


def test_rl_eval_metrics_are_all_in_the_catalog():
    """Every key rl eval's summary writes has a row (so a new metric cannot skip the table and the README)."""
    import numpy as np

    from workbench.evaluation.metrics import summarize_problems

    P, n = 4, 2
    correct = np.array([[1, 0], [1, 1], [0, 0], [1, 0]], dtype=bool)
    out = summarize_problems(
        correct, answers=[["1", "2"]] * P, lengths=np.full((P, n), 5.0), truncated=np.zeros((P, n), dtype=bool),
        costs=np.full((P, n), 1e-5), entropy=np.ones((P, n)), entropy_think=np.ones((P, n)),
        entropy_answer=np.ones((P, n)), tool_calls=np.ones((P, n)), tool_dollars=np.zeros((P, n)),
        turns=np.ones((P, n)), modes=[["a", None]] * P, mode_names=["a"], groups=["easy", "easy", "hard", "hard"],
        n_boot=10)
    assert len(out) > 30
    missing = [k for k in out if mc.find(k) is None]
    assert not missing, missing
