"""Gathering the active rows, so that work for finished rows is never computed."""

from __future__ import annotations

from typing import Any

import torch


def select_rows(value: Any, rows: torch.Tensor, batch_size: int) -> Any:
    """Keeps the given rows of every per-row tensor inside ``value``.

    Tensors whose first dimension is not ``batch_size`` (broadcast masks, shared biases) pass through unchanged, as
    do non-tensor values. Dicts, lists and tuples are walked.

    Args:
        value: A tensor, or a container of tensors.
        rows: 1-D index tensor of the rows to keep.
        batch_size: The current number of rows.

    Returns:
        The same structure with only ``rows`` kept.
    """
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 or value.size(0) != batch_size:
            return value
        # One row kept out of one: nothing to gather.
        return value if batch_size == 1 and rows.numel() == 1 else value.index_select(0, rows)
    if isinstance(value, dict):
        return {key: select_rows(item, rows, batch_size) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(select_rows(item, rows, batch_size) for item in value)
    return value
