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

GROUPS = ("model", "task", "algo", "reward", "advantage", "regularizer", "sampler", "logger", "experiment")
# Groups whose options are {name: {option: ...}} (a key under an unselected name must fail, not add it half-made).
SHAPING_KINDS = ("reward", "advantage", "regularizer", "sampler")
# Groups a run cannot do without: `~model` would silently fall back to the typed config's defaults, so it is refused.
REQUIRED_GROUPS = ("model", "task", "algo")
# Hydra plugins that provide options of Hydra's own groups, for the error when one is not installed.
HYDRA_PLUGINS = {
    "hydra/launcher": {"joblib": "hydra-joblib-launcher", "submitit_local": "hydra-submitit-launcher",
                       "submitit_slurm": "hydra-submitit-launcher", "ray": "hydra-ray-launcher"},
    "hydra/sweeper": {"optuna": "hydra-optuna-sweeper"},
}
_ABSENT = object()


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The options of one config group (conf/<group>/*.yaml), sorted; no Hydra import."""
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """{group: sorted option names} read from the folder tree (no Hydra import)."""
    return {group: group_options(group, conf_dir) for group in GROUPS if (conf_dir / group).is_dir()}


def hydra_group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """Options of one of Hydra's own groups (hydra/launcher, hydra/sweeper, ...): Hydra's, its installed plugins' and
    conf/<group>/*.yaml, as Hydra's config loader lists them."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))
    with hydra_context(conf_dir=conf_dir):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def one_line_error(message: str, conf_dir: Path = CONF_DIR) -> str:
    """Rewrite Hydra's multi-line errors into one line naming the key and the valid choices."""
    group_choices = {**config_groups(conf_dir), "sweep": group_options("sweep", conf_dir)}
    m = re.search(r"Could not (?:find|load) '([\w/]+)/([^']+)'", message)
    if m:
        group, option = m.group(1), m.group(2)
        if group.startswith("hydra/"):
            choices = hydra_group_options(group, conf_dir)
            plugin = HYDRA_PLUGINS.get(group, {}).get(option)
            if plugin and option not in choices:
                extra = "'rl-workbench[sweep]'" if plugin != "hydra-ray-launcher" else plugin
                return (f"{group}={option!r} needs the Hydra plugin {plugin}: pip install {extra} "
                        f"(installed options: {', '.join(choices)})")
        else:
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
    for o in honour_deletions(overrides):
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


def honour_deletions(overrides: list[str]) -> list[str]:
    """Hydra's `~group` deletes a config group; the typed config would then quietly refill it with its defaults
    (`~logger` used to leave W&B on). Deleting the logger means no external logger, so `~logger` becomes
    `logger=none`; deleting a group every run needs (model, task, algo) is refused with the options to choose from."""
    out = []
    for o in overrides:
        group = o[1:].split("=", 1)[0] if o.startswith("~") else None
        if group == "logger":
            out.append("logger=none")
        elif group in REQUIRED_GROUPS:
            raise ConfigError(f"{o}: every run needs a {group}; choose one with {group}=OPTION "
                              f"({', '.join(group_options(group))})")
        else:
            out.append(o)
    return out


def check_single_job(overrides: list[str], command: str) -> None:
    """rl train and rl eval run one job in this process and run no Hydra job: refuse what would be silently ignored
    (any hydra.* or hydra/... setting) and what Hydra would only run with --multirun (`seed=1,2`), in one line that
    says what to do instead."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            sweep = key.startswith(("hydra/launcher", "hydra/sweeper", "hydra.launcher", "hydra.sweeper", "hydra.sweep"))
            where = ("launchers and sweepers belong to rl sweep: rl sweep KEY=A,B " + o if sweep else
                     ("the run directory is <runs_dir>/<experiment_name>/<timestamp>_<name>: set runs_dir=DIR and "
                      "--name NAME" if command == "train" else "results go to RUN_DIR/eval/<checkpoint>/, or "
                      "<runs_dir>/eval/<model>_<hash>/ without a run directory: set runs_dir=DIR"))
            raise ConfigError(f"{o}: rl {command} runs no Hydra job and takes no hydra settings; {where}")
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return  # composition reports the syntax error in one line
    for o, p in zip(overrides, parsed):
        if p.is_sweep_override():
            raise ConfigError(f"{o} gives several values (a sweep); rl {command} runs one job: rl sweep {o} ... runs "
                              f"one job per value (a list value is written key=[a,b])")


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


#: The option name under which `compose(..., given=...)` registers a given group config.
GIVEN = "_given_"


def parse_overrides(overrides: list[str]) -> list[Any]:
    """Hydra's parsed `Override` objects (key, value, kind) of command-line overrides; a syntax error is one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        raise ConfigError(" ".join(str(e).split())) from None


def compose(config_name: str, overrides: list[str], conf_dir: Path = CONF_DIR,
            given: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Compose `conf/<config_name>.yaml` with Hydra overrides (one job: `check_single_job`) and return a resolved
    plain dict.

    `given`: {group: plain config} composed in place of what `conf/<config_name>.yaml` picks for that group or holds
    at that key (rl eval on a run directory: the run's own model, task and price). Each is registered as the group
    option `GIVEN` in Hydra's ConfigStore and selected before the overrides, so `task.eval_size=50` changes the run's
    task by the same grammar, force-add and one-line errors as every other override (one way to apply key=value)."""
    check_single_job(overrides, config_name)
    with hydra_context(conf_dir=conf_dir), _given_options(given or {}, conf_dir) as selections:
        return to_plain(compose_config([*selections, *overrides], config_name, conf_dir=conf_dir))


@contextlib.contextmanager
def _given_options(given: dict[str, dict[str, Any]], conf_dir: Path) -> Iterator[list[str]]:
    """Register each given config as `<group>/GIVEN` (removed again on exit: the ConfigStore outlives Hydra's global
    instance) and yield the overrides that select them: `group=GIVEN` for a config group (conf/<group>/, which the
    primary config picks), else `+group=GIVEN`, merged over what the primary config holds at that key."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    selections = []
    for group, node in given.items():
        store.store(group=group, name=GIVEN, node=node)
        selections.append(f"{group}={GIVEN}" if (conf_dir / group).is_dir() else f"+{group}={GIVEN}")
    try:
        yield selections
    finally:
        for group in given:
            store.repo.get(group, {}).pop(f"{GIVEN}.yaml", None)
