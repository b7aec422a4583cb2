"""The ``adaptive-hf evaluate`` and ``bench`` commands on a Skim-RNN or LSTM-Jump reader.

Registered as the technique's command hooks in ``spec.py``; the CLI hands each one its parsed arguments and a
``prepare(require_labels)`` that loads the model and its data (see :data:`adaptive_hf.core.technique.CommandHook`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..core.reports import run_bench_command, run_evaluate_command

# Skim thresholds the evaluate command sweeps on a Skim-RNN (the model's own threshold is added to them).
SKIM_SWEEP = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def _labelled_batches(data: Any, batch_size: int) -> list[dict[str, torch.Tensor]]:
    batches = data.batches(batch_size)
    for start, batch in zip(range(0, data.num_samples, batch_size), batches):
        batch["labels"] = data.labels[start : start + batch_size].to(batch["input_ids"].device)
    return batches


def cli_evaluate(args: Any, prepare: Callable[[bool], Any]) -> int:
    """``adaptive-hf evaluate``: accuracy against theoretical speedup when reading everything, then adaptively
    (a Skim-RNN over ``SKIM_SWEEP``).

    Args:
        args: The command's arguments (``batch_size``, ``json``, ``plot``, ``model_dir``, ``dataset``).
        prepare: The CLI's loader of the model and its labelled data.
    """
    from .evaluation import evaluate_reader

    def sweep(model: Any, data: Any) -> list[dict[str, Any]]:
        batches = _labelled_batches(data, args.batch_size)
        rows = [{"setting": "full reading", **evaluate_reader(model, batches, reading_policy="full")}]
        if model.config.model_type == "skim_rnn":
            for threshold in dict.fromkeys([model.config.skim_threshold, *SKIM_SWEEP]):
                result = evaluate_reader(model, batches, reading_policy="adaptive", skim_threshold=threshold)
                rows.append({"setting": f"skim_threshold={threshold}", **result})
        else:
            rows.append({"setting": "adaptive", **evaluate_reader(model, batches, reading_policy="adaptive")})
        return rows

    return run_evaluate_command(args, prepare, "readers", sweep)


def cli_bench(args: Any, prepare: Callable[[bool], Any]) -> int:
    """``adaptive-hf bench``: the same reader adaptive and reading everything, interleaved, at each batch size.

    Args:
        args: The command's arguments (``batch_sizes``, ``repeats``, ``threads``, ``json``).
        prepare: The CLI's loader of the model and its data.
    """
    from .evaluation import time_reader

    def time_batches(model: Any, batches: list[Any], batch_size: int, threads: int) -> dict[str, Any]:
        # The requested batch size, not the largest batch timed (smaller when there are fewer samples).
        return {**time_reader(model, batches, repetitions=args.repeats, threads=threads), "batch_size": batch_size}

    return run_bench_command(args, prepare, time_batches)
