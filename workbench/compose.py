"""Hydra composition of conf/ into a plain dict, with Hydra's errors turned into one-line ConfigErrors.

Import-light on purpose (hydra + omegaconf only): `rl --help` lists config groups with `config_groups()`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from workbench.config import ConfigError

# conf/ lives at the project root, beside workbench/. RL_CONF_DIR points elsewhere (e.g. a user's own tree).
CONF_DIR = Path(os.environ.get("RL_CONF_DIR", Path(__file__).resolve().parent.parent / "conf"))

GROUPS = ("model", "task", "algo", "reward", "advantage", "regularizer", "logger", "experiment")


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """{group: sorted option names} read from the folder tree (no Hydra import)."""
    out = {}
    for group in GROUPS:
        folder = conf_dir / group
        if folder.is_dir():
            out[group] = sorted(p.stem for p in folder.glob("*.yaml"))
    return out


def _one_line(group_choices: dict[str, list[str]], message: str) -> str:
    """Rewrite Hydra's multi-line errors into one line naming the key and the valid choices."""
    m = re.search(r"Could not (?:find|load) '([\w/]+)/([^']+)'", message)
    if m:
        group, option = m.group(1), m.group(2)
        choices = group_choices.get(group, [])
        return f"{group}={option!r} is not a config option; choose one of: {', '.join(choices)}"
    m = re.search(r"Could not override '([^']+)'", message)
    if m:
        key = m.group(1)
        parts = key.split(".")
        if parts[0] in SHAPING_KINDS and len(parts) >= 2:
            return (f"unknown key '{key}': '{parts[1]}' is not a selected {parts[0]} term; select it first, "
                    f"e.g. {parts[0]}=[...,{parts[1]}] (options: {', '.join(group_choices.get(parts[0], []))})")
        return f"unknown key '{key}'"
    m = re.search(r"Key '([^']+)' is not in struct", message)
    if m:
        return f"unknown key '{m.group(1)}'"
    first = " ".join(line.strip() for line in message.strip().splitlines() if line.strip())
    return first


SHAPING_KINDS = ("reward", "advantage", "regularizer")


def force_add(overrides: list[str]) -> list[str]:
    """Turn plain `key=value` overrides into Hydra's force-add `++key=value`.

    Hydra rejects a key that is not already in the composed YAML, which would hide most of trl.GRPOConfig (only
    the keys in conf/algo/grpo.yaml would be settable). With `++`, every key reaches the typed validation in
    `workbench.config` / `build_trl_args`, whose errors name the valid keys and close matches. Group selections
    (`model=hf`), `hydra...` keys and shaping-term options are left alone: `reward.x.weight=1` for a term that is
    not selected must fail, not silently add a half-configured term.
    """
    out = []
    for o in overrides:
        key = o.split("=", 1)[0]
        if "=" not in o or o[0] in "+~" or "/" in key or key in GROUPS or key.startswith("hydra"):
            out.append(o)
        elif key.split(".")[0] in SHAPING_KINDS:
            out.append(o)
        else:
            out.append("++" + o)
    return out


def compose(config_name: str, overrides: list[str], conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """Compose `conf/<config_name>.yaml` with Hydra overrides and return a resolved plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=force_add(list(overrides)))
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise ConfigError(_one_line(config_groups(conf_dir), str(e))) from None
    finally:
        GlobalHydra.instance().clear()
