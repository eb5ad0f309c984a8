"""Hydra and Typer conventions: what a Hydra or Typer user types is honoured or refused in one line, never ignored;
--version, shell completion, optional parts, piped output, declared dependencies."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from cli_asserts import one_line_error

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


# ----------------------------------------------------------------------------------------------- Hydra


def test_deleting_the_logger_means_no_logger(tmp_path):
    res = runner.invoke(app, ["train", "~logger", f"runs_dir={tmp_path}", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(res.stdout.split("dry run:")[0])["logger"]["backend"] == "none"


@pytest.mark.parametrize("group", ["model", "task", "algo"])
def test_deleting_a_group_every_run_needs_is_refused(tmp_path, group):
    one_line_error(runner.invoke(app, ["train", f"~{group}", f"runs_dir={tmp_path}", "--dry-run"]),
                    f"~{group}", f"{group}=OPTION")


@pytest.mark.parametrize("override, fragments", [
    ("hydra.run.dir=/tmp/elsewhere", ["hydra.run.dir", "runs_dir=DIR", "--name"]),
    ("hydra/launcher=joblib", ["hydra/launcher=joblib", "rl sweep"]),
    ("hydra.job.chdir=true", ["hydra.job.chdir", "takes no hydra settings"]),
])
def test_rl_train_refuses_hydra_settings_it_would_ignore(tmp_path, override, fragments):
    one_line_error(runner.invoke(app, ["train", override, f"runs_dir={tmp_path}", "--dry-run"]), *fragments)
    one_line_error(runner.invoke(app, ["eval", "model=tiny", override, "--dry-run"]), override.split("=")[0])


def test_a_sweep_value_in_rl_train_points_to_rl_sweep(tmp_path):
    line = one_line_error(runner.invoke(app, ["train", "seed=1,2", f"runs_dir={tmp_path}"]),
                           "seed=1,2", "rl sweep seed=1,2")
    assert "++" not in line and "--multirun" not in line


def test_rl_sweep_refuses_the_hydra_dirs_it_sets(tmp_path):
    for o in ("hydra.sweep.dir=/tmp/x", "hydra.sweep.subdir=y", "hydra.run.dir=z"):
        one_line_error(runner.invoke(app, ["sweep", "seed=1,2", o, f"runs_dir={tmp_path}", "--dry-run"]),
                        o.split("=")[0], "runs_dir=DIR")
    assert not any(tmp_path.iterdir())


def test_unknown_launcher_lists_the_real_options():
    line = one_line_error(runner.invoke(app, ["sweep", "seed=1,2", "hydra/launcher=nonexistent", "--dry-run"]),
                           "hydra/launcher='nonexistent'")
    choices = line.split("choose one of:")[1]
    for option in ("basic", "joblib", "submitit_slurm", "slurm_gpu", "local_pool"):  # Hydra's, plugins', conf/'s
        assert option in choices, line
    one_line_error(runner.invoke(app, ["sweep", "seed=1,2", "hydra/sweeper=nope", "--dry-run"]), "basic", "optuna")


def test_a_launcher_whose_plugin_is_missing_says_what_to_install():
    pytest.importorskip("hydra_plugins")
    import importlib.util

    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None:
        pytest.skip("the Ray launcher is installed here")
    one_line_error(runner.invoke(app, ["sweep", "seed=1,2", "hydra/launcher=ray", "--dry-run"]),
                    "pip install hydra-ray-launcher")


def _readme_slurm_command() -> list[str]:
    text = (ROOT / "README.md").read_text()
    (line,) = [x for x in text.splitlines() if x.startswith("rl sweep") and "slurm" in x.lower()]
    return line.split("#")[0].split()[2:]  # the overrides after `rl sweep`


def test_readme_slurm_example_asks_for_a_gpu_and_dry_run_shows_the_resources(tmp_path):
    args = _readme_slurm_command()
    res = runner.invoke(app, ["sweep", *args, f"runs_dir={tmp_path}", "--dry-run"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "gpus_per_node=1" in res.output and "timeout_min=240" in res.output and "partition=gpu" in res.output
    assert "warning" not in res.output
    # the plugin's bare preset on a GPU partition gets no GPU and 60 minutes: said, not hidden
    res = runner.invoke(app, ["sweep", "sweep=length_weight_grid", "hydra/launcher=submitit_slurm",
                              "hydra.launcher.partition=gpu", f"runs_dir={tmp_path}", "--dry-run"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "timeout_min=60" in res.output and "gpus_per_node" not in res.output.split("warning")[0]
    assert "warning: partition 'gpu' looks like a GPU partition but each job asks for no GPU" in res.output
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------- Typer


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and re.match(r"rl \d+\.\d+", res.output) and "trl " in res.output, res.output


def test_shell_completion_is_offered_and_completes_group_options():
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "--install-completion" in res.output and "--show-completion" in res.output

    from cli.common import override_completer

    c = override_completer()
    assert "model=" in c("mo") and "experiment=" in c("exp")
    assert c("model=t") == ["model=tiny"]
    assert "reward=[correctness,length_kimi" in c("reward=[correctness,length_k")
    assert c("nosuchkey=") == []
    # through Typer's completion protocol, as the installed shell script calls it
    res = runner.invoke(app, [], prog_name="rl", env={"_RL_COMPLETE": "complete_zsh",
                                                        "_TYPER_COMPLETE_ARGS": "rl sweep hydra/launcher=slurm"})
    assert "hydra/launcher=slurm_gpu" in res.output, res.output
    res = runner.invoke(app, [], prog_name="rl", env={"_RL_COMPLETE": "complete_zsh",
                                                        "_TYPER_COMPLETE_ARGS": "rl train experiment=quick"})
    assert "experiment=quickstart" in res.output, res.output


def test_report_without_matplotlib_says_what_to_install(tmp_path, monkeypatch):
    from test_compare import make_run

    make_run(tmp_path / "runs", "a", summary={"eval/accuracy": 0.5})
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    res = runner.invoke(app, ["compare", str(tmp_path / "runs"), "--report", str(tmp_path / "r.html")])
    one_line_error(res, "--report", "matplotlib", "pip install 'rl-workbench[report]'")
    assert not (tmp_path / "r.html").exists()


def test_compare_piped_uses_the_full_width(tmp_path):
    """Not a terminal (a file, `less`): the table is not squeezed into 80 columns, so no header wraps."""
    from test_compare import make_run

    root = tmp_path / "runs"
    for seed in (0, 1):
        make_run(root, f"a{seed}", {"seed": seed, "reward": {"length_kimi": {"weight": 0.5}}},
                 summary={"eval/accuracy": 0.5 + seed / 10, "eval/length/mean": 40.0, "entropy/mean": 0.3,
                          "cost/mean": 1e-5})
        make_run(root, f"b{seed}", {"seed": seed}, summary={"eval/accuracy": 0.6, "eval/length/mean": 44.0 + seed,
                                                            "entropy/mean": 0.4, "cost/mean": 2e-5})
    res = runner.invoke(app, ["compare", str(root)], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    header = next(line for line in res.output.splitlines() if "eval/accuracy" in line)
    for name in ("eval/length/mean", "entropy/mean", "cost/mean", "reward.length_kimi"):
        assert name in header, header
    assert max(len(line) for line in res.output.splitlines()) > 80


# ----------------------------------------------------------------------------------------------- packaging


def test_every_imported_distribution_is_declared():
    """Each third-party module imported by cli/ and workbench/ comes from a distribution pyproject.toml names (a
    dependency or an extra)."""
    import importlib.metadata as md
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [d for ds in project["optional-dependencies"].values() for d in ds]

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    names = {norm(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in declared}
    imported = set()
    for folder in ("cli", "workbench"):
        for f in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    dists = md.packages_distributions()
    missing = []
    for module in sorted(imported - set(sys.stdlib_module_names) - {"cli", "workbench"}):
        candidates = {norm(d) for d in dists.get(module, [module])}
        if not candidates & names:
            missing.append(f"{module} ({', '.join(sorted(candidates))})")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
