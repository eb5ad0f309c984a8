"""The one error of `rl compare`."""


class CompareError(ValueError):
    """Bad input to rl compare (no runs, unknown metric, ambiguous baseline). The CLI prints one line, exit 2."""
