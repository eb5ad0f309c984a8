"""Issue 13's miniature replication: the tiny model's trace-length knob (model.tiny.verbose_style), the replication
experiments (one shared setting, one method each), its sweep preset and script, and the report's rule for when the
entropy-law fit is shown. No model is trained."""

from __future__ import annotations

import importlib.util
import math
import random
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from workbench.compare import compare, flatten
from workbench.compose import CONF_DIR, compose
from workbench.config import ConfigError, TinyModelConfig, to_train_config
from workbench.models import tiny as tiny_mod
from workbench.report import MIN_FIT_POINTS, entropy_law, fit_omission, render_report
from workbench.tasks.base import Task, padded_trace, split_think
from workbench.tasks.gym import ArithmeticTask, chain_trace, chain_working

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["replication", "replication_kimi", "replication_drpo", "replication_hapo", "replication_pear",
           "replication_kl_cov", "replication_clip_cov"]


# ----------------------------------------------------------------------------------------------- the knob


@pytest.mark.parametrize("expression", ["63 - 45", "12 + 34", "99 + 99", "10 - 93", "63 + 40", "12 + 34 - 5"])
def test_working_trace_is_the_steps_without_restating_or_checking_and_padding_restates_it(expression):
    steps, working = chain_trace(expression, True), chain_working(expression)
    w_think, w_answer, _ = split_think(working)
    s_think, s_answer, _ = split_think(steps)
    assert w_answer == s_answer
    body = w_think.removeprefix("<think>")
    assert body in s_think and "check" not in working  # the same tens-then-ones steps, nothing else
    assert len(working) < len(steps)
    padded = padded_trace(working)
    p_think, p_answer, closed = split_think(padded)
    assert closed and p_answer == w_answer
    assert p_think.removeprefix("<think>") == ". ".join([body] * 3)  # nothing but restating
    assert len(padded) > len(steps) - 20  # about as long as the step-by-step trace, or longer


def test_padded_trace_needs_a_think_trace_and_two_copies():
    with pytest.raises(ValueError, match="padded_trace"):
        padded_trace("18")
    with pytest.raises(ValueError, match="copies"):
        padded_trace("<think>1+1=2</think>2", copies=1)


class Add(Task):
    """One-digit a+b whose traces are chain_trace's (the default task's format), and that counts RNG draws."""

    name = "add"

    def __init__(self) -> None:
        self.calls = 0

    def examples(self, split: str) -> list[dict[str, Any]]:
        pairs = [(a, b) for a in range(10) for b in range(10)]
        rows = pairs[:80] if split == "train" else pairs[80:]
        return [{"prompt": f"{a}+{b}=", "answer": str(a + b), "id": i, "expression": f"{a} + {b}"}
                for i, (a, b) in enumerate(rows)]

    def extract_answer(self, completion: str) -> str | None:
        return split_think(completion)[1] or None

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return float(self.extract_answer(completion) == example["answer"])

    def warm_start_completion(self, example: dict[str, Any], rng: random.Random, verbose: bool) -> str | None:
        self.calls += 1
        return chain_trace(example["expression"], verbose)

    def warm_start_working(self, example: dict[str, Any], rng: random.Random) -> str | None:
        return chain_working(example["expression"])


def test_warm_start_trace_steps_is_the_task_trace_and_padded_pairs_the_working_with_its_restatement():
    task = Add()
    ex = task.examples("train")[45]  # 4 + 5: a one-step sum
    rng = random.Random(0)
    for verbose in (False, True):
        assert tiny_mod.warm_start_trace(task, ex, rng, verbose) == task.warm_start_completion(ex, rng, verbose)
    short = tiny_mod.warm_start_trace(task, ex, rng, False, "padded")
    long = tiny_mod.warm_start_trace(task, ex, rng, True, "padded")
    assert short == chain_working(ex["expression"]) and long == padded_trace(short)
    assert task.score(short, ex) == task.score(long, ex) == 1.0
    task.calls = 0
    tiny_mod.warm_start_trace(task, ex, rng, True)  # "steps": exactly one task call, as before the knob existed
    assert task.calls == 1


def test_padded_style_on_the_default_task():
    from workbench.config import TaskConfig

    task = ArithmeticTask(TaskConfig(name="arithmetic", train_size=20, eval_size=5))
    rng = random.Random(0)
    for ex in task.examples("train"):
        short = tiny_mod.warm_start_trace(task, ex, rng, False, "padded")
        long = tiny_mod.warm_start_trace(task, ex, rng, True, "padded")
        assert task.score(short, ex) == task.score(long, ex) == 1.0
        assert len(long) > 2 * len(short) - 20 and long.count("</think>") == 1


