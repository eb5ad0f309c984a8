"""The issue-23 miniature tasks: arithmetic_explore (exploratory try-and-check long traces, for PEAR) and
arithmetic_pool (a small repeated RL training pool, for HAPO)."""

from __future__ import annotations

import collections
import math
import random
import re

import pytest

from workbench.config import ConfigError, TaskConfig
from workbench.compose import compose
from workbench.models.tiny_warm_start import warm_start_trace
from workbench.tasks import build_task
from workbench.tasks.base import THINK_CLOSE, THINK_OPEN, split_think
from workbench.tasks.explore import CANDIDATE_OFFSETS, WRONG_TRIES

ARITH = {"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2}
STEP = re.compile(r"^(-?\d+)([+-])(\d+)=(-?\d+) (ok|no)$")


@pytest.fixture(scope="module")
def explore():
    task = build_task(TaskConfig(name="arithmetic_explore", train_size=400, eval_size=50, params=dict(ARITH)))
    return task, task.examples("train")


def long_short(task, ex, seed):
    rng = random.Random(seed)
    return (warm_start_trace(task, ex, rng, True, "steps"), warm_start_trace(task, ex, rng, False, "steps"))


def test_explore_traces_are_valid_and_checks_are_right(explore):
    task, train = explore
    for i, ex in enumerate(train):
        long, short = long_short(task, ex, i)
        for trace in (long, short):
            assert trace.startswith(THINK_OPEN) and trace.count(THINK_CLOSE) == 1
            assert task.score(trace, ex) == 1.0, trace
        # fits the 80-token budget: the tiny tokenizer has one token per character and one per think tag
        assert len(long) - len(THINK_OPEN) - len(THINK_CLOSE) + 2 < 80, long
        think = split_think(long)[0][len(THINK_OPEN):]
        assert think.startswith(split_think(short)[0][len(THINK_OPEN):] + ". ")  # the same working first
        a, op, b = ex["expression"].split()
        tries = think.split(". ")[-(len(think.split(". ")) - len(split_think(short)[0].split(". "))):]
        verdicts = []
        for step in tries:
            m = STEP.match(step)
            assert m, (step, long)
            cand, undo, bb, back, verdict = m.groups()
            assert undo == ("+" if op == "-" else "-") and bb == b
            assert int(back) == (int(cand) + int(b) if undo == "+" else int(cand) - int(b))  # the check is right
            assert (verdict == "ok") == (int(back) == int(a)) == (cand == ex["answer"])
            verdicts.append(verdict)
        assert verdicts[-1] == "ok" and verdicts.count("ok") == 1 and len(verdicts) - 1 in WRONG_TRIES


def test_long_traces_carry_the_entropy_by_construction(explore):
    """Over the warm start's random stream a short trace is fixed by the problem (0 nats); a long one is one of
    many (its empirical entropy is near ln 2 + ln 18 + ln 17 / 2 ~ 5 nats)."""
    task, train = explore
    ex = train[0]
    longs, shorts = collections.Counter(), collections.Counter()
    for seed in range(3000):
        long, short = long_short(task, ex, seed)
        longs[long] += 1
        shorts[short] += 1

    def entropy(c):
        n = sum(c.values())
        return -sum(v / n * math.log(v / n) for v in c.values())

    expected = math.log(len(WRONG_TRIES)) + 0.5 * math.log(len(CANDIDATE_OFFSETS)) + 0.5 * math.log(
        len(CANDIDATE_OFFSETS) * (len(CANDIDATE_OFFSETS) - 1))
    assert len(shorts) == 1 and entropy(shorts) == 0.0
    assert abs(entropy(longs) - expected) < 0.35, (entropy(longs), expected)


def test_explore_refuses_more_than_two_terms():
    with pytest.raises(ConfigError, match="two-term"):
        build_task(TaskConfig(name="arithmetic_explore", train_size=10, eval_size=5,
                              params={**ARITH, "max_terms": 3}))


def test_pool_is_the_head_of_arithmetic_and_eval_is_unchanged():
    base = build_task(TaskConfig(name="arithmetic", train_size=300, eval_size=60, params=dict(ARITH)))
    pool = build_task(TaskConfig(name="arithmetic_pool", train_size=300, eval_size=60,
                                 params={**ARITH, "pool_size": 24}))
    assert pool.examples("train") == base.examples("train")[:24]
    assert pool.examples("eval") == base.examples("eval")
    assert not {e["prompt"] for e in pool.examples("eval")} & {e["prompt"] for e in base.examples("train")}


@pytest.mark.parametrize("params,match", [({}, "needs task.params.pool_size"),
                                          ({"pool_size": 0}, "pool_size=0 must be"),
                                          ({"pool_size": 301}, "pool_size=301 must be"),
                                          ({"pool_size": "8"}, "pool_size='8' must be")])
def test_pool_bad_size(params, match):
    with pytest.raises(ConfigError, match=match):
        build_task(TaskConfig(name="arithmetic_pool", train_size=300, eval_size=10, params={**ARITH, **params}))


def test_the_experiments_compose():
    """hapo_repeat revisits its pool: 60 batches x 8 prompts over 64 prompts; the eval is arithmetic's."""
    from workbench.config import to_train_config

    raw = compose("train", ["experiment=hapo_repeat_hapo", "model.name_or_path=/tmp/x"])
    cfg = to_train_config(raw)
    assert cfg.task.name == "arithmetic_pool" and cfg.model.kind == "hf" and "length_hapo" in raw["reward"]
    visits = raw["algo"]["max_steps"] // raw["algo"]["num_iterations"] * 8 / cfg.task.params["pool_size"]
    assert visits >= 5
    raw = compose("train", ["experiment=pear_explore_pear"])
    assert to_train_config(raw).task.name == "arithmetic_explore" and "pear" in raw["reward"]



def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("plain,method,term,arms", [
    ("hapo_repeat", "hapo_repeat_hapo", "length_hapo", "hapo_repeat,hapo_repeat_hapo"),
    ("pear_explore", "pear_explore_pear", "pear", "pear_explore,pear_explore_pear,pear_explore_pear_w1")])
def test_arms_differ_only_in_the_term_and_the_sweep_and_script_run_them(plain, method, term, arms):
    import subprocess
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    cfgs = {e: _flat(compose("train", [f"experiment={e}", "model.name_or_path=/tmp/x"])) for e in (plain, method)}
    own = {e: {k for k in c if k.startswith(f"reward.{term}.") or k == "experiment_name"} for e, c in cfgs.items()}
    shared = {e: {k: v for k, v in c.items() if k not in own[e]} for e, c in cfgs.items()}
    assert shared[plain] == shared[method]
    assert not own[plain] - {"experiment_name"} and f"reward.{term}.weight" in own[method]
    params = yaml.safe_load((root / "conf" / "sweep" / f"{plain}.yaml").read_text())["hydra"]
    assert params["launcher"]["n_jobs"] == 1  # one training process at a time on the shared machine
    assert params["sweeper"]["params"] == {"seed": "0,1,2", "experiment": arms}
    script = root / "scripts" / "miniatures_hapo_pear.sh"
    text = script.read_text()
    marker = plain.replace("_", "-") + "-table"
    for fragment in (f"sweep {plain}", f"compare {plain}", marker, "sweep_lib.sh", "--group-by experiment_name"):
        assert fragment in text, fragment
    assert "sweep --resume" in (root / "scripts" / "sweep_lib.sh").read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    readme = (root / "README.md").read_text()
    assert readme.count(f"<!-- {marker}:start -->") == 1 and readme.count(f"<!-- {marker}:end -->") == 1


def test_pear_weight_arm_changes_only_the_weight():
    cfgs = {e: _flat(compose("train", [f"experiment={e}"])) for e in ("pear_explore_pear", "pear_explore_pear_w1")}
    diff = {k for k in cfgs["pear_explore_pear"] if cfgs["pear_explore_pear"][k] != cfgs["pear_explore_pear_w1"].get(k)}
    assert diff == {"experiment_name", "reward.pear.weight"}
    assert (cfgs["pear_explore_pear"]["reward.pear.weight"], cfgs["pear_explore_pear_w1"]["reward.pear.weight"]) == (0.1, 1.0)
