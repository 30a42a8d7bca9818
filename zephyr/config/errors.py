"""The error of a config that cannot describe an experiment, with the key it is about as data."""

from __future__ import annotations

from ..keys import KeyedError, dotted


class ConfigError(KeyedError, ValueError):
    """A config that cannot describe an experiment: the message names the key (and, once located, the
    file and line); `key` is that key's path from the config's top (empty: the config as a whole)."""

    @classmethod
    def at(cls, key: tuple, detail: str) -> ConfigError:
        """`KEY: detail`, about `key`."""
        return cls(f"{dotted(key)}: {detail}", key)

    @classmethod
    def below(cls, where: tuple, err: KeyedError) -> ConfigError:
        """The error of a check that was given `where` (as its dotted name), about its key below it."""
        return cls(str(err), where + err.key)
