"""One prompt definition (workbench.prompts) for rl train and rl eval, checked against TRL's own tokenization."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from workbench.prompts import prompt_text, prompt_token_ids, render_prompt, training_prompt


def _trl_prompt_ids(tokenizer, prompts):
    """What trl.GRPOTrainer._tokenize_prompts (trl 1.16) feeds generation, run on a stand-in trainer."""
    from trl import GRPOTrainer

    fake = SimpleNamespace(processing_class=tokenizer, _is_vlm=False, environment_factories=None, tools=None,
                           chat_template=None, chat_template_kwargs={})
    ids, _, _ = GRPOTrainer._tokenize_prompts(fake, prompts)
    return [list(x) for x in ids]


@pytest.mark.parametrize("use_chat_template", [True, False])
def test_eval_prompt_ids_equal_trl_training_ids_smollm2(smollm2_tokenizer, use_chat_template):
    texts = ["What is 2 + 3?\nThink step by step inside <think> </think>.", "63-45="]
    trl_ids = _trl_prompt_ids(smollm2_tokenizer, [training_prompt(t, use_chat_template) for t in texts])
    ours = [prompt_token_ids(smollm2_tokenizer, t, use_chat_template) for t in texts]
    assert ours == trl_ids
    if use_chat_template:  # the rendered string is the chat template's, with the assistant header last
        s = render_prompt(smollm2_tokenizer, texts[0], True)
        assert s.startswith("<|im_start|>system") and s.endswith("<|im_start|>assistant\n") and texts[0] in s


def test_eval_prompt_ids_equal_trl_training_ids_tiny():
    from workbench.models.tiny import build_tokenizer

    tok = build_tokenizer("0123456789+-=")
    assert [prompt_token_ids(tok, "63-45=", False)] == _trl_prompt_ids(tok, [training_prompt("63-45=", False)])


def test_prompt_text_round_trip():
    assert prompt_text(training_prompt("63-45=", True)) == "63-45="
    assert prompt_text(training_prompt("63-45=", False)) == "63-45="
