"""One base for every error that is the user's to fix: the CLI prints its message as one line.

Each layer names its own kind (ConfigError, DataError, ModelError, ...) as a subclass, so
a caller catches `UserError` once, or one kind where it can do something about it.
"""


class UserError(ValueError):
    """A mistake in what was asked (a config value, a dataset, a run directory): one line."""
