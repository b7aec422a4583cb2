"""Atomic writes of reports: a crash or a full disk during a write never leaves a half-written file behind.

Every JSON report of the package, the CLI, the recipes and the benchmarks goes through :func:`write_json`: the text
goes to a temporary file in the target's folder (so the final rename stays on one file system), is flushed and
fsynced, and replaces the target with ``os.replace``, which is atomic on POSIX and Windows. A reader sees the old file
or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Writes ``text`` to ``path`` atomically, creating its folder.

    Args:
        path: The file to write (replaced if it exists).
        text: Its new content.
        encoding: Text encoding.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding=encoding) as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        # Whatever failed (serialization, disk, interrupt), the old file stays and no temporary file is left over.
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return target


def write_json(path: str | os.PathLike, payload: Any, indent: int = 2, **dumps_kwargs: Any) -> Path:
    """Writes ``payload`` as JSON (with a final newline) to ``path`` atomically, creating its folder.

    The payload is serialized before the file is touched, so a payload that cannot be serialized leaves the old
    file as it was.

    Args:
        path: The file to write (replaced if it exists).
        payload: Anything ``json.dumps`` accepts with ``dumps_kwargs``.
        indent: JSON indentation.
        **dumps_kwargs: Passed to ``json.dumps`` (``default=``, ``sort_keys=``, ...).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return write_text(path, json.dumps(payload, indent=indent, **dumps_kwargs) + "\n")
