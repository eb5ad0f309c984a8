"""`model.kind=hf`: any causal LM `transformers` can load, by hub name or from a local directory.

No downloads are forced: a hub name is first tried from the local Hugging Face cache only
(`local_files_only=True`), and the network is tried only if that fails and `HF_HUB_OFFLINE` /
`TRANSFORMERS_OFFLINE` are not set. So a cached model loads without touching the network, and a machine
without network fails fast with a one-line `ConfigError` instead of hanging in retries.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from workbench.config import ConfigError, ModelConfig

_TRUE = ("1", "true", "yes", "on")


def load_tokenizer(source: str | Path, **kwargs: Any) -> Any:
    """`AutoTokenizer.from_pretrained`, except for a folder holding the tiny model's character tokenizer (a WordLevel
    tokenizer.json): that one loads as the plain fast tokenizer it was saved as. Why: AutoTokenizer picks the class from
    config.json's model_type (Qwen2Tokenizer for the Qwen2-style tiny model), which rebuilds the pre-tokenizer and
    drops spaces and newlines ("a b\nc" -> 3 tokens), while warm start and RL tokenize them."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    spec = Path(source) / "tokenizer.json"
    if spec.is_file():
        import json

        try:
            kind = json.loads(spec.read_text()).get("model", {}).get("type")
        except (OSError, ValueError):
            kind = None
        if kind == "WordLevel":
            kwargs.pop("local_files_only", None)
            return PreTrainedTokenizerFast.from_pretrained(source, **kwargs)
    return AutoTokenizer.from_pretrained(source, **kwargs)


def offline() -> bool:
    """True when the user asked the Hugging Face libraries not to use the network."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def is_path_like(name: str) -> bool:
    """Whether `name` must be a local directory rather than a hub id.

    Hub ids are `name` or `owner/name` (one slash), so a slash alone cannot decide it on POSIX, where
    os.sep is "/": we treat as paths strings that start with / . ~, contain a backslash or os.altsep, or
    have more than one slash. An existing directory always wins over a hub id of the same spelling.
    """
    if name.startswith(("/", ".", "~")) or "\\" in name:
        return True
    if os.altsep and os.altsep in name:
        return True
    return name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check of the hub endpoint (respects HF_ENDPOINT; assumed reachable behind a proxy).

    Without it, a hub name that is not cached costs ~45 s of huggingface_hub retries on a machine without
    network before failing (measured here), which looks like a hang.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        from huggingface_hub import constants

        endpoint = urlparse(constants.ENDPOINT)
        host = endpoint.hostname or "huggingface.co"
        port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text or type(exc).__name__
    return text if len(text) <= 240 else text[:237] + "..."


def load_hf(cfg: ModelConfig, padding_side: str = "left") -> tuple[Any, Any, dict[str, Any]]:
    """The `hf` branch of `load_model_and_tokenizer`."""
    from transformers import AutoModelForCausalLM

    from workbench.models import torch_dtype

    name = cfg.name_or_path
    if not name:
        raise ConfigError("model.name_or_path must be set when model.kind=hf")
    dtype = torch_dtype(cfg.dtype)
    local = Path(name).expanduser()
    if local.is_dir():
        source, attempts = str(local), [True]
    elif is_path_like(name):
        raise ConfigError(f"model.name_or_path: directory not found: {name}")
    else:
        # Local cache first (fast, no network); then the hub unless the user is offline.
        source, attempts = name, [True] if offline() else [True, False]

    start = time.perf_counter()
    error: BaseException | None = None
    for local_only in attempts:
        if not local_only and not hub_reachable():
            raise ConfigError(
                f"model.name_or_path={name!r}: not in the local Hugging Face cache and the hub is unreachable "
                f"(download it on a machine with network, or point model.name_or_path at a local directory)"
            )
        try:
            tokenizer = load_tokenizer(source, local_files_only=local_only, padding_side=padding_side)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local_only)
            break
        # Missing files, an unknown architecture, corrupt weights...: all user-facing, reported in one line.
        except Exception as e:  # noqa: BLE001
            error = e
    else:
        if local.is_dir():
            where = "from the local directory"
        elif offline():
            where = "from the local Hugging Face cache (HF_HUB_OFFLINE is set)"
        else:
            where = "from the local Hugging Face cache or the hub"
        raise ConfigError(f"model.name_or_path={name!r}: cannot load {where}: {_one_line(error)}") from None

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None and getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = tokenizer.pad_token_id
    if cfg.use_chat_template and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"model.use_chat_template=true but the tokenizer of {name!r} has no chat template; set it to false"
        )
    model.eval()
    info = {
        "kind": "hf",
        "name_or_path": name,
        "cache_path": str(local.resolve()) if local.is_dir() else None,
        "cache_hit": None,
        "load_seconds": round(time.perf_counter() - start, 3),
        "warm_start_seconds": None,
        "warm_start_accuracy": None,
        "warm_start_loss_initial": None,
        "warm_start_loss_final": None,
        "warm_start_eval_examples": None,
    }
    return model, tokenizer, info
