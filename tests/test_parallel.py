"""The accelerate presets of conf/accelerate/ and `workbench.parallel` (fast: no process group, no training).

Each preset is read the way `accelerate launch` reads it, down to the environment its workers get and the FSDP /
DeepSpeed plugin that environment builds, so the DeepSpeed presets are checked as far as a machine without CUDA and
deepspeed can check them. The 2-process runs are in tests/test_parallel_e2e.py (slow).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.config import ConfigError
from workbench.parallel import (
    ACCELERATE_PRESETS,
    PRESETS_DIR,
    accelerate_config_path,
    check_accelerate_config,
    load_accelerate_config,
    unsharded_copy,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_config_docs import undocumented_keys  # noqa: E402  (the conf/ docs rule, applied to these files by name)

PRESETS = list(ACCELERATE_PRESETS)


def test_presets_are_the_shipped_files():
    assert PRESETS == ["ddp", "fsdp2", "zero2", "zero3"]
    assert sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")) == sorted(PRESETS)
    assert PRESETS_DIR == ROOT / "conf" / "accelerate"


@pytest.mark.parametrize("name", PRESETS)
def test_every_key_has_a_comment_above(name):
    text = (PRESETS_DIR / f"{name}.yaml").read_text()
    assert undocumented_keys(text) == []
    assert "num_processes:" not in text  # stated on each launch, never a stale count from the file


@pytest.mark.parametrize("name", PRESETS)
def test_accelerate_reads_every_preset(name):
    cfg = load_accelerate_config(accelerate_config_path(name))
    assert type(cfg).__name__ == "ClusterConfig"
    assert cfg.compute_environment.value == "LOCAL_MACHINE"
    # precision comes from the training arguments (bf16 on GPU, fp32 on CPU), not from the preset
    assert cfg.mixed_precision == "no"
    assert cfg.num_processes == -1  # accelerate launch refuses to start without --num_processes
    assert cfg.num_machines == 1 and cfg.machine_rank == 0


def test_preset_fields_that_matter():
    ddp, fsdp2, zero2, zero3 = (load_accelerate_config(PRESETS_DIR / f"{n}.yaml") for n in PRESETS)
    assert ddp.distributed_type.value == "MULTI_GPU" and not ddp.fsdp_config and not ddp.deepspeed_config
    assert fsdp2.distributed_type.value == "FSDP"
    assert fsdp2.fsdp_config["fsdp_version"] == 2
    assert fsdp2.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert fsdp2.fsdp_config["fsdp_activation_checkpointing"] is False  # TRL turns on gradient checkpointing
    assert fsdp2.fsdp_config["fsdp_offload_params"] is False
    for cfg, stage in ((zero2, 2), (zero3, 3)):
        ds = cfg.deepspeed_config
        assert cfg.distributed_type.value == "DEEPSPEED"
        assert ds["zero_stage"] == stage
        assert ds["offload_optimizer_device"] == "none" and ds["offload_param_device"] == "none"
        # batch size / accumulation / clipping stay "auto", filled from the training arguments by transformers
        assert not {"gradient_accumulation_steps", "gradient_clipping", "train_micro_batch_size_per_gpu"} & set(ds)
    assert zero2.deepspeed_config["zero3_init_flag"] is False
    assert zero3.deepspeed_config["zero3_init_flag"] is True
    assert zero3.deepspeed_config["zero3_save_16bit_model"] is True  # else get_state_dict raises at the final save


def _launch_env(name: str, num_processes: int = 2) -> tuple[object, dict[str, str]]:
    """What `accelerate launch --config_file <preset> --num_processes N -m cli.main train` decides, and the
    ACCELERATE_* / FSDP_* variables it gives each worker (accelerate's own functions, no process started)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    argv = ["--config_file", str(PRESETS_DIR / f"{name}.yaml"), "--num_processes", str(num_processes),
            "--main_process_port", "29555", "-m", "cli.main", "train"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command does
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return args, {k: v for k, v in env.items() if k.startswith(("ACCELERATE_", "FSDP_"))}


@pytest.fixture
def clean_env(monkeypatch):
    for k in list(os.environ):
        if k.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.delenv(k)
    return monkeypatch


def test_ddp_launches_n_processes_through_torchrun(clean_env):
    args, env = _launch_env("ddp", 2)
    # multi_gpu -> multi_gpu_launcher (torchrun) with 2 workers; --cpu would have meant simple_launcher: 1 process
    assert args.multi_gpu and not args.cpu and not args.use_fsdp and not args.use_deepspeed
    assert args.nproc_per_node == "2"
    assert env["ACCELERATE_MIXED_PRECISION"] == "no"
    assert "ACCELERATE_USE_FSDP" not in env and "ACCELERATE_USE_DEEPSPEED" not in env


def test_fsdp2_workers_build_an_fsdp2_plugin(clean_env):
    args, env = _launch_env("fsdp2", 2)
    assert args.use_fsdp and args.nproc_per_node == "2"
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    for k, v in env.items():
        clean_env.setenv(k, v)
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()  # what Accelerator() builds from the worker's environment
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)
    assert plugin.cpu_ram_efficient_loading is False and plugin.activation_checkpointing is False
    assert plugin.auto_wrap_policy is not None and plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"


