"""Two real processes on gloo (2-3 GRPO steps of the tiny model) through `accelerate launch --config_file
conf/accelerate/<preset>.yaml --num_processes 2`: DDP, and FSDP2; final/ loads in plain transformers, holds weights
that moved away from the initial model and are the ones rank 0 had at the end.

This file is also the program the workers run (`accelerate launch tests/test_parallel_e2e.py train ...` = `rl train`
plus a probe): each rank records its RANK, WORLD_SIZE, accelerate's distributed type, whether its parameters are
FSDP2 shards (DTensor) and how much of them it holds, and saves the weights it had when the final save gathered them.

FSDP on CPU: accelerate 1.15 never selects FSDP for a CPU process group. In AcceleratorState.__init__ the switch to
DistributedType.FSDP is inside the branch for MULTI_GPU/MULTI_XPU/...; `_prepare_backend` makes a `use_cpu` run
MULTI_CPU, so an FSDP launch on CPU trains plain DDP, silently (`test_fsdp2_on_cpu_is_ddp_in_accelerate`, which
fails, as it should, once accelerate changes this). torch's FSDP2 itself runs on CPU with gloo, so
`test_fsdp2_two_processes` lifts exactly that one decision in the workers (RL_TEST_FSDP_ON_CPU, see `_lift_fsdp_gate`)
and everything after it is the real code: accelerate's fsdp2_prepare_model (fully_shard per decoder layer), TRL,
the FULL_STATE_DICT checkpoints, and the workbench's gather + unsharded save. `rl train` itself refuses fsdp2 without
CUDA (workbench.parallel.check_accelerate_config).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
PROBE_ENV = "RL_TEST_PARALLEL_PROBE"  # folder each rank writes rank<R>.json (+ its weights) into
LIFT_ENV = "RL_TEST_FSDP_ON_CPU"


# ------------------------------------------------------------------------------------ in the workers


def _lift_fsdp_gate() -> None:
    """Let accelerate run its FSDP path on a CPU (gloo) process group: after AcceleratorState has decided MULTI_CPU,
    set FSDP and the plugin, where on a GPU its own branch would (accelerate/state.py, AcceleratorState.__init__).
    PartialState is set too: every later AcceleratorState() copies its distributed_type back."""
    import accelerate.state as st

    original = st.AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == st.DistributedType.MULTI_CPU:
            self.distributed_type = st.DistributedType.FSDP
            st.PartialState._shared_state["distributed_type"] = st.DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    st.AcceleratorState.__init__ = init


def _install_probe(folder: Path) -> None:
    """Wrap workbench.parallel.gather_full_state_dict (called once per rank by the final save) to record this rank."""
    import torch
    from safetensors.torch import save_file

    import workbench.parallel as parallel

    gather = parallel.gather_full_state_dict

    def probe(trainer):
        gathered = gather(trainer)
        acc = trainer.accelerator
        params = list(trainer.model.parameters())
        rank = int(os.environ["RANK"])
        plugin = getattr(acc.state, "fsdp_plugin", None)
        weights = gathered if gathered is not None else acc.unwrap_model(trainer.model).state_dict()
        record = {
            "RANK": rank, "WORLD_SIZE": int(os.environ["WORLD_SIZE"]), "LOCAL_RANK": int(os.environ["LOCAL_RANK"]),
            "pid": os.getpid(), "distributed_type": str(acc.distributed_type).rsplit(".", 1)[-1],
            "backend": acc.state.backend, "fsdp_version": getattr(plugin, "fsdp_version", None),
            "param_class": type(params[0]).__name__,
            "local_numel": sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in params),
            "full_numel": sum(p.numel() for p in params), "weights_keys": len(weights),
            "step": int(trainer.state.global_step),
        }
        if weights:
            save_file({k: v.detach().to("cpu", torch.float32).clone().contiguous() for k, v in weights.items()},
                      str(folder / f"rank{rank}.safetensors"))
        (folder / f"rank{rank}.json").write_text(json.dumps(record))
        return gathered

    parallel.gather_full_state_dict = probe


# ------------------------------------------------------------------------------------ the tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(preset: str, tmp_path: Path, tiny_overrides: list[str], *, lift: bool = False, extra: tuple = ()):
    """accelerate launch --config_file conf/accelerate/<preset>.yaml --num_processes 2 <this file> train ..."""
    probe = tmp_path / "probe"
    probe.mkdir()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "conf" / "accelerate" / f"{preset}.yaml"), "--num_processes", "2",
           "--main_process_port", str(_free_port()), __file__,
           "train", "experiment=quickstart", *tiny_overrides, "logger=none", *extra, "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", PROBE_ENV: str(probe), LIFT_ENV: "1" if lift else ""}
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    (cfg,) = (tmp_path / "runs").rglob("config.yaml")
    run = cfg.parent
    ranks = {r: json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    step_times = [r["perf/step_time"] for r in rows if r.get("perf/step_time") is not None]
    print(f"{preset}: {len(rows)} steps, mean step {sum(step_times) / len(step_times):.2f} s, launch {seconds:.1f} s")
    return run, ranks, probe, rows


def _state(path: Path) -> dict:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def _check_final(run: Path, rank0_weights: dict, steps: int = 3) -> None:
    """final/ loads and generates in plain transformers; it equals rank 0's weights at the end and the trainer's own
    checkpoint of the last step, and differs from the initial (warm-started) model."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run / "final")
    tok = AutoTokenizer.from_pretrained(run / "final")
    enc = tok(["12+34="], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]
    final = model.state_dict()
    assert set(rank0_weights) <= set(final), set(rank0_weights) - set(final)
    for k, v in rank0_weights.items():
        assert torch.equal(final[k].float(), v), k
    ckpt = load_file(run / "checkpoints" / f"checkpoint-{steps}" / "model.safetensors")
    for k, v in ckpt.items():
        assert torch.equal(final[k], v), k
    meta = json.loads((run / "meta.json").read_text())
    initial = _state(Path(meta["model"]["cache_path"]))
    assert set(initial) == set(final)
    moved = [k for k in final if not torch.equal(final[k], initial[k])]
    assert len(moved) > len(final) // 2, moved  # every trained tensor moves under AdamW


