"""Tool environments (workbench.tools), the tiny model's tool chat template, the mixed_arithmetic task, and TRL's
multi-turn tool loop inside ShapedGRPOTrainer with scripted model outputs: the tools really run, each call is
logged and priced, and tool-result tokens get no loss and no advantage."""

from __future__ import annotations

import random
import time

import pytest
import torch

from workbench.config import ConfigError, TaskConfig
from workbench.models.tiny import TOOL_CHAT_TEMPLATE, build_tokenizer, encode_example, make_batch
from workbench.signals import completion_mode, completion_transcript, rollout_cost
from workbench.tasks import build_task
from workbench.tools import (
    DEFAULT_TOOL_PRICES,
    ToolEnvironment,
    ToolUsage,
    calculate,
    environment_class,
    environment_factory,
)


# ----------------------------------------------------------------------------------------------- tools


@pytest.mark.parametrize("expr, want", [("347*86", "29842"), ("(2+3)**2-7/2", "21.5"), ("-4+10", "6"),
                                         ("7//2", "3"), ("10 x 3", "30"), ("12=", "12")])
def test_calculator_is_exact(expr, want):
    assert calculate(expr) == want


@pytest.mark.parametrize("expr", ["9**9**9", "1/0", "__import__('os')", "a+1", "", "1" * 300, "10**70"])
def test_calculator_refuses_without_hanging(expr):
    start = time.perf_counter()
    with pytest.raises(ValueError):
        calculate(expr)
    assert time.perf_counter() - start < 1.0


def test_environment_logs_prices_and_turns_errors_into_answers():
    env = environment_factory(["calculator", "expert"], prices={"expert": 0.01})()
    env.reset(prompt="347*86=", answer="29842", id=0)
    assert env.calculator(expression="347*86") == "29842"
    assert env.calculator(expression="1/0") == "error: division by zero"
    assert env.expert(question="what is it?") == "29842"
    assert [c.name for c in env.calls] == ["calculator", "calculator", "expert"]
    assert [c.ok for c in env.calls] == [True, False, True]
    assert env.dollars == pytest.approx(2 * DEFAULT_TOOL_PRICES["calculator"] + 0.01)
    usage = ToolUsage.of(env.calls)
    assert (usage.calls, usage.failures, usage.by_tool) == (3, 1, {"calculator": 2, "expert": 1})
    env.reset(prompt="1+1=", answer="2", id=1)
    assert env.calls == []


def test_a_slow_tool_times_out_and_the_rollout_goes_on():
    env = ToolEnvironment(timeout=0.2)
    t0 = time.perf_counter()
    out = env._run("slow", {}, lambda: time.sleep(2) or "late")
    assert out == "error: slow timed out after 0.2 s" and time.perf_counter() - t0 < 1.5
    assert env.calls[-1].ok is False


def test_environment_class_exposes_only_enabled_tools():
    cls = environment_class(["calculator"])
    assert hasattr(cls, "calculator") and not hasattr(cls, "expert")
    with pytest.raises(ValueError, match="unknown tool 'search'.*calculator, expert"):
        environment_class(["search"])


def test_unknown_tool_in_config_is_a_one_line_error():
    with pytest.raises(ConfigError, match="task.tools: unknown tool 'web'"):
        build_task(TaskConfig(name="mixed_arithmetic", tools=["web"]))


# ----------------------------------------------------------------------------------------------- signals


def test_rollout_cost_prices_tool_results_as_context_and_adds_tool_dollars():
    # 10 prompt + 5 result tokens at $1/M, 20 model tokens at $2/M, plus a $0.001 call
    assert rollout_cost(10, 20, 5, 0.001, 1.0, 2.0) == pytest.approx(15e-6 + 40e-6 + 0.001)
    t = rollout_cost(torch.tensor([10, 10]), torch.tensor([20, 4]), torch.tensor([5, 0]),
                     torch.tensor([0.001, 0.0], dtype=torch.float64), 1.0, 2.0)
    assert t.tolist() == pytest.approx([15e-6 + 40e-6 + 0.001, 10e-6 + 8e-6])


