"""The CLI's user error."""

from __future__ import annotations


class CliError(Exception):
    """A user error: printed without a traceback, exit status 2."""