def test_default_style_keeps_the_cache_key_and_padded_changes_it():
    task = Add()

    def key(cfg: TinyModelConfig) -> dict[str, Any]:
        return tiny_mod.cache_key(cfg, task, tiny_mod.collect_task_material(task, cfg))

    default = key(TinyModelConfig())
    assert "verbose_style" not in default["tiny"]  # the key existing caches were built under
    assert set(default["tiny"]) == {f for f in TinyModelConfig.__dataclass_fields__ if f != "verbose_style"}
    padded = key(TinyModelConfig(verbose_style="padded"))
    assert padded["tiny"]["verbose_style"] == "padded"
    assert tiny_mod.cache_hash(padded) != tiny_mod.cache_hash(default)
    assert padded["task"]["fingerprint"] != default["task"]["fingerprint"]  # the traces differ


def test_verbose_style_is_validated():
    with pytest.raises(ConfigError, match="model.tiny.verbose_style"):
        to_train_config(compose("train", ["model.tiny.verbose_style=words"]))
    with pytest.raises(ConfigError, match="verbose_style"):
        tiny_mod.check_tiny_config(TinyModelConfig(verbose_style="words"))
    assert to_train_config(compose("train", [])).model.tiny.verbose_style == "steps"


# ----------------------------------------------------------------------------------------------- experiments


def _method_keys(flat: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flat.items()
            if k.split(".")[0] in ("reward", "advantage", "regularizer", "experiment_name")}


def test_replication_methods_differ_only_in_their_term():
    cfgs = {m: flatten(compose("train", [f"experiment={m}"])) for m in METHODS}
    shared = {m: {k: v for k, v in c.items() if k not in _method_keys(c)} for m, c in cfgs.items()}
    base = shared["replication"]
    for m in METHODS[1:]:
        assert shared[m] == base, (m, {k for k in set(base) | set(shared[m]) if base.get(k) != shared[m].get(k)})
    assert base["model.tiny.verbose_style"] == "padded" and base["threads"] == 1
    assert base["algo.num_iterations"] == 2  # KL-Cov acts only off-policy; every method gets the same updates
    assert base["eval.every"] > 0 and base["algo.max_steps"] % base["eval.every"] == 0
    methods = {m: _method_keys(c) for m, c in cfgs.items()}
    assert methods["replication_kimi"]["reward.length_kimi.weight"] == 0.5
    assert "advantage.positive_length.strength" in methods["replication_drpo"]
    assert "reward.length_hapo.weight" in methods["replication_hapo"]
    assert "reward.pear.weight" in methods["replication_pear"]
    assert methods["replication_kl_cov"]["regularizer.kl_cov.k_percent"] > 0.2  # translated to the miniature
    assert methods["replication_clip_cov"]["regularizer.clip_cov.ratio"] > 2e-4
    for m in METHODS:
        to_train_config(compose("train", [f"experiment={m}"]))  # validates


def test_sweep_preset_runs_every_method_over_three_seeds_and_the_script_uses_it():
    import yaml

    preset = yaml.safe_load((CONF_DIR / "sweep" / "replication.yaml").read_text())
    params = preset["hydra"]["sweeper"]["params"]
    assert params["experiment"].split(",") == METHODS
    assert params["seed"].split(",") == ["0", "1", "2"]
    files = sorted(p.stem for p in (CONF_DIR / "experiment").glob("replication*.yaml"))
    assert sorted(METHODS) == files
    script = (ROOT / "scripts" / "replicate.sh").read_text()
    for fragment in ("sweep_lib.sh", "sweep replication", "--group-by experiment_name",
                     "--baseline experiment_name=replication", "--report", "--format md",
                     "readme_table replication-table"):
        assert fragment in script, fragment
    lib = (ROOT / "scripts" / "sweep_lib.sh").read_text()  # the sweep and README-table steps every table script shares
    for fragment in ('sweep="$name"', "sweep --resume", ":start -->", ":end -->"):
        assert fragment in lib, fragment
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "replicate.sh")]).returncode == 0
    readme = (ROOT / "README.md").read_text()
    assert readme.count("<!-- replication-table:start -->") == 1 and readme.count("<!-- replication-table:end -->") == 1


