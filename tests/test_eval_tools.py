"""rl eval with real tool calls (fast, CPU, no model): the tool loop of `workbench.evaluation.generate` driven by a
scripted generation step on the tiny tool tokenizer, the rows and costs it produces, and the tool / mode /
per-difficulty metrics on hand-made rows."""

from __future__ import annotations

import io
import types

import pytest

from workbench.config import ConfigError, PriceConfig, TaskConfig
from workbench.evaluation import generate, runner
from workbench.evaluation.generate import generate_with_tools, tool_suffix_ids
from workbench.evaluation.runner import EvalConfig, compute_metrics, sample_cost
from workbench.models.tiny import build_tokenizer
from workbench.signals import rollout_cost
from workbench.tools import environment_factory, tool_functions

PRICE = PriceConfig(prompt_per_million=1.0, completion_per_million=2.0, tools={"calculator": 0.001})


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("", tools=True)


@pytest.fixture(scope="module")
def task():
    from workbench.tasks import build_task

    return build_task(TaskConfig(name="mixed_arithmetic", train_size=20, eval_size=6, tools=["calculator", "expert"]))


def scripted(tok, first, after=lambda text: text.rsplit("<result>", 1)[1].split("</result>")[0], log=None):
    """A generation step: `first(prompt text)` before any tool result, then `after(text so far)`; each reply ends
    with <eos>, is cut at the budget and gets entropy 0.5 per token. `log` collects the sequences it was given."""

    def step(sequences, max_new_tokens):
        out = []
        for seq in sequences:
            if log is not None:
                log.append(list(seq))
            text = tok.decode(seq, skip_special_tokens=False)
            reply = (after(text) if "<result>" in text else first(text)) + tok.eos_token
            ids = tok(reply, add_special_tokens=False)["input_ids"][:max_new_tokens]
            out.append((ids, [0.5] * len(ids)))
        return out

    return step


def calculator_call(text):
    return f"[agentic]<call>calculator expression={text.split('=')[0]}</call>"


def ids_of(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def run(tok, examples, step, **kw):
    make_env = environment_factory(["calculator", "expert"], PRICE.tools)
    return generate_with_tools(None, tok, examples, make_env, step=step, **{"max_new_tokens": 96, **kw})


# ----------------------------------------------------------------------------------------------- the loop


def test_prompt_and_suffix_ids_are_trls(tok):
    """Prompts rendered with tools as TRL's _tokenize_prompts renders them; the suffix is TRL's own, and prompt +
    turn + suffix is exactly the chat template's rendering of the conversation (what training continues from)."""
    from trl import GRPOTrainer

    from workbench.prompts import prompt_token_ids

    env = environment_factory(["calculator", "expert"])()
    tools = tool_functions(env)
    user = [{"role": "user", "content": "347*86="}]
    trl_prompt = tok.apply_chat_template(conversation=[user], tools=tools, add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"][0]
    assert prompt_token_ids(tok, "347*86=", True, tools) == list(trl_prompt)

    result = [{"role": "tool", "name": "calculator", "content": "29842"}]
    shim = types.SimpleNamespace(processing_class=tok, _tokenizer=tok, chat_template=None, chat_template_kwargs={},
                                 _is_vlm=False)
    suffix = tool_suffix_ids(tok, result)
    assert suffix == GRPOTrainer._get_tool_suffix_ids(shim, result)
    assert tok.decode(suffix, skip_special_tokens=False) == "<result>29842</result>\n"

    call = {"role": "assistant", "content": "[agentic]", "tool_calls": [
        {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "347*86"}}}]}
    turn = ids_of(tok, "[agentic]<call>calculator expression=347*86</call><eos>")
    whole = tok.apply_chat_template(user + [call] + result, tools=tools, add_generation_prompt=True, tokenize=True,
                                    return_dict=False)
    assert list(trl_prompt) + turn + suffix == list(whole)


