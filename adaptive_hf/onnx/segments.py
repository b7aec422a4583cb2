"""The pieces of an early-exit model that become ONNX graphs: one ``nn.Module`` per segment between exits.

Segment ``k`` runs the layers after exit ``k - 1`` up to exit ``k`` and then exit head ``k``; segment 0 also runs
the embeddings (text) or the stem (images). Every segment but the last returns the hidden states its successor
starts from, so the runner can drop the rows that exit and feed only the others on. A text segment takes the
attention mask of its rows besides the hidden states: compaction happens between segments, in the runner.

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
    """Whether ``model`` is a text early-exit classifier (its adapter is a text encoder adapter)."""
    return isinstance(model.adapter, TextEncoderAdapter)


class _TextSegment(nn.Module):
    def __init__(self, model: nn.Module, head: int, layers: range, first: bool, last: bool, type_ids: bool):
        super().__init__()
        self.model = model
        self.head, self.layers, self.first, self.last, self.type_ids = head, layers, first, last, type_ids

    def _layer_state(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> EncoderState:
        # The per-layer inputs (the mask in the backbone's format, MPNet's position bias, ModernBERT's rotary tables,
        # DeBERTa's relative positions) as the adapter's embed() builds them, for the rows the previous segment kept.
        layer_inputs = self.model.adapter.layer_inputs(hidden_states, attention_mask)
        return EncoderState(hidden_states, attention_mask, layer_inputs)

    def forward(
        self, ids_or_hidden: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        if self.first:
            state = self.model.adapter.embed(ids_or_hidden, attention_mask, token_type_ids)
        else:
            state = self._layer_state(ids_or_hidden, attention_mask)
        for index in self.layers:
            state.hidden_states = self.model.adapter.run_layer(index, state)
        logits = self.model._head_logits(self.head, state)
        return (logits,) if self.last else (state.hidden_states, logits)


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
    for number, layer in enumerate(exit_layers):
        head = configured.index(layer)
        first, last = number == 0, number == len(exit_layers) - 1
        layers = range(start, layer)
        if text:
            inputs = text_inputs(model) if first else [HIDDEN, MASK]
            module = _TextSegment(model, head, layers, first, last, "token_type_ids" in inputs)
        else:
            inputs = ["pixel_values" if first else HIDDEN]
            module = _ImageSegment(model, head, layers, first, last)
        outputs = [LOGITS] if last else [HIDDEN_OUT, LOGITS]
        dynamic = {name: dict(batch_axes) for name in inputs}
        if not text and first:
            dynamic = {"pixel_values": {0: "batch"}}
        segments.append(Segment(module.eval(), start, layer, inputs, outputs, dynamic))
        start = layer
    return segments