def test_sweep_lib_tables_only_picks_the_newest_sweep_and_runs_nothing(tmp_path):
    """TABLES_ONLY=1: `sweep NAME` names the newest runs/sweeps/*_NAME and launches nothing (RL points at a command
    that would fail); without any such sweep it stops with a one-line message and exit code 2."""
    for stamp in ("2026-12-01_10-00-00", "2026-12-02_10-00-00"):
        (tmp_path / "runs" / "sweeps" / f"{stamp}_demo").mkdir(parents=True)
    lib = ROOT / "scripts" / "sweep_lib.sh"
    script = f'. "{lib}"; RL=false; sweep demo seed=0; echo "SWEEP=$SWEEP RC=$SWEEP_RC"'
    env = {**os.environ, "TABLES_ONLY": "1"}
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "SWEEP=runs/sweeps/2026-12-02_10-00-00_demo RC=0", out
    assert "no sweep run" in out.stderr
    missing = subprocess.run(["bash", "-c", script.replace("sweep demo", "sweep other")], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip() == "TABLES_ONLY: no runs/sweeps/*_other to build tables from"


# ----------------------------------------------------------------------------------------------- report


def _fit(**kw: float) -> dict[str, float]:
    return {"a": 0.1, "b": 0.9, "ceiling": 0.8, "r2": 0.7, "n": 12, **kw}


def test_fit_omission_reasons():
    assert fit_omission(_fit(), "eval/accuracy") is None
    assert "fewer than" in fit_omission(_fit(n=MIN_FIT_POINTS - 1), "eval/accuracy")
    assert "undefined" in fit_omission(_fit(a=math.nan, r2=math.nan), "eval/accuracy")
    assert "a = -0.1" in fit_omission(_fit(a=-0.1, ceiling=1.0), "eval/accuracy")
    assert "outside the range" in fit_omission(_fit(b=1.3, ceiling=1.2), "eval/accuracy")
    assert "outside the range" in fit_omission(_fit(b=-0.2, ceiling=-0.3), "train/accuracy")
    assert fit_omission(_fit(b=1.3, ceiling=1.2), "train/reward") is None  # no known range
    assert "R² = 0.05" in fit_omission(_fit(r2=0.05), "eval/accuracy")


def _helpers():
    spec = importlib.util.spec_from_file_location("_compare_helpers", Path(__file__).with_name("test_compare.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_draws_only_meaningful_fits_and_says_why_others_are_omitted(tmp_path):
    h = _helpers()
    root = tmp_path / "runs"
    for seed in range(3):
        # a law with its ceiling inside [0, 1] (b - a = 0.8), and one whose ceiling (1.15) lies outside
        h.make_run(root, f"ok{seed}", {"name": "ok", "seed": seed},
                   summary={"eval/accuracy": 0.7, "eval/length/mean": 30.0},
                   rows=h.curve_rows(30, 0.7, 30, seed, a=0.1, b=0.9))
        h.make_run(root, f"out{seed}", {"name": "out", "seed": seed, "algo": {"learning_rate": 1e-4}},
                   summary={"eval/accuracy": 0.6, "eval/length/mean": 20.0},
                   rows=h.curve_rows(30, 0.6, 20, seed + 5))
    comp = compare([root])
    uri, fits, perf, omitted = entropy_law(comp)
    assert uri and perf == "train/accuracy"
    assert "#1 ok" in dict(fits) and "#2 out" not in dict(fits)
    assert dict(fits)["#1 ok"]["ceiling"] == pytest.approx(0.8, abs=0.05)
    reasons = dict(omitted)
    assert "outside the range" in reasons["#2 out"]
    html = render_report(comp)
    assert "Fit omitted for #2 out: its predicted ceiling" in html
    assert "95% CI of the mean over seeds" in html  # what the curve bands are
    assert "Δ " in html  # the change against the baseline


def test_markdown_table_shows_the_change_against_the_baseline(tmp_path):
    h = _helpers()
    root = tmp_path / "runs"
    h.build_study(root)
    # Welch, uncorrected: the p-values below are the two-sample ones (test_compare_stats.py tests pairing and Holm)
    comp = compare([root], metrics=["eval/accuracy", "eval/length/mean"], group_by=["reward"], correction="none",
                   pairing="off")
    lines = comp.to_markdown().splitlines()
    assert "Δ" not in lines[2]  # the baseline row
    assert "(Δ +0.3 pt, p=0.67)" in lines[3] and "(Δ -28.5 (-65%), p=3e-05)" in lines[3]
    assert lines[4].split("|")[1].strip() == "3"
