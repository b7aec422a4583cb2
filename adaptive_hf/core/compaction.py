"""Gather and scatter of active rows, so that work for finished rows is never computed."""

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
        if value.dim() > 0 and value.size(0) == batch_size and batch_size != 1:
            return value.index_select(0, rows)
        if value.dim() > 0 and value.size(0) == batch_size == 1:
            return value if rows.numel() == 1 else value.index_select(0, rows)
        return value
    if isinstance(value, dict):
        return {key: select_rows(item, rows, batch_size) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(select_rows(item, rows, batch_size) for item in value)
    return value


def scatter_rows(target: torch.Tensor, rows: torch.Tensor, source: torch.Tensor) -> None:
    """Writes ``source`` into ``target`` at ``rows`` (in place).

    Args:
        target: Tensor with the full batch as its first dimension.
        rows: 1-D index tensor, one entry per row of ``source``.
        source: Values to write.
    """
    target.index_copy_(0, rows, source.to(target.dtype))