@pytest.mark.parametrize("name,stage", [("zero2", 2), ("zero3", 3)])
def test_deepspeed_workers_build_the_zero_config(clean_env, name, stage):
    args, env = _launch_env(name, 2)
    assert args.use_deepspeed and args.nproc_per_node == "2"
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    for k, v in env.items():
        clean_env.setenv(k, v)
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin()  # the DeepSpeed json accelerate hands to deepspeed.initialize (no deepspeed needed)
    ds = plugin.deepspeed_config
    zero = ds["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["offload_optimizer"]["device"] == "none" and zero["offload_param"]["device"] == "none"
    assert zero["stage3_gather_16bit_weights_on_model_save"] is (stage == 3)
    assert plugin.zero3_init_flag is (stage == 3)
    assert ds["gradient_accumulation_steps"] == "auto" and ds["train_micro_batch_size_per_gpu"] == "auto"
    assert ds["gradient_clipping"] == "auto"


# ------------------------------------------------------------------------------------ names, paths, checks


def test_preset_names_and_paths(tmp_path):
    for name in PRESETS:
        assert accelerate_config_path(name) == PRESETS_DIR / f"{name}.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text((PRESETS_DIR / "ddp.yaml").read_text())
    assert accelerate_config_path(str(own)) == own.resolve()
    assert check_accelerate_config(own, 2, cuda_devices=0) == own.resolve()


@pytest.mark.parametrize("bad,why", [("fsdp", "unknown preset"), ("zero1", "unknown preset"), ("DDP", "unknown preset"),
                                     ("/nonexistent/x.yaml", "no such file"), ("", "unknown preset")])
def test_unknown_name_one_line_with_the_choices(bad, why):
    with pytest.raises(ConfigError) as e:
        accelerate_config_path(bad)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"launch.accelerate_config={bad or repr(bad)}: {why}")
    assert "ddp, fsdp2, zero2, zero3 or a path to an accelerate config .yaml" in msg
    with pytest.raises(ConfigError):
        check_accelerate_config(bad, 2)


def test_ddp_is_accepted_on_cpu_and_gpu():
    assert check_accelerate_config("ddp", 2, cuda_devices=0) == PRESETS_DIR / "ddp.yaml"
    assert check_accelerate_config("ddp", 8, cuda_devices=8) == PRESETS_DIR / "ddp.yaml"


def test_fsdp2_refused_without_cuda():
    """accelerate 1.15 would run it as DDP on CPU (tests/test_parallel_e2e.py shows the fallback); say so instead."""
    with pytest.raises(ConfigError) as e:
        check_accelerate_config("fsdp2", 2, cuda_devices=0)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("launch.accelerate_config=fsdp2: FSDP needs CUDA GPUs")
    assert "silently train plain DDP" in msg and "use ddp" in msg
    assert check_accelerate_config("fsdp2", 4, cuda_devices=4) == PRESETS_DIR / "fsdp2.yaml"


