"""Errors about one key of a mapping a check was handed, with the key as data rather than only in words.

A check is given the name of the mapping it reads (`where`, e.g. `hyperparameters.dpo`) and names the
key in its message; `KeyedError.key` carries the same key as a path, so that the config check can
place the error at the file and line that set it without reading the message back.
"""

from __future__ import annotations


class KeyedError(Exception):
    """An error about `key`: the path (names, list indexes) below the `where` its check was given;
    empty when it is about `where` itself."""

    def __init__(self, message: str, key: tuple = ()):
        super().__init__(message)
        self.key = tuple(key)


def dotted(key: tuple) -> str:
    """A key path as a message writes it: `mixtures.D_S.components[2].dataset`."""
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