def test_the_calculator_runs_and_its_result_is_not_model_text(tok):
    ex = {"prompt": "347*86=", "answer": "29842", "difficulty": "hard"}
    log: list[list[int]] = []
    [s] = run(tok, [ex], scripted(tok, calculator_call, log=log))
    turn1 = ids_of(tok, "[agentic]<call>calculator expression=347*86</call><eos>")
    suffix = ids_of(tok, "<result>29842</result>\n")
    turn2 = ids_of(tok, "29842<eos>")
    prompt = ids_of(tok, "347*86=\n")

    assert [c["name"] for c in s.calls] == ["calculator"] and s.calls[0]["result"] == "29842" and s.calls[0]["ok"]
    assert s.calls[0]["price"] == 0.001
    assert s.ids == turn1 + suffix + turn2 and s.tool_mask == [1] * len(turn1) + [0] * len(suffix) + [1] * len(turn2)
    assert log == [prompt, prompt + turn1 + suffix]  # continued from prompt + completion + suffix, not re-tokenised
    assert s.text == "[agentic]29842" and not s.truncated
    assert len(s.entropy) == len(turn1) + len(turn2)  # entropies of the model's own tokens only
    assert [m["role"] for m in s.messages] == ["assistant", "tool", "assistant"]


def test_a_tool_error_goes_back_to_the_model_and_the_rollout_goes_on(tok):
    ex = {"prompt": "7+5=", "answer": "12"}
    [s] = run(tok, [ex], scripted(tok, lambda t: "[agentic]<call>calculator expression=1/0</call>",
                                  after=lambda t: "12"))
    assert s.messages[1] == {"role": "tool", "name": "calculator", "content": "error: division by zero"}
    assert not s.calls[0]["ok"] and s.calls[0]["price"] == 0.001  # a failed call is charged too
    assert s.text == "[agentic]12"
    # an unknown tool: TRL's own wording, and no environment call is logged
    [s] = run(tok, [ex], scripted(tok, lambda t: "[agentic]<call>search query=x</call>", after=lambda t: "12"))
    assert s.messages[1]["content"] == "{'error': 'Tool search not found.'}" and s.calls == []


def test_tool_calling_turns_and_the_budget_bound_the_loop(tok):
    ex = {"prompt": "7+5=", "answer": "12"}
    always = scripted(tok, lambda t: "[agentic]<call>calculator expression=1+1</call>",
                      after=lambda t: "<call>calculator expression=1+1</call>")
    [s] = run(tok, [ex], always, max_tool_calls=2, max_new_tokens=400)
    assert len(s.calls) == 2 and len([m for m in s.messages if m["role"] == "assistant"]) == 3
    assert s.messages[-1]["tool_calls"]  # the third call is never run (TRL's max_tool_calling_iterations)

    turn1 = ids_of(tok, "[agentic]<call>calculator expression=1+1</call><eos>")
    [s] = run(tok, [ex], always, max_new_tokens=len(turn1) + 3)  # the result does not fit in the budget
    assert s.ids == turn1 and s.tool_mask == [1] * len(turn1) and len(s.messages) == 1
    assert len(s.calls) == 1  # the call was made (and is charged), its result dropped, as in training

    budget = len(turn1) + len(ids_of(tok, "<result>12</result>\n")) + 2  # room for "12" but not its <eos>
    [s] = run(tok, [ex], scripted(tok, calculator_call), max_new_tokens=budget)
    assert len(s.ids) == budget and s.truncated and s.text == "[agentic]12"  # the last turn is cut at the budget


# ----------------------------------------------------------------------------------------------- rows, cost, metrics


