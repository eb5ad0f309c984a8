"""rl eval (fast): config, pure helpers, cost of pass on a hand-made sample file, and the command on a run directory
holding a tiny randomly initialised model (the plumbing, not accuracy; the trained-run test is test_eval_e2e.py)."""

from __future__ import annotations

import importlib.util

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from workbench.compose import compose
from workbench.config import ConfigError, PriceConfig, TaskConfig, TrainConfig, to_dict
from workbench.evaluation import runner
from workbench.evaluation.runner import (
    EvalConfig,
    build_rows,
    compute_metrics,
    sample_cost,
    to_eval_config,
    validate_eval,
)
from workbench.runs import read_jsonl
from workbench.signals import ThinkSplitter
from cli_asserts import one_line_error

cli = CliRunner()
MAX_NEW = 8
SMALL = ["eval.n=2", "eval.num_problems=4", f"eval.max_new_tokens={MAX_NEW}", "eval.n_boot=50", "-q"]


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pristine_run(tmp_path_factory) -> Path:
    """A run directory as rl train leaves it, with a ~10k-parameter random model in final/ and checkpoint-2/."""
    import torch

    from workbench.config import TinyModelConfig
    from workbench.models.tiny import build_model, build_tokenizer

    run = tmp_path_factory.mktemp("runs") / "exp" / "2026-01-01_00-00-00_fake"
    run.mkdir(parents=True)
    torch.manual_seed(0)
    tok = build_tokenizer("")
    tiny = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    model = build_model(tiny, tok)
    cfg = TrainConfig(task=TaskConfig(train_size=50, eval_size=8))
    cfg.algo.trl["max_completion_length"] = 12
    cfg.price = PriceConfig(prompt_per_million=1.0, completion_per_million=2.0)
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    for folder in (run / "checkpoints" / "checkpoint-2", run / "final"):
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    (run / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (run / "summary.json").write_text(json.dumps({"steps": 3}))
    return run


@pytest.fixture
def run_dir(pristine_run, tmp_path) -> Path:
    dst = tmp_path / "exp" / pristine_run.name
    shutil.copytree(pristine_run, dst)
    return dst


# ----------------------------------------------------------------------------------------------- config


def test_eval_yaml_composes_with_train_prices():
    cfg = to_eval_config(compose("eval", []))
    assert cfg.eval.backend == "hf" and cfg.eval.n >= 1 and cfg.eval.k is None and cfg.eval.max_new_tokens is None
    train = compose("train", [])
    assert cfg.price.prompt_per_million == train["price"]["prompt_per_million"]
    assert cfg.price.completion_per_million == train["price"]["completion_per_million"]
    cfg = to_eval_config(compose("eval", ["eval.n=16", "eval.k=[1,4,16]", "task=chain_sum"]))
    assert cfg.eval.k == [1, 4, 16] and cfg.task.name == "chain_sum"


def test_train_eval_section_becomes_the_eval_config():
    """rl train's eval: section and rl eval's EvalConfig meet in one conversion (TrainEvalConfig.to_eval)."""
    from workbench.config import N_BOOT, TrainEvalConfig

    e = TrainEvalConfig(n=3, temperature=0.5, batch_size=7, num_problems=11).to_eval(max_new_tokens=40, seed=5)
    assert isinstance(e, EvalConfig)
    assert (e.n, e.temperature, e.batch_size, e.max_new_tokens, e.seed) == (3, 0.5, 7, 40, 5)
    assert e.n_boot == N_BOOT and e.num_problems is None and e.k is None  # the caller picks the problems
    validate_eval(e)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"n": 4, "k": [1, 8]}, "k=8 is larger than eval.n=4"),
        ({"n": 4, "maj_k": [5]}, "k=5 is larger than eval.n=4 (maj@k"),
        ({"n": 4, "k": [0]}, "k=0 must be at least 1"),
        ({"n": 0}, "eval.n=0"),
        ({"backend": "tgi"}, "eval.backend='tgi' is not valid; choose one of: hf, vllm"),
        ({"temperature": -1.0}, "eval.temperature"),
    ],
)
def test_bad_eval_settings(kwargs, fragment):
    with pytest.raises(ConfigError) as e:
        validate_eval(EvalConfig(**kwargs))
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_k_equal_to_n_is_fine():
    validate_eval(EvalConfig(n=4, k=[1, 4], maj_k=[4]))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here (the vLLM tier)")
