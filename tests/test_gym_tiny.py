"""model=tiny on any reasoning-gym dataset (`task=gym task.name=...`): warm-start traces from the dataset's answers and,
where it has them, its worked solutions; the refusal, with its reason, only for a dataset without reference answers."""

from __future__ import annotations

import random

import pytest

from workbench.config import ConfigError, TaskConfig, TinyModelConfig
from workbench.models.tiny_cache import collect_task_material
from workbench.models.tiny_tokenizer import build_tokenizer
from workbench.models.tiny_warm_start import warm_start_trace
from workbench.tasks import build_task
from workbench.tasks.base import THINK_CLOSE, THINK_OPEN


def _gym(name: str, **kw):
    return build_task(TaskConfig(name=name, kind="gym", train_size=40, eval_size=5, **kw))


@pytest.mark.parametrize("name", ["leg_counting", "spell_backward"])  # refused before: "needs ... warm-start traces"
def test_answer_only_traces_encode_and_score(name: str) -> None:
    task = _gym(name)
    material = collect_task_material(task, TinyModelConfig())
    tokenizer = build_tokenizer(material.chars)
    rng = random.Random(0)
    for ex in material.train:
        for verbose in (False, True):
            trace = warm_start_trace(task, ex, rng, verbose)
            assert trace == f"{THINK_OPEN}{THINK_CLOSE}{ex['answer']}"  # no worked solutions: the answer alone
            ids = tokenizer(trace, add_special_tokens=False)["input_ids"]
            assert tokenizer.unk_token_id not in ids and tokenizer.decode(ids) == trace
            assert task.score(trace, ex) == 1.0


def test_worked_solutions_become_the_step_by_step_traces() -> None:
    task = _gym("gsm_symbolic")
    ex = task.examples("train")[0]
    rng = random.Random(0)
    concise, verbose = (task.warm_start_completion(ex, rng, v) for v in (False, True))
    assert concise == f"{THINK_OPEN}{THINK_CLOSE}{ex['answer']}"
    think, _, answer = verbose.partition(THINK_CLOSE)
    assert answer == ex["answer"] and len(think) > 50 and "####" not in think  # its answer_cot, minus "#### 42"
    assert task.warm_start_working(ex, rng) == verbose
    assert task.score(verbose, ex) == 1.0
    padded = warm_start_trace(task, ex, rng, True, style="padded")
    assert padded.count(think.removeprefix(THINK_OPEN)) == 3


def test_dataset_without_reference_answers_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="rush_hour has no reference answer.*use model=hf"):
        collect_task_material(_gym("rush_hour"), TinyModelConfig())


def test_greedy_accuracy_counts_only_full_credit(monkeypatch: pytest.MonkeyPatch) -> None:
    """spell_backward scores a near miss by partial credit; the warm start's greedy accuracy counts it wrong."""
    from types import SimpleNamespace

    from workbench.models import tiny_warm_start

    task = _gym("spell_backward")
    exs = task.examples("eval")[:2]
    near_miss = f"{THINK_OPEN}{THINK_CLOSE}{exs[1]['answer'][:-1]}"
    assert 0 < task.score(near_miss, exs[1]) < 1
    texts = [f"{THINK_OPEN}{THINK_CLOSE}{exs[0]['answer']}", near_miss]
    monkeypatch.setattr(tiny_warm_start, "sample", lambda *a, **k: [SimpleNamespace(text=t) for t in texts])
    accuracy, _ = tiny_warm_start.greedy_accuracy(None, None, task, exs, max_new_tokens=8)
    assert accuracy == 0.5


def test_prompts_longer_than_max_positions_fail_before_the_first_step() -> None:
    from workbench.models.tiny_warm_start import check_positions

    task = _gym("leg_counting", prompt_style="natural")  # prompts of ~330 characters
    check_positions(TinyModelConfig(max_positions=512), task, 346)
    with pytest.raises(ConfigError, match=r"max_positions=256 is too small.*346 tokens.*max_positions=512.*compact"):
        check_positions(TinyModelConfig(), task, 346)
