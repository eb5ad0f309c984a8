"""One definition of every per-token signal (workbench.signals): the think/answer split, phase entropies, cost.

The central check: the same completions, fed through the training path (the trainer's `_log_phase_entropy` and
the reward-time phase masks) and the eval path (`rl eval`'s `build_rows`), give the same masks and values, with a
BPE tokenizer that spells `</think>` with several tokens (SmolLM2) and with the tiny character tokenizer.
"""

from __future__ import annotations

import collections
from types import SimpleNamespace

import pytest
import torch

from workbench.config import PriceConfig, TaskConfig
from workbench.signals import (
    ThinkSplitter,
    completion_text,
    phase_entropy,
    phase_masks,
    prefix_boundary,
    token_cost,
    tool_call_count,
)

COMPLETIONS = [
    "<think>63-45=18</think>18",
    "<think>63-45. 63-40=23. 23-5=18. check: 18+45=63 ok</think>18",
    "<think>still thinking, never closed",
    "no tags at all: 18",
    "</think>7",  # closes at once: the think phase is the tag itself
    "<think>a</think>b</think>c",  # only the first tag counts
]


def test_completion_text_accepts_strings_and_chat_messages():
    assert completion_text("x") == "x"
    assert completion_text([{"role": "assistant", "content": "<think>a</think>b"}]) == "<think>a</think>b"
    assert completion_text([{"role": "tool", "content": "ignored"}, {"role": "assistant", "content": "y"}]) == "y"
    assert completion_text(None) == ""


def test_prefix_boundary_by_decoding_a_tag_split_over_tokens():
    vocab = {0: "<th", 1: "ink>", 2: "1", 3: "</", 4: "think>", 5: "7", 6: "x"}

    def decode(ids):
        return "".join(vocab[i] for i in ids)

    assert prefix_boundary([0, 1, 2, 3, 4, 5, 6], decode) == 5  # "<think>1</think>7x": the tag ends at token 5
    assert prefix_boundary([0, 1, 2, 5], decode) is None
    assert prefix_boundary([3, 4], decode) == 2
    assert prefix_boundary([], decode) is None


def test_phase_masks_from_boundaries():
    think, answer, has = phase_masks([3, None, 1], [5, 4, 2], 6)
    assert think.int().tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]]
    assert answer.int().tolist() == [[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]]
    assert has.tolist() == [True, False, True]


def test_phase_entropy_rules():
    assert phase_entropy([1.0, 2.0, 3.0, 5.0], 2) == (2.75, 1.5, 4.0)
    assert phase_entropy([1.0, 3.0], None) == (2.0, 2.0, None)  # no </think>: everything is thinking
    assert phase_entropy([1.0, 3.0], 2) == (2.0, 2.0, None)  # </think> last: no answer tokens
    assert phase_entropy(None, 1) == (None, None, None)


def test_token_cost_on_numbers_and_tensors():
    assert token_cost(10, 20, 1.0, 3.0) == pytest.approx(10e-6 + 60e-6)
    c = token_cost(torch.tensor([1000, 0]), torch.tensor([2000, 1_000_000]), 0.5, 2.0)
    assert c.tolist() == pytest.approx([0.0045, 2.0])


def test_tool_call_count():
    assert tool_call_count("<tool_call>a</tool_call> then <tool_call>b</tool_call>") == 2


def _tiny_tokenizer():
    from workbench.models.tiny import build_tokenizer

    return build_tokenizer("".join(COMPLETIONS))


def _training_path(tokenizer, ids: list[list[int]], entropies: torch.Tensor):
    """The trainer's own code: reward-time masks (as in `_calculate_rewards`) and the loss-pass phase entropies
    (`_log_phase_entropy`), run on a stand-in trainer object."""
    from workbench.trainers import ShapingMixin

    T = entropies.size(1)
    splitter = ThinkSplitter(tokenizer)
    masks = phase_masks([splitter.boundary(c) for c in ids], [len(c) for c in ids], T)
    padded = torch.zeros(len(ids), T, dtype=torch.long)
    cmask = torch.zeros(len(ids), T)
    for i, c in enumerate(ids):
        padded[i, : len(c)] = torch.tensor(c)
        cmask[i, : len(c)] = 1
    metrics = {"train": collections.defaultdict(list)}
    fake = SimpleNamespace(splitter=splitter, _metrics=metrics, model=SimpleNamespace(training=True),
                           accelerator=SimpleNamespace(device=torch.device("cpu"), gather=lambda t: t))
    ShapingMixin._log_phase_entropy(fake, padded, cmask, cmask, entropies)
    return masks, metrics["train"]["entropy/think"][0], metrics["train"]["entropy/answer"][0]


def _eval_path(tokenizer, ids: list[list[int]], entropies: torch.Tensor):
    from workbench.evaluation.generate import Sample
    from workbench.evaluation.runner import build_rows
    from workbench.tasks import build_task

    task = build_task(TaskConfig(train_size=5, eval_size=1))
    ex = task.examples("eval")
    samples = [Sample(0, tokenizer.decode(c, skip_special_tokens=True), c, False, entropies[i, : len(c)].tolist())
               for i, c in enumerate(ids)]
    return build_rows(samples, ex, task, [3], PriceConfig(), ThinkSplitter(tokenizer))


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_training_and_eval_paths_agree(which, request):
    tokenizer = _tiny_tokenizer() if which == "tiny" else request.getfixturevalue("smollm2_tokenizer")
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in COMPLETIONS]
    if which == "smollm2":  # the BPE case this test exists for: the tag is several tokens
        assert len(tokenizer("</think>", add_special_tokens=False)["input_ids"]) > 1
    T = max(len(c) for c in ids)
    g = torch.Generator().manual_seed(0)
    entropies = torch.rand(len(ids), T, generator=g) * 3
    (think, answer, has), h_think, h_answer = _training_path(tokenizer, ids, entropies)
    rows = _eval_path(tokenizer, ids, entropies)

    for i, (row, text) in enumerate(zip(rows, COMPLETIONS)):
        # the boundary is where the decoded text's first </think> ends
        n = row["think_tokens"]
        if "</think>" in text:
            assert n is not None and "</think>" in tokenizer.decode(ids[i][:n])
            assert "</think>" not in tokenizer.decode(ids[i][: n - 1])
        else:
            assert n is None
        assert int(think[i].sum()) == (len(ids[i]) if n is None else n)
        assert int(answer[i].sum()) == len(ids[i]) - (len(ids[i]) if n is None else n)
        assert bool(has[i]) == (n is not None)
        L = len(ids[i])
        cut = L if n is None else n
        assert row["entropy_think"] == pytest.approx(entropies[i, :cut].mean().item())
        if cut < L:
            assert row["entropy_answer"] == pytest.approx(entropies[i, cut:L].mean().item())
        else:
            assert row["entropy_answer"] is None

    # the training metric is the token-weighted mean of the same per-sample phase entropies
    tt = [r["think_tokens"] or r["length"] for r in rows]
    at = [r["length"] - t for r, t in zip(rows, tt)]
    want_think = sum(r["entropy_think"] * t for r, t in zip(rows, tt)) / sum(tt)
    want_answer = sum((r["entropy_answer"] or 0.0) * a for r, a in zip(rows, at)) / sum(at)
    assert h_think == pytest.approx(want_think, rel=1e-5)
    assert h_answer == pytest.approx(want_answer, rel=1e-5)