def test_vllm_backend_without_vllm_is_a_config_error():
    with pytest.raises(ConfigError, match=r"eval.backend=vllm is not available here \(.*\); use eval.backend=hf"):
        runner.check_backend("vllm")


# ----------------------------------------------------------------------------------------------- pure helpers


def test_sample_cost():
    price = PriceConfig(prompt_per_million=1.0, completion_per_million=3.0)
    assert sample_cost(10, 20, price) == pytest.approx(10e-6 + 60e-6)


def _rows(spec, price):
    """Hand-made samples.jsonl rows: spec[p][j] = (correct, answer, completion tokens)."""
    rows = []
    for p, samples in enumerate(spec):
        for j, (ok, answer, length) in enumerate(samples):
            rows.append({"problem": p, "sample": j, "correct": ok, "score": float(ok), "answer": answer,
                         "length": length, "prompt_tokens": 5, "truncated": False, "entropy": 1.0,
                         "entropy_think": 1.0, "entropy_answer": None, "cost": sample_cost(5, length, price)})
    return rows


def test_cost_of_pass_on_a_hand_made_sample_file(tmp_path):
    price = PriceConfig(prompt_per_million=1.0, completion_per_million=2.0)
    spec = [
        [(True, "3", 10), (False, "4", 30), (True, "3", 20)],  # problem 0: 2 of 3 right
        [(False, "9", 40), (False, None, 40), (False, "8", 40)],  # problem 1: none right
    ]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(spec, price)))
    rows = read_jsonl(path)
    m = compute_metrics(rows, num_problems=2, n=3, ks=[1, 3], maj_ks=[3], n_boot=200)

    costs = [5 * 1e-6 + L * 2e-6 for L in (10, 30, 20, 40, 40, 40)]
    assert m["eval/cost/mean"] == pytest.approx(sum(costs) / 6)
    # cost of pass = mean cost per attempt / pass rate = total cost / number correct = sum / 2
    assert m["eval/cost_of_pass"] == pytest.approx(sum(costs) / 2)
    assert m["eval/cost_of_pass"] == pytest.approx(m["eval/cost/mean"] / m["eval/accuracy"])
    assert m["eval/accuracy"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["eval/pass@1"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["eval/pass@3"] == pytest.approx(0.5)  # c=2 of n=3 with k=n: certain; c=0: never
    assert m["eval/maj@3"] == pytest.approx(0.5)  # "3" wins problem 0; nothing correct in problem 1
    assert m["eval/length/mean"] == pytest.approx(30.0)
    assert m["eval/length/correct_mean"] == pytest.approx(15.0)
    assert m["eval/entropy/answer"] is None and m["eval/entropy/think"] == pytest.approx(1.0)
    lo, hi = m["eval/cost_of_pass/ci_low"], m["eval/cost_of_pass/ci_high"]
    assert lo <= m["eval/cost_of_pass"] and (hi is None or hi >= m["eval/cost_of_pass"])  # None: inf resamples

    # new prices change only the costs; no correct sample at all: cost of pass is infinite
    runner.reprice(rows, PriceConfig(prompt_per_million=0.0, completion_per_million=1.0))
    assert rows[0]["cost"] == pytest.approx(10e-6)
    none_right = compute_metrics(_rows([spec[1]], price), num_problems=1, n=3, ks=[1], maj_ks=[3], n_boot=10)
    assert none_right["eval/cost_of_pass"] == float("inf") and none_right["eval/accuracy"] == 0.0


def test_build_rows_scores_with_the_task_scorer():
    from workbench.evaluation.generate import Sample
    from workbench.tasks import build_task

    task = build_task(TaskConfig(train_size=20, eval_size=2))
    ex = task.examples("eval")
    good = f"<think>x</think>{ex[0]['answer']}"
    samples = [Sample(0, good, [1, 2, 3], False, [0.5, 1.0, 1.5]), Sample(0, "<think>x", [1, 2], True, [1.0, 1.0]),
               Sample(1, "12345", [4], False, [2.0])]
    vocab = {1: "<think>x", 2: "</think>", 3: str(ex[0]["answer"])}

    class Tok:  # decodes ids by the table above; `</think>` is token 2
        def decode(self, ids, skip_special_tokens=False):
            return "".join(vocab.get(i, "?") for i in ids)

    rows = build_rows(samples, ex, task, [6, 7], PriceConfig(), ThinkSplitter(Tok()))
    assert [r["sample"] for r in rows] == [0, 1, 0]
    assert [r["score"] for r in rows] == [task.score(s.text, ex[s.problem]) for s in samples] == [1.0, 0.0, 0.0]
    assert rows[0]["answer"] == ex[0]["answer"] and rows[1]["answer"] is None
    assert rows[0]["think_tokens"] == 2 and rows[0]["entropy_think"] == 0.75 and rows[0]["entropy_answer"] == 1.5
    assert rows[1]["truncated"] and rows[2]["prompt_tokens"] == 7


def test_streaming_entropy_matches_output_scores(pristine_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    from workbench.evaluation.generate import EntropyRecorder

    model = AutoModelForCausalLM.from_pretrained(pristine_run / "final").eval()
    tok = AutoTokenizer.from_pretrained(pristine_run / "final", padding_side="left")
    enc = tok(["12+34=", "5-6="], return_tensors="pt", padding=True, add_special_tokens=False)
    rec = EntropyRecorder(0.7)
    torch.manual_seed(0)
    res = model.generate(**enc, do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=5,
                         pad_token_id=tok.pad_token_id, return_dict_in_generate=True, output_scores=True,
                         logits_processor=LogitsProcessorList([rec]))
    logp = torch.log_softmax(torch.stack(res.scores, 1).float(), -1)
    expected = -(logp.exp() * logp.nan_to_num(0.0)).sum(-1)
    assert torch.allclose(rec.entropies(), expected, atol=1e-4)


# ----------------------------------------------------------------------------------------------- the command


def test_eval_run_dir_writes_results_that_match_the_scorer(run_dir):
    from workbench.tasks import build_task

    res = cli.invoke(app, ["eval", str(run_dir), *SMALL])
    assert res.exit_code == 0, res.output
    assert "eval/pass@2" in res.output and "95% CI" in res.output
    out = run_dir / "eval" / "final"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "samples.jsonl"]  # no temp files left
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["checkpoint"] == "final" and doc["step"] == 3 and doc["num_problems"] == 4 and doc["n"] == 2
    assert {"metrics", "eval_config", "perf", "time", "run_dir", "num_samples"} <= set(doc)
    gen = doc["eval_config"]["generation"]
    assert gen["max_new_tokens"] == MAX_NEW and gen["task"]["name"] == "arithmetic"
    assert doc["eval_config"]["metrics"]["k"] == [1, 2] and doc["eval_config"]["metrics"]["maj_k"] == [2]
    m = doc["metrics"]
    for key in ("eval/accuracy", "eval/pass@1", "eval/pass@2", "eval/maj@2", "eval/length/mean", "eval/length/p90",
                "eval/truncation_rate", "eval/entropy/mean", "eval/entropy/think", "eval/cost/mean",
                "eval/accuracy/ci_low", "eval/accuracy/ci_high", "eval/cost/mean/ci_low"):
        assert key in m, key

    rows = read_jsonl(out / "samples.jsonl")
    assert len(rows) == 8 and [(r["problem"], r["sample"]) for r in rows[:3]] == [(0, 0), (0, 1), (1, 0)]
    task = build_task(TaskConfig(train_size=50, eval_size=8))
    examples = task.examples("eval")
    for r in rows:
        assert r["score"] == task.score(r["completion"], examples[r["problem"]])
        assert r["answer"] == task.extract_answer(r["completion"]) and r["target"] == examples[r["problem"]]["answer"]
        assert 1 <= r["length"] <= MAX_NEW and (not r["truncated"] or r["length"] == MAX_NEW)
        assert r["cost"] == pytest.approx(r["prompt_tokens"] * 1e-6 + r["length"] * 2e-6)  # the run's prices
        assert r["entropy"] is not None and r["entropy"] > 0
    assert m["eval/accuracy"] == pytest.approx(sum(r["score"] for r in rows) / len(rows))
    assert m["eval/length/mean"] == pytest.approx(sum(r["length"] for r in rows) / len(rows))
    assert m["eval/cost/mean"] == pytest.approx(sum(r["cost"] for r in rows) / len(rows))


def test_rerun_reuses_results_unless_forced(run_dir):
    assert cli.invoke(app, ["eval", str(run_dir), *SMALL]).exit_code == 0
    mfile = run_dir / "eval" / "final" / "metrics.json"
    first = json.loads(mfile.read_text())

    res = cli.invoke(app, ["eval", str(run_dir), *SMALL])
    assert res.exit_code == 0 and "(reused)" in res.output
    assert json.loads(mfile.read_text()) == first

    # only a metric setting changed: recomputed from the saved samples, nothing generated again
    res = cli.invoke(app, ["eval", str(run_dir), *SMALL, "eval.k=[1]", "price.completion_per_million=4.0"])
    assert res.exit_code == 0 and "recomputed" in res.output, res.output
    again = json.loads(mfile.read_text())
    assert "eval/pass@2" not in again["metrics"] and again["perf"] == first["perf"]
    assert again["metrics"]["eval/accuracy"] == first["metrics"]["eval/accuracy"]
    assert again["metrics"]["eval/cost/mean"] > first["metrics"]["eval/cost/mean"]

    # a generation setting changed, or --force: generated again
    res = cli.invoke(app, ["eval", str(run_dir), *SMALL, "eval.seed=1"])
    assert res.exit_code == 0 and "reused" not in res.output and "recomputed" not in res.output
    res = cli.invoke(app, ["eval", str(run_dir), *SMALL, "eval.seed=1", "--force"])
    assert res.exit_code == 0 and "reused" not in res.output
    assert json.loads(mfile.read_text())["time"] >= first["time"]


def test_checkpoint_all_evaluates_every_checkpoint_and_final(run_dir):
    res = cli.invoke(app, ["eval", str(run_dir), *SMALL, "--checkpoint", "all"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (run_dir / "eval").iterdir()) == ["checkpoint-2", "final"]
    steps = [json.loads((run_dir / "eval" / c / "metrics.json").read_text())["step"] for c in ("checkpoint-2", "final")]
    assert steps == [2, 3]
    assert "checkpoint-2" in res.output and "final" in res.output and "accuracy" in res.output
    res = cli.invoke(app, ["eval", str(run_dir), *SMALL, "-c", "2"])
    assert res.exit_code == 0 and "(reused)" in res.output


def test_runless_model_gets_its_own_directory(pristine_run, tmp_path):
    runs = tmp_path / "runs"
    args = ["eval", "model.kind=hf", f"model.name_or_path={pristine_run / 'final'}", "task.train_size=50",
            "task.eval_size=8", f"runs_dir={runs}", *SMALL]
    res = cli.invoke(app, args)
    assert res.exit_code == 0, res.output
    (base,) = (runs / "eval").iterdir()
    assert base.name.startswith("2026-01-01_00-00-00_fake-final_")
    assert (base / "eval" / "model" / "metrics.json").is_file() and (base / "eval" / "model" / "samples.jsonl").is_file()
    saved = yaml.safe_load((base / "config.yaml").read_text())
    assert saved["model"]["name_or_path"] == str(pristine_run / "final") and saved["eval"]["n"] == 2
    res = cli.invoke(app, args)
    assert res.exit_code == 0 and "(reused)" in res.output
    assert len(list((runs / "eval").iterdir())) == 1


# ----------------------------------------------------------------------------------------------- bad input


def _nothing_written(run_dir: Path) -> bool:
    return not (run_dir / "eval").exists()


def test_run_dir_without_a_model(run_dir):
    shutil.rmtree(run_dir / "final")
    shutil.rmtree(run_dir / "checkpoints")
    res = cli.invoke(app, ["eval", str(run_dir), *SMALL])
    one_line_error(res, "no model to evaluate", "no final/")
    assert _nothing_written(run_dir)


def test_run_without_final_lists_its_checkpoints(run_dir):
    shutil.rmtree(run_dir / "final")
    res = cli.invoke(app, ["eval", str(run_dir), *SMALL])
    one_line_error(res, "no final/ model", "checkpoint-2")
    assert _nothing_written(run_dir)


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--checkpoint", "checkpoint-7"], ["checkpoint 'checkpoint-7' not found", "available: checkpoint-2, final"]),
        (["-c", "9"], ["checkpoint '9' not found", "checkpoint-2, final"]),
        (["eval.k=[1,4]"], ["eval.k=[1, 4]", "k=4 is larger than eval.n=2"]),
        (["eval.maj_k=[3]"], ["k=3 is larger than eval.n=2"]),
        (["task.name=nosuch"], ["task.name='nosuch' is not valid", "arithmetic"]),
        (["model=hf"], ["only eval.*, task.* and price.*"]),
        (["+task.seed=1"], ["'+task.seed=1'", "only plain key=value"]),
        (["task.eval_size=[1"], ["no viable alternative"]),
        (["eval.nope=1"], ["eval.nope"]),
        (["eval.backend=vllm"], ["eval.backend=vllm is not available"]),
        (["eval.num_problems=100"], ["eval.num_problems=100", "only 8 eval problems"]),
        (["stray"], ["unexpected argument 'stray'"]),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(run_dir, extra, fragments):
    res = cli.invoke(app, ["eval", str(run_dir), *SMALL, *extra])
    one_line_error(res, *fragments)
    assert _nothing_written(run_dir)


def test_run_dir_overrides_apply_to_the_runs_own_task_and_prices(run_dir):
    """task.* and price.* overrides change the run's config by Hydra's grammar (lists, nested keys), as in rl train."""
    plan = runner.plan_run_eval(run_dir, ["eval.n=2", "task.eval_size=4", "price.tools.calculator=0.5",
                                          "task.params.max_digits=2", "task.tools=[]"])
    assert plan.cfg.task.eval_size == 4 and len(plan.examples) == 4 and plan.cfg.task.train_size == 50  # the run's
    assert plan.cfg.task.params == {"max_digits": 2} and plan.cfg.task.tools == []
    assert plan.cfg.price.tools == {"calculator": 0.5} and plan.cfg.price.prompt_per_million == 1.0  # the run's
    assert plan.cfg.model.dtype == "float32" and plan.cfg.runs_dir == str(run_dir.parent)
    assert _nothing_written(run_dir)


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["task=nosuch"], ["task='nosuch' is not a config option", "arithmetic"]),
        (["model.kind=hf"], ["model.name_or_path (or model.gguf_file) must be set"]),
        (["model.kind=hf", "model.name_or_path=/no/such/model"], ["directory not found", "/no/such/model"]),
        (["eval.n=2", "eval.k=[4]"], ["k=4 is larger than eval.n=2"]),
        (["--checkpoint", "all"], ["--checkpoint needs a RUN_DIR"]),
    ],
)
def test_runless_bad_input(tmp_path, args, fragments):
    runs = tmp_path / "runs"
    res = cli.invoke(app, ["eval", *args, f"runs_dir={runs}"])
    one_line_error(res, *fragments)
    assert not runs.exists()


