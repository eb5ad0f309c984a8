"""Issue 23's entropy-collapse miniature: the sum_orders task (several valid solutions per problem, the warm start
sampling among them), its experiments (one shared setting, one entropy method each), the sweep preset and the
script. Fast; the one training run is marked slow."""

from __future__ import annotations

import random
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from workbench.compose import CONF_DIR, compose
from workbench.config import ConfigError, TaskConfig, to_train_config
from workbench.models.tiny_warm_start import warm_start_trace
from workbench.tasks import build_task
from workbench.tasks.orders import direct_trace, order_trace

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["entropy_collapse", "entropy_collapse_kl_cov", "entropy_collapse_clip_cov", "entropy_collapse_forking",
           "entropy_collapse_entropy_bonus", "entropy_collapse_steer", "entropy_collapse_lp_reg",
           "entropy_collapse_siren"]


def task(**params):
    return build_task(TaskConfig(name="sum_orders", train_size=300, eval_size=50, params=params))


def test_every_warm_start_trace_is_correct_and_a_problem_gets_several_distinct_ones():
    t = task()
    rng = random.Random(0)
    distinct = []
    for ex in t.examples("train")[:60]:
        traces = Counter(warm_start_trace(t, ex, rng, rng.random() < 0.5) for _ in range(200))
        for trace in traces:
            assert t.score(trace, ex) == 1.0, (trace, ex)
            assert trace in t.solutions(ex)
        assert set(traces) == t.solutions(ex)  # 200 draws cover every order (6 at most for 3 terms)
        distinct.append(len(traces))
    assert min(distinct) >= 3 and Counter(distinct)[6] >= 40  # only repeated numbers have fewer orders


def test_orders_are_uniform_at_fraction_0_and_the_prompt_order_gets_its_share_at_0_5():
    ex = next(e for e in task().examples("train") if len(set(e["numbers"])) == 3)
    rng = random.Random(1)
    uniform = Counter(task().warm_start_completion(ex, rng, False) for _ in range(6000))
    assert len(uniform) == 6 and all(800 < c < 1200 for c in uniform.values()), uniform
    skewed = Counter(task(in_order_fraction=0.5).warm_start_completion(ex, rng, False) for _ in range(6000))
    in_order = order_trace(ex["numbers"], [0, 1, 2])
    assert len(skewed) == 6
    assert 3300 < skewed[in_order] < 3700  # 0.5 + 0.5 / 6 = 0.583 of 6000 = 3500
    assert all(350 < c < 650 for t, c in skewed.items() if t != in_order), skewed  # 0.083 each = 500


def test_direct_fraction_mixes_in_the_one_step_strategy_and_keys_the_model_only_when_set():
    ex = next(e for e in task().examples("train") if len(set(e["numbers"])) == 3)
    direct = direct_trace(ex["numbers"])
    assert direct == f"<think>{'+'.join(map(str, ex['numbers']))}={ex['answer']}</think>{ex['answer']}"
    mixed = task(direct_fraction=0.5)
    assert mixed.score(direct, ex) == 1.0 and direct in mixed.solutions(ex) and direct not in task().solutions(ex)
    rng = random.Random(2)
    draws = Counter(mixed.warm_start_completion(ex, rng, False) for _ in range(6000))
    assert 2800 < draws[direct] < 3200  # half one-step ...
    assert len(draws) == 7 and all(350 < c < 650 for t, c in draws.items() if t != direct), draws  # ... 1/12 per order
    # at 0 the warm start draws exactly as before the option existed (same stream, same cache key)
    a, b = random.Random(3), random.Random(3)
    assert [task().warm_start_completion(ex, a, False) for _ in range(50)] == \
        [task(direct_fraction=0).warm_start_completion(ex, b, False) for _ in range(50)]
    assert "direct_fraction" not in task().fingerprint() and mixed.fingerprint()["direct_fraction"] == 0.5


def test_order_trace_and_scoring():
    assert order_trace([7, 15, 3], [1, 2, 0]) == "<think>15+3=18. 18+7=25</think>25"
    with pytest.raises(ValueError, match="permutation"):
        order_trace([7, 15, 3], [0, 0, 1])
    t = task()
    ex = {"numbers": [7, 15, 3], "answer": "25"}
    assert t.score("<think>7+15=22. 22+3=25</think>25", ex) == 1.0
    assert t.score("<think>7+15=22. 22+3=25</think>24", ex) == 0.0
    assert t.score("<think>7+15=22. 22+3=25", ex) == 0.0  # unfinished thinking earns nothing


