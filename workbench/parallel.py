"""Several processes on one run: the `accelerate launch` presets of conf/accelerate/ and the final save under them.

Presets (the way TRL ships `trl/accelerate_configs/`), each a ClusterConfig yaml for `accelerate launch --config_file`:

* `ddp`: PyTorch DDP, the whole model on every process. Runs on a CPU machine too (gloo).
* `fsdp2`: FSDP2 (`fully_shard`), parameters, gradients and optimizer state sharded. CUDA only: accelerate 1.15
  turns FSDP on only for GPU-type devices (accelerate/state.py, `AcceleratorState.__init__`: the switch to
  `DistributedType.FSDP` sits inside the `MULTI_GPU`/`MULTI_XPU`/... branch, and `_prepare_backend` makes a
  `use_cpu` run `MULTI_CPU`), so on CPU the same launch would train plain DDP without a word. `check_accelerate_config`
  refuses it there instead.
* `zero2`, `zero3`: DeepSpeed ZeRO-2/3. Need the deepspeed package and CUDA; untested on this project's CPU machine.

`check_accelerate_config(name_or_path, num_processes)` is what a launcher calls before it starts anything;
`save_final_model` is the end of `rl train` on every rank: under FSDP/DeepSpeed the full weights must be gathered,
a collective that every rank joins, before rank 0 writes final/.

Import-light: no torch at module level (the launcher, a supervisor process, imports this module).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

from workbench.config import ConfigError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "conf" / "accelerate"
# Preset name -> what it is (the order is the order the choices are listed in messages).
ACCELERATE_PRESETS: dict[str, str] = {
    "ddp": "PyTorch DDP: the whole model on every process (CUDA, or CPU on gloo)",
    "fsdp2": "FSDP2: parameters, gradients and optimizer state sharded (CUDA)",
    "zero2": "DeepSpeed ZeRO-2: optimizer state and gradients partitioned (CUDA + deepspeed)",
    "zero3": "DeepSpeed ZeRO-3: parameters too (CUDA + deepspeed)",
}
OPTION = "launch.accelerate_config"  # the config key (`rl train --accelerate-config`) named in every message
# distributed_type values a launch of `rl train` can use; the others (NO, XLA, MEGATRON_LM, ...) would start one
# process (NO: accelerate's simple_launcher ignores --num_processes) or need hardware and code we do not have.
SUPPORTED_TYPES = ("MULTI_GPU", "FSDP", "DEEPSPEED")


def _choices() -> str:
    return ", ".join(ACCELERATE_PRESETS) + " or a path to an accelerate config .yaml"


def accelerate_config_path(name_or_path: str | Path) -> Path:
    """The yaml file of a preset name (`ddp` -> conf/accelerate/ddp.yaml), or the given path if it is a yaml file.

    Anything else is a ConfigError naming the option and the valid choices."""
    text = str(name_or_path).strip()
    if text in ACCELERATE_PRESETS:
        return PRESETS_DIR / f"{text}.yaml"
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path.resolve()
    why = "no such file" if path.suffix in (".yaml", ".yml") else "unknown preset"
    raise ConfigError(f"{OPTION}={text or repr(text)}: {why}; choose {_choices()}")


def load_accelerate_config(path: Path) -> Any:
    """accelerate's own reading of the file (`ClusterConfig` for a local machine), its errors as one-line ConfigErrors."""
    from accelerate.commands.config.config_args import load_config_from_file

    try:
        return load_config_from_file(str(path))
    except Exception as e:  # noqa: BLE001 - yaml errors, unknown keys (ValueError), bad enum values: all one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{OPTION}={path}: accelerate cannot read it: {first}") from None


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_accelerate_config(name_or_path: str | Path, num_processes: int, *, cuda_devices: int | None = None,
                            deepspeed_installed: bool | None = None) -> Path:
    """The config file for `accelerate launch --config_file`, after the checks that would otherwise fail late or,
    worse, silently run something else. `cuda_devices` / `deepspeed_installed` default to this machine's (tests pass
    other machines' values). Returns the file's path; raises a one-line ConfigError."""
    path = accelerate_config_path(name_or_path)
    cfg = load_accelerate_config(path)
    label = f"{OPTION}={name_or_path}"
    env = getattr(cfg.compute_environment, "value", cfg.compute_environment)
    if env != "LOCAL_MACHINE":
        raise ConfigError(f"{label}: compute_environment {env} is not supported; rl train launches LOCAL_MACHINE only")
    kind = getattr(cfg.distributed_type, "value", str(cfg.distributed_type))
    if kind not in SUPPORTED_TYPES:
        raise ConfigError(f"{label}: distributed_type {kind} is not supported (use {', '.join(SUPPORTED_TYPES)}; "
                          f"NO would start one process whatever --num_processes says)")
    if num_processes < 1:
        raise ConfigError(f"launch.num_processes={num_processes}: must be at least 1")
    gpus = _cuda_devices() if cuda_devices is None else cuda_devices
    if kind == "DEEPSPEED":
        has_ds = importlib.util.find_spec("deepspeed") is not None if deepspeed_installed is None else deepspeed_installed
        missing = [m for m, ok in (("no CUDA GPU is visible", gpus > 0),
                                   ("the deepspeed package is not installed", has_ds)) if not ok]
        if missing:
            raise ConfigError(f"{label}: DeepSpeed needs CUDA GPUs and the deepspeed package, but {' and '.join(missing)}"
                              f" (on a CUDA machine: pip install deepspeed); here use ddp")
    if kind == "FSDP" and gpus == 0:
        raise ConfigError(f"{label}: FSDP needs CUDA GPUs, and none is visible: on CPU accelerate "
                          f"{_version('accelerate')} would silently train plain DDP instead (accelerate/state.py "
                          f"switches to FSDP only for GPU-type devices); here use ddp")
    machines = int(getattr(cfg, "num_machines", 1) or 1)
    if gpus and machines == 1 and num_processes > gpus:
        raise ConfigError(f"launch.num_processes={num_processes}: only {gpus} CUDA GPU(s) visible; one process per GPU")
    return path


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "(not installed)"


