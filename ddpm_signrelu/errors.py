"""Errors raised for bad user input: each message names the problem and the fix."""


class UserError(Exception):
    """Base class: the command-line entry points print these as one line, without a traceback."""


class ConfigError(UserError, ValueError):
    """A configuration value the package cannot use."""


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, or not written by this package."""


class DataError(UserError, FileNotFoundError):
    """Dataset files that are missing or unreadable."""


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite."""


def check_choice(kind: str, name: str, choices) -> None:
    """Raise a ConfigError unless ``name`` is one of ``choices``."""
    if name not in choices:
        raise ConfigError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(choices))}")
