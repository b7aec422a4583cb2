"""The pieces of an early-exit model that become ONNX graphs: one ``nn.Module`` per segment between exits.

Segment ``k`` runs the layers after exit ``k - 1`` up to exit ``k`` and then exit head ``k``; segment 0 also runs
the embeddings (text) or the stem (images). Every segment but the last returns the hidden states its successor
starts from, so the runner can drop the rows that exit and feed only the others on. A text segment takes the
attention mask of its rows besides the hidden states (and, for BERT-like layouts, the mask in the backbone's format
that the first segment prepared; for decoder classifiers, the pooling mask the first segment read off the token ids):
compaction happens between segments, in the runner.

The modules call the model's own adapter and heads (the code PyTorch inference runs), so the graphs compute what
``model(...)`` computes; nothing here copies modeling code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.adapters.text import EncoderState, TextEncoderAdapter
from ..core.adapters.timm import ImageState

HIDDEN = "hidden_states"
# An output cannot share its input's name (the TorchScript exporter would rename the input).
HIDDEN_OUT = "hidden_states_out"
LOGITS = "logits"
MASK = "attention_mask"
# The attention mask in the backbone's own format (e.g. ``(rows, 1, seq, seq)`` bool), which the first segment
# outputs and later segments take, so they do not rebuild it; the runner gathers it with the kept rows.
LAYER_MASK = "layer_attention_mask"
# Its varying axes: rows, and the query and key positions.
LAYER_MASK_AXES = {0: "batch", 2: "sequence", 3: "sequence"}
# The pooling mask of a decoder classifier (``input_ids != pad_token_id``: the head reads each row's last non-pad
# token), which the first segment outputs and later segments take: it can differ from the attention mask (a pad id
# used as a real token, e.g. eos as pad), and only the first segment sees the token ids.
TOKEN_MASK = "token_mask"


@dataclass
class Segment:
    """One graph to export.

    Attributes:
        module: The ``nn.Module`` to export.
        first_layer: 0-based index of its first layer (block or stage).
        exit_layer: 1-based layer after which its head runs (the model's ``exit_layer`` for rows that stop here).
        inputs: Graph input names, in ``forward`` order.
        outputs: Graph output names.
        dynamic: Input name -> axes that vary (``{0: "batch", 1: "sequence"}``).
    """

    module: nn.Module
    first_layer: int
    exit_layer: int
    inputs: list[str]
    outputs: list[str]
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)


def is_text_model(model: nn.Module) -> bool:
    """Whether ``model`` is a text early-exit classifier (its adapter is a text encoder or a decoder classifier's)."""
    return isinstance(model.adapter, TextEncoderAdapter) or carries_token_mask(model)


class _TextSegment(nn.Module):
    def __init__(self, model: nn.Module, head: int, layers: range, first: bool, last: bool, inputs: list[str]):
        super().__init__()
        self.model = model
        self.head, self.layers, self.first, self.last, self.inputs = head, layers, first, last, inputs
        self.outputs_layer_mask = first and not last and carries_layer_mask(model)
        self.carries_token_mask = carries_token_mask(model)

    def _layer_state(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, extra: torch.Tensor | None
    ) -> EncoderState:
        if extra is not None and not self.carries_token_mask:
            # The first segment's prepared mask: the only per-layer input of this family.
            return EncoderState(hidden_states, attention_mask, {"attention_mask": extra})
        # The per-layer inputs (the mask in the backbone's format, MPNet's position bias, ModernBERT's rotary tables,
        # DeBERTa's relative positions, a decoder's causal masks and rotary tables) as the adapter's embed() builds
        # them, for the rows the previous segment kept. A decoder's positions count from 0 at the first column,
        # padding included, for every row alike, so the kept rows' positions are the default ones.
        layer_inputs = self.model.adapter.layer_inputs(hidden_states, attention_mask)
        token_mask = extra if self.carries_token_mask else attention_mask
        return EncoderState(hidden_states, token_mask, layer_inputs)

    def forward(
        self, ids_or_hidden: torch.Tensor, attention_mask: torch.Tensor, extra: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        # `extra`: the first segment's token_type_ids, or a later segment's prepared layer mask or pooling mask.
        if self.first:
            state = self.model.adapter.embed(ids_or_hidden, attention_mask, extra)
        else:
            state = self._layer_state(ids_or_hidden, attention_mask, extra)
        for index in self.layers:
            state.hidden_states = self.model.adapter.run_layer(index, state)
        logits = self.model._head_logits(self.head, state)
        if self.last:
            return (logits,)
        if self.outputs_layer_mask:
            return state.hidden_states, state.layer_kwargs["attention_mask"], logits
        if self.first and self.carries_token_mask:
            return state.hidden_states, state.token_mask, logits
        return state.hidden_states, logits


def carries_layer_mask(model: nn.Module) -> bool:
    """Whether later text segments take the first segment's prepared attention mask (:data:`LAYER_MASK`).

    True where the family's only per-layer input is one ``(rows, 1, seq, seq)`` mask (BERT-like layouts), which a
    later segment would otherwise rebuild with a dozen small ops the full graph runs once; families with more (a
    position bias, rotary tables, relative positions) rebuild theirs in each segment.

    Args:
        model: A text early-exit model.
    """
    hidden = torch.zeros(1, 2, 1)
    inputs = model.adapter.layer_inputs(hidden, torch.tensor([[1, 0]]))
    mask = inputs.get("attention_mask")
    return set(inputs) == {"attention_mask"} and isinstance(mask, torch.Tensor) and mask.dim() == 4


def carries_token_mask(model: nn.Module) -> bool:
    """Whether later text segments take the first segment's pooling mask (:data:`TOKEN_MASK`): decoder classifiers,
    whose heads read the last token that is not ``pad_token_id`` rather than follow the attention mask.

    Args:
        model: A text early-exit model.
    """
    return bool(getattr(type(model.adapter), "causal", False))


class _ImageSegment(nn.Module):
    def __init__(self, model: nn.Module, head: int, layers: range, first: bool, last: bool):
        super().__init__()
        self.model = model
        self.head, self.layers, self.first, self.last = head, layers, first, last

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        adapter = self.model.adapter
        state = self.model.adapter.embed(inputs) if self.first else ImageState(inputs)
        for index in self.layers:
            # The adapter class's own run_layer: the model's row-chunking wrapper branches on the batch size, which
            # a graph with a dynamic batch axis cannot.
            state.hidden_states = type(adapter).run_layer(adapter, index, state)
        logits = self.model._head_logits(self.head, state)
        return (logits,) if self.last else (state.hidden_states, logits)


def text_inputs(model: nn.Module) -> list[str]:
    """The inputs of a text model's first segment: token ids, attention mask, and segment ids where the model uses
    them."""
    names = ["input_ids", MASK]
    # A family may take segment ids yet have no segment embeddings (DeBERTa-v3: type_vocab_size 0); the exporters
    # drop such an unused input from the graph, so the manifest must not list it.
    uses_types = type(model.adapter).accepts_token_type_ids and getattr(model.config, "type_vocab_size", 1) != 0
    return names + ["token_type_ids"] if uses_types else names


def build_segments(model: nn.Module, exit_layers: list[int] | None = None) -> list[Segment]:
    """The segments of an early-exit model, one per exit (or one per listed layer).

    Args:
        model: An eval-mode early-exit classifier (text, timm or Hugging Face ViT).
        exit_layers: The exits that end a segment (default: every exit of the model). ``[num_layers]`` gives the
            single full-depth graph.
    """
    configured = list(model.config.exit_layers)
    exit_layers = configured if exit_layers is None else exit_layers
    text = is_text_model(model)
    batch_axes = {0: "batch", 1: "sequence"} if text else {0: "batch"}
    segments, start = [], 0
    carry = text and len(exit_layers) > 1 and carries_layer_mask(model)
    carry_tokens = text and len(exit_layers) > 1 and carries_token_mask(model)
    for number, layer in enumerate(exit_layers):
        head = configured.index(layer)
        first, last = number == 0, number == len(exit_layers) - 1
        layers = range(start, layer)
        outputs = [LOGITS] if last else [HIDDEN_OUT, LOGITS]
        if text:
            carried = [LAYER_MASK] if carry else [TOKEN_MASK] if carry_tokens else []
            inputs = text_inputs(model) if first else [HIDDEN, MASK, *carried]
            module = _TextSegment(model, head, layers, first, last, inputs)
            if not last and first and carried:
                outputs = [HIDDEN_OUT, *carried, LOGITS]
        else:
            inputs = ["pixel_values" if first else HIDDEN]
            module = _ImageSegment(model, head, layers, first, last)
        dynamic = {name: dict(LAYER_MASK_AXES if name == LAYER_MASK else batch_axes) for name in inputs}
        if not text and first:
            dynamic = {"pixel_values": {0: "batch"}}
        segments.append(Segment(module.eval(), start, layer, inputs, outputs, dynamic))
        start = layer
    return segments
