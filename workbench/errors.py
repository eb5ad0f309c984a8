"""The workbench's user-facing error (a leaf module: config, algorithms and every checker import it)."""


class ConfigError(ValueError):
    """A user mistake in the configuration. The CLI prints it on one line and exits with code 2."""