def test_completion_mode_reads_the_leading_tag_only():
    modes = ("instant", "reasoning", "agentic")
    assert completion_mode("  [reasoning]<think>..", modes) == "reasoning"
    assert completion_mode("42 [instant]", modes) is None
    assert completion_mode("[fast]1", modes) is None


# ----------------------------------------------------------------------------------------------- task


def test_mixed_arithmetic_splits_difficulty_and_scores_the_models_own_answer():
    task = build_task(TaskConfig(name="mixed_arithmetic", tools=["calculator"], train_size=400, eval_size=100))
    train, evals = task.examples("train"), task.examples("eval")
    assert {ex["difficulty"] for ex in train} == {"easy", "hard"}
    hard_eval = {ex["expression"] for ex in evals if ex["difficulty"] == "hard"}
    assert hard_eval and not {ex["expression"] for ex in train} & hard_eval
    assert {ex["difficulty"] for ex in evals} == {"easy", "hard"}
    hard = next(ex for ex in train if ex["difficulty"] == "hard")
    a, b = (int(x) for x in hard["expression"].split("*"))
    assert hard["answer"] == str(a * b) and 100 <= a <= 999 and 10 <= b <= 99
    assert task.score(f"[instant]{a * b}", hard) == 1.0
    assert task.score(f"[reasoning]<think>{a}*{b}=1</think>{a * b}", hard) == 1.0
    assert task.score("[agentic]", hard) == 0.0  # a tool result is not an answer
    assert task.modes == ("instant", "reasoning", "agentic")


def test_warm_start_traces_cover_every_mode_and_mask_tool_results():
    task = build_task(TaskConfig(name="mixed_arithmetic", tools=["calculator", "expert"], train_size=200))
    tok = build_tokenizer("", tools=True)
    rng = random.Random(0)
    seen, tools_used = set(), set()
    for ex in task.examples("train")[:60]:
        trace = task.warm_start_completion(ex, rng, False)
        text = trace if isinstance(trace, str) else trace[0]["content"]
        seen.add(completion_mode(text, task.modes))
        p, c, keep = encode_example(tok, ex["prompt"], trace, True)
        assert tok.decode(p) == ex["prompt"] + "\n"
        if isinstance(trace, list):
            tools_used.add(trace[0]["tool_calls"][0]["function"]["name"])
            decoded = tok.decode(c)
            start = decoded.index("<result>")
            # tokens of "<result>...</result>\n" (and only those) are untrainable; the final answer is trained
            untrained = "".join(tok.decode([t]) for t, k in zip(c, keep) if k == 0)
            assert untrained == decoded[start: decoded.index("</result>") + len("</result>") + 1]
            assert keep[-1] == 1
            _, labels = make_batch([p], [c], tok.eos_token_id, tok.pad_token_id, [keep])
            assert (labels[0] == -100).sum() == len(p) + keep.count(0)
    assert seen == {"instant", "reasoning", "agentic"} and tools_used == {"calculator", "expert"}


def test_tool_template_passes_trls_checks_and_parses_calls():
    from trl.chat_template_utils import is_chat_template_prefix_preserving, supports_tool_calling

    tok = build_tokenizer("", tools=True)
    assert tok.chat_template == TOOL_CHAT_TEMPLATE
    assert supports_tool_calling(tok) and is_chat_template_prefix_preserving(tok)
    env = environment_factory(["calculator"])()
    prompt = tok.apply_chat_template([{"role": "user", "content": "347*86="}], tools=[env.calculator],
                                     add_generation_prompt=True, tokenize=True, return_dict=False)
    out = tok("[agentic]<call>calculator expression=347*86</call><eos>", add_special_tokens=False)["input_ids"]
    msg = tok.parse_response(out, prefix=prompt, tools=[env.calculator])
    assert msg["content"] == "[agentic]"
    assert msg["tool_calls"] == [{"type": "function",
                                  "function": {"name": "calculator", "arguments": {"expression": "347*86"}}}]