def test_evaluate_model_with_tools(tok, task, monkeypatch):
    """The in-training / rl eval entry point: rows carry the tool fields, cost and cost of pass include tool $."""
    examples = task.examples("eval")
    monkeypatch.setattr(generate, "model_step", lambda model, tokenizer, t, e: scripted(tokenizer, calculator_call))
    metrics, rows = runner.evaluate_model(None, tok, task, examples, EvalConfig(n=2, max_new_tokens=96, n_boot=50),
                                          PRICE, use_chat_template=True)
    assert len(rows) == 12 and all(r["correct"] for r in rows)
    r = rows[0]
    ex = examples[0]
    suffix = ids_of(tok, f"<result>{ex['answer']}</result>\n")
    assert r["completion"] == f"[agentic]{ex['answer']}" and r["mode"] == "agentic"
    assert r["transcript"] == f"[agentic]<call>calculator expression={ex['expression']}</call>" \
                              f"<result>{ex['answer']}</result>{ex['answer']}"
    assert r["num_tool_calls"] == 1 and r["turns"] == 2 and r["tool_dollars"] == 0.001
    assert r["context_tokens"] == len(suffix) and r["difficulty"] == ex["difficulty"]
    assert r["length"] == len(ids_of(tok, f"[agentic]<call>calculator expression={ex['expression']}</call><eos>"
                                          f"{ex['answer']}<eos>"))
    assert r["prompt_tokens"] == len(ids_of(tok, ex["prompt"] + "\n"))
    tokens = (r["prompt_tokens"], r["length"], r["context_tokens"])
    assert r["cost"] == pytest.approx(rollout_cost(*tokens, 0.001, 1.0, 2.0))
    assert r["cost"] > sample_cost(r["prompt_tokens"], r["length"], PRICE) + 0.001 - 1e-12  # results are priced too

    total = sum(x["cost"] for x in rows)
    assert metrics["eval/cost_of_pass"] == pytest.approx(total / 12) and metrics["eval/cost_of_pass"] > 0.001
    assert metrics["eval/tools/calls_per_problem"] == 1.0 and metrics["eval/turns/mean"] == 2.0
    assert metrics["eval/tools/dollars_mean"] == pytest.approx(0.001)
    assert metrics["eval/modes/agentic"] == 1.0 and metrics["eval/modes/none"] == 0.0
    for d in {x["difficulty"] for x in examples}:
        assert metrics[f"eval/by/{d}/accuracy"] == 1.0 and metrics[f"eval/by/{d}/tools/calls_per_problem"] == 1.0
        assert f"eval/by/{d}/modes/agentic/ci_low" in metrics

    # repricing saved rows uses the new tool prices too
    before = r["cost"]
    runner.reprice(rows, PriceConfig(prompt_per_million=1.0, completion_per_million=2.0, tools={"calculator": 0.01}))
    assert rows[0]["tool_dollars"] == 0.01 and rows[0]["tool_calls"][0]["price"] == 0.01
    assert rows[0]["cost"] == pytest.approx(before + 0.009)


def _row(p, j, ok, cost, calls, mode, difficulty):
    return {"problem": p, "sample": j, "correct": ok, "answer": "1" if ok else "2", "length": 10, "truncated": False,
            "entropy": None, "entropy_think": None, "entropy_answer": None, "cost": cost, "num_tool_calls": calls,
            "tool_dollars": 0.001 * calls, "turns": 1 + calls, "mode": mode, "difficulty": difficulty}


def test_mode_shares_and_per_difficulty_metrics_on_hand_made_rows():
    spec = [  # per problem: difficulty, then (correct, cost, calls, mode) per sample
        ("easy", [(True, 1.0, 0, "instant"), (True, 1.0, 0, "instant")]),
        ("easy", [(True, 1.0, 0, "instant"), (False, 2.0, 0, "reasoning")]),
        ("hard", [(True, 5.0, 1, "agentic"), (False, 3.0, 0, "reasoning")]),
        ("hard", [(False, 4.0, 2, "agentic"), (False, 1.0, 0, None)]),
    ]
    rows = [_row(p, j, *s, d) for p, (d, samples) in enumerate(spec) for j, s in enumerate(samples)]
    m = compute_metrics(rows, 4, 2, [1], [2], n_boot=200, modes=("instant", "reasoning", "agentic"))
    assert m["eval/modes/instant"] == pytest.approx(3 / 8) and m["eval/modes/none"] == pytest.approx(1 / 8)
    assert m["eval/modes/agentic"] == pytest.approx(2 / 8)
    assert m["eval/tools/calls_per_problem"] == pytest.approx(3 / 8) and m["eval/turns/mean"] == pytest.approx(11 / 8)
    assert m["eval/by/easy/accuracy"] == pytest.approx(3 / 4) and m["eval/by/hard/accuracy"] == pytest.approx(1 / 4)
    assert m["eval/by/easy/cost_of_pass"] == pytest.approx(5.0 / 3) and m["eval/by/hard/cost_of_pass"] == 13.0
    assert m["eval/by/easy/modes/instant"] == pytest.approx(3 / 4) and m["eval/by/hard/modes/instant"] == 0.0
    assert m["eval/by/hard/tools/calls_per_problem"] == pytest.approx(3 / 4)
    for key in ("eval/modes/instant", "eval/tools/calls_per_problem", "eval/by/easy/accuracy",
                "eval/by/hard/modes/agentic", "eval/by/easy/cost_of_pass"):
        assert m[key + "/ci_low"] <= m[key] <= m[key + "/ci_high"], key
    # a share of 0 over a group still gets a real (Wilson) interval, as accuracy does
    assert m["eval/by/hard/modes/instant/ci_low"] == 0.0 and m["eval/by/hard/modes/instant/ci_high"] > 0.0
    # without modes / difficulty / tools, none of these keys
    plain = [{k: v for k, v in r.items() if k not in ("num_tool_calls", "mode", "difficulty")} for r in rows]
    keys = compute_metrics(plain, 4, 2, [1], [2], n_boot=20).keys()
    assert not [k for k in keys if k.startswith(("eval/modes", "eval/by", "eval/tools", "eval/turns"))]

    from rich.console import Console

    from cli.eval_cmd import _print_one

    console = Console(file=io.StringIO(), width=160)
    _print_one(console, {"metrics": m, "checkpoint": "final", "num_problems": 4, "n": 2})
    out = console.file.getvalue()
    assert "by group" in out and "eval/by/" not in out.split("by group")[0]  # a table of their own
    assert "easy" in out and "hard" in out and "agentic" in out