def test_missing_run_dir(tmp_path):
    one_line_error(cli.invoke(app, ["eval", str(tmp_path / "nope")]), "run directory not found")


def test_interrupted_evaluation_leaves_no_metrics_json(run_dir, monkeypatch):
    assert cli.invoke(app, ["eval", str(run_dir), *SMALL]).exit_code == 0
    out = run_dir / "eval" / "final"
    real = runner._write_samples

    def killed(path, rows):
        path.with_name(f".{path.name}.tmp").write_text(json.dumps(rows[0]) + "\n")  # half written
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_write_samples", killed)
    res = cli.invoke(app, ["eval", str(run_dir), *SMALL, "--force"])
    assert res.exit_code == 130 and "interrupted" in res.output
    assert not (out / "metrics.json").exists()  # the old result is gone: it no longer matches samples.jsonl

    monkeypatch.setattr(runner, "_write_samples", real)
    res = cli.invoke(app, ["eval", str(run_dir), *SMALL])
    assert res.exit_code == 0 and "reused" not in res.output
    assert (out / "metrics.json").exists() and len(read_jsonl(out / "samples.jsonl")) == 8


def test_evaluate_model_in_memory(pristine_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.tasks import build_task

    model = AutoModelForCausalLM.from_pretrained(pristine_run / "final")
    tok = AutoTokenizer.from_pretrained(pristine_run / "final", padding_side="left")
    task = build_task(TaskConfig(train_size=50, eval_size=3))
    metrics, rows = runner.evaluate_model(model, tok, task, task.examples("eval"),
                                          EvalConfig(n=2, max_new_tokens=4, n_boot=10), PriceConfig())
    assert len(rows) == 6 and metrics["eval/accuracy"] == sum(r["score"] for r in rows) / 6
    assert {"eval/pass@2", "eval/maj@2", "eval/cost_of_pass", "perf/tokens_per_s"} <= set(metrics)
