"""The tiny model's tokenizer and chat templates: one token per character, `<think>`/`</think>` as single tokens, a
plain chat template (the model was warm-started on raw prompts) and, with tools, a tool-calling template TRL's
multi-turn loop accepts; `encode_example` lays a warm-start example out as that loop does.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from workbench.tasks.base import THINK_CLOSE, THINK_OPEN, Task

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, BOS, UNK)  # ids 0..3, in this order
THINK_TOKENS = (THINK_OPEN, THINK_CLOSE)  # ids 4, 5: single, non-special tokens
# Printable ASCII plus tab and newline are always in the vocabulary, whatever the task's text, so prompts
# written by hand (rl eval, chat templates) never hit <unk> on ordinary characters.
BASE_CHARS = frozenset(string.printable) - frozenset("\x0b\x0c\r")
# Concatenate message contents: the tiny model was warm-started on raw prompts, so use_chat_template=true
# must produce the same raw prompt.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
# With tools (task.tools): a chat template TRL's multi-turn tool loop accepts (it renders a full tool-calling
# conversation and is prefix-preserving). An assistant turn is a newline (its header, also the generation prompt),
# its text, its calls as `<call>NAME key=value</call>` and `<eos>`; a tool result is `<result>...</result>`. So "347*86=" asks
# "347*86=\n", and a calculator rollout reads `[agentic]<call>calculator expression=347*86</call><eos>`
# `<result>29842</result>\n29842<eos>`. The tool list is not rendered: the tiny model learns its tools from the
# warm start, not from a schema it could not read.
TOOL_CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}"
    "{{ '\\n' }}{{ m['content'] or '' }}"
    "{%- for tc in (m['tool_calls'] or []) -%}"
    "{%- set f = tc['function'] if 'function' in tc else tc -%}"
    "<call>{{ f['name'] }}{% for k, v in (f['arguments'] or {}).items() %} {{ k }}={{ v }}{% endfor %}</call>"
    "{%- endfor -%}{{ eos_token }}"
    "{%- elif m['role'] == 'tool' -%}<result>{{ m['content'] }}</result>"
    "{%- else -%}{{ m['content'] }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '\\n' }}{%- endif -%}"
)
# How transformers' `parse_response` (which TRL calls on every completion) reads the template's assistant turns
# back into {content, tool_calls}: the turn starts after the generation prompt's newline.
TOOL_RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "\n",
    "fields": {
        "tool_calls": {
            "open_pattern": r"<call>(?P<name>\w+)",
            "close": "</call>",
            "repeats": True,
            "content": "xml-inline",
            "content_args": {"tag_pattern": r"(?P<key>\w+)=(?P<value>[^<]*?)(?=\s+\w+=|$)"},
            "transform": {"type": "function", "function": {"name": "{name}", "arguments": "{content}"}},
        },
        "content": {"close_pattern": r"<eos>", "content": "text"},
    },
}


def build_tokenizer(
    chars: Iterable[str], max_length: int = 256, padding_side: str = "left", tools: bool = False
) -> PreTrainedTokenizerFast:
    """A character-level tokenizer over BASE_CHARS plus `chars`, with `<think>`/`</think>` as single tokens.

    Layout: `<pad>`=0, `<eos>`=1, `<bos>`=2, `<unk>`=3, `<think>`=4, `</think>`=5, then the characters in
    sorted order. Nothing is added around encoded text (no BOS/EOS). The think tags are added tokens that
    are *not* special, so `decode(..., skip_special_tokens=True)` (what TRL does) keeps them.

    >>> tok = build_tokenizer("")
    >>> tok.convert_ids_to_tokens(tok("<think>1 2</think>")["input_ids"])
    ['<think>', '1', ' ', '2', '</think>']
    """
    symbols = sorted((BASE_CHARS | {c for c in chars if len(c) == 1}) - set(SPECIAL_TOKENS))
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *THINK_TOKENS, *symbols])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # One pre-token per character. "(?m)" makes "." match newlines too (Oniguruma/Ruby syntax); no
    # normalizer, so spaces and newlines are ordinary tokens and survive the round trip.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
    # Fuse concatenates tokens; without a decoder `tokenizers` would join them with spaces.
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=BOS,
        unk_token=UNK,
        # The default cleanup would turn "a ." into "a." and break decode(encode(s)) == s.
        clean_up_tokenization_spaces=False,
        padding_side=padding_side,
        model_max_length=max_length,
    )
    tokenizer.chat_template = TOOL_CHAT_TEMPLATE if tools else CHAT_TEMPLATE
    if tools:
        tokenizer.response_template = TOOL_RESPONSE_TEMPLATE
    return tokenizer


def uses_tools(task: Task) -> bool:
    return bool(getattr(task, "tools", ()))


def encode_example(tokenizer: PreTrainedTokenizerFast, prompt: str, trace: Any, tools: bool
                   ) -> tuple[list[int], list[int], list[int] | None]:
    """(prompt ids, completion ids, trainable mask or None = all) of one warm-start example, without the final eos.

    Without tools: the raw prompt and the trace, as always. With tools: the prompt and every turn rendered by the
    tokenizer's chat template (the layout TRL's tool loop produces), turn by turn so that tool results (and the
    generation prompt after them) are marked untrainable, as TRL's tool_mask marks them in RL.
    """
    if not tools:
        return (tokenizer(prompt, add_special_tokens=False)["input_ids"],
                tokenizer(trace, add_special_tokens=False)["input_ids"], None)
    messages = [{"role": "user", "content": prompt}]
    previous = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(previous, add_special_tokens=False)["input_ids"]
    turns = [{"role": "assistant", "content": trace}] if isinstance(trace, str) else list(trace)
    ids: list[int] = []
    trainable: list[int] = []
    for k, turn in enumerate(turns):
        messages.append(turn)
        then_assistant = k + 1 < len(turns) and turns[k + 1]["role"] == "assistant"
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=then_assistant)
        if not text.startswith(previous):
            raise ValueError("the tool chat template is not prefix-preserving")
        piece = text[len(previous):]
        previous = text
        if k == len(turns) - 1 and piece.endswith(tokenizer.eos_token):
            piece = piece[: -len(tokenizer.eos_token)]  # make_batch appends the final eos
        piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
        ids += piece_ids
        trainable += [1 if turn["role"] == "assistant" else 0] * len(piece_ids)
    return prompt_ids, ids, trainable
