"""What every `rl` command shares: the one-line error exit. Imported by cli.main and the cli/*_cmd modules."""

from __future__ import annotations

import typer


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, no traceback, non-zero exit."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)
