"""Checks on model inputs that a user can get wrong, with errors that name the field and what it accepts."""

from __future__ import annotations

import warnings

import torch


def check_token_inputs(
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
) -> int:
    """Validates ``input_ids``/``inputs_embeds`` and ``attention_mask``; returns the batch size.

    Args:
        input_ids: ``(batch, seq)`` integer token ids, or ``None`` when ``inputs_embeds`` is given.
        attention_mask: ``(batch, seq)`` mask or ``None``.
        inputs_embeds: ``(batch, seq, dim)`` floating embeddings, or ``None``.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Pass exactly one of `input_ids` and `inputs_embeds`.")
    if input_ids is not None:
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"`input_ids` must be a torch.Tensor of token ids; got {type(input_ids).__name__}.")
        if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
            raise TypeError(f"`input_ids` must be an integer tensor (torch.long or torch.int); got {input_ids.dtype}.")
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must have shape (batch, seq_len); got shape {tuple(input_ids.shape)}.")
        shape = tuple(input_ids.shape)
    else:
        if not isinstance(inputs_embeds, torch.Tensor) or not inputs_embeds.dtype.is_floating_point:
            raise TypeError("`inputs_embeds` must be a floating-point torch.Tensor.")
        if inputs_embeds.dim() != 3:
            raise ValueError(
                f"`inputs_embeds` must have shape (batch, seq_len, dim); got shape {tuple(inputs_embeds.shape)}."
            )
        shape = tuple(inputs_embeds.shape[:2])
    if shape[0] == 0:
        raise ValueError("Empty batch: the inputs have 0 rows; pass at least one sequence.")
    if shape[1] == 0:
        raise ValueError("Empty sequences: the inputs have seq_len 0; pass at least one token per row.")
    if attention_mask is not None and tuple(attention_mask.shape) != shape:
        raise ValueError(
            f"`attention_mask` must have shape (batch, seq_len) = {shape}; got {tuple(attention_mask.shape)}."
        )
    return shape[0]


def check_class_labels(labels: torch.Tensor, batch_size: int, num_labels: int) -> None:
    """Validates single-label classification targets.

    Args:
        labels: ``(batch,)`` integer class ids.
        batch_size: Rows in the inputs.
        num_labels: Number of classes of the model.
    """
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"`labels` must be an integer tensor of class ids in [0, {num_labels}).")
    if labels.dim() != 1 or labels.size(0) != batch_size:
        raise ValueError(
            f"`labels` must have shape (batch,) = ({batch_size},) to match the inputs; got {tuple(labels.shape)}."
        )


def report_nonfinite_rows(logits: torch.Tensor, mode: str, *, field: str = "nonfinite_logits") -> None:
    """Warns (``mode="warn"``) or raises ``ValueError`` (``mode="error"``) when rows of ``logits`` hold NaN/inf.

    Args:
        logits: ``(batch, num_labels)`` output logits.
        mode: ``"warn"`` or ``"error"``.
        field: The config field that sets ``mode``, named in the message.
    """
    bad = ~torch.isfinite(logits.detach()).all(-1)
    if not bool(bad.any()):
        return
    rows = bad.nonzero().flatten().tolist()
    shown = ", ".join(str(row) for row in rows[:10]) + (", ..." if len(rows) > 10 else "")
    message = (
        f"{len(rows)} of {logits.size(0)} rows have NaN/inf logits (rows {shown}): their inputs or the model's "
        "weights hold NaN/inf. Such rows never exit early; they ran to the last exit."
    )
    if mode == "error":
        raise ValueError(f"{message} Set `{field}='warn'` to get a warning instead.")
    warnings.warn(f"{message} Set `{field}='error'` to raise instead.", RuntimeWarning, stacklevel=3)
