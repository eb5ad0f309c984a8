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
