"""Issue 23's real-model result: the two SmolLM2-135M arms differ only in the length term, the sweep runs both over
3 seeds, and the script compares them into the README table (the runs themselves: `bash scripts/smollm2_length.sh`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from workbench.compose import compose
from workbench.config import to_train_config

ROOT = Path(__file__).resolve().parents[1]


def _flat(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_arms_differ_only_in_the_length_term():
    plain, kimi = (_flat(compose("train", [f"experiment={e}"])) for e in ("smollm2_length", "smollm2_length_kimi"))
    base = _flat(compose("train", ["experiment=smollm2_arithmetic"]))
    # the plain arm is smollm2_arithmetic with its own folder and no W&B
    assert {k for k in base if base[k] != plain.get(k)} == {"experiment_name", "logger.backend", "logger.mode"}
    diff = {k for k in set(plain) | set(kimi) if plain.get(k) != kimi.get(k)}
    assert diff == {"experiment_name", "reward.length_kimi.weight", "reward.length_kimi.start_step"}
    assert kimi["reward.length_kimi.weight"] == 0.5 and plain["model.lora.enabled"] is True
    assert plain["model.use_chat_template"] is True and plain["threads"] == 1
    for e in ("smollm2_length", "smollm2_length_kimi"):
        to_train_config(compose("train", [f"experiment={e}"]))  # valid


def test_sweep_and_script():
    hydra = yaml.safe_load((ROOT / "conf" / "sweep" / "smollm2_length.yaml").read_text())["hydra"]
    assert hydra["sweeper"]["params"] == {"seed": "0,1,2", "experiment": "smollm2_length,smollm2_length_kimi"}
    assert hydra["launcher"]["n_jobs"] == 2
    script = ROOT / "scripts" / "smollm2_length.sh"
    text = script.read_text()
    for fragment in ("sweep_lib.sh", "sweep smollm2_length", "--baseline experiment_name=smollm2_length",
                     "readme_table smollm2-length-table", "eval/pass@1", "eval/length/mean"):
        assert fragment in text, fragment
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    readme = (ROOT / "README.md").read_text()
    assert readme.count("<!-- smollm2-length-table:start -->") == 1
    assert readme.count("<!-- smollm2-length-table:end -->") == 1
