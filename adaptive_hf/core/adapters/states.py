"""What flows between layers: the rows still computed (:class:`EncoderState`) and a token subset
(:class:`TokenSubset`), shared by the text and timm adapters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..compaction import select_rows


@dataclass
class EncoderState:
    """What flows between encoder layers for the rows still being computed.

    Attributes:
        hidden_states: ``(rows, seq, hidden)`` activations.
        token_mask: ``(rows, seq)`` 1 for real tokens, 0 for padding.
        layer_kwargs: Extra per-layer inputs (attention mask, position bias); tensors whose first dimension is the
            row count are gathered together with the rows.
    """

    hidden_states: torch.Tensor
    token_mask: torch.Tensor
    layer_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return self.hidden_states.size(0)

    def select(self, rows: torch.Tensor) -> EncoderState:
        """Returns the state restricted to ``rows`` (a 1-D index tensor)."""
        batch = self.num_rows
        return EncoderState(
            hidden_states=self.hidden_states.index_select(0, rows),
            token_mask=self.token_mask.index_select(0, rows),
            layer_kwargs=select_rows(self.layer_kwargs, rows, batch),
        )


@dataclass
class TokenSubset:
    """The active tokens of a layer's rows, packed in row-major order, for ``run_layer_on_tokens``.

    A caller that already tracks its active tokens as positions (the halting models do) builds this once per
    layer with :meth:`from_positions`, which saves the adapter re-deriving it from a mask.

    Attributes:
        rows: ``(n,)`` row of each active token, non-decreasing.
        tokens: ``(n,)`` position of each active token in its row.
        slot: ``(n,)`` rank of each token among its row's active tokens; ``None`` when there is one row.
        slots: Most active tokens in any row.
        states: ``(n, hidden)`` current states of the active tokens, or ``None`` to gather them.
    """

    rows: torch.Tensor
    tokens: torch.Tensor
    slot: torch.Tensor | None
    slots: int
    states: torch.Tensor | None = None

    @classmethod
    def from_mask(cls, active: torch.Tensor) -> TokenSubset:
        """From a ``(rows, seq)`` bool mask of active tokens."""
        rows, tokens = active.nonzero(as_tuple=True)
        if active.size(0) == 1:
            return cls(rows, tokens, None, tokens.numel())
        slot = active.long().cumsum(1).sub_(1)[rows, tokens]
        return cls(rows, tokens, slot, int(active.sum(1).max()))

    @classmethod
    def from_positions(
        cls, rows: torch.Tensor, tokens: torch.Tensor, counts: torch.Tensor, states: torch.Tensor | None = None
    ) -> TokenSubset:
        """From sorted positions.

        Args:
            rows: ``(n,)`` row of each active token, in ``0..len(counts)-1``, non-decreasing; every row appears.
            tokens: ``(n,)`` token positions.
            counts: ``(num_rows,)`` active tokens per row (``torch.unique_consecutive(..., return_counts=True)``).
            states: Optional ``(n, hidden)`` current states of those tokens.
        """
        if counts.numel() == 1:
            return cls(rows, tokens, None, tokens.numel(), states)
        starts = counts.cumsum(0).sub_(counts)
        slot = torch.arange(rows.numel(), device=rows.device).sub_(starts.index_select(0, rows))
        return cls(rows, tokens, slot, int(counts.max()), states)

    def to_slots(self, packed: torch.Tensor, num_rows: int) -> torch.Tensor:
        """``(n, ...)`` values of the packed tokens as ``(num_rows, slots, ...)``: slot ``s`` of row ``r`` holds
        that row's ``s``-th active token, unused slots zeros (with one row, the packed values as they are).

        Args:
            packed: One value per active token, in packed order.
            num_rows: Rows of the layer's batch.
        """
        if self.slot is None:
            return packed.unsqueeze(0)
        slots = packed.new_zeros(num_rows, self.slots, *packed.shape[1:])
        slots[self.rows, self.slot] = packed
        return slots

    def from_slots(self, slots: torch.Tensor) -> torch.Tensor:
        """The packed ``(n, ...)`` values of ``(num_rows, slots, ...)`` per-slot values (inverse of :meth:`to_slots`).

        Args:
            slots: Values laid out as :meth:`to_slots` returns them.
        """
        return slots[0] if self.slot is None else slots[self.rows, self.slot]

    def gather_states(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The active tokens' current states: ``states`` if known, else gathered from ``hidden_states``."""
        return self.states if self.states is not None else hidden_states[self.rows, self.tokens]


def to_width(values: torch.Tensor, width: int, left: bool = False) -> torch.Tensor:
    """``(rows, seq, ...)`` values cut or zero-padded (masked padding) to ``width`` columns.

    Args:
        values: Per-token values, columns on dimension 1.
        width: The number of columns wanted.
        left: Cut or pad the first columns instead of the last ones (left-padded decoders).
    """
    extra = width - values.size(1)
    if extra <= 0:
        return values[:, -width:] if left else values[:, :width]
    padding = [0, 0] * (values.dim() - 2) + ([extra, 0] if left else [0, extra])
    return F.pad(values, padding)


def regroup_positions(positions: list[torch.Tensor], rows: list[int], width: int, left: bool = False) -> torch.Tensor:
    """Position ids of several states' rows, each kept for its real tokens, as one ``(rows or 1, width)`` tensor.

    Columns added on the right continue ``0 .. width - 1`` (so default positions stay the default); columns added on
    the left get 0 (they are padding, masked as keys). The result has one row when every row's positions are equal,
    so families that share one rotary table across rows keep sharing it.

    Args:
        positions: Each state's ``(rows or 1, seq)`` position ids.
        rows: Each state's row count.
        width: The columns of the regrouped state.
        left: Whether the states are padded on the left (see :func:`to_width`).
    """
    parts = []
    for ids, count in zip(positions, rows):
        ids = ids.expand(count, -1)
        if left or ids.size(1) >= width:
            parts.append(to_width(ids, width, left))
        else:
            tail = torch.arange(ids.size(1), width, dtype=ids.dtype, device=ids.device).expand(count, -1)
            parts.append(torch.cat([ids, tail], dim=1))
    merged = torch.cat(parts)
    return merged[:1] if bool((merged == merged[:1]).all()) else merged