def test_ddp_two_processes(tmp_path, tiny_overrides):
    import torch
    from safetensors.torch import load_file

    run, ranks, probe, rows = _launch("ddp", tmp_path, tiny_overrides)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["num_processes"] == 2 and meta["status"] == "completed"
    assert len(rows) == 3
    assert [ranks[r]["RANK"] for r in (0, 1)] == [0, 1] and ranks[0]["pid"] != ranks[1]["pid"]
    for r in ranks.values():
        assert r["WORLD_SIZE"] == 2 and r["distributed_type"] == "MULTI_CPU" and r["backend"] == "gloo"
        assert r["param_class"] == "Parameter" and r["local_numel"] == r["full_numel"]  # a whole replica each
        assert r["step"] == 3
    w0, w1 = (load_file(probe / f"rank{r}.safetensors") for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # gradients were all-reduced: the replicas agree
    _check_final(run, w0)


def test_fsdp2_two_processes(tmp_path, tiny_overrides):
    from safetensors.torch import load_file

    run, ranks, probe, rows = _launch("fsdp2", tmp_path, tiny_overrides, lift=True)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["num_processes"] == 2 and meta["status"] == "completed"
    assert len(rows) == 3
    assert [ranks[r]["RANK"] for r in (0, 1)] == [0, 1] and ranks[0]["pid"] != ranks[1]["pid"]
    for r in ranks.values():
        assert r["WORLD_SIZE"] == 2 and r["distributed_type"] == "FSDP" and r["fsdp_version"] == 2
        assert r["param_class"] == "DTensor"  # fully_shard ran: parameters are shards
        # each rank holds about half (dim 0 split in two; odd sizes leave one more row on rank 0)
        assert 0.4 * r["full_numel"] < r["local_numel"] < 0.6 * r["full_numel"]
    assert ranks[0]["local_numel"] + ranks[1]["local_numel"] == ranks[0]["full_numel"]
    assert ranks[0]["weights_keys"] > 0 and ranks[1]["weights_keys"] == 0  # the full weights: on rank 0 only
    assert (run / "checkpoints" / "checkpoint-3" / "pytorch_model_fsdp.bin").exists()  # accelerate's FSDP save
    _check_final(run, load_file(probe / "rank0.safetensors"))


def test_fsdp2_lora_two_processes(tmp_path, tiny_overrides):
    """LoRA under FSDP2: rank 0 merges the gathered adapter into a fresh copy. Only the adapted projections move."""
    import torch

    run, ranks, probe, _ = _launch("fsdp2", tmp_path, tiny_overrides, lift=True,
                                   extra=("model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8"))
    assert all(r["distributed_type"] == "FSDP" and r["param_class"] == "DTensor" for r in ranks.values())
    from safetensors.torch import load_file

    gathered = load_file(probe / "rank0.safetensors")
    assert any("lora_B" in k for k in gathered)
    assert any(v.abs().max() > 0 for k, v in gathered.items() if "lora_B" in k)  # the adapter trained (B starts at 0)
    final = _state(run / "final")
    assert not any("lora" in k for k in final)
    initial = _state(Path(json.loads((run / "meta.json").read_text())["model"]["cache_path"]))
    targets = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")  # LoraConfig's default targets
    moved = {k for k in final if not torch.equal(final[k], initial[k])}
    assert moved and all(k.endswith(targets) for k in moved), sorted(moved)
    assert sum(k.endswith(targets) for k in final) == len(moved)  # every adapted matrix got its merged update


def test_fsdp2_on_cpu_is_ddp_in_accelerate(tmp_path, tiny_overrides):
    """The fact behind check_accelerate_config's refusal: without the lift, the fsdp2 preset on CPU trains DDP."""
    _, ranks, _, _ = _launch("fsdp2", tmp_path, tiny_overrides)
    for r in ranks.values():
        assert r["distributed_type"] == "MULTI_CPU" and r["fsdp_version"] is None
        assert r["param_class"] == "Parameter" and r["local_numel"] == r["full_numel"]


if __name__ == "__main__":  # a worker of `accelerate launch tests/test_parallel_e2e.py train ...`
    sys.path.insert(0, str(ROOT))
    if os.environ.get(LIFT_ENV) == "1":
        _lift_fsdp_gate()
    if os.environ.get(PROBE_ENV):
        _install_probe(Path(os.environ[PROBE_ENV]))
    from cli.main import app

    app()
