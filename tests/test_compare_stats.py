"""rl compare's statistics with known answers: Holm/Bonferroni on textbook examples, the paired t-test when groups
share seeds (and Welch when they do not, or only partly), the smallest resolvable difference and the seeds a target
needs against independent computations, and the CLI options (--correction, --pairing, --resolve) with their errors.
No model is trained."""

from __future__ import annotations

import csv
import io
import math
import re

import numpy as np
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from cli import compare_cmd
from cli.main import app
from cli_asserts import one_line_error
from test_compare import make_run
from workbench import compare as cmp
from workbench import stats

runner = CliRunner()


# ------------------------------------------------------------------------------------------ stats: the functions


def test_holm_textbook_examples():
    # R's p.adjust(c(0.01, 0.02, 0.03, 0.04, 0.05), "holm"): 5*0.01, 4*0.02, 3*0.03, then monotone 0.09, 0.09
    assert stats.adjust_pvalues([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])
    # Holm (1979) by hand, unsorted input, an untestable (NaN) entry outside the family (m = 4):
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005 = 0.02, 3*0.01 = 0.03, 2*0.03 = 0.06, max(1*0.04, 0.06) = 0.06
    adj = stats.adjust_pvalues([0.01, float("nan"), 0.04, 0.03, 0.005], "holm")
    assert math.isnan(adj[1])
    assert adj[[0, 2, 3, 4]] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # at family-wise 0.05 Holm rejects 0.005 and 0.01 (0.02, 0.03 < 0.05) and stops at 0.03 (0.06)
    assert list(adj[[0, 2, 3, 4]] < 0.05) == [True, False, False, True]
    assert stats.adjust_pvalues([0.01, 0.04, 0.3], "bonferroni") == pytest.approx([0.03, 0.12, 0.9])
    assert stats.adjust_pvalues([0.4, 0.6], "bonferroni") == pytest.approx([0.8, 1.0])  # capped at 1
    assert stats.adjust_pvalues([0.01, 0.04], "none") == pytest.approx([0.01, 0.04])
    assert stats.adjust_pvalues([0.2], "holm") == pytest.approx([0.2])  # a family of one
    with pytest.raises(ValueError, match="holm, bonferroni, none"):
        stats.adjust_pvalues([0.1], "bh")
    assert stats.family_alpha(0.05, 4, "holm") == stats.family_alpha(0.05, 4, "bonferroni") == 0.0125
    assert stats.family_alpha(0.05, 4, "none") == 0.05


def test_paired_and_welch_p_against_scipy():
    a, b = [0.72, 0.77, 0.83, 0.69], [0.70, 0.75, 0.80, 0.68]
    assert stats.paired_t_test(a, b) == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-12)
    assert stats.welch_test(a, b) == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    # the seeds move both groups together: paired, the difference is clear; unpaired, it drowns in the seed spread
    assert stats.paired_t_test(a, b) < 0.05 < 0.5 < stats.welch_test(a, b)
    assert stats.paired_t_test([1, 2, 3], [0, 1, 2]) == 0.0  # constant difference
    assert stats.paired_t_test([1, 2, 3], [1, 2, 3]) == 1.0
    assert math.isnan(stats.paired_t_test([1.0], [2.0]))
    assert math.isnan(stats.paired_t_test([1.0, float("nan")], [2.0, 3.0]))  # one pair left
    with pytest.raises(ValueError, match="differ in length"):
        stats.paired_t_test([1, 2, 3], [1, 2])


def _power(delta, se, df, alpha):
    """Reference: two-sided t-test power from scipy's noncentral t, written out here. scipy gives NaN for the far
    tail P(T < -crit) at a large noncentrality, where it is below 1e-12: counted as 0."""
    crit = sps.t.ppf(1 - alpha / 2, df)
    return sps.nct.sf(crit, df, delta / se) + np.nan_to_num(sps.nct.cdf(-crit, df, delta / se))


