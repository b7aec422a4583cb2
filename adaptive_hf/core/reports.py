"""The printed tables and JSON files of the ``evaluate`` and ``bench`` commands that several techniques share.

The techniques' command hooks (registered in each ``spec.py``) print and save through these, so every technique
reports a knob sweep and a timing the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..plotting import plot_sweep
from .io import write_json


def command_threads(args: Any) -> int:
    """The thread count a timing command runs at: ``--threads`` when given, else torch's current count.

    Args:
        args: The command's arguments (``threads`` may be absent or ``None``).
    """
    threads = getattr(args, "threads", None)
    return threads if threads is not None else torch.get_num_threads()


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


def report_sweep(args: Any, model: Any, technique: str, rows: list[dict[str, Any]]) -> None:
    """Prints a knob sweep, saves it (``--json``) and plots it (``--plot``), the ``evaluate`` report of a technique.

    Args:
        args: The command's arguments (``model_dir``, ``dataset``, ``json``, ``plot``).
        model: The evaluated model (its class names the plot).
        technique: The technique's name, recorded in the JSON report.
        rows: The sweep's rows, the full-compute one first.
    """
    print(sweep_table(rows))
    payload = {"model": str(args.model_dir), "dataset": args.dataset, "technique": technique, "rows": rows}
    save_json_report(args.json, payload)
    if args.plot:
        plot_sweep(rows, args.plot, f"{type(model).__name__} on {args.dataset}")
        print(f"Wrote {args.plot}")


def report_speedups(args: Any, model: Any, num_samples: int, threads: int, results: list[dict[str, Any]]) -> None:
    """Prints the timings of a ``bench`` run per batch size and saves them (``--json``).

    Args:
        args: The command's arguments (``model_dir``, ``dataset``, ``json``).
        model: The timed model (its class heads the table).
        num_samples: How many samples each batch size ran over.
        threads: The thread count the timings ran at.
        results: One timing per batch size (see :func:`speedup_table`).
    """
    heading = f"{type(model).__name__}; {num_samples} samples; torch {torch.__version__}, {threads} thread(s)"
    print(speedup_table(heading, results))
    save_json_report(args.json, {"model": str(args.model_dir), "dataset": args.dataset, "results": results})


def run_evaluate_command(
    args: Any, prepare: Callable[[bool], Any], technique: str, sweep: Callable[[Any, Any], list[dict[str, Any]]]
) -> int:
    """An ``evaluate`` command hook: loads the model with labelled data, sweeps its knob and reports the sweep.

    Args:
        args: The command's arguments (``model_dir``, ``dataset``, ``json``, ``plot``, ...).
        prepare: The CLI's loader of the model and its data (``prepare(require_labels)``).
        technique: The technique's name, recorded in the JSON report.
        sweep: ``sweep(model, data)`` -> the sweep's rows, the full-compute one first.
    """
    data = prepare(True)
    report_sweep(args, data.model, technique, sweep(data.model, data))
    return 0


def run_bench_command(
    args: Any, prepare: Callable[[bool], Any], time_batches: Callable[[Any, list[Any], int, int], dict[str, Any]]
) -> int:
    """A ``bench`` command hook: times the model at each ``--batch-sizes`` value and reports the timings.

    Args:
        args: The command's arguments (``batch_sizes``, ``threads``, ``model_dir``, ``dataset``, ``json``, ...).
        prepare: The CLI's loader of the model and its data (``prepare(require_labels)``).
        time_batches: ``time_batches(model, batches, batch_size, threads)`` -> one timing (see
            :func:`speedup_table`).
    """
    data = prepare(False)
    threads = command_threads(args)
    results = [
        time_batches(data.model, data.batches(batch_size), batch_size, threads) for batch_size in args.batch_sizes
    ]
    report_speedups(args, data.model, data.num_samples, threads, results)
    return 0
