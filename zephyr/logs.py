"""Per-rule logging: each script logs to its rule's `log:` file and to stderr, failures included."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup(logfile: str | Path | None = None, level: int = logging.INFO, *, append: bool = False,
          tag: str = "") -> logging.Logger:
    """Send zephyr's log (and any uncaught exception) to `logfile` and stderr; `append` and `tag` let
    several processes of one job (data-parallel training) share the job's log."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(logfile, mode="a" if append else "w", encoding="utf-8"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s " + (f"[{tag}] " if tag else "") + "%(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)

    def excepthook(kind, value, tb):
        logging.getLogger("zephyr").critical("failed: %s", value, exc_info=(kind, value, tb))

    sys.excepthook = excepthook
    return logging.getLogger("zephyr")
