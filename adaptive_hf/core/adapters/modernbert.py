"""ModernBERT adapter: alternating sliding-window and global attention, rotary positions, pre-norm gated layers.

It runs transformers' own ``ModernBertModel`` layers on the padded batch, as ``ModernBertModel.forward`` does in
transformers 5 (no unpadding): ``embed`` prepares both attention masks (global and sliding window) and the rotary
``(cos, sin)`` of both layer types once, and each layer reads the pair of its own type. The masks have one row per
input, so row compaction gathers them with the rows; the rotary tables depend only on positions and are shared
by every row (unless ``position_ids`` differ between rows, in which case they are per row too).

Exit heads and the classifier read the final norm of a layer's states (ModernBERT's layers are pre-norm, so the
residual stream is only normalised by ``final_norm``), and the final exit is the stock ``head`` + ``classifier``
of ``ModernBertForSequenceClassification``, so full compute gives its logits exactly.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    ModernBertConfig,
    ModernBertForMaskedLM,
    ModernBertForSequenceClassification,
    ModernBertForTokenClassification,
    ModernBertModel,
    ModernBertPreTrainedModel,
)
from transformers.masking_utils import create_bidirectional_mask, create_bidirectional_sliding_window_mask
from transformers.models.modernbert.modeling_modernbert import ModernBertPredictionHead, rotate_half

from ..flops import encoder_layer_flops, linear_flops
from .base import FfnSlot, add_adapter
from .states import EncoderState, TokenSubset
from .text import TextEncoderAdapter

CLASSIFIER_POOLINGS = ("cls", "mean")
# The attention mask of each ModernBERT layer type, as ModernBertModel.forward builds it.
MASK_FACTORIES = {
    "full_attention": create_bidirectional_mask,
    "sliding_attention": create_bidirectional_sliding_window_mask,
}


class ModernBertAdapter(TextEncoderAdapter):
    """ModernBERT (``ModernBertModel`` under ``model``): every technique, per-token halting included.

    Per-token halting runs a layer on the active tokens only: their queries get the rotary angles of their own
    positions, every real token's keys those of its position, and the sliding-window layers keep each query to the
    keys within ``config.sliding_window`` positions (the window ``create_bidirectional_sliding_window_mask`` builds).
    """

    family = "modernbert"
    model_type = "modernbert"
    class_prefix = "ModernBert"
    config_class = ModernBertConfig
    base_model_class = ModernBertModel
    pretrained_model_class = ModernBertPreTrainedModel
    has_pooler = False
    accepts_token_type_ids = False
    # `mlp` is Wi (input and gate stacked: `input, gate = Wi(x).chunk(2)`), act(input) * gate, dropout, Wo; the layer
    # adds the residual. In switch-MoE terms (`down(act(gate(x)) * up(x))`) Wi's first block is the gate.
    ffn_slot = FfnSlot("mlp", up="mlp.Wi", gate="mlp.Wi", down="mlp.Wo", packed=("gate", "up"))
    task_classes = (
        ModernBertModel,
        ModernBertForSequenceClassification,
        ModernBertForMaskedLM,
        ModernBertForTokenClassification,
    )

    @classmethod
    def build_base_model(cls, config, *, add_pooling_layer: bool) -> nn.Module:
        return ModernBertModel(config)

    @classmethod
    def activation_of(cls, config) -> str:
        return config.hidden_activation

    @classmethod
    def ffn_bias_of(cls, config) -> bool:
        return bool(config.mlp_bias)

    @classmethod
    def ffn_dropout_of(cls, config) -> float:
        # ModernBERT drops the gated product before Wo; an MoE layer drops its output instead (training only).
        return float(config.mlp_dropout)

    def layer_modules(self) -> nn.ModuleList:
        return self.base_model.layers

    # ----------------------------------------------------------------------------------------------- embedding
    def _embeddings(self, input_ids, token_type_ids, position_ids, inputs_embeds) -> torch.Tensor:
        # Positions enter through the rotary tables only, not the embeddings.
        return self.base_model.embeddings(input_ids=input_ids, inputs_embeds=inputs_embeds)

    def layer_inputs(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Both attention masks and both rotary tables (one per layer type), and the positions they were built for.

        Args:
            hidden_states: ``(rows, seq, hidden)`` embeddings (only their shape, dtype and device are read).
            attention_mask: ``(rows, seq)`` 1 for real tokens, 0 for padding, or ``None``.
            position_ids: ``(rows or 1, seq)`` positions; ``None`` for ``0 .. seq - 1``.
        """
        seq = hidden_states.size(1)
        if position_ids is None:
            position_ids = torch.arange(seq, device=hidden_states.device).unsqueeze(0)
        elif position_ids.size(0) > 1 and bool((position_ids == position_ids[:1]).all()):
            position_ids = position_ids[:1]  # the same positions in every row: one shared rotary table
        kinds = set(self.config.layer_types)
        mask_kwargs = {"config": self.config, "inputs_embeds": hidden_states, "attention_mask": attention_mask}
        masks = {kind: MASK_FACTORIES[kind](**mask_kwargs) for kind in kinds}
        rotary = {kind: self.base_model.rotary_emb(hidden_states, position_ids, kind) for kind in kinds}
        return {"attention_mask": masks, "position_embeddings": rotary, "position_ids": position_ids}

    def layer_position_ids(self, state: EncoderState) -> torch.Tensor:
        return state.layer_kwargs["position_ids"]

    def run_layer(self, index: int, state: EncoderState) -> torch.Tensor:
        """Runs layer ``index`` (0-based) with the mask and rotary table of its attention type."""
        layer = self.layer_modules()[index]
        kind = layer.attention_type
        kwargs = state.layer_kwargs
        return layer(
            state.hidden_states,
            attention_mask=kwargs["attention_mask"][kind],
            position_embeddings=kwargs["position_embeddings"][kind],
        )

    # ---------------------------------------------------------------------------------------- classifiers
    def exit_states(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.base_model.final_norm(hidden_states)

    @classmethod
    def stock_head_modules(cls, config) -> dict[str, nn.Module]:
        return {
            "head": ModernBertPredictionHead(config),
            "drop": nn.Dropout(config.classifier_dropout),
            "classifier": nn.Linear(config.hidden_size, config.num_labels),
        }

    def stock_head_logits(self, owner: nn.Module, hidden_states: torch.Tensor, token_mask: torch.Tensor):
        pooling = self.config.classifier_pooling
        if pooling == "cls":  # the final norm is per token: norming the first token alone gives the same vector
            pooled = self.base_model.final_norm(hidden_states[:, 0])
        elif pooling == "mean":  # as ModernBertForSequenceClassification does it, op for op
            hidden = self.base_model.final_norm(hidden_states)
            pooled = (hidden * token_mask.unsqueeze(-1)).sum(dim=1) / token_mask.sum(dim=1, keepdim=True)
        else:
            raise ValueError(f"`classifier_pooling` must be one of {CLASSIFIER_POOLINGS}; got {pooling!r}.")
        return owner.classifier(owner.drop(owner.head(pooled)))

    @classmethod
    def stock_head_flops(cls, config, seq_len: int) -> int:
        hidden = config.hidden_size
        pooled = seq_len * hidden if config.classifier_pooling == "mean" else 0
        return pooled + linear_flops(1, hidden, hidden) + linear_flops(1, hidden, config.num_labels)

    def layer_flops(self, seq_len: int) -> int:
        """One layer on ``seq_len`` tokens: the gated FFN has three ``hidden x intermediate`` products, not two.

        Sliding-window layers are counted like global ones: the padded path computes every score and masks the ones
        outside the window, so that is the work done.
        """
        config = self.config
        return encoder_layer_flops(seq_len, config.hidden_size, config.intermediate_size * 3 // 2)

    @classmethod
    def token_update_flops(cls, config) -> int:
        return linear_flops(1, config.hidden_size, 2 * config.hidden_size) + 3 * linear_flops(
            1, config.hidden_size, config.intermediate_size
        )

    # ------------------------------------------------------------------ token subsets (per-token halting)
    def _shared_rotary(self, kind: str, hidden_states: torch.Tensor, layer_kwargs: dict[str, Any] | None):
        if layer_kwargs is None:
            positions = torch.arange(hidden_states.size(1), device=hidden_states.device).unsqueeze(0)
            return self.base_model.rotary_emb(hidden_states, positions, kind)
        cos, sin = layer_kwargs["position_embeddings"][kind]
        if cos.size(0) != 1:
            raise ValueError(
                "Per-token halting on modernbert needs the same `position_ids` in every row (or none): the packed "
                "tokens share one rotary table. Pass position_ids of shape (1, seq), or use halting_granularity="
                "'sample'."
            )
        return cos[0], sin[0]

    def run_layer_on_tokens(
        self,
        index: int,
        hidden_states: torch.Tensor,
        active: torch.Tensor | None,
        key_mask: torch.Tensor,
        layer_kwargs: dict[str, Any] | None = None,
        subset: TokenSubset | None = None,
    ) -> torch.Tensor:
        """Runs layer ``index`` for the ``active`` tokens only; every real token still serves as key and value.

        Args:
            index: 0-based layer index.
            hidden_states: ``(rows, seq, hidden)`` current states of every token.
            active: ``(rows, seq)`` bool, tokens to update.
            key_mask: ``(rows, seq)`` bool, tokens that may be attended to (real tokens).
            layer_kwargs: The per-layer inputs from :meth:`embed` (only the shared rotary tables are read, so they
                may cover more rows than ``hidden_states``).
            subset: The active tokens already packed (then ``active`` may be ``None``).

        Returns:
            ``(num_active, hidden)`` new states of the active tokens, in ``active.nonzero()`` order.
        """
        layer = self.layer_modules()[index]
        attention = layer.attn
        rows, seq, width = hidden_states.shape
        heads = self.config.num_attention_heads
        head_dim = width // heads
        subset = subset if subset is not None else TokenSubset.from_mask(active)
        token_index, slots = subset.tokens, subset.slots
        cos, sin = self._shared_rotary(layer.attention_type, hidden_states, layer_kwargs)  # (seq, head_dim)
        tokens = subset.gather_states(hidden_states)
        # Wqkv stacks the query, key and value projections: queries of the active tokens, keys/values of all.
        weight, bias = attention.Wqkv.weight, attention.Wqkv.bias
        query = F.linear(layer.attn_norm(tokens), weight[:width], None if bias is None else bias[:width])
        key_value = F.linear(layer.attn_norm(hidden_states), weight[width:], None if bias is None else bias[width:])
        keys, values = key_value.view(rows, seq, 2, heads, head_dim).transpose(1, 3).unbind(2)
        query = _rotate(query.view(-1, heads, head_dim), cos[token_index, None], sin[token_index, None])
        keys = _rotate(keys, cos, sin)
        queries = subset.to_slots(query.view(-1, width), rows)
        positions = subset.to_slots(token_index, rows)
        attn_mask = key_mask.bool()[:, None, :]  # (rows, 1, seq): real keys
        if attention.sliding_window is not None:  # keys within `sliding_window` positions of each query
            distance = (positions[..., None] - torch.arange(seq, device=positions.device)).abs()
            attn_mask = attn_mask & (distance <= self.config.sliding_window)
        queries = queries.view(rows, slots, heads, head_dim).transpose(1, 2)
        context = F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=attn_mask[:, None], scale=head_dim**-0.5
        )
        context = subset.from_slots(context.transpose(1, 2).reshape(rows, slots, width))
        tokens = tokens + attention.out_drop(attention.Wo(context))
        return tokens + layer.mlp(layer.mlp_norm(tokens))


def _rotate(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding as transformers' ``apply_rotary_pos_emb`` computes it (in float32, cast back)."""
    rotated = states.float() * cos + rotate_half(states.float()) * sin
    return rotated.to(states.dtype)


MODERNBERT_ADAPTERS = {ModernBertAdapter.model_type: add_adapter(ModernBertAdapter)}
