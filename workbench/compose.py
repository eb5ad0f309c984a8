"""Hydra composition of conf/, the one path every command takes (rl train, rl eval, rl sweep's planner), with
Hydra's errors turned into one-line ConfigErrors.

Import-light on purpose (hydra + omegaconf, imported inside the functions): `rl --help` lists config groups with
`config_groups()`.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Iterator

from workbench.config import ConfigError

# conf/ lives at the project root, beside workbench/. RL_CONF_DIR points elsewhere (e.g. a user's own tree).
CONF_DIR = Path(os.environ.get("RL_CONF_DIR", Path(__file__).resolve().parent.parent / "conf"))

GROUPS = ("model", "task", "algo", "reward", "advantage", "regularizer", "logger", "experiment")
SHAPING_KINDS = ("reward", "advantage", "regularizer")
_ABSENT = object()


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The options of one config group (conf/<group>/*.yaml), sorted; no Hydra import."""
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """{group: sorted option names} read from the folder tree (no Hydra import)."""
    return {group: group_options(group, conf_dir) for group in GROUPS if (conf_dir / group).is_dir()}


def one_line_error(message: str, conf_dir: Path = CONF_DIR) -> str:
    """Rewrite Hydra's multi-line errors into one line naming the key and the valid choices."""
    group_choices = {**config_groups(conf_dir), "sweep": group_options("sweep", conf_dir)}
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


def force_add(overrides: list[str], present: Any = None) -> list[str]:
    """Turn plain `key=value` overrides into Hydra's force-add `++key=value`.

    Hydra rejects a key that is not already in the composed YAML, which would hide most of trl.GRPOConfig (only
    the keys in conf/algo/grpo.yaml would be settable). With `++`, every key reaches the typed validation in
    `workbench.config` / `build_trl_args`, whose errors name the valid keys and close matches. Group selections
    (`model=hf`), `hydra...` keys and shaping-term options are left alone: `reward.x.weight=1` for a term that is
    not selected must fail, not silently add a half-configured term.

    `present`: a composed config; keys already in it stay as written (they compose the same either way). rl sweep
    needs this: Hydra's sweepers compose every job themselves and match a command-line `key=a,b` to a sweep
    preset's `hydra.sweeper.params` entry by the key as written, so only keys absent from the YAML get `++`.
    """
    out = []
    for o in overrides:
        key = o.split("=", 1)[0]
        if "=" not in o or o[0] in "+~" or "/" in key or key in GROUPS or key.startswith("hydra"):
            out.append(o)
        elif key.split(".")[0] in SHAPING_KINDS:
            out.append(o)
        elif present is not None and _select(present, key) is not _ABSENT:
            out.append(o)
        else:
            out.append("++" + o)
    return out


def _select(cfg: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key, default=_ABSENT)


@contextlib.contextmanager
def hydra_context(job_name: str = "rl", conf_dir: Path = CONF_DIR) -> Iterator[None]:
    """Hydra initialised on conf/ (as @hydra.main would) for `compose_config` and Hydra's multirun; cleared on
    exit (Hydra keeps one global instance per process)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), job_name=job_name, version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().clear()


def compose_config(overrides: list[str], config_name: str = "train", with_hydra: bool = False,
                   conf_dir: Path = CONF_DIR) -> Any:
    """The composed DictConfig of `conf/<config_name>.yaml` + overrides (force-added), inside `hydra_context`.
    `with_hydra`: keep the `hydra` node (launcher, sweeper, runtime choices), as rl sweep's planner needs."""
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return hydra_compose(config_name=config_name, overrides=force_add(list(overrides)),
                             return_hydra_config=with_hydra)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise ConfigError(one_line_error(str(e), conf_dir)) from None


def to_plain(cfg: Any, drop: tuple[str, ...] = ("hydra",)) -> dict[str, Any]:
    """A composed config as a resolved plain dict, node by node, without the `drop` nodes: the hydra node holds
    interpolations only a running Hydra job can resolve."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    data = {}
    try:
        for k in cfg:
            if k in drop:
                continue
            v = cfg[k]
            data[str(k)] = OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
    except OmegaConfBaseException as e:
        raise ConfigError(one_line_error(str(e))) from None
    return data


def compose(config_name: str, overrides: list[str], conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """Compose `conf/<config_name>.yaml` with Hydra overrides and return a resolved plain dict."""
    with hydra_context(conf_dir=conf_dir):
        return to_plain(compose_config(overrides, config_name, conf_dir=conf_dir))
