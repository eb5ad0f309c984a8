"""What every `rl` command shares: the one-line error exit, the check for an optional part, and shell completion of
config overrides. Imported by cli.main and the cli/*_cmd modules; imports nothing heavy."""

from __future__ import annotations

import importlib
from typing import Callable

import typer


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, no traceback, non-zero exit."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def require(module: str, what: str, install: str) -> None:
    """Exit with one line saying what to install when an optional part (an extra of pyproject.toml) is missing."""
    try:
        importlib.import_module(module)
    except ImportError:
        fail(f"{what} needs {module}, which is not installed: pip install {install}")


def override_completer(extra: Callable[[], dict[str, list[str]]] | None = None) -> Callable[[str], list[str]]:
    """Shell completion (`rl --install-completion`) for Hydra overrides: `mo` -> `model=`, `model=t` -> `model=tiny`,
    `reward=[correctness,le` -> `reward=[correctness,length_cosine`, ... from the conf/ folder tree (no Hydra import).
    `extra`: more groups, e.g. rl sweep's `sweep` presets and `hydra/launcher` options."""

    def complete(incomplete: str) -> list[str]:
        from workbench.compose import config_groups

        groups = {**config_groups(), **(extra() if extra else {})}
        key, eq, value = incomplete.partition("=")
        if not eq:
            return [f"{g}=" for g in groups if g.startswith(incomplete)]
        options = groups.get(key.lstrip("+~"), [])
        if value.startswith("["):  # a list of options: complete its last element
            done, _, last = value[1:].rpartition(",")
            head = f"{key}=[" + (done + "," if done else "")
            return [head + o for o in options if o.startswith(last)]
        return [f"{key}={o}" for o in options if o.startswith(value)]

    return complete