def test_min_detectable_difference_hand_values():
    # Welch, a = [0, 1, 2], b = [10, 11, 12]: s = 1 each, se = sqrt(1/3 + 1/3), Welch df = 4
    se = math.sqrt(2 / 3)
    mde = stats.min_detectable_difference([0, 1, 2], [10, 11, 12])
    assert _power(mde, se, 4, 0.05) == pytest.approx(0.8, abs=1e-6)
    # paired, differences [0.01, 0.02, 0.03]: s = 0.01, se = 0.01 / sqrt(3), df = 2, at alpha 0.05 / 6
    d = [0.01, 0.02, 0.03]
    mde_p = stats.min_detectable_difference(d, alpha=0.05 / 6)
    assert _power(mde_p, 0.01 / math.sqrt(3), 2, 0.05 / 6) == pytest.approx(0.8, abs=1e-6)
    # simulation: 3 paired seeds whose true difference is the MDE are detected 80% of the time
    rng = np.random.default_rng(0)
    sims = rng.normal(mde_p, 0.01, size=(200_000, 3))
    t = sims.mean(1) / (sims.std(1, ddof=1) / math.sqrt(3))
    assert (np.abs(t) > sps.t.ppf(1 - 0.05 / 12, 2)).mean() == pytest.approx(0.8, abs=0.005)
    # many seeds: the normal limit (z_{0.975} + z_{0.8}) * se = 2.8016 * se
    big = rng.normal(size=20_000)
    big = (big - big.mean()) / big.std(ddof=1)  # sd exactly 1
    assert stats.min_detectable_difference(big) == pytest.approx(2.8016 / math.sqrt(20_000), rel=2e-3)
    assert stats.min_detectable_difference([0.5, 0.5, 0.5]) == 0.0  # no spread: any difference resolves
    assert math.isnan(stats.min_detectable_difference([0.5]))
    assert math.isnan(stats.min_detectable_difference([0.5, 0.6], [0.4]))


def test_seeds_to_resolve_is_the_first_n_with_power():
    def power_at(n, sd_a, sd_b):
        if sd_b is None:
            return _power(0.02, sd_a / math.sqrt(n), n - 1, 0.05)
        va, vb = sd_a**2 / n, sd_b**2 / n
        return _power(0.02, math.sqrt(va + vb), (va + vb) ** 2 / ((va**2 + vb**2) / (n - 1)), 0.05)

    for sd_a, sd_b in [(0.05, None), (0.01, 0.01), (0.03, 0.05)]:
        n = stats.seeds_to_resolve(0.02, sd_a, sd_b)
        assert power_at(n, sd_a, sd_b) >= 0.8 > power_at(n - 1, sd_a, sd_b), (sd_a, sd_b, n)
    # paired sd 0.05 for a 2-point target: the normal approximation ((1.96 + 0.84) * 0.05 / 0.02)^2 = 49, t adds a few
    assert 49 <= stats.seeds_to_resolve(0.02, 0.05) <= 55
    assert stats.seeds_to_resolve(0.02, 0.0, 0.0) == 2
    assert stats.seeds_to_resolve(0.02, 100.0) is None  # beyond MAX_SEEDS
    assert stats.seeds_to_resolve(0.02, float("nan")) is None


# ------------------------------------------------------------------------------------------ rl compare: pairing

BASE = [0.70, 0.75, 0.80]
SHIFTED = [0.72, 0.77, 0.83]  # each seed +2..3 points: the seed spread (5 points) hides it unless paired


def _runs(root, seeds_base=(0, 1, 2), seeds_group=(0, 1, 2), group=SHIFTED, base=BASE):
    for s, v in zip(seeds_base, base):
        make_run(root, f"b{s}", {"name": "plain", "seed": s}, summary={"eval/accuracy": v, "length/mean": 40.0 + s})
    for s, v in zip(seeds_group, group):
        make_run(root, f"g{s}", {"name": "method", "seed": s, "algo": {"learning_rate": 1e-4}},
                 summary={"eval/accuracy": v, "length/mean": 30.0 + 2 * s})
    return root


