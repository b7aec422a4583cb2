"""Realized against theoretical speedup of a halting classifier (halting on vs every layer, same weights)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..core.timing import time_interleaved


def token_mask_of(batch: Mapping[str, torch.Tensor], steps: torch.Tensor) -> torch.Tensor | None:
    """The ``(batch, tokens)`` mask of real tokens for a batch of inputs and its ``halting_steps``.

    Text batches carry ``attention_mask`` (or every ``input_ids`` token is real); for images every token is real
    (per-token steps give the token count) and per-image steps need no mask (``None``).

    Args:
        batch: Model inputs.
        steps: The output's ``halting_steps`` for that batch.
    """
    if batch.get("attention_mask") is not None:
        return batch["attention_mask"].cpu()
    if "input_ids" in batch:
        return torch.ones(batch["input_ids"].shape, dtype=torch.long)
    return torch.ones(steps.shape, dtype=torch.long) if steps.dim() == 2 else None


def measure_halting_speedup(
    model,
    batches: Sequence[Mapping[str, torch.Tensor]],
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    plain: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Times the halting model against the same weights with halting disabled (every layer, every token).

    With ``plain``, the plain backbone the user started from is timed in the same rounds (A B C A B C ...).

    Args:
        model: A ``Halting<Arch>ForSequenceClassification``.
        batches: Model-input batches (``input_ids``, ``attention_mask``, ...) on the model's device.
        repeats: Timed repetitions (median reported).
        warmup: Untimed rounds first.
        threads: Fixed ``torch.set_num_threads`` during the measurement.
        plain: Optionally the plain model, called as ``plain(**batch)`` on each batch (e.g. the stock
            ``<Arch>ForSequenceClassification`` with these backbone weights, or the timm model).

    Returns:
        The timing summary (``realized_speedup``, ``theoretical_speedup``, ``efficiency``, spreads; with ``plain``
        also ``realized_speedup_vs_plain``, ``efficiency_vs_plain`` and ``full_over_plain``) plus
        ``batch_size``, ``num_samples``, ``average_steps`` and, for token granularity, ``token_layer_fraction``
        (token-layers computed / token-layers at full depth).
    """
    batches = list(batches)
    if not batches:
        raise ValueError("`batches` is empty; pass at least one batch of model inputs.")
    config = model.config
    was_training, was_enabled = model.training, config.halting_enabled
    model.eval()

    def run(enabled: bool):
        config.halting_enabled = enabled
        return [model(**batch).halting_steps for batch in batches]

    try:
        run_plain = None if plain is None else (lambda: [plain(**batch) for batch in batches])
        timing = time_interleaved(lambda: run(True), lambda: run(False), repeats, warmup, threads, run_plain)
    finally:
        config.halting_enabled = was_enabled
        model.train(was_training)
    full = spent = 0
    step_values, token_layers, token_total = [], 0, 0
    num_layers = model.adapter.num_layers
    for steps, batch in zip(timing.adaptive_output, batches):
        steps = steps.cpu()
        mask = token_mask_of(batch, steps)
        batch_full, batch_spent = model.halting_flops(steps, mask)
        full, spent = full + batch_full, spent + batch_spent
        if steps.dim() == 2:
            real = mask.bool()
            step_values.append(steps[real].float())
            token_layers += int(steps[real].sum())
            token_total += int(real.sum()) * num_layers
        else:
            step_values.append(steps.float())
    result = timing.summary(full / spent)
    sizes = [int(next(iter(b.values())).size(0)) for b in batches]
    result.update(
        batch_size=max(sizes),
        num_samples=sum(sizes),
        average_steps=float(torch.cat(step_values).mean()),
        granularity=config.halting_granularity,
    )
    if token_total:
        result["token_layer_fraction"] = token_layers / token_total
    return result