# ------------------------------------------------------------------------------------------------ final save


def gather_full_state_dict(trainer) -> dict[str, Any] | None:
    """The full (unsharded) weights under FSDP or DeepSpeed, on rank 0 (empty or partial elsewhere); None otherwise.

    A collective: every rank must call it, or rank 0 waits forever. It is accelerate's own `get_state_dict`, the
    call transformers' `Trainer.save_model` makes for the same purpose (FSDP: the prepared model; DeepSpeed: the
    engine, whose ZeRO-3 weights need `zero3_save_16bit_model`)."""
    if getattr(trainer, "is_deepspeed_enabled", False):
        return trainer.accelerator.get_state_dict(trainer.deepspeed)
    if getattr(trainer, "is_fsdp_enabled", False):
        return trainer.accelerator.get_state_dict(trainer.model)
    return None


def unsharded_copy(module, state_dict: dict[str, Any]):
    """A plain, unsharded model with `state_dict`'s weights, built next to the sharded `module` (a transformers
    model, or a peft model around one). LoRA is merged, so plain transformers loads the result.

    Under FSDP the trained module cannot be saved or merged as it stands: its parameters are DTensor shards (saving
    fails: "Cannot flatten unevenly sharded tensor"), and merging LoRA into a shard would be wrong. So rank 0 builds
    a fresh model of the same config and LoRA setup on the CPU, loads the gathered weights strictly (a missing or
    extra key is an error, not a silent partial model), and merges there."""
    import torch
    from transformers import AutoModelForCausalLM

    peft_config = getattr(module, "peft_config", None)
    base = module.get_base_model() if peft_config is not None else module
    floats = [v.dtype for v in state_dict.values() if torch.is_tensor(v) and v.is_floating_point()]
    dtype = floats[0] if floats else torch.float32  # the dtype training held (bf16 under ZeRO-3's 16-bit gather)
    _without_zero3_init()
    fresh = AutoModelForCausalLM.from_config(base.config, dtype=dtype)
    if peft_config is not None:
        import peft

        (name,) = peft_config  # the workbench trains one adapter ("default")
        fresh = peft.get_peft_model(fresh, peft_config[name], adapter_name=name)
    fresh.load_state_dict(state_dict, strict=True)
    if peft_config is not None:
        fresh = fresh.merge_and_unload()
    fresh.generation_config = base.generation_config
    return fresh.eval()


def _without_zero3_init() -> None:
    """ZeRO-3 leaves transformers set to build every model already partitioned (deepspeed.zero.Init, a collective);
    the copy rank 0 builds alone after training must be a plain one. Training is over, so the setting is dropped (the
    next TrainingArguments in this process sets its own)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()


def save_final_model(trainer, final_dir: Path, tokenizer, prepare: Callable[[Any], None] | None = None,
                     is_main: bool | None = None):
    """Save the trained model to `final_dir` so that plain transformers loads it (LoRA merged); every rank calls it.

    Returns, on rank 0, the model final/ holds, ready for the end evaluation on rank 0 alone (on the training
    device); None on the other ranks. `prepare(model)` runs on rank 0 before the save (generation defaults).

    * One process, or DDP: rank 0's model is the whole model; LoRA is merged in place (training is over).
    * FSDP / DeepSpeed: the full weights are gathered (all ranks), and rank 0 saves an unsharded copy
      (`unsharded_copy`); that copy is also what the end evaluation uses, as the sharded model can only run a forward
      with every rank taking part."""
    main = trainer.accelerator.is_main_process if is_main is None else is_main
    state_dict = gather_full_state_dict(trainer)
    if not main:
        return None
    if state_dict is None:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
    else:
        model = unsharded_copy(trainer.accelerator.unwrap_model(trainer.model), state_dict)
        del state_dict
        model.to(trainer.accelerator.device)
    if prepare is not None:
        prepare(model)
    model.save_pretrained(final_dir)
    tokenizer.save_pretrained(final_dir)
    return model
