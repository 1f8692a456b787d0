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
