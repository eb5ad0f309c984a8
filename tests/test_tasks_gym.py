"""`task=gym`: any reasoning-gym dataset as a task (prompts, its own scorer, disjoint splits, one-line errors)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from workbench.config import ConfigError, TaskConfig, from_dict
from workbench.tasks import build_task
from workbench.tasks.gym import GymDatasetTask, decode_entry, encode_entry
from workbench.tasks.scoring import THINK_INSTRUCTION
from cli_asserts import one_line_error

ROOT = Path(__file__).resolve().parents[1]
LIST_HINT = "sorted(reasoning_gym.factory.DATASETS)"


def gym(name: str, **kw) -> TaskConfig:
    kw.setdefault("train_size", 60)
    kw.setdefault("eval_size", 20)
    kw.setdefault("prompt_style", "natural")
    return TaskConfig(kind="gym", name=name, **kw)


def gold(example: dict) -> str:
    return f"<think>x</think>{example['answer']}"


@pytest.fixture(scope="module")
def gsm():
    return build_task(gym("gsm_symbolic"))


@pytest.fixture(scope="module")
def legs():
    return build_task(gym("leg_counting"))


def test_conf_file_composes_to_the_gym_task():
    data = yaml.safe_load((ROOT / "conf" / "task" / "gym.yaml").read_text())
    cfg = from_dict(TaskConfig, {**data, "name": "leg_counting", "train_size": 5, "eval_size": 2}, prefix="task")
    task = build_task(cfg)
    assert isinstance(task, GymDatasetTask) and task.name == "leg_counting"
    assert THINK_INSTRUCTION in task.examples("train")[0]["prompt"]


@pytest.mark.parametrize("fixture", ["gsm", "legs"])
def test_prompts_scores_and_disjoint_splits(fixture, request):
    task = request.getfixturevalue(fixture)
    train, evals = task.examples("train"), task.examples("eval")
    assert len(train) == 60 and len(evals) == 20
    assert [ex["id"] for ex in evals] == list(range(20))
    assert not {ex["question"] for ex in train} & {ex["question"] for ex in evals}
    for ex in train[:10] + evals[:10]:
        assert ex["prompt"] == f"{ex['question'].rstrip()}\n{THINK_INSTRUCTION}"
        assert task.score(gold(ex), ex) == 1.0
        assert task.score("<think>x</think>not the answer at all", ex) < 1.0
        assert task.score("<think>unfinished", ex) == 0.0
        assert task.extract_answer(gold(ex)) == ex["answer"]
        # answer-only warm-start trace for model=tiny (issue 23 part 6; it was None: no traces)
        assert task.warm_start_completion(ex, None, False) == f"<think></think>{ex['answer']}"  # type: ignore[arg-type]
        assert task.score(task.warm_start_completion(ex, None, False), ex) == 1.0  # type: ignore[arg-type]
    assert build_task(gym(task.name)).examples("eval") == evals  # deterministic


def test_compact_style_is_the_question_alone():
    ex = build_task(gym("leg_counting", prompt_style="compact")).examples("train")[0]
    assert ex["prompt"] == ex["question"]


def test_partial_credit_is_the_datasets_own_score():
    """spell_backward scores a near miss by its length ratio; the task passes that float through unchanged."""
    from reasoning_gym.factory import create_dataset

    cfg = gym("spell_backward", train_size=8, eval_size=2)
    task = build_task(cfg)
    raw = create_dataset("spell_backward", seed=cfg.seed, size=cfg.train_size)
    for i, ex in enumerate(task.examples("train")):
        item = raw[i]  # the untouched reasoning-gym entry
        assert item["question"] == ex["question"]
        near = ex["answer"][:-1]
        expected = raw.score_answer(near, item)
        assert 0.0 < expected < 1.0
        assert task.score(f"<think>x</think>{near}", ex) == pytest.approx(expected)


def test_scorer_exceptions_score_zero():
    task = build_task(gym("prime_factorization", train_size=4, eval_size=1))
    ex = task.examples("train")[0]
    assert task.score("<think>x</think>hello x", ex) == 0.0  # its score_answer raises ValueError here
    assert task.score(gold(ex), ex) == 1.0


@pytest.mark.parametrize("name", ["gsm_symbolic", "basic_arithmetic", "letter_counting", "word_sorting",
                                  "graph_color", "arc_agi"])
def test_examples_go_into_a_dataset_and_keep_the_entry(name):
    """Metadata holds tuples (arc grids), int dict keys (graph_color) and None answers: all survive the JSON column."""
    from datasets import Dataset

    task = build_task(gym(name, train_size=6, eval_size=3))
    examples = task.examples("train") + task.examples("eval")
    rows = Dataset.from_list(examples).to_list()
    assert rows == examples
    for row in rows:
        assert isinstance(row["answer"], str) and isinstance(row["entry"], str)
        entry = decode_entry(row["entry"])
        assert entry["question"] == row["question"]
        assert encode_entry(entry) == row["entry"]
        if row["answer"]:  # graph_color has no reference answer (any valid colouring counts)
            assert task.score(gold(row), row) == 1.0


def test_entry_codec_is_exact():
    entry = {"answer": None, "metadata": {"grid": ((1, 2), (3, 4)), "colors": {0: "red", 1: "blue"},
                                          "seen": {3, 1}, "list": [1, (2,)], "x": 0.5, "ok": True}}
    assert decode_entry(encode_entry(entry)) == entry


# ----------------------------------------------------------------------------------------------- errors


def test_unknown_dataset_names_close_matches_and_how_to_list():
    with pytest.raises(ConfigError) as e:
        build_task(gym("gsm_symbolc"))
    msg = str(e.value)
    assert "\n" not in msg and "gsm_symbolic" in msg and LIST_HINT in msg
    with pytest.raises(ConfigError, match="not a reasoning-gym dataset"):
        build_task(gym("nonexistent"))


def test_bad_param_name_lists_the_valid_options():
    with pytest.raises(ConfigError) as e:
        build_task(gym("leg_counting", params={"bogus": 1}))
    msg = str(e.value)
    assert "task.params.bogus" in msg and "\n" not in msg
    for option in ("min_animals", "max_animals", "min_instances", "max_instances"):
        assert option in msg
    with pytest.raises(ConfigError, match=r"task\.params\.size is managed by the workbench"):
        build_task(gym("leg_counting", params={"size": 3}))


def test_bad_param_value_is_one_line():
    with pytest.raises(ConfigError) as e:
        build_task(gym("leg_counting", params={"min_animals": 0}))
    assert "task.params for leg_counting are invalid" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="task.params for gsm_symbolic are invalid"):
        build_task(gym("gsm_symbolic", params={"difficulty": "hard"}))


def test_kind_and_name_dispatch():
    with pytest.raises(ConfigError, match=r"task\.kind='nope' is not valid; choose one of: .*gym"):
        build_task(TaskConfig(kind="nope", name="leg_counting"))
    with pytest.raises(ConfigError, match="task=gym task.name=<dataset>"):
        build_task(TaskConfig(name="gym"))


# ----------------------------------------------------------------------------------------------- command line


def test_cli_composes_task_gym_with_a_dataset_name():
    from workbench.compose import compose
    from workbench.config import to_train_config

    cfg = to_train_config(compose("train", ["task=gym", "task.name=leg_counting", "task.params.max_animals=3"]))
    assert (cfg.task.kind, cfg.task.name, cfg.task.params) == ("gym", "leg_counting", {"max_animals": 3})
    assert cfg.task.prompt_style == "natural"


def test_cli_errors_are_one_line_exit_2(tmp_path):
    """`rl train --dry-run` only composes and type-checks (it builds no task), so the dataset name is checked by a
    real `rl train`, which builds the task before anything is written, and by `rl eval`'s planning."""
    from cli.main import app

    runner = CliRunner()
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["train", "task=gym", "task.name=nonexistent", f"runs_dir={runs}"])
    one_line_error(res, "task.name='nonexistent'", LIST_HINT)
    assert not runs.exists()
    res = runner.invoke(app, ["eval", "model=tiny", "task=gym", "task.name=leg_counting", "task.params.bogus=1",
                              f"runs_dir={runs}"])
    one_line_error(res, "task.params.bogus", "min_animals")
    assert not runs.exists()
