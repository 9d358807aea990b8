"""One log line per event: a contract prefix, an event name, then key=value fields.

The prefixes are the contract's (`[Queue]`, `[TiffConversion]`, `[Callback]`, `[HTTP]`)
plus `[Batch]` for the batch state machine. Callers pass ids, counts and error texts; never
a secret (tokens and R2 keys are not passed here, so they cannot leak through it).
"""

from __future__ import annotations

import json
import logging
import sys


def stdout_logger(name: str) -> logging.Logger:
    """A logger writing bare lines to stdout (Lambda sends stdout to CloudWatch Logs)."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


_logger = stdout_logger("arke")


def _fmt(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if not text or any(ch.isspace() or ch in '"=' for ch in text):
        return json.dumps(text)
    return text


def log(prefix: str, event: str, **fields: object) -> None:
    parts = [prefix, event]
    parts += [f"{key}={_fmt(value)}" for key, value in fields.items() if value is not None]
    _logger.info(" ".join(parts))
