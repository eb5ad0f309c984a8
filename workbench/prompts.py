"""Prompts as the model sees them: ONE definition for `rl train` (TRL) and `rl eval`.

A task gives a prompt as text. With `model.use_chat_template=true` it becomes one user message, rendered by the
tokenizer's chat template with the generation prompt (the assistant header) appended; otherwise the text is the
prompt. How TRL (1.16) tokenizes, and how `rl eval` must therefore tokenize to match it token for token:

* conversational prompts: TRL calls `tokenizer.apply_chat_template(..., add_generation_prompt=True,
  tokenize=True)`, which adds no special tokens beyond the template's own;
* plain text prompts: TRL calls `tokenizer(text)`, i.e. with the tokenizer's default special tokens (a BOS for
  Llama-style tokenizers; nothing for GPT-2/Qwen/SmolLM2-style ones).

`training_prompt` builds the dataset value TRL receives, `render_prompt` the exact string, and
`prompt_token_ids` the ids both paths generate from (tests check them against TRL's own `_tokenize_prompts`).

With tools (`task.tools`), TRL renders the prompt with `tools=` (the environment's tool methods, whose schemas a
real chat template writes into the prompt), so `rl eval` passes the same `tools` here.
"""

from __future__ import annotations

from typing import Any


def training_prompt(prompt: str, use_chat_template: bool) -> Any:
    """The `prompt` column of the TRL dataset: a one-message conversation, or the text itself."""
    return [{"role": "user", "content": prompt}] if use_chat_template else prompt


def render_prompt(tokenizer: Any, prompt: str, use_chat_template: bool, tools: list[Any] | None = None) -> str:
    """The prompt string the model continues (chat template applied when asked and available; `tools` rendered as
    TRL renders them: `tools or None`)."""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(training_prompt(prompt, True), tools=tools or None, tokenize=False,
                                             add_generation_prompt=True)
    return prompt


def add_special_tokens(use_chat_template: bool, tokenizer: Any = None) -> bool:
    """Whether tokenizing `render_prompt`'s string adds the tokenizer's special tokens (see the module docstring)."""
    return not (use_chat_template and getattr(tokenizer, "chat_template", None))


def prompt_token_ids(tokenizer: Any, prompt: str, use_chat_template: bool, tools: list[Any] | None = None) -> list[int]:
    """The token ids generation starts from, as TRL builds them."""
    text = render_prompt(tokenizer, prompt, use_chat_template, tools)
    return list(tokenizer(text, add_special_tokens=add_special_tokens(use_chat_template, tokenizer))["input_ids"])


def prompt_text(prompt: Any) -> str:
    """A dataset prompt back as the task's text (the user message of a conversation), for samples.jsonl."""
    if isinstance(prompt, list):
        return "".join(str(m.get("content") or "") for m in prompt if isinstance(m, dict) and m.get("role") == "user")
    return "" if prompt is None else str(prompt)
