"""Unit tests for workbench.tasks: generation, splits, answer extraction, scoring, warm-start traces, errors."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workbench.config import ConfigError, TaskConfig, from_dict
from workbench.tasks import TASKS, build_task
from workbench.tasks.scoring import answer_text, final_number, math_equal

ROOT = Path(__file__).resolve().parents[1]
TASK_CONF = ROOT / "conf" / "task"


def small(name: str, **kw) -> TaskConfig:
    kw.setdefault("train_size", 300)
    kw.setdefault("eval_size", 60)
    return TaskConfig(name=name, **kw)


@pytest.fixture(scope="module")
def arithmetic():
    return build_task(small("arithmetic"))


@pytest.fixture(scope="module")
def countdown():
    return build_task(small("countdown", train_size=80, eval_size=20))


# ----------------------------------------------------------------------------------------------- registry / conf


def test_import_is_light():
    code = (
        "import sys, workbench.tasks; "
        "print(sorted(m for m in ('torch', 'trl', 'transformers', 'reasoning_gym', 'datasets', 'math_verify',"
        " 'sympy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_conf_files_match_registry_and_config():
    names = set()
    for path in sorted(TASK_CONF.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        cfg = from_dict(TaskConfig, data, prefix="task")  # only TaskConfig keys, right types
        assert (cfg.kind or cfg.name) == path.stem  # task=gym: kind=gym, name=<reasoning-gym dataset>
        names.add(cfg.kind or cfg.name)
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if re.match(r"^\s*[A-Za-z_]\w*\s*:", line):
                assert i > 0 and lines[i - 1].lstrip().startswith("#"), f"{path.name}:{i + 1} has no comment"
    assert names == set(TASKS)


def test_conf_defaults_build_for_procedural_tasks():
    data = yaml.safe_load((TASK_CONF / "arithmetic.yaml").read_text())
    data.update(train_size=50, eval_size=10)
    task = build_task(from_dict(TaskConfig, data))
    assert re.fullmatch(r"\d\d[+-]\d\d=", task.examples("train")[0]["prompt"])


def test_unknown_task_name():
    with pytest.raises(ConfigError) as e:
        build_task(TaskConfig(name="foo"))
    assert str(e.value) == "task.name='foo' is not valid; choose one of: arithmetic, arithmetic_explore, arithmetic_pool, chain_sum, countdown, file, gym, hf, mixed_arithmetic, sum_orders"


def test_bad_params_are_config_errors():
    with pytest.raises(ConfigError, match=r"task\.params\.num_terms is not an option of reasoning-gym chain_sum; valid: "
                                          r"min_terms, max_terms"):
        build_task(small("arithmetic", params={"num_terms": 3}))
    with pytest.raises(ConfigError, match=r"task\.params for chain_sum are invalid: max_terms must be >= min_terms"):
        build_task(small("chain_sum", params={"min_terms": 5, "max_terms": 3}))
    with pytest.raises(ConfigError, match=r"task\.params\.seed"):
        build_task(small("arithmetic", params={"seed": 3}))
    with pytest.raises(ConfigError, match=r"task\.eval_size=500: only \d+ distinct arithmetic problems"):
        build_task(small("arithmetic", params={"min_digits": 1, "max_digits": 1}, eval_size=500)).examples("eval")


# ----------------------------------------------------------------------------------------------- procedural tasks


def test_arithmetic_compact_format(arithmetic):
    for ex in arithmetic.examples("train") + arithmetic.examples("eval"):
        assert set(ex) >= {"prompt", "answer", "id", "question"}
        m = re.fullmatch(r"(\d\d)([+-])(\d\d)=", ex["prompt"])
        assert m, ex["prompt"]
        a, op, b = int(m[1]), m[2], int(m[3])
        assert int(ex["answer"]) == (a + b if op == "+" else a - b)
        assert isinstance(ex["answer"], str) and isinstance(ex["id"], int)


def test_natural_prompt_has_question_and_think_instruction():
    ex = build_task(small("chain_sum", prompt_style="natural")).examples("train")[0]
    assert ex["prompt"].startswith(ex["question"])
    assert "<think>" in ex["prompt"] and "final answer" in ex["prompt"]


@pytest.mark.parametrize("name", ["arithmetic", "chain_sum"])
def test_determinism_and_disjoint_splits(name):
    a, b = build_task(small(name)), build_task(small(name))
    assert a.examples("train") == b.examples("train") and a.examples("eval") == b.examples("eval")
    train, evals = a.examples("train"), a.examples("eval")
    assert len(train) == 300 and len(evals) == 60
    assert [ex["id"] for ex in train] == list(range(300)) and [ex["id"] for ex in evals] == list(range(60))
    assert not {ex["question"] for ex in train} & {ex["question"] for ex in evals}
    assert len({ex["question"] for ex in evals}) == 60
    other = build_task(small(name, seed=1)).examples("train")
    assert [ex["prompt"] for ex in other] != [ex["prompt"] for ex in train]


def test_chain_sum_terms():
    for ex in build_task(small("chain_sum")).examples("train"):
        assert len(re.findall(r"\d+", ex["prompt"])) in (3, 4)


def test_eval_deduped_against_train_in_small_space():
    # 1-digit two-term problems: only 200 exist, so many eval candidates collide with train
    task = build_task(small("arithmetic", params={"min_digits": 1, "max_digits": 1}, train_size=150, eval_size=40))
    train_q = {ex["question"] for ex in task.examples("train")}
    assert len(task.examples("eval")) == 40
    assert not train_q & {ex["question"] for ex in task.examples("eval")}


def test_examples_are_copies(arithmetic):
    arithmetic.examples("train")[0]["prompt"] = "changed"
    assert arithmetic.examples("train")[0]["prompt"] != "changed"
    with pytest.raises(ValueError):
        arithmetic.examples("validation")


# ----------------------------------------------------------------------------------------------- extraction / scoring


def test_answer_text_rules():
    assert answer_text("<think>a</think> 18 ") == "18"
    assert answer_text("18") == "18"  # no think tags: the whole completion
    assert answer_text("<think>still thinking 18") is None  # opened, never closed
    assert answer_text("") is None and answer_text(None) is None
    assert answer_text("<think>x</think>   ") is None
    assert answer_text("<think>x</think>1</think>2") == "1</think>2"


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>63-45=18</think>18", "18"),
        ("<think>15-43=-28</think>-28", "-28"),
        ("<think>x</think>the answer is -7.", "-7"),
        ("<think>x</think>1,234", "1234"),
        ("<think>x</think>3 then 5", "5"),
        ("<think>63-45=18", None),
        ("", None),
        ("<think></think>", None),
        ("<think>x</think>banana", None),
        ("</think>63-45", "45"),  # '-' after a digit is an operator
        ("42", "42"),
    ],
)
def test_arithmetic_extract_answer(arithmetic, completion, expected):
    assert arithmetic.extract_answer(completion) == expected


def test_arithmetic_score(arithmetic):
    ex = {"prompt": "63-45=", "answer": "18", "id": 0, "question": "q", "expression": "63 - 45"}
    assert arithmetic.score("<think>63-45=18</think>18", ex) == 1.0
    assert arithmetic.score("<think>whatever</think> 18.0", ex) == 1.0
    assert arithmetic.score("<think>63-45=18</think>19", ex) == 0.0
    assert arithmetic.score("<think>63-45=18", ex) == 0.0
    assert arithmetic.score("<think>63-45=18</think>-18", ex) == 0.0
    assert arithmetic.score("", ex) == 0.0
    neg = dict(ex, answer="-28")
    assert arithmetic.score("<think></think>-28", neg) == 1.0
    assert arithmetic.score("<think></think>28", neg) == 0.0


def test_countdown_score(countdown):
    ex = {"prompt": "", "answer": "11-20+7+18", "id": 0, "question": "", "numbers": [18, 20, 7, 11], "target": 16}
    assert countdown.score("<think>..</think>11-20+7+18", ex) == 1.0
    assert countdown.score("<think>..</think> 18 + 7 - 20 + 11 ", ex) == 1.0
    assert countdown.score("<think>..</think>18+7-20+11=16", ex) == 0.0  # '=' is not allowed by reasoning-gym
    assert countdown.score("<think>..</think>18+7-20", ex) == 0.0  # not all numbers used
    assert countdown.score("<think>..</think>18+7+20+11", ex) == 0.0  # wrong value
    assert countdown.score("<think>..</think>__import__('os')", ex) == 0.0
    assert countdown.score("<think>..</think>9**9**9**9", ex) == 0.0
    assert countdown.score("<think>18+7-20+11", ex) == 0.0


def test_countdown_examples(countdown):
    train, evals = countdown.examples("train"), countdown.examples("eval")
    assert len(train) == 80 and len(evals) == 20
    assert re.fullmatch(r"make \d+ from \d+( \d+){2,3}:", train[0]["prompt"])
    key = lambda ex: (tuple(sorted(ex["numbers"])), ex["target"])  # noqa: E731
    assert not {key(ex) for ex in train} & {key(ex) for ex in evals}


# ----------------------------------------------------------------------------------------------- warm start


ALLOWED_TRACE_CHARS = set("0123456789+-=. :checkok<think></think>")


@pytest.mark.parametrize("style", ["compact", "natural"])
@pytest.mark.parametrize("name", ["arithmetic", "chain_sum"])
def test_warm_start_traces_are_correct(name, style):
    task = build_task(small(name, prompt_style=style, params={"max_digits": 3} if name == "chain_sum" else {}))
    rng = random.Random(0)
    for ex in task.examples("train") + task.examples("eval"):
        for verbose in (False, True):
            trace = task.warm_start_completion(ex, rng, verbose)
            assert task.score(trace, ex) == 1.0, trace
            assert set(trace) <= ALLOWED_TRACE_CHARS, trace


def test_warm_start_negative_operands():
    task = build_task(small("chain_sum", params={"allow_negation": True}, train_size=200, eval_size=10))
    rng = random.Random(0)
    for ex in task.examples("train"):
        for verbose in (False, True):
            assert task.score(task.warm_start_completion(ex, rng, verbose), ex) == 1.0


def test_warm_start_trace_shapes():
    from workbench.tasks.gym import chain_trace

    assert chain_trace("63 - 45", False) == "<think>63-45=18</think>18"
    assert chain_trace("63 - 45", True) == "<think>63-45. 63-40=23. 23-5=18. check: 18+45=63 ok</think>18"
    assert chain_trace("12 + 34 - 5", True) == (
        "<think>12+34-5. 12+30=42. 42+4=46. 46-5=41. check: 41+5=46 ok</think>41"
    )
    assert chain_trace("63 + 40", True) == "<think>63+40. 63+40=103. check: 103-40=63 ok</think>103"


def test_countdown_warm_start(countdown):
    rng = random.Random(0)
    for ex in countdown.examples("train") + countdown.examples("eval"):
        for verbose in (False, True):
            trace = countdown.warm_start_completion(ex, rng, verbose)
            assert countdown.score(trace, ex) == 1.0, trace


# ----------------------------------------------------------------------------------------------- file task


QA_ROWS = [
    {"q": f"What is {i} plus {i}?", "a": str(2 * i)} for i in range(20)
] + [
    {"q": "Half of one?", "a": "\\frac{1}{2}"},
    {"q": "Capital of France?", "a": "Paris"},
    {"q": "GSM-style", "a": "3 apples + 4 apples = 7 apples\n#### 7"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def file_cfg(path: Path, **kw) -> TaskConfig:
    kw.setdefault("eval_size", 5)
    return TaskConfig(name="file", path=str(path), question_key="q", answer_key="a", **kw)


def test_file_task_jsonl(tmp_path):
    task = build_task(file_cfg(write_jsonl(tmp_path / "qa.jsonl", QA_ROWS), prompt_style="natural"))
    train, evals = task.examples("train"), task.examples("eval")
    assert len(train) == len(QA_ROWS) - 5 and len(evals) == 5
    assert not {ex["question"] for ex in train} & {ex["question"] for ex in evals}
    assert all(ex["prompt"].startswith(ex["question"]) and "<think>" in ex["prompt"] for ex in train)
    again = build_task(file_cfg(tmp_path / "qa.jsonl", prompt_style="natural"))
    assert again.examples("eval") == evals
    by_q = {ex["question"]: ex for ex in train + evals}
    assert by_q["GSM-style"]["answer"] == "7"
    assert task.warm_start_completion(train[0], random.Random(0), False) is None


def test_file_task_parquet_math_verify(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "qa.parquet"
    pq.write_table(pa.Table.from_pylist(QA_ROWS), path)
    task = build_task(file_cfg(path, eval_size=3, train_size=0))
    exs = {ex["question"]: ex for ex in task.examples("train") + task.examples("eval")}
    assert len(exs) == len(QA_ROWS)
    half, paris, gsm = exs["Half of one?"], exs["Capital of France?"], exs["GSM-style"]
    assert task.score("<think>one over two</think>0.5", half) == 1.0
    assert task.score("<think>x</think>$\\frac{1}{2}$", half) == 1.0
    assert task.score("<think>x</think>\\boxed{1/2}", half) == 1.0
    assert task.score("<think>x</think>0.25", half) == 0.0
    assert task.score("<think>x</think>Paris", paris) == 1.0  # math-verify cannot parse it: exact match
    assert task.score("<think>x</think>London", paris) == 0.0
    assert task.score("<think>x</think>The answer is 7.", gsm) == 1.0
    assert task.score("<think>The answer is 7.", gsm) == 0.0
    assert task.score("", gsm) == 0.0
    assert task.extract_answer("<think>x</think> 7 ") == "7"


def test_file_split_column(tmp_path):
    rows = [dict(r, split="train" if i % 4 else "test") for i, r in enumerate(QA_ROWS)]
    task = build_task(file_cfg(write_jsonl(tmp_path / "s.jsonl", rows), eval_size=0))
    assert len(task.examples("eval")) == sum(1 for r in rows if r["split"] == "test")
    train_q = {r["q"] for r in rows if r["split"] == "train"}
    assert {ex["question"] for ex in task.examples("train")} == train_q


def test_math_equal_fallbacks():
    assert math_equal("0.5", "\\frac{1}{2}") and math_equal("\\frac{1}{2}", "0.5")
    assert math_equal("$1+x$", "x+1") and math_equal("1,000", "1000")
    assert not math_equal(None, "1") and not math_equal("2", "1")
    assert final_number("x = -3.5") == "-3.5"


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError) as e:
        build_task(file_cfg(tmp_path / "nope.jsonl"))
    assert str(e.value) == f"task.path: file not found: {tmp_path / 'nope.jsonl'}"

    path = write_jsonl(tmp_path / "cols.jsonl", [{"question": "1+1", "answer": "2"}] * 3)
    with pytest.raises(ConfigError) as e:
        build_task(TaskConfig(name="file", path=str(path), question_key="q"))
    assert str(e.value) == f"task.question_key='q' not in columns of {path}: answer, question"

    with pytest.raises(ConfigError, match=r"^task\.answer_key='ans' not in columns"):
        build_task(TaskConfig(name="file", path=str(path), answer_key="ans"))
    with pytest.raises(ConfigError, match=r"^task\.path must be set"):
        build_task(TaskConfig(name="file"))
    with pytest.raises(ConfigError, match=r"^task\.eval_size=200 leaves no training rows"):
        build_task(TaskConfig(name="file", path=str(path)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1"}\n{not json\n')
    with pytest.raises(ConfigError, match=r"^task\.path: could not read .*JSONDecodeError"):
        build_task(TaskConfig(name="file", path=str(bad)))
    other = tmp_path / "data.txt"
    other.write_text("x")
    with pytest.raises(ConfigError, match=r"unsupported file type \.txt"):
        build_task(TaskConfig(name="file", path=str(other)))


def test_prompt_style_checked():
    with pytest.raises(ConfigError, match=r"task\.prompt_style='chat' is not valid"):
        build_task(TaskConfig(name="arithmetic", prompt_style="chat"))


# ----------------------------------------------------------------------------------------------- hf task


def hf_rows(n: int) -> dict[str, list[str]]:
    return {"question": [f"What is {i} times 2?" for i in range(n)], "answer": [f"{i}*2={2 * i}\n#### {2 * i}"
                                                                           for i in range(n)]}


def test_hf_task_from_saved_dataset_dict(tmp_path):
    import datasets

    dd = datasets.DatasetDict(train=datasets.Dataset.from_dict(hf_rows(30)),
                              test=datasets.Dataset.from_dict(hf_rows(8)))
    dd.save_to_disk(str(tmp_path / "dd"))
    task = build_task(TaskConfig(name="hf", dataset=str(tmp_path / "dd"), eval_size=0, prompt_style="compact"))
    train, evals = task.examples("train"), task.examples("eval")
    assert len(evals) == 8 and len(train) == 22  # train rows that repeat an eval question are dropped
    assert not {ex["question"] for ex in train} & {ex["question"] for ex in evals}
    ex = evals[0]
    assert ex["prompt"] == ex["question"] and ex["answer"] == str(int(ex["question"].split()[2]) * 2)
    assert task.score(f"<think>ok</think>{ex['answer']}", ex) == 1.0
    assert task.score("<think>ok</think>-1", ex) == 0.0

    with pytest.raises(ConfigError) as e:
        build_task(TaskConfig(name="hf", dataset=str(tmp_path / "dd"), eval_split="validation"))
    assert str(e.value) == f"task.eval_split='validation' not in splits of {tmp_path / 'dd'}: train, test"


def test_hf_task_from_saved_dataset_and_file(tmp_path):
    import datasets

    datasets.Dataset.from_dict(hf_rows(30)).save_to_disk(str(tmp_path / "ds"))
    task = build_task(TaskConfig(name="hf", dataset=str(tmp_path / "ds"), eval_size=10, train_size=5))
    assert len(task.examples("eval")) == 10 and len(task.examples("train")) == 5

    path = write_jsonl(tmp_path / "rows.jsonl", [{"question": q, "answer": a} for q, a in zip(*hf_rows(12).values())])
    task = build_task(TaskConfig(name="hf", dataset=str(path), eval_size=4))
    assert len(task.examples("eval")) == 4 and len(task.examples("train")) == 8

    with pytest.raises(ConfigError, match=r"^task\.question_key='problem' not in columns of"):
        build_task(TaskConfig(name="hf", dataset=str(tmp_path / "ds"), question_key="problem"))


def test_hf_load_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as e:
        build_task(TaskConfig(name="hf", dataset=str(tmp_path / "empty")))
    msg = str(e.value)
    assert msg.startswith(f"task.dataset='{tmp_path / 'empty'}': could not load (") and "\n" not in msg
    with pytest.raises(ConfigError, match=r"^task\.dataset='/no/such/dir': no such local path$"):
        build_task(TaskConfig(name="hf", dataset="/no/such/dir"))
    with pytest.raises(ConfigError, match=r"^task\.dataset must be set"):
        build_task(TaskConfig(name="hf"))
