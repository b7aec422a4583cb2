"""Checks on model inputs that a user can get wrong, with errors that name the field and what it accepts."""

from __future__ import annotations

import warnings

import torch


def check_token_inputs(
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    *,
    vocab_size: int | None = None,
    max_length: int | None = None,
) -> int:
    """Validates ``input_ids``/``inputs_embeds`` and ``attention_mask``; returns the batch size.

    The one input check of every text technique: what it rejects would otherwise surface as an ``IndexError`` or a
    shape error from inside the backbone.

    Args:
        input_ids: ``(batch, seq)`` integer token ids, or ``None`` when ``inputs_embeds`` is given.
        attention_mask: ``(batch, seq)`` mask or ``None``.
        inputs_embeds: ``(batch, seq, dim)`` floating embeddings, or ``None``.
        vocab_size: When given, every id (padded positions too: the embedding looks them all up) must be in
            ``[0, vocab_size)``.
        max_length: When given, the longest sequence the backbone's position embeddings cover.
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
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(f"`attention_mask` must be a torch.Tensor of 0/1; got {type(attention_mask).__name__}.")
        if tuple(attention_mask.shape) != shape:
            raise ValueError(
                f"`attention_mask` must have shape (batch, seq_len) = {shape}; got {tuple(attention_mask.shape)}."
            )
    if max_length is not None and shape[1] > max_length:
        raise ValueError(
            f"The sequences have {shape[1]} tokens, but this model's position embeddings cover at most {max_length} "
            f"(`max_position_embeddings`). Truncate the inputs (e.g. tokenizer(..., truncation=True, "
            f"max_length={max_length}))."
        )
    if vocab_size is not None and input_ids is not None:
        low, high = torch.stack(torch.aminmax(input_ids)).tolist()  # one device sync, not two
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"`input_ids` must be token ids in [0, vocab_size={vocab_size}), padded positions included; got "
                f"values in [{low}, {high}]. Use a tokenizer whose vocabulary matches the model, and pad with its "
                "pad_token_id."
            )
    return shape[0]


def position_limit(model: torch.nn.Module) -> int | None:
    """The longest sequence a text model's learned absolute position embeddings cover, or ``None`` when unbounded.

    RoBERTa-style embeddings count positions from ``padding_idx + 1``, so they cover ``padding_idx + 1`` fewer
    tokens than they have rows. Rotary or relative positions have no table and no limit here.

    Args:
        model: A transformers text model (the result is cached on it).
    """
    cached = model.__dict__.get("_ahf_position_limit", False)
    if cached is not False:
        return cached
    limit = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding) and name.rsplit(".", 1)[-1] in ("position_embeddings", "wpe"):
            offset = module.padding_idx + 1 if module.padding_idx is not None else 0
            limit = module.num_embeddings - offset
            break
    model.__dict__["_ahf_position_limit"] = limit
    return limit


def check_class_labels(labels: torch.Tensor, batch_size: int, num_labels: int) -> None:
    """Validates single-label classification targets.

    Args:
        labels: ``(batch,)`` integer class ids.
        batch_size: Rows in the inputs.
        num_labels: Number of classes of the model.
    """
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        got = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise TypeError(f"`labels` must be an integer tensor of class ids in [0, {num_labels}); got {got}.")
    if labels.dim() != 1 or labels.size(0) != batch_size:
        raise ValueError(
            f"`labels` must have shape (batch,) = ({batch_size},) to match the inputs; got {tuple(labels.shape)}."
        )
    check_label_values(labels, num_labels)


IGNORE_INDEX = -100


def check_label_values(
    labels: torch.Tensor, num_labels: int, *, field: str = "labels", all_ignored: str = "error"
) -> None:
    """Raises ``ValueError`` unless every label is a class id in ``[0, num_labels)`` or the ignore index -100.

    A batch whose labels are all -100 has no loss (cross-entropy returns NaN): that raises for per-sample labels,
    and warns for per-token labels (``all_ignored="warn"``), where a batch with no masked token can happen.

    Args:
        labels: Integer class ids of any shape.
        num_labels: Number of classes.
        field: The argument name, for the message.
        all_ignored: ``"error"`` or ``"warn"``: what a batch of only -100 does.
    """
    if labels.numel() == 0:
        return
    kept = labels != IGNORE_INDEX
    if not bool(kept.any()):
        message = (
            f"Every entry of `{field}` is {IGNORE_INDEX} (ignored): there is nothing to compute a loss on, and "
            "cross-entropy returns NaN for this batch."
        )
        if all_ignored == "error":
            raise ValueError(message + " Drop the batch or pass real class ids.")
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        return
    bad = kept & ((labels < 0) | (labels >= num_labels))
    if bool(bad.any()):
        values = sorted(set(labels[bad].tolist()))[:5]
        raise ValueError(
            f"`{field}` must be class ids in [0, num_labels={num_labels}) (or {IGNORE_INDEX} to ignore an entry); "
            f"got {values}. Check the label mapping, or build the model with the right num_labels."
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


def check_token_labels(labels: torch.Tensor, shape: tuple[int, int], num_classes: int, *, field: str = "labels"):
    """Validates per-token targets (token classification, masked or causal language modelling).

    Args:
        labels: ``(batch, seq)`` integer ids in ``[0, num_classes)`` or -100 for positions without a loss.
        shape: ``(batch, seq)`` of the inputs.
        num_classes: ``num_labels`` (token classification) or ``vocab_size`` (language modelling).
        field: The argument name, for the message.
    """
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        got = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise TypeError(f"`{field}` must be an integer tensor of ids in [0, {num_classes}) or -100; got {got}.")
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(
            f"`{field}` must have shape (batch, seq_len) = {tuple(shape)}, one id per input token; got "
            f"{tuple(labels.shape)}."
        )
    check_label_values(labels, num_classes, field=field, all_ignored="warn")


_ROWS_LEAVE_EARLY = "samples leave the backbone at different layers, so no per-layer tensor covers the whole batch"


def check_forward_options(
    model_name: str,
    output_attentions: bool | None = None,
    output_hidden_states: bool | None = None,
    extra: dict | None = None,
    *,
    reason: str = _ROWS_LEAVE_EARLY,
    accepted: str = "input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, labels",
) -> None:
    """Refuses the standard forward options an adaptive model cannot honour, naming the argument.

    peft and the pipelines pass ``output_attentions``/``output_hidden_states`` (usually ``None``) to every
    classifier. ``None`` and ``False`` are accepted; ``True`` is refused because rows leave the backbone at different
    layers, so no per-layer tensor covers the whole batch. Any other keyword gets a ``TypeError`` naming it rather
    than Python's bare "unexpected keyword argument".

    Args:
        model_name: The model class name, for the error message.
        output_attentions: The caller's ``output_attentions``.
        output_hidden_states: The caller's ``output_hidden_states``.
        extra: Any other keyword arguments the caller passed.
        reason: Why the model has no per-layer tensors to return, for the message.
        accepted: The inputs the model's forward takes, for the message.
    """
    for name, value in (("output_attentions", output_attentions), ("output_hidden_states", output_hidden_states)):
        if value:
            raise ValueError(
                f"{model_name} cannot honour `{name}=True`: {reason}. Pass None or False (the per-exit logits are "
                "available with `output_exit_logits=True` on early-exit models)."
            )
    unknown = sorted((extra or {}).keys())
    if unknown:
        raise TypeError(
            f"{model_name}.forward() got unsupported keyword argument(s) {unknown}; it accepts {accepted}, "
            "output_attentions, output_hidden_states and return_dict (plus its technique's own options)."
        )


# What peft's sequence-classification wrapper and the text pipelines pass to every model, as ``None`` when unused.
TEXT_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds")


def refuse_text_inputs(
    model_name: str, inputs: dict, *, pixel_shape: str = "(batch, channels, height, width)"
) -> None:
    """Refuses, by name, text inputs that hold a value in the keyword arguments of an image or video model.

    Args:
        model_name: The model class name, for the error message.
        inputs: The keyword arguments the forward received.
        pixel_shape: The shape of ``pixel_values`` the model takes, for the message.
    """
    text = sorted(name for name in TEXT_INPUT_NAMES if inputs.get(name) is not None)
    if text:
        raise ValueError(
            f"{model_name} classifies images from `pixel_values` {pixel_shape}; it has no use for {text}. Pass "
            "the images as `pixel_values` (an image processor's output) and leave the text inputs out."
        )


def check_pixel_forward_options(
    model_name: str,
    output_attentions: bool | None = None,
    output_hidden_states: bool | None = None,
    extra: dict | None = None,
    *,
    reason: str = _ROWS_LEAVE_EARLY,
    pixel_shape: str = "(batch, channels, height, width)",
) -> None:
    """The forward-option check of image and video models: text inputs given as ``None`` are accepted, not used.

    peft's ``SEQ_CLS`` wrapper passes ``input_ids=None, attention_mask=None, inputs_embeds=None`` along with the
    user's ``pixel_values``; those are accepted. A text input that holds a value is refused by name, since the model
    reads ``pixel_values`` only.

    Args:
        model_name: The model class name, for the error message.
        output_attentions: The caller's ``output_attentions``; ``True`` is refused.
        output_hidden_states: The caller's ``output_hidden_states``; ``True`` is refused.
        extra: Any other keyword arguments the caller passed.
        reason: Why the model has no per-layer tensors to return, for the message.
        pixel_shape: The shape of ``pixel_values`` the model takes, for the message.
    """
    if not (extra or output_attentions or output_hidden_states):
        return  # the common call: nothing to check (this runs on every batch-1 inference call)
    extra = dict(extra or {})
    refuse_text_inputs(model_name, extra, pixel_shape=pixel_shape)
    for name in TEXT_INPUT_NAMES:
        extra.pop(name, None)
    check_forward_options(
        model_name,
        output_attentions,
        output_hidden_states,
        extra,
        reason=reason,
        accepted="pixel_values, labels",
    )