def test_shared_seeds_are_tested_paired(tmp_path):
    comp = cmp.compare([_runs(tmp_path / "runs")], metrics=["eval/accuracy"])
    c = comp.cells[(1, "eval/accuracy")]
    assert c.pairs == 3
    assert c.p == pytest.approx(sps.ttest_rel(SHIFTED, BASE).pvalue, rel=1e-12)
    assert c.p < 0.05 and c.marker == ""  # one test: Holm leaves it as it is
    assert c.p_adj == c.p and comp.family == 1
    assert "paired (n seeds): #2 (3)" in " ".join(comp.footer())
    # --pairing off: Welch on the same runs, and the difference is not significant
    off = cmp.compare([tmp_path / "runs"], metrics=["eval/accuracy"], pairing="off")
    c = off.cells[(1, "eval/accuracy")]
    assert c.pairs == 0 and c.marker == cmp.MARK_NOT_SIGNIFICANT
    assert c.p == pytest.approx(sps.ttest_ind(SHIFTED, BASE, equal_var=False).pvalue, rel=1e-12)
    assert "Welch: #2" in " ".join(off.footer()) and "pairing off" in " ".join(off.footer())
    # the permutation test is a two-sample test: it does not pair
    assert cmp.compare([tmp_path / "runs"], metrics=["eval/accuracy"], test="permutation").cells[(1, "eval/accuracy")].pairs == 0


def test_other_seeds_or_a_partial_pairing_are_tested_with_welch(tmp_path):
    other = cmp.compare([_runs(tmp_path / "a", seeds_group=(3, 4, 5))], metrics=["eval/accuracy"])
    c = other.cells[(1, "eval/accuracy")]
    assert c.pairs == 0 and c.partners == 0
    assert c.p == pytest.approx(sps.ttest_ind(SHIFTED, BASE, equal_var=False).pvalue, rel=1e-12)
    assert "Welch: #2" in " ".join(other.footer()) and "partial" not in " ".join(other.footer())
    partial = cmp.compare([_runs(tmp_path / "b", seeds_group=(0, 1, 7))], metrics=["eval/accuracy"])
    c = partial.cells[(1, "eval/accuracy")]
    assert c.pairs == 0 and c.partners == 2 and c.n == 3  # every run is kept, unpaired
    assert c.p == pytest.approx(sps.ttest_ind(SHIFTED, BASE, equal_var=False).pvalue, rel=1e-12)
    assert "partial pairing" in " ".join(partial.footer()) and "#2 (2 of its 3 runs have one)" in " ".join(partial.footer())


def test_group_by_pairs_on_seed_and_the_keys_a_group_pools(tmp_path):
    """--group-by pools settings: a partner has the same seed and the same values of the pooled keys."""
    root = tmp_path / "runs"
    for lr in (1e-4, 2e-4):
        for s, v in zip((0, 1), (0.70, 0.80)):
            make_run(root, f"b{s}_{lr}", {"experiment_name": "plain", "seed": s, "algo": {"learning_rate": lr}},
                     summary={"eval/accuracy": v + lr * 100})
            make_run(root, f"g{s}_{lr}", {"experiment_name": "method", "seed": s, "algo": {"learning_rate": lr},
                                          "reward": {"length_kimi": {"weight": 0.5}}},
                     summary={"eval/accuracy": v + lr * 100 + 0.02 + 0.001 * s})
    comp = cmp.compare([root], metrics=["eval/accuracy"], group_by=["experiment_name"])
    c = comp.cells[(1, "eval/accuracy")]
    assert c.pairs == 4  # (seed, lr) partners; the reward keys differ between the groups, not within them
    g, b = comp.groups[1], comp.groups[0]
    key = {r.path.name[1:]: v for r, v in zip(c.runs, c.values)}
    base = {r.path.name[1:]: v for r, v in zip(comp.cells[(0, "eval/accuracy")].runs, comp.cells[(0, "eval/accuracy")].values)}
    names = sorted(key)
    assert c.p == pytest.approx(sps.ttest_rel([key[n] for n in names], [base[n] for n in names]).pvalue, rel=1e-12)
    assert len(g.runs) == len(b.runs) == 4


