"""What defines an `rl eval` result, so that re-running the same evaluation reuses it: the model's identity (weights
fingerprint, or the run's checkpoint label), the generation settings and the metric settings (`eval_identity`, stored
as `eval_config` in metrics.json), and the readable folder name of a model evaluated without a run directory.

Import-light (no torch).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from workbench.config import EvalRootConfig, ModelConfig
from workbench.runs import sanitize_name


def model_label(model: ModelConfig) -> str:
    """A readable name for a model: tiny, Qwen2.5-0.5B-Instruct, <run>-final, <run>-checkpoint-40, ..."""
    if model.kind == "hf" and model.gguf_file:
        return sanitize_name(Path(model.gguf_file.split(":")[-1]).stem)
    if model.kind == "tiny" or not model.name_or_path:
        return "tiny" if model.kind == "tiny" else "model"
    p = Path(model.name_or_path.rstrip("/"))
    parts = p.parts[-2:] if (p.name == "final" or p.name.startswith("checkpoint-")) else p.parts[-1:]
    return sanitize_name("-".join(parts))


def model_identity(model: ModelConfig, model_dir: Path | None, label: str | None = None) -> dict[str, Any]:
    """The model part of a result's identity. `label`: a run's checkpoint name (final | checkpoint-N), which names the
    model in place of its path, so a moved run directory keeps its results."""
    ident: dict[str, Any] = {"kind": model.kind, "dtype": model.dtype, "use_chat_template": model.use_chat_template}
    if label is not None:  # a run's model: named by checkpoint, so a moved run directory keeps its results
        ident["checkpoint"] = label
    elif model.kind == "tiny":
        ident["tiny"] = dataclasses.asdict(model.tiny)
    elif model.gguf_file:
        ident["gguf_file"] = model.gguf_file
    else:
        ident["name_or_path"] = str(model_dir.resolve()) if model_dir is not None else model.name_or_path
    if model.lora.enabled:
        ident["lora"] = dataclasses.asdict(model.lora)
    ident["fingerprint"] = weights_fingerprint(model_dir) if model_dir is not None else None
    return ident


def weights_fingerprint(folder: Path) -> str | None:
    """sha256 (16 hex) of the names, sizes and mtimes of a model folder's weight and config files."""
    items = []
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.is_file() and (p.suffix in (".safetensors", ".bin", ".pt") or p.name == "config.json"):
            st = p.stat()
            items.append((p.name, st.st_size, st.st_mtime_ns))
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16] if items else None


def runless_folder(model: ModelConfig, model_dir: Path | None, task: dict[str, Any]) -> str:
    """`<model-name>_<hash>`: the folder under `<runs_dir>/eval/` of a model evaluated without a run directory (hash of
    the model's identity and the task config: the same model on the same task always lands in the same folder)."""
    ident = {"model": model_identity(model, model_dir), "task": task}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
    return f"{model_label(model)}_{digest}"


def eval_identity(cfg: EvalRootConfig, model: ModelConfig, model_dir: Path | None, label: str | None,
                  num_problems: int) -> dict[str, Any]:
    """What defines a result: `generation` (what was sampled) and `metrics` (how it was summarised). `cfg` is resolved
    (eval.k, eval.maj_k, eval.max_new_tokens set); `label`: the checkpoint name of a run's model, None without a run.

    eval.batch_size and eval.threads are speed knobs and not part of it."""
    e = cfg.eval
    ident = {
        "generation": {
            "model": model_identity(model, model_dir, label),
            "task": dataclasses.asdict(cfg.task),
            "split": "eval",
            "num_problems": num_problems,
            "n": e.n,
            "temperature": e.temperature,
            "max_new_tokens": e.max_new_tokens,
            "seed": e.seed,
            "backend": e.backend,
        },
        "metrics": {"k": list(e.k), "maj_k": list(e.maj_k), "n_boot": e.n_boot, "price": dataclasses.asdict(cfg.price)},
    }
    return json.loads(json.dumps(ident))  # as it reads back from metrics.json
