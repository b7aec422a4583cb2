"""Accuracy against compute for a halting classifier over a sweep of halting thresholds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..core.batching import iterate_batches
from .benchmarking import token_mask_of


def _labels(dataset) -> torch.Tensor:
    column = "labels" if "labels" in dataset.column_names else "label"
    return torch.as_tensor(dataset[column])


def evaluate_halting(
    model,
    dataset=None,
    thresholds: Sequence[float] = (),
    batch_size: int = 64,
    tokenizer=None,
    data_collator=None,
    batches: Sequence[dict[str, torch.Tensor]] | None = None,
    labels: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """Runs the model over ``dataset`` (or ready ``batches``) at full depth and at each halting threshold.

    Args:
        model: A halting classifier (text or ``HaltingTimmForImageClassification``).
        dataset: Tokenized text dataset with ``label``/``labels``.
        thresholds: Halting thresholds to sweep (the model's own threshold is always included).
        batch_size: Rows per batch.
        tokenizer: Pads unpadded rows (or pass ``data_collator``).
        data_collator: Pads a list of feature dicts.
        batches: Model-input batches instead of ``dataset`` (e.g. ``{"pixel_values": ...}``).
        labels: The labels of ``batches``, in order.

    Returns:
        One row per setting: ``setting`` (``"full depth"`` or the threshold), ``accuracy``, ``average_steps``,
        ``token_layer_fraction`` (token granularity) and ``theoretical_speedup``. The model's config and mode are
        restored afterwards.
    """
    config = model.config
    saved = (config.halting_enabled, config.halting_threshold)
    was_training = model.training
    if batches is None:
        labels = _labels(dataset)
        batches = list(iterate_batches(dataset, batch_size, data_collator=data_collator, tokenizer=tokenizer))
    elif labels is None:
        raise ValueError("Pass `labels` together with `batches`.")
    device = next(model.parameters()).device
    settings: list[tuple[str, bool, float | None]] = [("full depth", False, saved[1])]
    for threshold in dict.fromkeys([saved[1], *thresholds]):
        settings.append((f"threshold={threshold}", True, threshold))
    rows = []
    model.eval()
    try:
        for name, enabled, threshold in settings:
            config.halting_enabled, config.halting_threshold = enabled, threshold
            predictions, steps_all, full, spent, token_layers, token_total = [], [], 0, 0, 0, 0
            with torch.inference_mode():
                for batch in batches:
                    batch = {key: value.to(device) for key, value in batch.items()}
                    out = model(**batch)
                    steps = out.halting_steps.cpu()
                    mask = token_mask_of(batch, steps)
                    predictions.append(out.logits.argmax(-1).cpu())
                    batch_full, batch_spent = model.halting_flops(steps, mask)
                    full, spent = full + batch_full, spent + batch_spent
                    if steps.dim() == 2:
                        steps_all.append(steps[mask.bool()].float())
                        token_layers += int(steps[mask.bool()].sum())
                        token_total += int(mask.sum()) * model.adapter.num_layers
                    else:
                        steps_all.append(steps.float())
            row = {
                "setting": name,
                "halting_threshold": threshold if enabled else None,
                "accuracy": float((torch.cat(predictions) == labels).double().mean()),
                "average_steps": float(torch.cat(steps_all).mean()),
                "theoretical_speedup": full / spent if enabled else 1.0,
            }
            if token_total:
                row["token_layer_fraction"] = token_layers / token_total
            rows.append(row)
    finally:
        config.halting_enabled, config.halting_threshold = saved
        model.train(was_training)
    return rows


def format_halting_report(title: str, rows: Sequence[dict[str, Any]], timings: Sequence[dict[str, Any]]) -> str:
    """The recipes' printed report: the threshold sweep as a markdown table, then one line per timed batch size.

    Args:
        title: First line.
        rows: Rows of :func:`evaluate_halting`.
        timings: Results of :func:`~adaptive_hf.halting.benchmarking.measure_halting_speedup`.
    """
    lines = [
        title,
        "| setting | accuracy | average steps | token-layer fraction | theoretical speedup |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        fraction = f"{row['token_layer_fraction']:.3f}" if "token_layer_fraction" in row else "-"
        lines.append(
            f"| {row['setting']} | {100 * row['accuracy']:.2f} | {row['average_steps']:.2f} | {fraction} | "
            f"{row['theoretical_speedup']:.2f}x |"
        )
    for timing in timings:
        lines.append(
            f"batch {timing['batch_size']}: realized {timing['realized_speedup']:.2f}x, theoretical "
            f"{timing['theoretical_speedup']:.2f}x, realized/theoretical {timing['efficiency']:.2f} "
            f"({timing['threads']} threads{', noisy' if timing['noisy'] else ''})"
        )
    return "\n".join(lines)