def test_splits_share_no_problem_in_any_order_and_prompts_are_compact():
    t = task()
    train, evals = t.examples("train"), t.examples("eval")
    assert len(train) == 300 and len(evals) == 50
    assert not {tuple(sorted(e["numbers"])) for e in train} & {tuple(sorted(e["numbers"])) for e in evals}
    ex = train[0]
    assert ex["prompt"] == "+".join(map(str, ex["numbers"])) + "=" and ex["answer"] == str(sum(ex["numbers"]))
    assert all(1 <= n <= 20 for e in train for n in e["numbers"])
    assert t.examples("train") == train  # deterministic


@pytest.mark.parametrize("params, match", [
    ({"digits": 2},
     r"task\.params\.digits is not an option of sum_orders; valid: terms, min_value, max_value, in_order_fraction, "
     r"direct_fraction"),
    ({"direct_fraction": -0.1}, r"task\.params\.direct_fraction=-0\.1 must be a number in \[0, 1\]"),
    ({"in_order_fraction": 1.5}, r"task\.params\.in_order_fraction=1\.5 must be a number in \[0, 1\]"),
    ({"terms": 1}, r"task\.params\.terms=1 must be an integer from 2 to 6"),
    ({"min_value": 5, "max_value": 2}, r"min_value=5, max_value=2"),
])
def test_bad_params_are_one_line_config_errors(params, match):
    with pytest.raises(ConfigError, match=match):
        task(**params)


def test_too_few_distinct_eval_problems_is_a_config_error():
    with pytest.raises(ConfigError, match="task.eval_size=50: only"):
        build_task(TaskConfig(name="sum_orders", train_size=300, eval_size=50,
                              params={"terms": 2, "max_value": 4})).examples("eval")


def test_experiments_share_every_setting_but_their_regularizer():
    base = compose("train", ["experiment=entropy_collapse"])
    assert base["task"]["name"] == "sum_orders" and base["eval"]["n"] == 16 and base["algo"]["num_iterations"] == 2
    assert not base["regularizer"]
    for name in METHODS[1:]:
        cfg = compose("train", [f"experiment={name}"])
        assert cfg["experiment_name"] == name
        assert len(cfg["regularizer"]) == 1
        for key in ("task", "algo", "eval", "model", "reward", "advantage", "seed", "threads"):
            assert cfg[key] == base[key], (name, key)
        to_train_config(cfg)  # valid


def test_sweep_lists_every_experiment_and_the_script_names_the_baseline():
    files = sorted(p.stem for p in (CONF_DIR / "experiment").glob("entropy_collapse*.yaml"))
    sweep = (CONF_DIR / "sweep" / "entropy_collapse.yaml").read_text()
    line = next(ln for ln in sweep.splitlines() if ln.strip().startswith("experiment:"))
    listed = line.split(":", 1)[1].strip().split(",")
    assert listed == METHODS and sorted(listed) == files
    script = ROOT / "scripts" / "entropy_collapse.sh"
    assert "--baseline experiment_name=entropy_collapse" in script.read_text()
    subprocess.run(["bash", "-n", str(script)], check=True)
    readme = (ROOT / "README.md").read_text()
    assert readme.count("<!-- entropy-collapse-table:start -->") == 1
    assert readme.count("<!-- entropy-collapse-table:end -->") == 1


@pytest.mark.slow
def test_a_few_grpo_steps_on_sum_orders(tiny_overrides):
    from workbench.train import train
    from workbench.runs import read_jsonl

    overrides = ["experiment=entropy_collapse", *tiny_overrides, "eval.n=2", "algo.num_iterations=1"]
    run = train(to_train_config(compose("train", overrides)), overrides, argv=["rl", "train"], progress=False)
    rows = read_jsonl(run.metrics_file)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["entropy/mean"] > 0 for r in rows)
    assert "eval/pass@2" in rows[-1] or "eval/pass@2" in run.read_summary()
