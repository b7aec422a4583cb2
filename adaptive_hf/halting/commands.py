"""The ``adaptive-hf evaluate`` and ``bench`` commands on a halting classifier (text or timm ViT).

Registered as the technique's command hooks in ``spec.py``; the CLI hands each one its parsed arguments and a
``prepare(require_labels)`` that loads the model and its data (see :data:`adaptive_hf.core.technique.CommandHook`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.reports import run_bench_command, run_evaluate_command

# Thresholds the evaluate command sweeps (the model's own threshold is added to them).
HALTING_SWEEP = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


def cli_evaluate(args: Any, prepare: Callable[[bool], Any]) -> int:
    """``adaptive-hf evaluate``: accuracy against theoretical speedup at full depth and over ``HALTING_SWEEP``.

    Args:
        args: The command's arguments (``batch_size``, ``json``, ``plot``, ``model_dir``, ``dataset``).
        prepare: The CLI's loader of the model and its labelled data.
    """
    from .evaluation import evaluate_halting

    def sweep(model: Any, data: Any) -> list[dict[str, Any]]:
        return evaluate_halting(
            model, thresholds=HALTING_SWEEP, batches=data.batches(args.batch_size), labels=data.labels
        )

    return run_evaluate_command(args, prepare, "halting", sweep)


def cli_bench(args: Any, prepare: Callable[[bool], Any]) -> int:
    """``adaptive-hf bench``: the same weights with and without halting, interleaved, at each batch size.

    Args:
        args: The command's arguments (``batch_sizes``, ``repeats``, ``threads``, ``json``).
        prepare: The CLI's loader of the model and its data.
    """
    from .benchmarking import measure_halting_speedup

    def time_batches(model: Any, batches: list[Any], batch_size: int, threads: int) -> dict[str, Any]:
        return measure_halting_speedup(model, batches, repeats=args.repeats, threads=threads)

    return run_bench_command(args, prepare, time_batches)