@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_deepspeed_needs_cuda_and_deepspeed(name):
    with pytest.raises(ConfigError) as e:  # this project's machine: neither
        check_accelerate_config(name, 2, cuda_devices=0, deepspeed_installed=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"launch.accelerate_config={name}: DeepSpeed needs CUDA GPUs and the deepspeed package")
    assert "no CUDA GPU is visible and the deepspeed package is not installed" in msg
    with pytest.raises(ConfigError, match="but the deepspeed package is not installed"):
        check_accelerate_config(name, 2, cuda_devices=2, deepspeed_installed=False)
    with pytest.raises(ConfigError, match=r"but no CUDA GPU is visible \("):
        check_accelerate_config(name, 2, cuda_devices=0, deepspeed_installed=True)
    assert check_accelerate_config(name, 2, cuda_devices=2, deepspeed_installed=True) == PRESETS_DIR / f"{name}.yaml"


@pytest.mark.skipif(__import__("importlib").util.find_spec("deepspeed") is not None, reason="deepspeed is installed")
def test_deepspeed_refused_on_this_machine():
    """With this machine's own facts (no keyword overrides): deepspeed is not installed here."""
    with pytest.raises(ConfigError, match="the deepspeed package is not installed"):
        check_accelerate_config("zero3", 2)


def test_more_processes_than_gpus():
    with pytest.raises(ConfigError, match=r"^launch.num_processes=9: only 8 CUDA GPU\(s\) visible"):
        check_accelerate_config("ddp", 9, cuda_devices=8)
    with pytest.raises(ConfigError, match="at least 1"):
        check_accelerate_config("ddp", 0, cuda_devices=0)


def test_bad_user_yaml_one_line(tmp_path):
    unknown = tmp_path / "unknown_key.yaml"
    unknown.write_text("distributed_type: MULTI_GPU\nnot_an_accelerate_key: 1\n")
    with pytest.raises(ConfigError) as e:
        check_accelerate_config(unknown, 2, cuda_devices=0)
    assert "\n" not in str(e.value) and "accelerate cannot read it" in str(e.value)
    assert "not_an_accelerate_key" in str(e.value)  # accelerate's own message names the key
    single = tmp_path / "single.yaml"
    single.write_text("distributed_type: 'NO'\n")
    with pytest.raises(ConfigError, match="distributed_type NO is not supported"):
        check_accelerate_config(single, 2, cuda_devices=0)
    bad_type = tmp_path / "bad_type.yaml"
    bad_type.write_text("distributed_type: SOMETHING\n")
    with pytest.raises(ConfigError, match="accelerate cannot read it"):
        check_accelerate_config(bad_type, 2, cuda_devices=0)


def test_import_light():
    """The launcher (a supervisor process) imports workbench.parallel; torch must not come with it."""
    code = "import sys, workbench.parallel; sys.exit('torch' in sys.modules or 'accelerate' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# ------------------------------------------------------------------------------------ the unsharded copy


def _tiny_causal_lm(tie: bool = True):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tie)
    return Qwen2ForCausalLM(cfg).eval()


def test_unsharded_copy_of_a_plain_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    model = _tiny_causal_lm()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    copy = unsharded_copy(model, state)
    assert copy is not model and type(copy) is type(model)
    x = torch.randint(0, 50, (2, 7))
    assert torch.equal(copy(x).logits, model(x).logits)
    copy.save_pretrained(tmp_path / "final")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert torch.equal(again(x).logits, model(x).logits)
    with pytest.raises(RuntimeError, match="Missing key"):  # strict: a partial gather is an error, not a model
        unsharded_copy(model, {k: v for k, v in state.items() if "layers.1." not in k})


def test_unsharded_copy_merges_lora(tmp_path):
    """The FSDP + LoRA path: the gathered state dict of a peft model becomes a merged plain model."""
    import peft
    import torch
    from transformers import AutoModelForCausalLM

    base = _tiny_causal_lm()
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                      lora_dropout=0.0, task_type="CAUSAL_LM"))
    with torch.no_grad():  # a trained adapter: lora_B starts at zero, which would make merging a no-op
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    model.eval()
    x = torch.randint(0, 50, (2, 7))
    want = model(x).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    merged = unsharded_copy(model, state)
    assert not hasattr(merged, "peft_config") and type(merged).__name__ == "Qwen2ForCausalLM"
    assert not any("lora" in k for k in merged.state_dict())
    torch.testing.assert_close(merged(x).logits, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(merged(x).logits, _tiny_causal_lm()(x).logits)  # the adapter is in the weights
    merged.save_pretrained(tmp_path / "final")
    torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path / "final")(x).logits, want,
                               rtol=1e-5, atol=1e-5)
