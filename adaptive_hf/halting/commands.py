"""The ``adaptive-hf evaluate`` and ``bench`` commands on a halting classifier (text or timm ViT).

Registered as the technique's command hooks in ``spec.py``; the CLI hands each one its parsed arguments and a
``prepare(require_labels)`` that loads the model and its data (see :data:`adaptive_hf.core.technique.CommandHook`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.reports import command_threads, report_speedups, report_sweep

# Thresholds the evaluate command sweeps (the model's own threshold is added to them).
HALTING_SWEEP = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


def cli_evaluate(args: Any, prepare: Callable[[bool], Any]) -> int:
    """``adaptive-hf evaluate``: accuracy against theoretical speedup at full depth and over ``HALTING_SWEEP``.

    Args:
        args: The command's arguments (``batch_size``, ``json``, ``plot``, ``model_dir``, ``dataset``).
        prepare: The CLI's loader of the model and its labelled data.
    """
    from .evaluation import evaluate_halting

    data = prepare(True)
    model = data.model
    rows = evaluate_halting(model, thresholds=HALTING_SWEEP, batches=data.batches(args.batch_size), labels=data.labels)
    report_sweep(args, model, "halting", rows)
    return 0


def cli_bench(args: Any, prepare: Callable[[bool], Any]) -> int:
    """``adaptive-hf bench``: the same weights with and without halting, interleaved, at each batch size.

    Args:
        args: The command's arguments (``batch_sizes``, ``repeats``, ``threads``, ``json``).
        prepare: The CLI's loader of the model and its data.
    """
    from .benchmarking import measure_halting_speedup

    data = prepare(False)
    model = data.model
    threads = command_threads(args)
    results = [
        measure_halting_speedup(model, data.batches(batch_size), repeats=args.repeats, threads=threads)
        for batch_size in args.batch_sizes
    ]
    report_speedups(args, model, data.num_samples, threads, results)
    return 0
