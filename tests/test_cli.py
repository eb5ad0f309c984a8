"""CLI wiring: help for every command, --help without torch, bad input -> one line, exit 2, nothing written."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_root_help_lists_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    assert "train" in res.output


@pytest.mark.parametrize("command", ["train"])
def test_command_help(command):
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_train_help_lists_config_groups_and_choices():
    res = runner.invoke(app, ["train", "--help"], terminal_width=200)
    for fragment in ("model: ", "hf", "tiny", "task: ", "arithmetic", "algo: grpo, rloo", "experiment: ", "quickstart"):
        assert fragment in res.output, fragment


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["eval", "--help"], ["sweep", "--help"],
                                  ["compare", "--help"]])
def test_help_does_not_import_heavy_modules(args):
    """`rl ... --help` must answer at once: no torch/trl (7-10 s), nor the report and sweep libraries."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from cli.main import app\n"
        f"r = CliRunner().invoke(app, {args!r})\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = ('torch', 'trl', 'transformers', 'matplotlib', 'scipy', 'optuna')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_dry_run_prints_resolved_config(tmp_path):
    res = runner.invoke(app, ["train", "experiment=quickstart", "algo.max_steps=7", f"runs_dir={tmp_path}", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "max_steps: 7" in res.output
    assert "experiment_name: quickstart" in res.output
    assert not any(tmp_path.iterdir())


def _assert_one_line_error(res, *fragments):
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    assert lines[0].startswith("error: ")
    assert "Traceback" not in res.output
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        (["model=nosuchmodel"], ["model='nosuchmodel'", "tiny", "hf"]),
        (["task=nosuch"], ["task='nosuch'", "arithmetic", "countdown"]),
        (["algo.not_a_key=1"], ["algo.not_a_key"]),
        (["algo.learning_rat=1e-4"], ["algo.learning_rat", "learning_rate"]),
        (["task.not_a_key=1"], ["task.not_a_key", "train_size"]),
        (["seed=abc"], ["seed", "integer"]),
        (["model.tiny.hidden_size=big"], ["model.tiny.hidden_size", "integer"]),
        (["logger.mode=sometimes"], ["logger.mode", "offline"]),
        (["reward=[nosuchterm]"], ["reward='nosuchterm'", "correctness"]),
    ],
)
def test_bad_config_is_one_line_exit_2_and_writes_nothing(tmp_path, overrides, fragments):
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["train", *overrides, f"runs_dir={runs}"])
    _assert_one_line_error(res, *fragments)
    assert not runs.exists() or not any(runs.rglob("config.yaml"))


def test_missing_data_file(tmp_path):
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["train", "task=file", f"task.path={tmp_path}/nope.jsonl", f"runs_dir={runs}"])
    _assert_one_line_error(res, "task.path", "nope.jsonl")
    assert not runs.exists()


def test_missing_model_path(tmp_path):
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["train", "model=hf", f"model.name_or_path={tmp_path}/no-model", f"runs_dir={runs}"])
    _assert_one_line_error(res, "model.name_or_path", "no-model")
    assert not runs.exists()


def test_resume_of_missing_run_dir(tmp_path):
    res = runner.invoke(app, ["train", "--resume", str(tmp_path / "nope")])
    _assert_one_line_error(res, "nope")
