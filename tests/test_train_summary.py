"""rl train's summary table (`workbench.summary.print_summary`): words and formats from the metric catalog, the tool
and mode rows only where the evaluation has them."""

from __future__ import annotations

from workbench import metric_catalog as mc
from workbench.summary import print_summary, row_label

SUMMARY = {"run_dir": "/tmp/runs/quickstart/r1", "experiment": "quickstart", "steps": 5, "train_seconds": 12.3,
           "eval/accuracy_start": 0.2, "eval/accuracy_start/ci_low": 0.1, "eval/accuracy_start/ci_high": 0.3,
           "eval/accuracy": 0.5, "eval/accuracy/ci_low": 0.4, "eval/accuracy/ci_high": 0.6,
           "eval/length/mean_start": 17.4, "eval/length/mean": 12.3, "train/reward": 0.7, "train/accuracy": 0.6,
           "length/mean": 14.2, "entropy/mean": 1.23, "cost/mean": 1.2e-5, "perf/step_time": 1.0}


def test_labels_and_formats_come_from_the_catalog(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    print_summary(SUMMARY)
    out = capsys.readouterr().out
    assert f"{mc.title('eval/accuracy')} (eval/accuracy, 95% CI)" in out
    assert f"{mc.fmt('eval/accuracy', 0.5)} [{mc.fmt('eval/accuracy', 0.4)}, {mc.fmt('eval/accuracy', 0.6)}]" in out
    assert mc.fmt("cost/mean", 1.2e-5) in out and mc.fmt("eval/length/mean", 17.4) in out
    assert "calls_per_problem" not in out and "eval/modes/" not in out
    assert row_label("entropy/mean") == f"{mc.title('entropy/mean')} (entropy/mean)"
    assert row_label("eval/modes/agentic") == "eval/modes/agentic"  # no title in the catalog: the name


def test_tool_and_mode_rows_when_evaluated(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    print_summary({**SUMMARY, "eval/tools/calls_per_problem": 1.5, "eval/tools/calls_per_problem_start": 0.5,
                   "eval/cost_of_pass": 2e-5, "eval/modes/agentic": 0.4, "eval/modes/agentic_start": 0.1})
    lines = capsys.readouterr().out.splitlines()
    calls = next(x for x in lines if "calls_per_problem" in x)
    assert mc.fmt("eval/tools/calls_per_problem", 0.5) in calls and mc.fmt("eval/tools/calls_per_problem", 1.5) in calls
    cost = next(x for x in lines if "cost_of_pass" in x)
    assert " - " in cost and mc.fmt("eval/cost_of_pass", 2e-5) in cost  # no start value: '-'
    assert any("eval/modes/agentic" in x and mc.fmt("eval/modes/agentic", 0.1) in x for x in lines)


def test_summary_json_keeps_the_start_of_pass_at_k_and_entropy(tmp_path):
    """A collapse is read as pass@16 and entropy falling from their start values, so summary.json keeps them
    (without their intervals); the end evaluation's keys stay as they are."""
    from types import SimpleNamespace

    from workbench.summary import summarize

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "entropy/mean": 0.2}\n')
    run = SimpleNamespace(path=tmp_path, metrics_file=tmp_path / "metrics.jsonl", read_meta=lambda: {})
    cfg = SimpleNamespace(experiment_name="e", name="r", seed=0, algo=SimpleNamespace(name="grpo"))
    start = {"eval/accuracy": 0.3, "eval/pass@16": 0.98, "eval/pass@16/ci_low": 0.95, "eval/entropy/mean": 0.22,
             "eval/maj@16": 0.5}
    s = summarize(run, cfg, start, {"eval/pass@16": 0.86}, 10.0, 1)
    assert s["eval/pass@16_start"] == 0.98 and s["eval/entropy/mean_start"] == 0.22 and s["eval/pass@16"] == 0.86
    assert "eval/pass@16/ci_low_start" not in s and "eval/maj@16_start" not in s
    assert s["entropy/mean"] == 0.2
