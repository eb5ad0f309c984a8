"""rl compare on hand-made run directories: loading, grouping by seed, differing keys, the per-run metric rule,
intervals and significance markers with known answers, failed/running runs listed apart, output formats, CLI errors.
No model is trained. The helpers at the top are reused by test_report_browser.py."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from workbench import compare as cmp
from cli_asserts import one_line_error

runner = CliRunner()

BASE_CONFIG: dict[str, Any] = {
    "experiment_name": "length_shaping",
    "name": "run",
    "seed": 0,
    "runs_dir": "runs",
    "samples_every": 10,
    "model": {"kind": "tiny", "name_or_path": None, "tiny": {"hidden_size": 128, "seed": 0}},
    "task": {"name": "arithmetic", "train_size": 2000, "seed": 0},
    "algo": {"name": "grpo", "learning_rate": 5e-5, "num_generations": 8, "max_steps": 30},
    "reward": {"correctness": {"weight": 1.0}, "format": {"weight": 0.1}},
    "advantage": {},
    "regularizer": {},
    "logger": {"backend": "wandb", "mode": "offline", "tags": []},
    "eval": {"num_problems": 200, "n": 2},
    "price": {"prompt_per_million": 0.15, "completion_per_million": 0.6},
}


def deep_update(base: dict, upd: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and v:
            out[k] = deep_update(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def make_run(
    root: Path,
    dirname: str,
    config: dict | None = None,
    status: str = "completed",
    summary: dict | None = None,
    rows: list[dict] | None = None,
    samples: list[dict] | None = None,
    evals: dict[str, dict] | None = None,
    error: str | None = None,
) -> Path:
    """Write a run directory by hand: config.yaml, meta.json, metrics.jsonl, samples.jsonl, summary.json
    (completed runs only) and eval/<ckpt>/{metrics.json, samples.jsonl}."""
    cfg = deep_update(BASE_CONFIG, config or {})
    d = root / cfg["experiment_name"] / dirname
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    meta = {"status": status, "seed": cfg["seed"], "start_time": "2026-11-22T10:00:00", "error": error,
            "end_time": None if status == "running" else "2026-11-22T10:05:00"}
    (d / "meta.json").write_text(json.dumps(meta))
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows or []))
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples or []))
    if status == "completed":
        s = {"run_dir": str(d), "experiment": cfg["experiment_name"], "seed": cfg["seed"], "steps": len(rows or [])}
        s.update(summary or {})
        (d / "summary.json").write_text(json.dumps(s))
    for ckpt, data in (evals or {}).items():
        e = d / "eval" / ckpt
        e.mkdir(parents=True)
        (e / "metrics.json").write_text(json.dumps(data))
        (e / "samples.jsonl").write_text(
            json.dumps({"prompt": "12+30=", "completion": "<think>12+30=42</think>42", "correct": True, "length": 14}) + "\n"
        )
    return d


def curve_rows(steps: int, acc_end: float, len_end: float, seed: int, h0: float = 1.2, h1: float = 0.5,
               a: float = 0.3, b: float = 1.45) -> list[dict]:
    """Per-step metrics whose accuracy follows R = -a exp(H) + b as entropy decays from h0 to h1 (plus noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(1, steps + 1):
        frac = t / steps
        h = h0 + (h1 - h0) * frac
        acc = float(np.clip(-a * np.exp(h) + b + rng.normal(0, 0.01), 0, 1))
        length = 40 + (len_end - 40) * frac + rng.normal(0, 0.5)
        rows.append({
            "step": t, "time": 1.7e9 + t,
            "train/reward": acc + 0.1 + rng.normal(0, 0.01),
            "train/accuracy": acc,
            "length/mean": length,
            "entropy/mean": h + rng.normal(0, 0.005),
            "cost/mean": length * 0.6e-6,
            "shaping/correctness/mean": acc,
        })
    rows[-1]["eval/accuracy"] = acc_end
    return rows


def sample_rows(steps: list[int], completion: str = "<think>12+30=42</think>42") -> list[dict]:
    return [
        {"step": s, "prompt": "12+30=", "answer": "42", "completion": completion, "correct": True,
         "length": len(completion), "reward": 1.1, "advantage": 0.3, "rewards": {"correctness": 1.0, "format": 0.1}}
        for s in steps
    ]


def build_study(root: Path, injected: str | None = None) -> dict[str, list[Path]]:
    """Three groups x 3 seeds (plain GRPO, Kimi length 0.5, Kimi length 1.0), one failed and one running run.

    Known answers: kimi-0.5 has the baseline's accuracy (not significant) at a much shorter length (significant);
    kimi-1.0 loses accuracy (significant)."""
    groups = {
        "grpo": ({}, [0.78, 0.79, 0.77], [44.0, 45.0, 43.0]),
        "kimi-0.5": ({"reward": {"length_kimi": {"weight": 0.5}}}, [0.775, 0.785, 0.79], [15.0, 16.0, 15.5]),
        "kimi-1.0": ({"reward": {"length_kimi": {"weight": 1.0}}}, [0.60, 0.62, 0.61], [10.0, 10.5, 9.5]),
    }
    out: dict[str, list[Path]] = {}
    for gi, (name, (upd, accs, lens)) in enumerate(groups.items()):
        for seed, (acc, ln) in enumerate(zip(accs, lens)):
            rows = curve_rows(30, acc, ln, seed=seed + 10 * gi, h0=1.2 - 0.1 * gi, h1=0.5 - 0.1 * gi)
            completion = injected if (injected and seed == 0 and gi == 1) else "<think>12+30=42</think>42"
            cfg = deep_update({"name": name, "seed": seed, "runs_dir": f"runs{seed}"}, upd)
            summary = {
                "eval/accuracy": acc, "eval/length/mean": ln,
                "train/accuracy": float(np.mean([r["train/accuracy"] for r in rows[-10:]])),
                "length/mean": float(np.mean([r["length/mean"] for r in rows[-10:]])),
                "entropy/mean": float(np.mean([r["entropy/mean"] for r in rows[-10:]])),
                "cost/mean": float(np.mean([r["cost/mean"] for r in rows[-10:]])),
            }
            d = make_run(root, f"2026-11-22_10-0{gi}-0{seed}_{name}", cfg, summary=summary, rows=rows,
                         samples=sample_rows([10, 20, 30], completion))
            out.setdefault(name, []).append(d)
    out["failed"] = [make_run(root, "2026-11-22_11-00-00_broken", {"name": "broken", "algo": {"learning_rate": 1.0}},
                              status="failed", rows=curve_rows(3, 0.1, 40, 0), error="RuntimeError: loss is NaN <b>x</b>")]
    out["running"] = [make_run(root, "2026-11-22_11-00-01_wip", {"name": "wip"}, status="running",
                               rows=curve_rows(5, 0.5, 40, 1))]
    return out


@pytest.fixture
def study(tmp_path):
    root = tmp_path / "runs"
    return root, build_study(root)


# ----------------------------------------------------------------------------------------------- keys, grouping


def test_flatten_and_differing_keys():
    a = {"seed": 0, "algo": {"lr": 1e-4, "n": 8}, "reward": {"c": {"weight": 1.0}}, "advantage": {}}
    b = {"seed": 1, "algo": {"lr": 1e-4, "n": 8}, "reward": {"c": {"weight": 1.0}, "kimi": {"weight": 0.5, "x": 2}},
         "advantage": {}}
    c = {"seed": 2, "algo": {"lr": 3e-4, "n": 8}, "reward": {"c": {"weight": 1.0}}, "advantage": {}}
    assert cmp.flatten(a) == {"seed": 0, "algo.lr": 1e-4, "algo.n": 8, "reward.c.weight": 1.0, "advantage": {}}
    flats = [cmp.flatten(x) for x in (a, b, c)]
    assert cmp.differing_keys(flats) == ["seed", "algo.lr", "reward.kimi.weight", "reward.kimi.x"]
    # a subtree absent in some config collapses to one column, shown inline
    cols = cmp.display_columns([a, b, c], ["algo.lr", "reward.kimi.weight", "reward.kimi.x"])
    assert cols == ["algo.lr", "reward.kimi"]
    assert cmp.format_value(cmp.get_nested(b, "reward.kimi")) == "weight=0.5, x=2"
    assert cmp.format_value(cmp.get_nested(a, "reward.kimi")) == cmp.ABSENT


def test_runs_differing_only_by_seed_name_paths_logger_form_one_group(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        make_run(root, f"d{seed}", {"seed": seed, "name": f"x{seed}", "runs_dir": f"/r{seed}",
                                    "logger": {"mode": "online" if seed else "offline"},
                                    "algo": {"output_dir": f"/out/{seed}", "seed": seed}},
                 summary={"eval/accuracy": 0.5})
    make_run(root, "e_lr", {"seed": 0, "algo": {"learning_rate": 3e-4}}, summary={"eval/accuracy": 0.4})
    make_run(root, "f_kimi", {"seed": 0, "reward": {"length_kimi": {"weight": 0.5}}}, summary={"eval/accuracy": 0.6})
    runs, excluded = cmp.load_runs([root])
    assert not excluded
    groups = cmp.group_runs(runs)
    assert [len(g.runs) for g in groups] == [3, 1, 1]
    assert sorted(groups[0].seeds) == [0, 1, 2]
    assert list(groups[0].values) == ["algo.learning_rate", "reward.length_kimi"]
    assert [g.values["algo.learning_rate"] for g in groups] == ["5e-05", "0.0003", "5e-05"]
    assert [g.values["reward.length_kimi"] for g in groups] == ["-", "-", "weight=0.5"]


def test_group_by_prefix_overrides_grouping(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "a", {"seed": 0, "algo": {"learning_rate": 1e-4}}, summary={"eval/accuracy": 0.5})
    make_run(root, "b", {"seed": 1, "algo": {"learning_rate": 3e-4}}, summary={"eval/accuracy": 0.5})
    make_run(root, "c", {"seed": 0, "reward": {"length_kimi": {"weight": 0.5}}}, summary={"eval/accuracy": 0.5})
    runs, _ = cmp.load_runs([root])
    assert len(cmp.group_runs(runs)) == 3
    groups = cmp.group_runs(runs, ["reward"])  # learning rate no longer splits groups
    assert [len(g.runs) for g in groups] == [2, 1]
    assert list(groups[0].values) == ["reward.length_kimi"]
    with pytest.raises(cmp.CompareError, match="matches no config key"):
        cmp.group_runs(runs, ["nosuchkey"])


# ----------------------------------------------------------------------------------------------- metric rule


def test_metric_value_rule_eval_then_summary_then_metrics_tail(tmp_path):
    rows = [{"step": i, "train/reward": float(i), "eval/accuracy": None} for i in range(1, 21)]
    rows[4]["eval/accuracy"] = 0.3
    rows[14]["eval/accuracy"] = 0.4
    evals = {
        "checkpoint-30": {"metrics": {"eval/pass@1": 0.9, "eval/accuracy": 0.9}, "checkpoint": "checkpoint-30", "step": 30},
        "final": {"metrics": {"eval/pass@1": 0.7, "eval/pass@1/ci_low": 0.6}, "checkpoint": "final", "step": 20},
    }
    d = make_run(tmp_path, "r", summary={"eval/accuracy": 0.55, "length/mean": 33.0}, rows=rows, evals=evals)
    run = cmp.load_run(d)
    assert run.eval_checkpoint == "final"  # final wins over a larger step
    assert run.value("eval/pass@1") == (0.7, "eval/final")
    assert run.value("eval/accuracy") == (0.55, "summary.json")  # final eval lacks it -> summary
    assert run.value("length/mean") == (33.0, "summary.json")
    v, src = run.value("train/reward")  # not in summary: mean of the last 10 rows
    assert v == pytest.approx(np.mean(range(11, 21))) and src.startswith("metrics.jsonl")
    (d / "summary.json").write_text(json.dumps({"steps": 20}))
    assert cmp.load_run(d).value("eval/accuracy")[0] == 0.4  # eval key from metrics.jsonl: the last logged value
    assert cmp.load_run(d).value("nope") == (None, None)
    assert "eval/pass@1/ci_low" not in run.metric_names() and "eval/pass@1" in run.metric_names()


def test_eval_results_without_metrics_wrapper_and_largest_step(tmp_path):
    evals = {"checkpoint-10": {"eval/pass@1": 0.2, "step": 10}, "checkpoint-40": {"eval/pass@1": 0.6, "step": 40}}
    run = cmp.load_run(make_run(tmp_path, "r", summary={}, evals=evals))
    assert run.value("eval/pass@1") == (0.6, "eval/checkpoint-40")


def test_default_metrics_prefer_eval_pass_at_1():
    assert cmp.default_metrics({"eval/accuracy", "length/mean", "cost/mean", "entropy/mean"}) == [
        "eval/accuracy", "length/mean", "cost/mean", "entropy/mean"]
    assert cmp.default_metrics({"eval/pass@1", "eval/accuracy", "eval/length/mean", "length/mean"}) == [
        "eval/pass@1", "eval/length/mean"]


# ----------------------------------------------------------------------------------------------- statistics


def test_interval_best_and_significance_known_answers(study):
    root, _ = study
    comp = cmp.compare([root], metrics=["eval/accuracy", "eval/length/mean", "entropy/mean"])
    assert [g.label for g in comp.groups] == ["grpo", "kimi-0.5", "kimi-1.0"]
    assert comp.baseline == 0
    c = comp.cells[(0, "eval/accuracy")]
    half = 4.302653 * 0.01 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(n), s = 0.01 for (0.78, 0.79, 0.77)
    assert c.mean == pytest.approx(0.78)
    assert (c.low, c.high) == (pytest.approx(0.78 - half, abs=1e-6), pytest.approx(0.78 + half, abs=1e-6))
    assert c.text() == f"0.780 ± {half:.3f}"
    # kimi-0.5: same accuracy (not significant), far shorter (significant); kimi-1.0 loses accuracy (significant)
    assert comp.cells[(1, "eval/accuracy")].marker == cmp.MARK_NOT_SIGNIFICANT
    assert comp.cells[(1, "eval/length/mean")].marker == ""
    assert comp.cells[(2, "eval/accuracy")].marker == ""
    assert comp.cells[(2, "eval/accuracy")].p < 0.05 <= comp.cells[(1, "eval/accuracy")].p
    assert comp.cells[(0, "eval/accuracy")].marker == ""  # the baseline itself
    # best: highest accuracy (kimi-0.5: 0.7833 > 0.78), lowest length (kimi-1.0); entropy is not ranked
    assert [comp.cells[(i, "eval/accuracy")].best for i in range(3)] == [False, True, False]
    assert [comp.cells[(i, "eval/length/mean")].best for i in range(3)] == [False, False, True]
    assert not any(comp.cells[(i, "entropy/mean")].best for i in range(3))
    # 3 vs 3 seeds: a bootstrap has at most 27 resamples a side, so it is the exact permutation test here, whose
    # smallest p-value is 2/20 (the observed split and its mirror): no 3-seed difference reaches p < 0.05
    for test in ("bootstrap", "permutation"):
        exact = cmp.compare([root], metrics=["eval/accuracy"], test=test)
        assert exact.cells[(2, "eval/accuracy")].p == pytest.approx(0.1)
        assert exact.cells[(2, "eval/accuracy")].marker == cmp.MARK_NOT_SIGNIFICANT
        assert "exact permutation" in " ".join(exact.footer())


def test_single_seed_is_untestable_and_mean_only(tmp_path):
    root = tmp_path / "runs"
    for seed, acc in enumerate([0.5, 0.6]):
        make_run(root, f"a{seed}", {"seed": seed}, summary={"eval/accuracy": acc})
    make_run(root, "b", {"algo": {"learning_rate": 1e-3}}, summary={"eval/accuracy": 0.9})
    comp = cmp.compare([root], metrics=["eval/accuracy"])
    c = comp.cells[(1, "eval/accuracy")]
    assert c.marker == cmp.MARK_UNTESTABLE and c.text() == "0.900" and math.isnan(c.p)


def test_single_seed_shows_the_runs_own_eval_interval(tmp_path):
    """One seed has no spread over seeds, but its eval results carry an interval over problems: the cell shows it."""
    root = tmp_path / "runs"
    for seed, acc in enumerate([0.5, 0.6]):
        make_run(root, f"a{seed}", {"seed": seed}, summary={"eval/accuracy": acc})
    make_run(root, "b", {"algo": {"learning_rate": 1e-3}}, summary={"eval/accuracy": 0.4},
             evals={"final": {"metrics": {"eval/accuracy": 0.515, "eval/accuracy/ci_low": 0.47,
                                          "eval/accuracy/ci_high": 0.56}, "checkpoint": "final", "step": 3}})
    comp = cmp.compare([root], metrics=["eval/accuracy"])
    c = comp.cells[(1, "eval/accuracy")]
    assert c.text() == "0.515 [0.470, 0.560]" and c.over == "problems" and c.marker == cmp.MARK_UNTESTABLE
    assert comp.cells[(0, "eval/accuracy")].over == "seeds"
    assert any("own 95% interval over evaluation problems" in line for line in comp.footer())
    rows = list(csv.DictReader(io.StringIO(comp.to_csv())))
    assert rows[1]["eval/accuracy/ci_over"] == "problems" and float(rows[1]["eval/accuracy/ci_low"]) == 0.47


def test_config_group_id_is_the_compare_grouping():
    """rl train's W&B group is a hash of the config without seed, name, paths and logger: rl compare's groups."""
    base = {**BASE_CONFIG, "name": "a", "runs_dir": "/x"}
    same = {**BASE_CONFIG, "seed": 7, "name": "b", "runs_dir": "/y", "logger": {"backend": "none"}}
    other = {**BASE_CONFIG, "algo": {**BASE_CONFIG["algo"], "max_steps": 5}}
    assert cmp.config_group_id(base) == cmp.config_group_id(same)
    assert cmp.config_group_id(base) != cmp.config_group_id(other)
    assert cmp.config_group_id(base).startswith(BASE_CONFIG["experiment_name"] + "-")


def test_metric_directions():
    assert cmp.metric_direction("eval/pass@1") == "max"
    assert cmp.metric_direction("train/reward") == "max"
    assert cmp.metric_direction("train/reward_std") is None
    assert cmp.metric_direction("eval/length/mean") == "min"
    assert cmp.metric_direction("eval/cost_of_pass") == "min"
    assert cmp.metric_direction("entropy/mean") is None


def test_baseline_by_key_value(study):
    root, _ = study
    comp = cmp.compare([root], metrics=["eval/accuracy"], baseline="reward.length_kimi.weight=0.5")
    assert comp.baseline == 1
    assert comp.cells[(0, "eval/accuracy")].marker == cmp.MARK_NOT_SIGNIFICANT
    assert cmp.compare([root], metrics=["eval/accuracy"], baseline="reward.length_kimi=null").baseline == 0
    assert cmp.compare([root], metrics=["eval/accuracy"], baseline="name=kimi-1.0").baseline == 2
    with pytest.raises(cmp.CompareError, match="no group has"):
        cmp.compare([root], baseline="reward.length_kimi.weight=7")
    with pytest.raises(cmp.CompareError, match="matches 3 groups"):
        cmp.compare([root], baseline="algo.learning_rate=5e-5")


# ----------------------------------------------------------------------------------------------- inputs, status


def test_failed_and_running_runs_are_listed_separately(study):
    root, paths = study
    comp = cmp.compare([root])
    compared = {r.path for r in comp.runs}
    assert paths["failed"][0] not in compared and paths["running"][0] not in compared
    assert {e.status for e in comp.excluded} == {"failed", "running"}
    md = comp.to_markdown()
    assert "Not compared" in md and "failed" in md and "running" in md and "wip" in md
    assert "loss is NaN &lt;b&gt;x&lt;/b&gt;" in md  # no raw HTML in Markdown pasted into a PR


def test_sweep_index_glob_and_recursive_search(study, tmp_path, monkeypatch):
    root, paths = study
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "runs" / "sweeps" / "2026-11-22_12-00-00_len"
    sweep.mkdir(parents=True)
    lines = [{"job": 0, "run_dir": str(paths["grpo"][0].relative_to(tmp_path))},  # relative to cwd
             {"job": 1, "run_dir": str(paths["kimi-0.5"][0].resolve())},  # absolute
             {"job": 2, "run_dir": "runs/length_shaping/not_started_yet", "status": "pending"}]
    (sweep / "index.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    runs, excluded = cmp.load_runs([sweep])
    assert [r.path.resolve() for r in runs] == [paths["grpo"][0].resolve(), paths["kimi-0.5"][0].resolve()]
    assert [(e.status, Path(e.path).name) for e in excluded] == [("pending", "not_started_yet")]
    # a quoted glob is expanded here; duplicates are dropped
    dirs, _ = cmp.resolve_paths(["runs/length_shaping/*_kimi-0.5", str(paths["kimi-0.5"][0])])
    assert len(dirs) == 3
    # any folder: recursive search
    dirs, _ = cmp.resolve_paths([tmp_path / "runs"])
    assert len(dirs) == 11
    (tmp_path / "empty").mkdir()
    with pytest.raises(cmp.CompareError, match="no run directory"):
        cmp.resolve_paths([tmp_path / "empty"])


def test_meta_completed_without_summary_is_incomplete(tmp_path):
    d = make_run(tmp_path, "r", summary={"eval/accuracy": 0.5})
    (d / "summary.json").unlink()
    assert cmp.load_run(d).status == "incomplete"


# ----------------------------------------------------------------------------------------------- outputs + CLI


def test_markdown_and_csv(study):
    root, _ = study
    comp = cmp.compare([root], metrics=["eval/accuracy", "eval/length/mean"])
    md = comp.to_markdown().splitlines()
    assert md[0] == "| # | runs | reward.length_kimi | n | eval/accuracy | eval/length/mean |"
    assert md[2].startswith("| 1 (baseline) | grpo | - | 3 | 0.780 ± 0.025 | 44.0 ± 2.5 |")  # interval at the mean's precision
    assert "**" in md[3] and cmp.MARK_NOT_SIGNIFICANT in md[3]  # kimi-0.5: best accuracy, not significant
    assert any("Welch" in line for line in md)
    rows = list(csv.DictReader(io.StringIO(comp.to_csv())))
    assert [r["label"] for r in rows] == ["grpo", "kimi-0.5", "kimi-1.0"]
    assert float(rows[0]["eval/accuracy"]) == pytest.approx(0.78)
    assert rows[0]["eval/accuracy/p_value"] == "" and float(rows[2]["eval/accuracy/p_value"]) < 0.05
    assert rows[1]["reward.length_kimi"] == "weight=0.5"


def test_cli_table_md_and_errors(study, tmp_path):
    root, _ = study
    res = runner.invoke(app, ["compare", str(root)], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    for fragment in ("grpo", "kimi-0.5", "eval/accuracy", "eval/length/mean", "cost/mean", "entropy/mean",
                     "Welch", "not compared", "wip", "broken"):
        assert fragment in res.output, fragment
    res = runner.invoke(app, ["compare", str(root), "--format", "md", "-m", "eval/accuracy", "-g", "reward"])
    assert res.exit_code == 0 and res.output.startswith("| # |"), res.output
    one_line_error(runner.invoke(app, ["compare", str(tmp_path / "nope")]), "path not found")
    one_line_error(runner.invoke(app, ["compare", str(tmp_path / "nope*")]), "no run directory")
    one_line_error(runner.invoke(app, ["compare", str(root), "--metric", "eval/pass@64"]),
                    "eval/pass@64", "available:", "eval/accuracy", "length/mean")
    one_line_error(runner.invoke(app, ["compare", str(root), "--baseline", "oops"]), "KEY=VALUE")
    res = runner.invoke(app, ["compare", str(root), "--format", "xml"])  # a Typer choice: Typer's usage error
    assert res.exit_code == 2 and "'xml' is not one of" in res.output, res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(runner.invoke(app, ["compare", str(empty)]), "no run directory")
    only_failed = tmp_path / "f"
    make_run(only_failed, "x", status="failed", error="boom")
    one_line_error(runner.invoke(app, ["compare", str(only_failed)]), "no completed runs", "failed")


def test_cli_report_is_self_contained_and_escaped(tmp_path):
    root = tmp_path / "runs"
    evil = "<script>document.title='PWNED'</script><img src=x onerror=\"document.title='PWNED2'\">"
    build_study(root, injected=evil)
    make_run(root, "cfg_evil", {"name": "evil$x$", "task": {"path": "<b>bold</b>"}}, summary={"eval/accuracy": 0.1},
             rows=curve_rows(5, 0.1, 40, 3))
    out = tmp_path / "report.html"
    res = runner.invoke(app, ["compare", str(root), "--report", str(out), "--format", "md"])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "<script" not in text.lower() and "onerror=\"" not in text
    assert "&lt;script&gt;document.title=&#x27;PWNED&#x27;&lt;/script&gt;" in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in text and "<b>bold</b>" not in text
    assert "&lt;b&gt;x&lt;/b&gt;" in text  # the failed run's error
    assert "http://" not in text and "https://" not in text and 'src="data:image/svg+xml;base64,' in text
    assert text.count("<img ") >= 4  # learning curves, two Pareto plots, entropy law
    assert "Content-Security-Policy" in text
    assert "<details" in text and "Pareto" in text and "ceiling" in text


def test_report_with_summaries_only_does_not_crash(tmp_path):
    from workbench.report import render_report

    root = tmp_path / "runs"
    make_run(root, "a", {"seed": 0}, summary={"eval/accuracy": 0.5, "length/mean": None})
    make_run(root, "b", {"seed": 0, "algo": {"learning_rate": 1e-3}}, summary={"eval/accuracy": 0.6, "length/mean": 20.0})
    comp = cmp.compare([root])
    assert comp.metrics == ["eval/accuracy", "length/mean"]
    assert comp.cells[(0, "length/mean")].text() == "n/a"
    html = render_report(comp)
    assert "No metrics.jsonl rows to plot." in html and "No samples recorded." in html
    assert html.count("<img ") == 1  # accuracy vs length only (no cost metric)


def test_report_curves_have_y_labels_and_are_svg(study, monkeypatch):
    """Every curve panel names its quantity on the y-axis; figures are SVG (sharp at any zoom)."""
    import base64

    from workbench.report import figures as report

    root, _ = study
    comp = cmp.compare([root], metrics=["eval/accuracy"])
    figures = []
    real = report._figure
    monkeypatch.setattr(report, "_figure", lambda fig: (figures.append([a.get_ylabel() for a in fig.axes
                                                                         if a.axison]), real(fig))[1])
    uri, _ = report.curve_figure(comp, ["eval/accuracy", "length/mean", "entropy/mean", "train/reward", "cost/mean"])
    assert figures and all(label for label in figures[0]), figures
    assert "tokens per completion" in figures[0] and "$ per rollout" in figures[0]
    assert uri.startswith("data:image/svg+xml;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]).lstrip().startswith(b"<?xml")
