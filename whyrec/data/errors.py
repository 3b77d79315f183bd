"""Errors for bad input files: one line that names the file, the line and what was expected."""

from __future__ import annotations

from pathlib import Path


class WhyrecError(Exception):
    """Base class for errors the CLI reports as one line (no traceback)."""


class DataError(WhyrecError):
    """A data file is missing, empty, truncated or malformed.

    ``str(err)`` reads ``path:line: message`` (line omitted when unknown).
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path:
            where = self.path + (f":{line}" if line is not None else "")
            where += ": "
        super().__init__(where + message)