def test_tools_need_the_chat_template_and_the_hf_backend():
    base = {"task": {"name": "mixed_arithmetic", "tools": ["calculator"]}}
    with pytest.raises(ConfigError, match="use_chat_template=true"):
        runner.to_eval_config(base)
    with pytest.raises(ConfigError, match="eval.backend=vllm does not run tools"):
        runner.to_eval_config({**base, "model": {"use_chat_template": True}, "eval": {"backend": "vllm"}})


def test_a_real_model_through_the_tool_loop(tok, task):
    """The default generation step on a random tiny model: left-padded continuations of different lengths give what
    each sequence gives alone (greedy), and evaluate_model runs the loop end to end."""
    import torch

    from workbench.config import TinyModelConfig
    from workbench.evaluation.generate import generate_ids
    from workbench.models.tiny import build_model

    torch.manual_seed(0)
    model = build_model(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                        intermediate_size=64), tok).eval()
    seqs = [ids_of(tok, t) for t in ("7+5=\n", "347*86=\n[agentic]", "1-1=\n")]
    eos = {tok.eos_token_id}
    together = generate_ids(model, seqs, 6, eos, tok.pad_token_id, temperature=0, with_entropy=True)
    alone = [generate_ids(model, [s], 6, eos, tok.pad_token_id, temperature=0)[0][0] for s in seqs]
    assert [ids for ids, _ in together] == alone and all(len(e) == len(ids) for ids, e in together)

    metrics, rows = runner.evaluate_model(model, tok, task, task.examples("eval")[:2],
                                          EvalConfig(n=2, max_new_tokens=12, n_boot=10), PRICE, use_chat_template=True)
    assert len(rows) == 4 and "eval/tools/calls_per_problem" in metrics and "eval/modes/none" in metrics
    assert all(r["length"] + r["context_tokens"] <= 12 and r["cost"] >= r["tool_dollars"] for r in rows)


def test_the_report_plots_accuracy_against_cost_of_pass_when_runs_have_it(tmp_path):
    from test_compare import make_run

    from workbench import compare as cmp
    from workbench.report import render_report

    root = tmp_path / "runs"
    for i, (acc, cop) in enumerate([(0.5, 2e-5), (0.6, 3e-5)]):
        make_run(root, f"r{i}", {"seed": 0, "algo": {"learning_rate": 1e-4 * (i + 1)}},
                 summary={"eval/accuracy": acc, "cost/mean": 1e-5, "eval/cost_of_pass": cop})
    html = render_report(cmp.compare([root]))  # the table shows cost/mean; the cost axis is still cost of pass
    assert "eval/accuracy vs eval/cost_of_pass: frontier" in html
