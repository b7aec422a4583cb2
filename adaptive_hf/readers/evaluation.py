"""Accuracy, skim/jump rates, theoretical FLOPs and realized wall-clock of the readers (used by recipe and bench).

Timing follows the project's protocol: the adaptive reader and the same reader with skipping disabled
(``reading_policy="full"``) run on the same batches, interleaved (A B A B ...), after a warm-up, and the median of
the repetitions is compared.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ..core.technique import config_overrides
from ..core.timing import time_interleaved
from .config import SKIM_THRESHOLDS, STOP_THRESHOLDS


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
def evaluate_reader(model, batches: Iterable[dict[str, torch.Tensor]], **settings: Any) -> dict[str, float]:
    """Accuracy, reading rates and theoretical speedup of ``model`` on labelled batches.

    Args:
        model: A Skim-RNN or LSTM-Jump classifier.
        batches: Batches with ``input_ids``, ``attention_mask`` and ``labels``.
        **settings: Config fields set for this evaluation only (``skim_threshold``, ``reading_policy``); the old
            values come back afterwards, also after an error.

    Returns:
        ``accuracy``, ``read_rate``, ``skim_rate``, ``jump_rate`` (fractions of real tokens), ``decisions`` and
        ``jumps`` per sample, ``theoretical_speedup`` (full FLOPs over spent FLOPs) and ``gflops_per_sample``.
    """
    was_training = model.training
    model.eval()
    try:
        with config_overrides(model.config, settings):
            totals = _reading_totals(model, batches)
    finally:
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


def _reading_totals(model, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    totals = dict(correct=0, rows=0, read=0, skimmed=0, jumped=0, decisions=0, jumps=0, spent=0.0, full=0.0)
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
    return totals


# The runtime knob of each reader and its candidate values (most to least computation), as the spec declares them;
# ``adaptive_hf.calibrate`` picks among them.
RUNTIME_KNOBS = {"skim_rnn": ("skim_threshold", SKIM_THRESHOLDS), "jump_lstm": ("stop_threshold", STOP_THRESHOLDS)}


def time_reader(
    model,
    batches: Sequence[dict[str, torch.Tensor]],
    repetitions: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    pool_rows: int | None = None,
    plain: nn.Module | None = None,
) -> dict[str, float]:
    """Realized speedup of adaptive reading over full reading (the same weights), interleaved, medians.

    Each repetition times one pass over ``batches`` with ``reading_policy="adaptive"`` and one with ``"full"``
    (A B A B ..., through :func:`adaptive_hf.core.timing.time_interleaved`).

    Args:
        model: A reader.
        batches: Batches of ``input_ids``/``attention_mask`` (labels are ignored).
        repetitions: Timed repetitions (>= 5 for reported figures).
        warmup: Untimed passes of each policy first.
        threads: Fixed ``torch.set_num_threads`` while timing (``None`` keeps the current count).
        pool_rows: LSTM-Jump only: read adaptively through ``model.classify_stream(batches, pool_rows)``
            (continuous batching). Full reading still runs ``model(**batch)`` per batch, its fastest form.
        plain: Optionally the plain reader (e.g. :class:`PlainLSTMClassifier`), called as
            ``plain(input_ids=..., attention_mask=...)`` per batch and timed in the same rounds (A B C A B C ...).

    Returns:
        ``adaptive_s`` and ``full_s`` (median seconds per pass), ``realized_speedup`` (full / adaptive),
        ``spread`` (max/min of the per-repetition ratios, a noise indicator), ``samples_per_s`` of both, and the
        shared timing summary fields (``threads``, ``noisy``, ...; its theoretical fields are those of one
        adaptive pass).
    """
    was_training, policy = model.training, model.config.reading_policy
    model.eval()
    inputs = [{"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]} for b in batches]

    if pool_rows is not None and not hasattr(model, "classify_stream"):
        raise ValueError("`pool_rows` applies to LSTM-Jump readers (classify_stream) only.")

    def run(name: str):
        model.config.reading_policy = name
        if pool_rows is not None and name == "adaptive":
            return list(model.classify_stream(inputs, pool_rows))
        return [model(**batch) for batch in inputs]

    try:
        with torch.no_grad():  # inference, as deployed: neither policy records an autograd graph
            run_plain = None if plain is None else (lambda: [plain(**batch) for batch in inputs])
            timing = time_interleaved(
                lambda: run("adaptive"), lambda: run("full"), repetitions, warmup, threads, run_plain
            )
    finally:
        model.config.reading_policy = policy
        model.train(was_training)
    spent = full = 0.0
    for out in timing.adaptive_output:
        batch_spent, batch_full = model.theoretical_flops(out)
        spent, full = spent + float(batch_spent.sum()), full + float(batch_full.sum())
    ratios = [f / a for a, f in zip(timing.adaptive_times, timing.full_times, strict=True)]
    rows = sum(int(b["input_ids"].size(0)) for b in inputs)
    result = timing.summary(full / max(spent, 1.0))
    result.update(
        adaptive_s=result["adaptive_seconds"],
        full_s=result["full_seconds"],
        spread=max(ratios) / min(ratios),
        adaptive_samples_per_s=rows / result["adaptive_seconds"],
        full_samples_per_s=rows / result["full_seconds"],
        batch_size=max(int(b["input_ids"].size(0)) for b in inputs),
        pool_rows=pool_rows,
    )
    if "plain_seconds" in result:
        result.update(plain_s=result["plain_seconds"], plain_samples_per_s=rows / result["plain_seconds"])
    return result


class PlainLSTMClassifier(nn.Module):
    """The plain reader a user would write: ``nn.Embedding``, a stock ``nn.LSTM`` over every real token (packed
    sequences, torch's fused kernel), the last hidden state, ``nn.Linear``; no skimming, no jumping.

    Benchmarks time it next to the reader's own full-reading path so a full-compute path slower than the plain
    model shows up instead of flattering the realized speedup.

    Args:
        embeddings: The token embedding.
        cell: An ``nn.LSTMCell`` whose weights the LSTM copies.
        classifier: The output layer on the last hidden state.
    """

    def __init__(self, embeddings: nn.Embedding, cell: nn.LSTMCell, classifier: nn.Linear):
        super().__init__()
        self.embeddings = copy.deepcopy(embeddings)
        self.lstm = nn.LSTM(cell.input_size, cell.hidden_size, batch_first=True)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(self.lstm, f"{name}_l0").copy_(getattr(cell, name))
        self.classifier = copy.deepcopy(classifier)

    @classmethod
    def from_reader(cls, model) -> PlainLSTMClassifier:
        """The plain LSTM classifier with a Skim-RNN / LSTM-Jump reader's embedding, big cell and classifier.

        Args:
            model: A reader (``embeddings``, ``big_cell`` and ``classifier`` modules).
        """
        missing = [name for name in ("embeddings", "big_cell", "classifier") if not hasattr(model, name)]
        if missing:
            raise TypeError(f"`model` must be a Skim-RNN or LSTM-Jump reader; it has no {missing}.")
        return cls(model.embeddings, model.big_cell, model.classifier).eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(batch, num_labels)``; rows are read up to their ``attention_mask`` length (right padding)."""
        inputs = self.embeddings(input_ids)
        if attention_mask is None:
            _, (h, _) = self.lstm(inputs)
        else:
            lengths = attention_mask.sum(1).clamp(min=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
            _, (h, _) = self.lstm(packed)
        return self.classifier(h[-1])
