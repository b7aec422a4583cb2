"""Gathering the active rows, so that work for finished rows is never computed."""

from __future__ import annotations

from collections.abc import Sequence
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


def batch_runs(ids: torch.Tensor, starts: Sequence[int], end: int) -> list[tuple[int, int, int]]:
    """Where each input batch's rows lie among the finished rows of a stream (cross-batch pooling).

    Streams number their rows consecutively across input batches, and compaction and concatenation keep the
    numbering ascending, so each batch owns one contiguous run of any set of finished rows.

    Args:
        ids: Ascending 1-D stream-wide ids of the finished rows.
        starts: First id of each pending batch, ascending; batch ``i`` owns ids ``starts[i]`` to
            ``starts[i + 1] - 1``, the last one up to ``end - 1``.
        end: One past the last pending batch's last id.

    Returns:
        ``(batch index, first, stop)`` for each batch with finished rows: they are ``ids[first:stop]``.
    """
    edges = torch.searchsorted(ids, torch.tensor([*starts, end], device=ids.device)).tolist()
    return [(index, first, stop) for index, (first, stop) in enumerate(zip(edges, edges[1:])) if stop > first]
