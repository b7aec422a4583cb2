"""The printed tables and JSON files of the ``evaluate`` and ``bench`` commands that several techniques share.

The techniques' command hooks (registered in each ``spec.py``) print and save through these, so every technique
reports a knob sweep and a timing the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .io import write_json


def save_json_report(path: str | os.PathLike | None, payload: Any) -> None:
    """Writes a command's JSON report atomically when a path was given (``--json``), and says so.

    Args:
        path: Where to write, or ``None`` to write nothing.
        payload: The report.
    """
    if path:
        write_json(path, payload)
        print(f"Wrote {path}")


def sweep_table(rows: Sequence[dict[str, Any]]) -> str:
    """A knob sweep as a markdown table: one row per ``setting`` with its ``accuracy`` and ``theoretical_speedup``.

    Args:
        rows: The sweep's rows, the full-compute one first.
    """
    lines = ["| setting | accuracy | theoretical speedup |", "|---|---|---|"]
    lines += [f"| {r['setting']} | {r['accuracy']:.4f} | {r['theoretical_speedup']:.2f}x |" for r in rows]
    return "\n".join(lines)


def speedup_table(heading: str, results: Sequence[dict[str, Any]]) -> str:
    """Timings as a markdown table: realized against theoretical speedup per batch size.

    Args:
        heading: The first line (model, sample count, torch version, threads).
        results: One timing per batch size with ``batch_size``, ``theoretical_speedup``, ``realized_speedup``,
            ``efficiency`` and ``noisy``.
    """
    lines = [
        heading,
        "",
        "| batch size | theoretical speedup | realized speedup | realized / theoretical | noisy |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['batch_size']} | {r['theoretical_speedup']:.2f}x | {r['realized_speedup']:.2f}x | "
            f"{r['efficiency']:.2f} | {'yes' if r['noisy'] else 'no'} |"
        )
    return "\n".join(lines)