# ------------------------------------------------------------------------------------------ correction, MDE, CLI


def _three_groups(root):
    for s in range(3):
        make_run(root, f"b{s}", {"name": "plain", "seed": s}, summary={"eval/accuracy": BASE[s], "length/mean": 40.0 + s})
        make_run(root, f"g{s}", {"name": "m1", "seed": s, "algo": {"learning_rate": 1e-4}},
                 summary={"eval/accuracy": SHIFTED[s], "length/mean": 30.0 + 2 * s})
        make_run(root, f"h{s}", {"name": "m2", "seed": s, "algo": {"learning_rate": 2e-4}},
                 summary={"eval/accuracy": BASE[s] + (0.0, 0.01, -0.005)[s], "length/mean": 40.0 + s + (0.5, -0.5, 1)[s]})
    return root


def test_holm_over_the_table_and_the_none_path(tmp_path):
    root = _three_groups(tmp_path / "runs")
    metrics = ["eval/accuracy", "length/mean"]
    comp = cmp.compare([root], metrics=metrics)
    tested = [comp.cells[k] for k in comp.tested()]
    assert comp.family == 4 and len(tested) == 4
    raw = [c.p for c in tested]
    assert [c.p_adj for c in tested] == pytest.approx(list(stats.adjust_pvalues(raw, "holm")))
    for c in tested:  # the marks follow the adjusted p
        assert c.marker == (cmp.MARK_NOT_SIGNIFICANT if c.p_adj >= 0.05 else "")
    foot = " ".join(comp.footer())
    assert "Holm's step-down correction over 4 test(s): 2 group(s) × 2 metric(s)" in foot
    # a raw p under 0.05 that Holm lifts over it: significant uncorrected, not after
    lifted = [c for c in tested if c.p < 0.05 <= c.p_adj]
    assert lifted, [(c.p, c.p_adj) for c in tested]
    md = comp.to_markdown()
    assert "p_adj=" in md and "Holm" in md
    rows = list(csv.DictReader(io.StringIO(comp.to_csv())))
    assert float(rows[1]["eval/accuracy/p_value"]) == pytest.approx(comp.cells[(1, "eval/accuracy")].p)
    assert float(rows[1]["eval/accuracy/p_adjusted"]) == pytest.approx(comp.cells[(1, "eval/accuracy")].p_adj)
    assert rows[1]["eval/accuracy/paired_seeds"] == "3"
    # --correction none: p_adj is the raw p, the marks follow it, the footer says so
    none = cmp.compare([root], metrics=metrics, correction="none")
    for k in none.tested():
        c = none.cells[k]
        assert c.p_adj == c.p and c.marker == (cmp.MARK_NOT_SIGNIFICANT if c.p >= 0.05 else "")
    assert any(none.cells[k].marker == "" for k in none.tested() if none.cells[k].p in [c.p for c in lifted])
    assert "not corrected (--correction none)" in " ".join(none.footer())
    assert "p_adj" not in none.to_markdown() and "p=" in none.to_markdown()
    bonf = cmp.compare([root], metrics=metrics, correction="bonferroni")
    assert [bonf.cells[k].p_adj for k in bonf.tested()] == pytest.approx([min(1, 4 * p) for p in raw])


