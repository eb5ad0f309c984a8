"""The run-directory contract: unique directories, sanitised names, atomic files, status, resume helpers."""

from __future__ import annotations

import json

from workbench.runs import RunDir, atomic_write_json, read_jsonl, sanitize_name


def test_sanitize_name_has_no_path_separators():
    assert sanitize_name("../../etc/passwd") == "etc-passwd"
    assert sanitize_name("a/b\\c d") == "a-b-c-d"
    assert sanitize_name("..") == "run"
    assert sanitize_name("") == "run"
    assert sanitize_name("lr-1e-4_ok.v2") == "lr-1e-4_ok.v2"


def test_runs_in_the_same_second_get_distinct_dirs(tmp_path):
    dirs = {RunDir.create(tmp_path, "exp", "same").path for _ in range(5)}
    assert len(dirs) == 5
    assert all(d.parent == tmp_path / "exp" for d in dirs)


def test_status_lifecycle(tmp_path):
    run = RunDir.create(tmp_path, "exp", "x")
    run.start_meta(["rl", "train"], seed=3, project_root=tmp_path)
    assert run.status == "running"
    run.mark_failed("RuntimeError: boom")
    assert run.status == "failed" and run.read_meta()["error"] == "RuntimeError: boom"
    assert not run.summary_file.exists()
    run.mark_completed({"steps": 3})
    assert run.status == "completed"
    assert json.loads(run.summary_file.read_text()) == {"steps": 3}


def test_atomic_json_writes_nan_as_null_and_leaves_no_temp(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [1.0, None]}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_read_jsonl_skips_torn_last_line(tmp_path):
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "x"')
    assert [r["step"] for r in read_jsonl(f)] == [1, 2]


def test_truncate_metrics_and_last_checkpoint(tmp_path):
    run = RunDir.create(tmp_path, "exp", "x")
    run.metrics_file.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 7)))
    for step in (2, 4, 10):
        d = run.checkpoints_dir / f"checkpoint-{step}"
        d.mkdir(parents=True)
        if step != 10:  # a checkpoint killed mid-save has no trainer_state.json and is ignored
            (d / "trainer_state.json").write_text("{}")
    assert run.last_checkpoint().name == "checkpoint-4"
    run.truncate_metrics(4)
    assert [r["step"] for r in read_jsonl(run.metrics_file)] == [1, 2, 3, 4]


def test_completed_without_a_readable_summary_is_incomplete(tmp_path):
    """summary.json is written last: meta.json's `completed` alone (a kill between the two writes, a torn file) is not
    a completed run, for `status` and for every reader of results (rl compare)."""
    run = RunDir.create(tmp_path, "exp", "x")
    run.write_meta(status="completed", error=None)
    assert run.status == "incomplete" and run.read_summary() is None
    run.summary_file.write_text('{"steps": 3')  # torn
    assert run.state() == ("incomplete", None) and run.read_summary() is None
    atomic_write_json(run.summary_file, {"steps": 3})
    assert run.status == "completed" and run.read_summary() == {"steps": 3}


def test_final_eval_prefers_final_then_the_largest_step(tmp_path):
    run = RunDir.create(tmp_path, "exp", "x")
    assert run.final_eval() is None
    for name, step, wrapped in (("checkpoint-5", 5, True), ("checkpoint-10", 10, False), ("broken", None, True)):
        (run.eval_dir / name).mkdir(parents=True)
        metrics = {"eval/accuracy": step or 0}
        doc = {"metrics": metrics, "checkpoint": name, "step": step} if wrapped else {**metrics, "step": step}
        (run.eval_dir / name / "metrics.json").write_text(json.dumps(doc))
    (run.eval_dir / "torn").mkdir()
    (run.eval_dir / "torn" / "metrics.json").write_text("{")
    got = run.final_eval()
    assert (got.checkpoint, got.path.name, got.metrics["eval/accuracy"]) == ("checkpoint-10", "checkpoint-10", 10)
    (run.eval_dir / "final").mkdir()
    (run.eval_dir / "final" / "metrics.json").write_text(json.dumps({"metrics": {"eval/accuracy": 0.5}, "step": 1}))
    got = run.final_eval()
    assert (got.checkpoint, got.metrics) == ("final", {"eval/accuracy": 0.5})


def test_is_run_dir_needs_config_and_meta(tmp_path):
    run = RunDir.create(tmp_path, "exp", "x")
    assert not run.is_run_dir()
    run.config_file.write_text("seed: 1\n")
    assert not run.is_run_dir() and run.read_config() == {"seed": 1}
    run.write_meta(status="running")
    assert run.is_run_dir()
