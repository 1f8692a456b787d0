"""Exceptions that the CLI turns into one-line messages.

Anything a user can cause by handing us a bad file or flag raises :class:`UserError`
(exit code 2, no traceback). A numerical check that ran and failed raises
:class:`CheckFailed` (exit code 1) so scripts can tell "your input is wrong" from
"the artifact did not verify".
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: malformed file, unknown name, unsupported setting. Exit code 2."""

    exit_code = 2
    # Set by the pipeline when this error stops a run (e.g. :class:`SourceLost`): its ``RunSummary`` so far.
    summary: object | None = None


class CheckFailed(Exception):
    """A verification (e.g. PyTorch/ONNX Runtime parity) ran and did not pass. Exit code 1.

    ``table`` carries the figures so the CLI can show why.
    """

    exit_code = 1

    def __init__(self, message: str, table: dict | None = None):
        super().__init__(message)
        self.table = table or {}


class MissingDependency(UserError):
    """An optional dependency is needed for what was asked and is not installed."""

    def __init__(self, package: str, purpose: str, extra: str | None = None):
        hint = f"pip install 'emonas-edge[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{purpose} needs the optional package '{package}', which is not installed ({hint})")


def check_number(
    name: str,
    value: float | None,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """One rule for every numeric setting: finite and within its range, else a :class:`UserError` naming it.

    ``float('nan')`` compares false with everything, so a plain ``value < low`` test lets NaN through
    (a NaN learning rate trained a network of NaNs and saved it as trained)."""
    if value is None:
        return
    import math

    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "" if low is None else f"{'(' if low_open else '['}{low:g}"
        hi = "" if high is None else f"{high:g}{')' if high_open else ']'}"
        bounds = f"{lo or '(-inf'}, {hi or 'inf)'}"
        raise UserError(f"{name} must lie in {bounds}, got {value:g}")
