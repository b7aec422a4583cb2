"""The early-exit technique's ``replay``: every candidate exit setting measured from one pass with every head.

Text rows run through :func:`~adaptive_hf.early_exit.calibration.collect_exit_logits`, images through
:func:`~adaptive_hf.early_exit.vision_calibration.collect_image_exit_logits`; each candidate is then replayed with
the inference decision rule, so ``adaptive_hf.calibrate`` never runs the model once per setting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..core.candidates import CandidateOutcomes
from .calibration import ExitLogits, _check_model, collect_exit_logits
from .vision_calibration import collect_image_exit_logits


def _exit_logits_from(model, data, batch_size, data_collator, tokenizer, show_progress, require_labels):
    if isinstance(data, ExitLogits):
        if require_labels and data.labels is None:
            raise ValueError("The `exit_logits` table has no labels; `max_accuracy_drop` needs labelled data.")
        return data
    _check_model(model)
    if isinstance(data, Mapping) and "pixel_values" in data:
        labels = data.get("labels", data.get("label"))
        if require_labels and labels is None:
            raise ValueError("The data has no `labels`: `max_accuracy_drop` needs labelled data.")
        return collect_image_exit_logits(model, data["pixel_values"], labels, batch_size)
    if isinstance(data, Mapping) or _is_dataset(data):
        return collect_exit_logits(
            model, data, batch_size, data_collator, tokenizer, show_progress, require_labels=require_labels
        )
    return None


def _is_dataset(data) -> bool:
    import datasets

    return isinstance(data, (datasets.Dataset, datasets.DatasetDict))


def _exit_details(table: ExitLogits, heads: torch.Tensor) -> dict[str, Any]:
    layers = torch.tensor(table.exit_layers, dtype=torch.float64)[heads]
    counts = torch.bincount(heads, minlength=table.num_exits).tolist()
    return {
        "average_exit_layer": float(layers.mean()),
        "exit_fractions": {
            str(layer): count / table.num_samples for layer, count in zip(table.exit_layers, counts, strict=True)
        },
    }


def replay_candidates(
    model,
    data,
    chains: Sequence[Sequence[Mapping[str, Any]]],
    *,
    batch_size: int = 64,
    data_collator: Callable | None = None,
    tokenizer=None,
    show_progress: bool = True,
    require_labels: bool = True,
):
    """The early-exit technique's fast collector: one pass with every exit head, then each setting replayed.

    Args:
        model: An early-exit classifier (text or image); unused when ``data`` is already a table.
        data: An :class:`ExitLogits` table, a tokenized text ``datasets.Dataset`` (or dict of columns), or a dict
            with ``pixel_values`` (and ``labels``) for image models. Anything else returns ``None`` (the generic
            collector runs the model once per setting instead).
        chains: Candidate settings per knob (``exit_policy`` with ``exit_threshold`` or ``patience``).
        batch_size: Rows per forward.
        data_collator: Pads a list of feature dicts (text).
        tokenizer: Pads with ``DataCollatorWithPadding`` when no collator is given (text).
        show_progress: Show a progress bar.
        require_labels: Raise when the data has no labels.

    Returns:
        A :class:`~adaptive_hf.core.candidates.CandidateOutcomes` (details: average exit layer and exit fractions
        per candidate), or ``None``.
    """
    table = _exit_logits_from(model, data, batch_size, data_collator, tokenizer, show_progress, require_labels)
    if table is None:
        return None
    full_heads = table.exit_heads("none")
    predictions, costs, details = [], [], []
    for chain in chains:
        chain_predictions, chain_costs, chain_details = [], [], []
        for setting in chain:
            heads = table.exit_heads(setting["exit_policy"], setting.get("exit_threshold"), setting.get("patience"))
            chain_predictions.append(table.predictions(heads))
            chain_costs.append(table.costs.gather(1, heads.view(-1, 1)).view(-1))
            chain_details.append(_exit_details(table, heads))
        predictions.append(torch.stack(chain_predictions) if chain else torch.empty(0, table.num_samples).long())
        costs.append(torch.stack(chain_costs) if chain else torch.empty(0, table.num_samples, dtype=torch.float64))
        details.append(chain_details)
    return CandidateOutcomes(
        chains=[[dict(setting) for setting in chain] for chain in chains],
        predictions=predictions,
        costs=costs,
        full_predictions=table.predictions(full_heads),
        full_costs=table.full_costs.clone(),
        labels=table.labels,
        details=details,
    )
