"""DeBERTa-v2 adapter (also DeBERTa-v3 checkpoints): disentangled relative attention, optional first-layer conv.

The stock ``DebertaV2Model`` runs each layer with four inputs besides the hidden states: a ``(rows, 1, seq, seq)``
attention mask, the ``(1, seq, seq)`` relative positions (log-bucketed when ``position_buckets > 0``), the shared
relative position embeddings of the encoder (layer-normed when ``norm_rel_ebd`` says so) and, after layer 0 only,
the optional ``ConvLayer`` that reads the embedding output. :meth:`DebertaV2Adapter.embed` prepares them once per
forward; the mask (and the conv's token mask) follow the kept rows, while the relative positions and embeddings are
row-independent and kept with a leading dimension of 1 so that row compaction shares them instead of gathering them.

The stock classification head (``ContextPooler`` on the first token, dropout, ``classifier``) sits on
``DebertaV2ForSequenceClassification``, beside the base model; with ``head_pooling="pooler"`` an early-exit model
keeps it under the same names as its final exit (:meth:`DebertaV2Adapter.stock_head_modules`), so a fine-tuned
checkpoint loads with its head and gives the stock logits at full compute.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    DebertaV2Config,
    DebertaV2ForMaskedLM,
    DebertaV2ForSequenceClassification,
    DebertaV2ForTokenClassification,
    DebertaV2Model,
    DebertaV2PreTrainedModel,
)
from transformers.models.deberta_v2.modeling_deberta_v2 import ContextPooler

from ..flops import classifier_head_flops, encoder_layer_flops, linear_flops
from .base import add_adapter
from .states import EncoderState, TokenSubset
from .text import POOLINGS, TextEncoderAdapter


class DebertaV2Adapter(TextEncoderAdapter):
    """DeBERTa-v2/v3: BERT-like layers whose attention adds content-to-position and position-to-content terms."""

    family = "deberta-v2"
    model_type = "deberta-v2"
    class_prefix = "DebertaV2"
    config_class = DebertaV2Config
    base_model_class = DebertaV2Model
    pretrained_model_class = DebertaV2PreTrainedModel
    # The pooler (ContextPooler) lives on the task model, not the base model: see stock_head_modules.
    has_pooler = True
    task_classes = (
        DebertaV2Model,
        DebertaV2ForSequenceClassification,
        DebertaV2ForMaskedLM,
        DebertaV2ForTokenClassification,
    )

    @classmethod
    def build_base_model(cls, config, *, add_pooling_layer: bool) -> nn.Module:
        # DebertaV2Model has no pooler: the ContextPooler belongs to the task head (stock_head_modules).
        return DebertaV2Model(config)

    @classmethod
    def classifier_dropout_of(cls, config) -> float:
        dropout = getattr(config, "cls_dropout", None)
        return float(config.hidden_dropout_prob if dropout is None else dropout)

    @classmethod
    def stock_head_modules(cls, config) -> dict[str, nn.Module]:
        """``DebertaV2ForSequenceClassification``'s head, by its attribute names, when the heads pool with the
        family's pooler (``head_pooling="pooler"``); empty otherwise (the final exit is then a new exit head).

        Args:
            config: The model config.
        """
        if getattr(config, "head_pooling", None) != "pooler":
            return {}
        pooler = ContextPooler(config)
        return {"pooler": pooler, "classifier": nn.Linear(pooler.output_dim, config.num_labels)}

    @classmethod
    def stock_head_flops(cls, config, seq_len: int) -> int:
        """Theoretical FLOPs of the pooler (dense on the first token) and the linear classifier on one sequence.

        Args:
            config: The model config.
            seq_len: Tokens in the sequence (the pooler reads only the first).
        """
        return classifier_head_flops(cls.hidden_size_of(config), config.num_labels, mlp=False, pooler=True)

    def stock_head_logits(self, model: nn.Module, hidden_states: torch.Tensor, token_mask: torch.Tensor):
        """The stock head's logits: pooler, dropout (``cls_dropout``), classifier, as the stock model runs them.

        Args:
            model: The technique model holding the head (see :meth:`stock_head_modules`).
            hidden_states: ``(rows, seq, hidden)`` last-layer states.
            token_mask: ``(rows, seq)`` 1 for real tokens (unused: the pooler reads the first token).
        """
        pooled = model.pooler(hidden_states)
        if model.training:
            pooled = F.dropout(pooled, self.classifier_dropout_of(self.config), training=True)
        return model.classifier(pooled)

    def pool(self, hidden_states: torch.Tensor, token_mask: torch.Tensor, pooling: str) -> torch.Tensor:
        if pooling == "pooler":
            if self.task_model is None or not hasattr(self.task_model, "pooler"):
                raise ValueError(
                    "`head_pooling='pooler'` on deberta-v2 uses the ContextPooler of the classification head, which "
                    "this model does not hold; use 'mean' or 'cls'."
                )
            return self.task_model.pooler(hidden_states)
        if pooling not in POOLINGS:
            raise ValueError(f"`head_pooling` must be one of {POOLINGS}; got {pooling!r}.")
        return super().pool(hidden_states, token_mask, pooling)

    # ------------------------------------------------------------------------------------------------ layers
    def layer_modules(self) -> nn.ModuleList:
        return self.base_model.encoder.layer

    def embed(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        """Embeddings (padding zeroed, as ``DebertaV2Model`` does) and the per-layer inputs; see the module doc."""
        shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
        device = input_ids.device if input_ids is not None else inputs_embeds.device
        token_mask = (
            attention_mask if attention_mask is not None else torch.ones(shape, dtype=torch.long, device=device)
        )
        if token_type_ids is None:
            token_type_ids = torch.zeros(shape, dtype=torch.long, device=device)
        hidden = self.base_model.embeddings(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            mask=token_mask,
            inputs_embeds=inputs_embeds,
        )
        return EncoderState(hidden, token_mask, self.layer_inputs(hidden, token_mask))

    def layer_inputs(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """The attention mask, the token mask the conv reads, and the shared relative positions and embeddings.

        Args:
            hidden_states: ``(rows, seq, hidden)`` embeddings (only their shape and device are read).
            attention_mask: ``(rows, seq)`` 1 for real tokens, 0 for padding, or ``None``.
            position_ids: Unused: absolute positions (if any) enter with the embeddings.
        """
        if attention_mask is None:
            attention_mask = torch.ones(hidden_states.shape[:2], dtype=torch.long, device=hidden_states.device)
        encoder = self.base_model.encoder
        rel_embeddings = encoder.get_rel_embedding()
        return {
            "attention_mask": encoder.get_attention_mask(attention_mask),
            "input_mask": attention_mask,
            "relative_pos": encoder.get_rel_pos(hidden_states[:1]),  # (1, seq, seq): the same for every row
            # A leading 1 so row compaction shares it (its first dimension could equal the row count).
            "rel_embeddings": None if rel_embeddings is None else rel_embeddings[None],
        }

    def run_layer(self, index: int, state: EncoderState) -> torch.Tensor:
        kwargs = state.layer_kwargs
        rel_embeddings = kwargs["rel_embeddings"]
        output = self.layer_modules()[index](
            state.hidden_states,
            kwargs["attention_mask"],
            relative_pos=kwargs["relative_pos"],
            rel_embeddings=None if rel_embeddings is None else rel_embeddings[0],
        )[0]
        conv = self.base_model.encoder.conv
        if index == 0 and conv is not None:  # the encoder's conv reads layer 0's input (the embedding output)
            output = conv(state.hidden_states, output, kwargs["input_mask"])
        return output

    def layer_flops(self, seq_len: int) -> int:
        """One layer on one sequence: the BERT-like part, plus the relative position terms.

        Each of c2p/p2c projects the ``2 * span`` relative embeddings (once per layer and batch; counted per
        sequence, which is exact at batch 1) and scores every query against every span position.
        """
        config = self.config
        hidden = self.hidden_size_of(config)
        flops = encoder_layer_flops(seq_len, hidden, self.intermediate_size_of(config))
        attention = self.layer_modules()[0].attention.self
        if attention.relative_attention:
            span = 2 * attention.pos_ebd_size
            terms = sum(kind in attention.pos_att_type for kind in ("c2p", "p2c"))
            flops += terms * (linear_flops(span, hidden, hidden) + 2 * seq_len * span * hidden)
        if self.base_model.encoder.conv is not None:
            kernel = self.base_model.encoder.conv.conv.kernel_size[0]
            flops += linear_flops(seq_len, hidden * kernel, hidden) // self.base_model.encoder.conv.conv.groups
        return flops

    # ---------------------------------------------------------------------- token subsets (per-token halting)
    def run_layer_on_tokens(
        self,
        index: int,
        hidden_states: torch.Tensor,
        active: torch.Tensor | None,
        key_mask: torch.Tensor,
        layer_kwargs: dict[str, Any] | None = None,
        subset: TokenSubset | None = None,
    ) -> torch.Tensor:
        """Layer ``index`` for the active tokens only, every real token still a key and value.

        The relative position terms follow the token subset: their query rows are the active tokens' positions,
        their columns every key. c2p scores each active query against the projected relative embeddings; p2c
        scores every key against them (it is indexed by the key's position relative to each query). Layer 0's conv
        reads the layer input of each active token's neighbours, which every token still has.

        Args and returns as :meth:`TextEncoderAdapter.run_layer_on_tokens`.
        """
        rows, seq, width = hidden_states.shape
        subset = subset if subset is not None else TokenSubset.from_mask(active)
        row_index, token_index, slots = subset.rows, subset.tokens, subset.slots
        positions = subset.to_slots(token_index, rows)
        layer = self.layer_modules()[index]
        attention = layer.attention.self
        heads = attention.num_attention_heads
        tokens = subset.gather_states(hidden_states)
        queries = subset.to_slots(attention.query_proj(tokens), rows)
        queries = queries.view(rows, slots, heads, -1).transpose(1, 2)  # (rows, heads, slots, head_dim)
        keys = attention.key_proj(hidden_states).view(rows, seq, heads, -1).transpose(1, 2)
        values = attention.value_proj(hidden_states).view(rows, seq, heads, -1).transpose(1, 2)
        scale_factor = 1 + sum(kind in attention.pos_att_type for kind in ("c2p", "p2c"))
        scale = (queries.size(-1) * scale_factor) ** 0.5
        scores = queries @ keys.transpose(-1, -2) / scale
        if attention.relative_attention:
            scores = scores + self._relative_scores(attention, queries, keys, positions, layer_kwargs, scale)
        scores = scores.masked_fill(~key_mask[:, None, None, :].bool(), torch.finfo(scores.dtype).min)
        probabilities = attention.dropout(scores.softmax(-1))
        context = (probabilities @ values).transpose(1, 2).reshape(rows, slots, -1)
        context = subset.from_slots(context)
        attention_output = layer.attention.output(context, tokens)
        output = layer.output(layer.intermediate(attention_output), attention_output)
        conv = self.base_model.encoder.conv
        if index == 0 and conv is not None:
            residual = hidden_states.index_put((row_index, token_index), output)
            output = conv(hidden_states, residual, key_mask.long())[row_index, token_index]
        return output

    def _relative_scores(self, attention, queries, keys, positions, layer_kwargs, scale) -> torch.Tensor:
        """c2p + p2c terms ``(rows, heads, slots, seq)`` for queries at ``positions`` ``(rows, slots)``."""
        encoder = self.base_model.encoder
        seq = keys.size(-2)
        if layer_kwargs is not None and layer_kwargs.get("relative_pos") is not None:
            relative_pos = layer_kwargs["relative_pos"][0]
            rel_embeddings = layer_kwargs["rel_embeddings"][0]
        else:
            relative_pos = encoder.get_rel_pos(keys[:1, 0])[0]
            rel_embeddings = encoder.get_rel_embedding()
        span = attention.pos_ebd_size
        rel_embeddings = attention.pos_dropout(rel_embeddings[: 2 * span])
        heads = attention.num_attention_heads
        rows, _, slots, head_dim = queries.shape
        score = 0
        if "c2p" in attention.pos_att_type:
            projection = attention.key_proj if attention.share_att_key else attention.pos_key_proj
            pos_key = projection(rel_embeddings).view(-1, heads, head_dim).transpose(0, 1)  # (heads, 2span, d)
            c2p = queries @ pos_key.transpose(-1, -2)  # (rows, heads, slots, 2span)
            index = torch.clamp(relative_pos + span, 0, 2 * span - 1)[positions]  # (rows, slots, seq)
            score = score + c2p.gather(-1, index[:, None].expand(rows, heads, slots, seq)) / scale
        if "p2c" in attention.pos_att_type:
            projection = attention.query_proj if attention.share_att_key else attention.pos_query_proj
            pos_query = projection(rel_embeddings).view(-1, heads, head_dim).transpose(0, 1)
            p2c = keys @ pos_query.transpose(-1, -2)  # (rows, heads, seq, 2span): one row per key
            # Key j's term for the query at position t reads column clamp(span - relative_pos[j, t]).
            index = torch.clamp(span - relative_pos, 0, 2 * span - 1).t()[positions]  # (rows, slots, seq)
            index = index.transpose(1, 2)[:, None].expand(rows, heads, seq, slots)
            score = score + p2c.gather(-1, index).transpose(-1, -2) / scale
        return score


DEBERTA_ADAPTERS = {DebertaV2Adapter.model_type: add_adapter(DebertaV2Adapter)}
