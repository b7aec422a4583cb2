"""Accuracy, skim/jump rates, theoretical FLOPs and realized wall-clock of the readers (used by recipe and bench).

Timing follows the project's protocol: the adaptive reader and the same reader with skipping disabled
(``reading_policy="full"``) run on the same batches, interleaved (A B A B ...), after a warm-up, and the median of
the repetitions is compared.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch


def iterate_batches(dataset, collator, batch_size: int, limit: int | None = None) -> list[dict[str, torch.Tensor]]:
    """Tokenized rows of ``dataset`` collated into batches (right padding).

    Args:
        dataset: A tokenized ``datasets.Dataset`` (``input_ids``, ``attention_mask``, optional ``labels``).
        collator: E.g. ``transformers.DataCollatorWithPadding``.
        batch_size: Rows per batch.
        limit: Use at most this many rows.
    """
    rows = len(dataset) if limit is None else min(limit, len(dataset))
    columns = [name for name in ("input_ids", "attention_mask", "labels", "label") if name in dataset.column_names]
    batches = []
    for start in range(0, rows, batch_size):
        part = dataset.select(range(start, min(rows, start + batch_size)))
        batch = collator([{name: part[i][name] for name in columns} for i in range(len(part))])
        if "label" in batch:
            batch["labels"] = batch.pop("label")
        batches.append(dict(batch))
    return batches


@torch.no_grad()
def evaluate_reader(model, batches: Iterable[dict[str, torch.Tensor]], **config_overrides: Any) -> dict[str, float]:
    """Accuracy, reading rates and theoretical speedup of ``model`` on labelled batches.

    Args:
        model: A Skim-RNN or LSTM-Jump classifier.
        batches: Batches with ``input_ids``, ``attention_mask`` and ``labels``.
        **config_overrides: Config fields set for this evaluation only (``skim_threshold``, ``reading_policy``).

    Returns:
        ``accuracy``, ``read_rate``, ``skim_rate``, ``jump_rate`` (fractions of real tokens), ``decisions`` and
        ``jumps`` per sample, ``theoretical_speedup`` (full FLOPs over spent FLOPs) and ``gflops_per_sample``.
    """
    was_training = model.training
    model.eval()
    saved = {name: getattr(model.config, name) for name in config_overrides}
    for name, value in config_overrides.items():
        setattr(model.config, name, value)
    totals = dict(correct=0, rows=0, read=0, skimmed=0, jumped=0, decisions=0, jumps=0, spent=0.0, full=0.0)
    try:
        for batch in batches:
            labels = batch["labels"]
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            spent, full = model.theoretical_flops(out)
            totals["correct"] += int((out.logits.argmax(-1) == labels).sum())
            totals["rows"] += labels.numel()
            totals["read"] += int(out.tokens_read.sum())
            totals["skimmed"] += int(out.tokens_skimmed.sum())
            totals["jumped"] += int(out.tokens_jumped.sum())
            totals["decisions"] += int(out.num_decisions.sum())
            totals["jumps"] += int(out.num_jumps.sum())
            totals["spent"] += float(spent.sum())
            totals["full"] += float(full.sum())
    finally:
        for name, value in saved.items():
            setattr(model.config, name, value)
        model.train(was_training)
    tokens = max(1, totals["read"] + totals["skimmed"] + totals["jumped"])
    rows = max(1, totals["rows"])
    return {
        "accuracy": totals["correct"] / rows,
        "read_rate": totals["read"] / tokens,
        "skim_rate": totals["skimmed"] / tokens,
        "jump_rate": totals["jumped"] / tokens,
        "tokens_per_sample": tokens / rows,
        "decisions_per_sample": totals["decisions"] / rows,
        "jumps_per_sample": totals["jumps"] / rows,
        "theoretical_speedup": totals["full"] / max(totals["spent"], 1.0),
        "gflops_per_sample": totals["spent"] / rows / 1e9,
        "full_gflops_per_sample": totals["full"] / rows / 1e9,
    }


@torch.no_grad()
def time_reader(
    model, batches: Sequence[dict[str, torch.Tensor]], repetitions: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Realized speedup of adaptive reading over full reading (the same weights), interleaved, medians.

    Each repetition times one pass over ``batches`` with ``reading_policy="adaptive"`` and one with ``"full"``,
    alternating which goes first.

    Args:
        model: A reader.
        batches: Batches of ``input_ids``/``attention_mask`` (labels are ignored).
        repetitions: Timed repetitions (>= 5 for reported figures).
        warmup: Untimed passes of each policy first.

    Returns:
        ``adaptive_s`` and ``full_s`` (median seconds per pass), ``realized_speedup`` (full / adaptive),
        ``spread`` (max/min of the per-repetition ratios, a noise indicator) and ``samples_per_s`` of both.
    """
    was_training, policy = model.training, model.config.reading_policy
    model.eval()
    inputs = [{"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]} for b in batches]

    def run(name: str) -> float:
        model.config.reading_policy = name
        start = time.perf_counter()
        for batch in inputs:
            model(**batch)
        return time.perf_counter() - start

    try:
        for _ in range(warmup):
            run("adaptive")
            run("full")
        adaptive, full = [], []
        for repetition in range(repetitions):
            order = ("adaptive", "full") if repetition % 2 == 0 else ("full", "adaptive")
            for name in order:
                (adaptive if name == "adaptive" else full).append(run(name))
    finally:
        model.config.reading_policy = policy
        model.train(was_training)
    ratios = [f / a for a, f in zip(adaptive, full, strict=True)]
    rows = sum(int(b["input_ids"].size(0)) for b in inputs)
    adaptive_s, full_s = statistics.median(adaptive), statistics.median(full)
    return {
        "adaptive_s": adaptive_s,
        "full_s": full_s,
        "realized_speedup": full_s / adaptive_s,
        "spread": max(ratios) / min(ratios),
        "adaptive_samples_per_s": rows / adaptive_s,
        "full_samples_per_s": rows / full_s,
    }