def test_mde_line_and_resolve(tmp_path):
    root = _runs(tmp_path / "runs")
    comp = cmp.compare([root], metrics=["eval/accuracy", "length/mean"], resolve=["eval/accuracy=0.02"])
    c = comp.cells[(1, "eval/accuracy")]
    diffs = np.subtract(SHIFTED, BASE)
    level = 0.05 / 2  # two tests (one group x two metrics), Holm's strictest step
    assert c.mde == pytest.approx(stats.min_detectable_difference(diffs, alpha=level))
    assert _power(c.mde, diffs.std(ddof=1) / math.sqrt(3), 2, level) == pytest.approx(0.8, abs=1e-6)
    assert c.seeds_needed == stats.seeds_to_resolve(0.02, diffs.std(ddof=1), alpha=level)
    foot = " ".join(comp.footer())
    assert f"eval/accuracy: #2 {100 * c.mde:.1f} pt (3 paired seeds)" in foot
    assert f"To resolve 2.0 pt in eval/accuracy (α = 0.025, power 0.8, observed spread): needs N seeds per group: " \
           f"#2 {c.seeds_needed}" in foot
    assert comp.cells[(1, "length/mean")].seeds_needed is None  # no target given for it
    every = cmp.compare([root], metrics=["eval/accuracy", "length/mean"], resolve=["0.5"])
    assert set(every.resolve) == {"eval/accuracy", "length/mean"}
    one = tmp_path / "one"
    make_run(one, "b", {"name": "plain"}, summary={"eval/accuracy": 0.7})
    make_run(one, "g", {"name": "m", "algo": {"learning_rate": 1e-4}}, summary={"eval/accuracy": 0.8})
    single = cmp.compare([one], metrics=["eval/accuracy"], resolve=["0.02"])
    assert "no comparison has two seeds on both sides" in " ".join(single.footer())
    # two arms that share every per-seed value (e.g. evaluation before training, same base model): no spread to size
    # from, so the footer says so instead of "0.0 pt"
    same = _runs(tmp_path / "same", group=BASE)
    foot = " ".join(cmp.compare([same], metrics=["eval/accuracy"]).footer())
    assert "eval/accuracy: #2 any (no spread over seeds) (3 paired seeds)" in foot and "0.0 pt" not in foot
    with pytest.raises(cmp.CompareError, match="not a metric of the table"):
        cmp.compare([root], metrics=["eval/accuracy"], resolve=["eval/pass@1=0.02"])
    with pytest.raises(cmp.CompareError, match="positive difference"):
        cmp.compare([root], metrics=["eval/accuracy"], resolve=["two"])


def test_cli_correction_pairing_resolve_and_errors(tmp_path):
    root = _three_groups(tmp_path / "runs")
    res = runner.invoke(app, ["compare", str(root), "-m", "eval/accuracy", "--format", "md", "--correction", "none"])
    assert res.exit_code == 0, res.output
    assert "not corrected (--correction none)" in res.output and "p_adj" not in res.output
    res = runner.invoke(app, ["compare", str(root), "-m", "eval/accuracy", "--resolve", "0.02"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert re.search(r"needs N seeds per group: #2 \d+, #3 \d+", " ".join(res.output.split())), res.output
    assert "Holm" in res.output and "paired (n seeds)" in res.output
    one_line_error(runner.invoke(app, ["compare", str(root), "--correction", "bh"]),
                   "--correction 'bh'", "holm, bonferroni, none")
    one_line_error(runner.invoke(app, ["compare", str(root), "--pairing", "always"]), "--pairing 'always'", "auto, off")
    one_line_error(runner.invoke(app, ["compare", str(root), "--resolve", "-1"]), "--resolve", "positive")
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["compare", str(root), "-m", "eval/accuracy", "--report", str(out), "--correction",
                              "bonferroni", "--format", "md"])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert "Bonferroni correction over 2 test(s)" in html and "raw p=" in html and "bonferroni-adjusted p=" in html
    assert "--correction bonferroni" in html  # the command line in the report


def test_cli_help_lists_the_choices_the_library_accepts():
    assert compare_cmd.CORRECTION_CHOICES == ", ".join(stats.CORRECTIONS)
    assert compare_cmd.PAIRING_CHOICES == ", ".join(cmp.PAIRINGS)