# ----------------------------------------------------------------------------------------------- TRL's loop


def _scripted_trainer(tmp_path, monkeypatch, script):
    """A ShapedGRPOTrainer on an untrained tiny model whose generations are `script(prompt_text) -> text`."""
    from transformers import GenerationConfig
    from trl import GRPOConfig

    from workbench.config import TinyModelConfig
    from workbench.models.tiny import build_model
    from workbench.shaping import build_terms
    from workbench.trainers import ShapedGRPOTrainer, TermReward
    from datasets import Dataset

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    task = build_task(TaskConfig(name="mixed_arithmetic", tools=["calculator", "expert"], train_size=8, eval_size=0))
    tok = build_tokenizer("", tools=True)
    torch.manual_seed(0)
    model = build_model(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                        intermediate_size=64), tok)
    model.generation_config = GenerationConfig(pad_token_id=0, eos_token_id=1, bos_token_id=2)
    rows = [{**ex, "prompt": [{"role": "user", "content": ex["prompt"]}]} for ex in task.examples("train")[:2]]
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=4,
                      num_generations=2, max_completion_length=96, max_tool_calling_iterations=2, report_to=[],
                      max_steps=1, logging_steps=1, save_strategy="no", beta=0.0, scale_rewards="none")
    terms = build_terms("reward", {"correctness": {"weight": 1.0}})
    trainer = ShapedGRPOTrainer(model=model, reward_funcs=[TermReward("correctness")], args=args,
                                train_dataset=Dataset.from_list(rows), processing_class=tok,
                                environment_factory=environment_factory(["calculator", "expert"]))
    trainer.setup_shaping(task=task, reward_terms=terms, advantage_terms=[], regularizers=[], run=None)

    def fake_generate(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        # one completion per prompt row: TRL's batch already repeats each prompt num_generations times
        return [tok(script(tok.decode(ids)), add_special_tokens=False)["input_ids"] for ids in prompt_ids], None

    monkeypatch.setattr(trainer, "_generate_single_turn", fake_generate)
    return trainer, tok, rows


def test_trl_tool_loop_runs_the_tool_and_masks_its_result(tmp_path, monkeypatch):
    def script(prompt: str) -> str:
        if prompt.endswith("</result>\n"):  # after the tool: answer with what it said
            return prompt[prompt.rindex("<result>") + 8: prompt.rindex("</result>")] + "<eos>"
        expression = prompt.split("\n")[0].rstrip("=")
        return f"[agentic]<call>calculator expression={expression}</call><eos>"

    trainer, tok, rows = _scripted_trainer(tmp_path, monkeypatch, script)
    batch = [rows[0], rows[0], rows[1], rows[1]]
    out = trainer._generate_and_score_completions(batch)
    tool_mask, cmask, ids = out["tool_mask"], out["completion_mask"], out["completion_ids"]
    for row in range(4):
        n = int(cmask[row].sum())
        text = tok.decode(ids[row, :n])
        start = len(tok(text[: text.index("<result>")], add_special_tokens=False)["input_ids"])
        end = len(tok(text[: text.index("</result>") + len("</result>") + 1], add_special_tokens=False)["input_ids"])
        want = [1] * start + [0] * (end - start) + [1] * (n - end)
        assert tool_mask[row, :n].tolist() == want  # result tokens (and the turn header after them) masked
    # the calculator really ran, was logged, priced, and the answers it enabled are correct
    m = trainer._metrics["train"]
    assert m["tools/calls_mean"][-1] == 1.0
    assert m["train/accuracy"][-1] == 1.0
    assert m["cost/tool_mean"][-1] == pytest.approx(DEFAULT_TOOL_PRICES["calculator"])
    assert m["modes/agentic"][-1] == 1.0 and m["turns/mean"][-1] == 2.0
    # the loss sees no tool-result token: TRL multiplies completion_mask by tool_mask
    loss_mask = (cmask * tool_mask).bool()
    assert loss_mask.sum() < cmask.sum() and not (loss_mask & (tool_mask == 0)).any()


def test_trl_tool_loop_returns_tool_errors_to_the_model(tmp_path, monkeypatch):
    def script(prompt: str) -> str:
        if "<result>" in prompt:
            return "0<eos>"
        return "[agentic]<call>calculator expression=1/0</call><eos>"

    trainer, tok, rows = _scripted_trainer(tmp_path, monkeypatch, script)
    out = trainer._generate_and_score_completions([rows[0], rows[0], rows[1], rows[1]])
    text = tok.decode(out["completion_ids"][0][out["completion_mask"][0].bool()])
    assert "<result>error: division by zero</result>" in text
    assert trainer._metrics["train"]["tools/error_rate"][-1] == 1.0  # logged by the environment, not raised


def test_transcript_shows_calls_and_results():
    msgs = [{"role": "assistant", "content": "[agentic]", "tool_calls": [
        {"type": "function", "function": {"name": "expert", "arguments": {"question": "2*3"}}}]},
        {"role": "tool", "name": "expert", "content": "6"}, {"role": "assistant", "content": "6"}]
    assert completion_transcript(msgs) == "[agentic]<call>expert question=2*3</call><result>6</result>6"


def test_tool_runs_need_a_tool_calling_chat_template():
    from importlib.resources import files

    from workbench.models.tiny import CHAT_TEMPLATE
    from workbench.tools import check_tool_template

    tok = build_tokenizer("")
    assert tok.chat_template == CHAT_TEMPLATE  # plain concatenation: drops tool calls
    with pytest.raises(ConfigError, match="cannot render tool calls"):
        check_tool_template(tok, "tiny-plain")
    # a Qwen2.5-Instruct chat template (TRL ships a copy) renders tools, and TRL knows how to parse its calls
    tok.chat_template = files("trl").joinpath("chat_templates/qwen2_5.jinja").read_text()
    check_tool_template(tok, "qwen2.5")
    assert tok.response_template is not None
    check_tool_template(build_tokenizer("", tools=True), "tiny")


def test_a_saved_tiny_tokenizer_loads_back_with_spaces_and_newlines(tmp_path):
    """AutoTokenizer picks Qwen2Tokenizer from a Qwen2 config.json and drops whitespace; the tool template's turn
    header is a newline, so the tiny model's folders load through `load_tokenizer`."""
    from transformers import AutoTokenizer

    from workbench.config import TinyModelConfig
    from workbench.models.hf import load_tokenizer
    from workbench.models.tiny import build_model

    tok = build_tokenizer("", tools=True)
    build_model(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64),
                tok).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    text = "12+3=\n[reasoning]<think>12+3=15. ok</think>15"
    assert len(AutoTokenizer.from_pretrained(tmp_path)(text)["input_ids"]) < len(tok(text)["input_ids"])  # the trap
    again = load_tokenizer(tmp_path, padding_side="left")
    assert again(text)["input_ids"] == tok(text)["input_ids"] and again.decode(again(text)["input_ids"]) == text
    assert again.chat_template == TOOL_CHAT_TEMPLATE


@pytest.mark.parametrize("override, message", [
    ("model.use_chat_template=false", "task.tools needs model.use_chat_template=true"),
    ("algo=rloo", "task.tools: tool calls run in TRL's GRPOTrainer only; use algo=grpo"),
    ("task.tools=[calculator,web]", "task.tools: unknown tool 'web'; choose from: calculator, expert"),
    ("task.max_tool_calls=0", "task.max_tool_calls=0 must be at least 1"),
])
def test_tool_settings_are_checked_before_a_run_starts(override, message):
    from workbench.checks import check_train
    from workbench.compose import compose
    from workbench.config import to_train_config

    cfg = to_train_config(compose("train", ["experiment=agentic_plain", override]))
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        check_train(cfg)
