"""Silencing the libraries export drives: they log and print chatter the CLI replaces with its own summary."""

from __future__ import annotations

import contextlib
import logging


def quiet_loggers(*names: str, level: int = logging.ERROR) -> contextlib.ExitStack:
    """Raise these loggers (``""``: the root logger) to ``level`` until the returned stack closes."""
    stack = contextlib.ExitStack()
    for name in names:
        logger = logging.getLogger(name)
        stack.callback(logger.setLevel, logger.level)
        logger.setLevel(level)
    return stack
