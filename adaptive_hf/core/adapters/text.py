"""Text encoder adapters (BERT family): one per family, serving early exits, halting and switch MoE.

An adapter wraps the stock Hugging Face base model (``BertModel``, ``RobertaModel``, ...) and exposes what the
adaptive techniques need (see :mod:`adaptive_hf.core.adapters.base`): embed a batch, run encoder layer ``i`` on
whatever rows or tokens are still active, pool a sequence into a vector, the per-layer cost, and where each layer
keeps its feed-forward block. It reuses the family's own modules and weights; nothing here copies modeling code.

To support a new encoder family, subclass :class:`TextEncoderAdapter` (usually only the class attributes and
``layer_modules``/``embed`` change) and pass it to ``adaptive_hf.register_family``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AlbertConfig,
    AlbertModel,
    AlbertPreTrainedModel,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertPreTrainedModel,
    DistilBertConfig,
    DistilBertForMaskedLM,
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
    DistilBertModel,
    DistilBertPreTrainedModel,
    ElectraConfig,
    ElectraForMaskedLM,
    ElectraForSequenceClassification,
    ElectraForTokenClassification,
    ElectraModel,
    ElectraPreTrainedModel,
    MPNetConfig,
    MPNetForMaskedLM,
    MPNetForSequenceClassification,
    MPNetForTokenClassification,
    MPNetModel,
    MPNetPreTrainedModel,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    RobertaPreTrainedModel,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
    XLMRobertaForSequenceClassification,
    XLMRobertaForTokenClassification,
    XLMRobertaModel,
    XLMRobertaPreTrainedModel,
)
from transformers.masking_utils import create_bidirectional_mask

from ..flops import encoder_layer_flops
from .base import FAMILY_ADAPTERS, BackboneAdapter, FfnSlot, add_adapter
from .states import EncoderState, TokenSubset, regroup_positions, to_width

POOLINGS = ("mean", "cls", "pooler")


class TextEncoderAdapter(BackboneAdapter):
    """Adapter for a bidirectional text encoder family (BERT-like layout).

    Args:
        base_model: The family's base model module (e.g. a ``BertModel``).

    Class attributes (besides those of :class:`BackboneAdapter`):
        base_model_class: The family's base model class.
        has_pooler: Whether the family has a trained pooler (dense + tanh on the first token).
        accepts_token_type_ids: Whether the embeddings take ``token_type_ids``.
        poolings: The poolings an exit head may use (``head_pooling``); halting uses those other than ``"pooler"``.
    """

    family: ClassVar[str] = "bert"
    model_type: ClassVar[str] = "bert"
    class_prefix: ClassVar[str] = "Bert"
    config_class: ClassVar[type] = BertConfig
    base_model_class: ClassVar[type] = BertModel
    pretrained_model_class: ClassVar[type] = BertPreTrainedModel
    has_pooler: ClassVar[bool] = True
    accepts_token_type_ids: ClassVar[bool] = True
    poolings: ClassVar[tuple[str, ...]] = POOLINGS
    runs_layers: ClassVar[bool] = True
    supports_token_subsets: ClassVar[bool] = True
    # BERT layout: `intermediate` (dense + activation), then `output.dense` before the family's dropout, residual
    # and LayerNorm in `output`.
    ffn_slot: ClassVar[FfnSlot | None] = FfnSlot("intermediate", up="intermediate.dense", down="output.dense")
    task_classes: ClassVar[tuple[type, ...]] = (
        BertModel,
        BertForSequenceClassification,
        BertForMaskedLM,
        BertForTokenClassification,
    )

    # The technique model that owns this adapter's base model (set by ``TextBackboneMixin.adapter``), where a
    # family's stock head (:meth:`stock_head_modules`, e.g. DeBERTa's pooler) lives; ``None`` on a bare base model.
    task_model: nn.Module | None = None

    @classmethod
    def build_base_model(cls, config, *, add_pooling_layer: bool) -> nn.Module:
        """Builds the family's base model from ``config``.

        Args:
            config: A config of the family (or a subclass of it).
            add_pooling_layer: Whether to keep the family's pooler.
        """
        if cls.has_pooler:
            return cls.base_model_class(config, add_pooling_layer=add_pooling_layer)
        return cls.base_model_class(config)

    @classmethod
    def classifier_dropout_of(cls, config) -> float:
        """Dropout for classifier heads: the family's classifier dropout, else its hidden dropout."""
        for name in ("classifier_dropout", "classifier_dropout_prob", "seq_classif_dropout", "hidden_dropout_prob"):
            value = getattr(config, name, None)
            if value is not None:
                return float(value)
        return 0.1

    def layer_modules(self) -> nn.ModuleList:
        """The encoder layers, in order."""
        return self.base_model.encoder.layer

    def _embeddings(self, input_ids, token_type_ids, position_ids, inputs_embeds) -> torch.Tensor:
        return self.base_model.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds
        )

    def embed(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> EncoderState:
        """Runs the embeddings and prepares the per-layer inputs.

        Args:
            input_ids: ``(batch, seq)`` token ids.
            attention_mask: ``(batch, seq)`` 1 for real tokens, 0 for padding.
            token_type_ids: ``(batch, seq)`` segment ids, for families that have them.
            position_ids: ``(batch, seq)`` positions.
            inputs_embeds: ``(batch, seq, embed)`` instead of ``input_ids``.
        """
        if token_type_ids is not None and not self.accepts_token_type_ids:
            raise ValueError(f"`token_type_ids` is not an input of {self.family} models; do not pass it.")
        hidden = self._embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        batch, seq = hidden.shape[:2]
        if attention_mask is None:
            token_mask = torch.ones(batch, seq, dtype=torch.long, device=hidden.device)
        else:
            token_mask = attention_mask
        return EncoderState(hidden, token_mask, self.layer_inputs(hidden, attention_mask, position_ids))

    def layer_inputs(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """The per-layer inputs (``EncoderState.layer_kwargs``) of rows with these shapes and this padding.

        :meth:`embed` builds them once per batch; :meth:`concat_states` rebuilds them for rows regrouped at another
        width. A family whose layers take more inputs (a position bias, rotary tables) overrides this, not ``embed``.

        Args:
            hidden_states: ``(rows, seq, hidden)`` embeddings (only their shape, dtype and device are read).
            attention_mask: ``(rows, seq)`` 1 for real tokens, 0 for padding, or ``None`` (no padding).
            position_ids: ``(rows or 1, seq)`` positions, for families whose layers read them (rotary tables);
                ``None`` for ``0 .. seq - 1``. Families that add positions in their embeddings ignore it.
        """
        mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask
        )
        return {"attention_mask": mask}

    def layer_position_ids(self, state: EncoderState) -> torch.Tensor | None:
        """The ``(rows or 1, seq)`` position ids ``state``'s layer inputs were built for, or ``None`` where the
        layers do not read positions (they entered with the embeddings); :meth:`concat_states` keeps them.

        Args:
            state: A state from :meth:`embed` (or a selection of its rows).
        """
        return None

    def concat_states(self, states: list[EncoderState]) -> EncoderState:
        """The rows of several states as one state, right-padded or trimmed to the longest row's real tokens.

        Continuous batching pools rows of batches with different padded lengths. Trailing columns that are padding in
        every row are dropped, shorter states are padded with masked columns, and the per-layer inputs are rebuilt
        for the new width (:meth:`layer_inputs`, with each row's own positions where the layers read them). Real
        tokens attend to the same keys as before, so each row's result is unchanged up to float rounding.

        Args:
            states: States of this adapter's model, right-padded (a row's real tokens may sit anywhere, but only
                trailing all-padding columns are dropped).
        """
        masks = [state.token_mask for state in states]
        # Columns up to the last one holding a real token of any row, read on the host once.
        used = torch.stack([mask.any(0).flip(0).cumsum(0).gt(0).sum() for mask in masks])
        width = max(int(used.max()), 1)
        if len(states) == 1 and width == masks[0].size(1):
            return states[0]
        hidden = torch.cat([to_width(state.hidden_states, width) for state in states])
        token_mask = torch.cat([to_width(mask, width) for mask in masks])
        positions = [self.layer_position_ids(state) for state in states]
        if positions[0] is not None:
            positions = regroup_positions(positions, [state.num_rows for state in states], width)
        else:
            positions = None
        regrouped = EncoderState(hidden, token_mask, self.layer_inputs(hidden, token_mask, positions))
        expected = set(states[0].layer_kwargs)
        if set(regrouped.layer_kwargs) != expected:
            raise NotImplementedError(
                f"{type(self).__name__}.embed builds the layer inputs {sorted(expected)} but layer_inputs rebuilds "
                f"{sorted(regrouped.layer_kwargs)}; override layer_inputs so rows can be regrouped (classify_stream)."
            )
        return regrouped

    def run_layer(self, index: int, state: EncoderState) -> torch.Tensor:
        """Runs encoder layer ``index`` (0-based) on the rows in ``state``; returns their new hidden states."""
        output = self.layer_modules()[index](state.hidden_states, state.layer_kwargs["attention_mask"])
        return output[0] if isinstance(output, tuple) else output

    def pool(self, hidden_states: torch.Tensor, token_mask: torch.Tensor, pooling: str) -> torch.Tensor:
        """Pools ``(rows, seq, hidden)`` into ``(rows, hidden)``.

        Args:
            hidden_states: Encoder activations.
            token_mask: 1 for real tokens, 0 for padding.
            pooling: ``"mean"`` (masked mean), ``"cls"`` (first token) or ``"pooler"`` (the family's trained pooler).
        """
        if pooling == "mean":
            hidden_states = self.exit_states(hidden_states)
            weights = token_mask.to(hidden_states.dtype).unsqueeze(-1)
            return (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        if pooling == "cls":
            return self.exit_states(hidden_states[:, :1])[:, 0]
        if pooling == "pooler":
            return self.base_model.pooler(hidden_states)
        raise ValueError(f"`head_pooling` must be one of {POOLINGS}; got {pooling!r}.")

    def layer_flops(self, seq_len: int) -> int:
        """Theoretical FLOPs of one encoder layer on one sequence of ``seq_len`` tokens."""
        return encoder_layer_flops(seq_len, self.hidden_size_of(self.config), self.intermediate_size_of(self.config))

    # ------------------------------------------------------------------------- what the classifiers read
    def exit_states(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``(rows, seq, hidden)`` states as exit heads pool them: unchanged here; a pre-norm family (whose layers
        leave the residual stream unnormalised) applies its final norm, as its own head reads the last layer.

        Args:
            hidden_states: States after some layer.
        """
        return hidden_states

    # ------------------------------------------------------------------ token subsets (per-token halting)
    def token_layer_parts(self, index: int) -> tuple[nn.Module, nn.Module, nn.Module, int, Any, Any]:
        """The pieces of layer ``index`` needed to run it on a subset of tokens.

        Returns:
            ``(query, key, value, num_heads, attention_output, feed_forward)`` where ``attention_output(context,
            residual)`` applies the output projection, residual and norm, and ``feed_forward(x)`` the FFN block with
            its residual and norm.
        """
        layer = self.layer_modules()[index]
        attention = layer.attention.self
        return (
            attention.query,
            attention.key,
            attention.value,
            attention.num_attention_heads,
            layer.attention.output,
            lambda x: layer.output(layer.intermediate(x), x),
        )

    def token_sublayer_parts(self, index: int) -> list[tuple[nn.Module, nn.Module, nn.Module, int, Any, Any]]:
        """The attention + FFN sublayers that make up layer ``index``, each as :meth:`token_layer_parts` returns.

        Most families have one per layer; ALBERT's layer ``i`` is a group of ``inner_group_num`` of them.
        """
        return [self.token_layer_parts(index)]

    def token_position_bias(self, hidden_states: torch.Tensor, layer_kwargs: dict[str, Any] | None) -> Any:
        """An additive ``(1, heads, seq, seq)`` attention bias shared by every row, or ``None`` (no such bias)."""
        return None

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

        Queries, the attention output and the feed-forward block are computed for active tokens only (packed
        across the batch, no padding). Keys and values are projected from every token's current state, so tokens
        that stopped updating are still attended to. A relative position bias (MPNet) follows the token subset:
        its rows are those of the active tokens (the queries), its columns every token (the keys). A layer made of
        several sublayers (ALBERT's layer groups) updates the active tokens after each sublayer, as the family does.

        Args:
            index: 0-based layer index.
            hidden_states: ``(rows, seq, hidden)`` current states of every token.
            active: ``(rows, seq)`` bool, tokens to update.
            key_mask: ``(rows, seq)`` bool, tokens that may be attended to (real tokens).
            layer_kwargs: The per-layer inputs from :meth:`embed`; only their row-independent entries are read (a
                family's position bias, instead of recomputing it), so they may cover more rows than
                ``hidden_states``.
            subset: The active tokens already packed (then ``active`` may be ``None``).

        Returns:
            ``(num_active, hidden)`` new states of the active tokens, in ``active.nonzero()`` order.
        """
        if not self.supports_token_subsets:
            supported = sorted(k for k, a in FAMILY_ADAPTERS.items() if a.supports_token_subsets)
            raise NotImplementedError(
                f"Running a layer on a subset of tokens is not implemented for {self.family}; token-level halting "
                f"supports {', '.join(supported)}."
            )
        rows, seq, _ = hidden_states.shape
        subset = subset if subset is not None else TokenSubset.from_mask(active)
        row_index, token_index = subset.rows, subset.tokens
        attn_mask = key_mask[:, None, None, :]
        bias = self.token_position_bias(hidden_states, layer_kwargs)
        if bias is not None:
            # Query rows of the bias follow the packed tokens: slot s of row r is token token_index there.
            positions = subset.to_slots(token_index, rows)
            bias = bias[0][:, positions].transpose(0, 1)  # (rows, heads, slots, seq)
            attn_mask = bias.masked_fill(~attn_mask, float("-inf"))
        tokens = subset.gather_states(hidden_states)
        for number, parts in enumerate(self.token_sublayer_parts(index)):
            if number:  # the next sublayer's keys and values see the active tokens' updated states
                hidden_states = hidden_states.index_put((row_index, token_index), tokens)
            tokens = self._update_tokens(parts, hidden_states, tokens, subset, attn_mask)
        return tokens

    @staticmethod
    def _update_tokens(parts, hidden_states, tokens, subset, attn_mask) -> torch.Tensor:
        """One attention + FFN sublayer for the packed ``tokens`` (queries) over every row's ``hidden_states``."""
        query, key, value, num_heads, attention_output, feed_forward = parts
        rows, seq, width = hidden_states.shape
        head_dim = width // num_heads
        queries = subset.to_slots(query(tokens), rows)
        slots = queries.size(1)
        keys = key(hidden_states).view(rows, seq, num_heads, head_dim).transpose(1, 2)
        values = value(hidden_states).view(rows, seq, num_heads, head_dim).transpose(1, 2)
        queries = queries.view(rows, slots, num_heads, head_dim).transpose(1, 2)
        context = F.scaled_dot_product_attention(queries, keys, values, attn_mask=attn_mask)
        context = subset.from_slots(context.transpose(1, 2).reshape(rows, slots, width))
        return feed_forward(attention_output(context, tokens))


class RobertaAdapter(TextEncoderAdapter):
    """RoBERTa: BERT layout, padding-aware positions inside its embeddings."""

    family = "roberta"
    model_type = "roberta"
    class_prefix = "Roberta"
    config_class = RobertaConfig
    base_model_class = RobertaModel
    pretrained_model_class = RobertaPreTrainedModel
    task_classes = (RobertaModel, RobertaForSequenceClassification, RobertaForMaskedLM, RobertaForTokenClassification)


class XLMRobertaAdapter(TextEncoderAdapter):
    """XLM-RoBERTa: the RoBERTa layout with its own classes."""

    family = "xlm-roberta"
    model_type = "xlm-roberta"
    class_prefix = "XLMRoberta"
    config_class = XLMRobertaConfig
    base_model_class = XLMRobertaModel
    pretrained_model_class = XLMRobertaPreTrainedModel
    task_classes = (
        XLMRobertaModel,
        XLMRobertaForSequenceClassification,
        XLMRobertaForMaskedLM,
        XLMRobertaForTokenClassification,
    )


class ElectraAdapter(TextEncoderAdapter):
    """ELECTRA discriminator: BERT layout, embeddings projected when ``embedding_size != hidden_size``."""

    family = "electra"
    model_type = "electra"
    class_prefix = "Electra"
    config_class = ElectraConfig
    base_model_class = ElectraModel
    pretrained_model_class = ElectraPreTrainedModel
    task_classes = (ElectraModel, ElectraForSequenceClassification, ElectraForMaskedLM, ElectraForTokenClassification)
    has_pooler = False

    def _embeddings(self, input_ids, token_type_ids, position_ids, inputs_embeds) -> torch.Tensor:
        hidden = super()._embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        if hasattr(self.base_model, "embeddings_project"):
            hidden = self.base_model.embeddings_project(hidden)
        return hidden


class DistilBertAdapter(TextEncoderAdapter):
    """DistilBERT: ``transformer.layer`` blocks, no segment embeddings, no pooler."""

    family = "distilbert"
    model_type = "distilbert"
    class_prefix = "DistilBert"
    config_class = DistilBertConfig
    base_model_class = DistilBertModel
    pretrained_model_class = DistilBertPreTrainedModel
    task_classes = (
        DistilBertModel,
        DistilBertForSequenceClassification,
        DistilBertForMaskedLM,
        DistilBertForTokenClassification,
    )
    # `ffn` is lin1, activation, lin2, dropout; the layer adds the residual and LayerNorm.
    ffn_slot = FfnSlot("ffn", up="ffn.lin1", down="ffn.lin2")
    has_pooler = False
    accepts_token_type_ids = False

    @classmethod
    def num_layers_of(cls, config) -> int:
        return config.n_layers

    @classmethod
    def hidden_size_of(cls, config) -> int:
        return config.dim

    @classmethod
    def intermediate_size_of(cls, config) -> int:
        return config.hidden_dim

    @classmethod
    def activation_of(cls, config) -> str:
        return config.activation

    @classmethod
    def ffn_dropout_of(cls, config) -> float:
        return config.dropout

    def layer_modules(self) -> nn.ModuleList:
        return self.base_model.transformer.layer

    def token_layer_parts(self, index: int):
        layer = self.layer_modules()[index]
        attention = layer.attention
        return (
            attention.q_lin,
            attention.k_lin,
            attention.v_lin,
            attention.n_heads,
            lambda context, residual: layer.sa_layer_norm(attention.out_lin(context) + residual),
            lambda x: layer.output_layer_norm(layer.ffn(x) + x),
        )

    def _embeddings(self, input_ids, token_type_ids, position_ids, inputs_embeds) -> torch.Tensor:
        return self.base_model.embeddings(input_ids=input_ids, position_ids=position_ids, inputs_embeds=inputs_embeds)


class AlbertAdapter(TextEncoderAdapter):
    """ALBERT: one shared layer group applied ``num_hidden_layers`` times; layer ``i`` is one application."""

    family = "albert"
    model_type = "albert"
    class_prefix = "Albert"
    config_class = AlbertConfig
    base_model_class = AlbertModel
    pretrained_model_class = AlbertPreTrainedModel
    # One layer group is shared by every layer: an MoE layer there would be shared too, which switch MoE does not do.
    ffn_slot = None
    task_classes = ()

    def _group(self, index: int) -> nn.Module:
        group = int(index / (self.config.num_hidden_layers / self.config.num_hidden_groups))
        return self.base_model.encoder.albert_layer_groups[group]

    def run_layer(self, index: int, state: EncoderState) -> torch.Tensor:
        return self._group(index)(state.hidden_states, state.layer_kwargs["attention_mask"])

    def token_sublayer_parts(self, index: int):
        # Layer ``index`` is one application of a shared group of ``inner_group_num`` ALBERT layers.
        return [self._albert_layer_parts(layer) for layer in self._group(index).albert_layers]

    @staticmethod
    def _albert_layer_parts(layer: nn.Module):
        attention = layer.attention
        return (
            attention.query,
            attention.key,
            attention.value,
            attention.num_attention_heads,
            lambda context, residual: attention.LayerNorm(
                residual + attention.output_dropout(attention.dense(context))
            ),
            lambda x: layer.full_layer_layer_norm(layer.ff_chunk(x) + x),
        )

    def _embeddings(self, input_ids, token_type_ids, position_ids, inputs_embeds) -> torch.Tensor:
        hidden = super()._embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        return self.base_model.encoder.embedding_hidden_mapping_in(hidden)

    def layer_flops(self, seq_len: int) -> int:
        return super().layer_flops(seq_len) * self.config.inner_group_num

    def pool(self, hidden_states: torch.Tensor, token_mask: torch.Tensor, pooling: str) -> torch.Tensor:
        if pooling == "pooler":  # ALBERT's pooler is a bare Linear with a separate activation module
            return self.base_model.pooler_activation(self.base_model.pooler(hidden_states[:, 0]))
        return super().pool(hidden_states, token_mask, pooling)


class MPNetAdapter(TextEncoderAdapter):
    """MPNet: BERT-like layers plus a relative position bias shared by every layer."""

    family = "mpnet"
    model_type = "mpnet"
    class_prefix = "MPNet"
    config_class = MPNetConfig
    base_model_class = MPNetModel
    pretrained_model_class = MPNetPreTrainedModel
    task_classes = (MPNetModel, MPNetForSequenceClassification, MPNetForMaskedLM, MPNetForTokenClassification)
    accepts_token_type_ids = False

    def _embeddings(self, input_ids, token_type_ids, position_ids, inputs_embeds) -> torch.Tensor:
        return self.base_model.embeddings(input_ids=input_ids, position_ids=position_ids, inputs_embeds=inputs_embeds)

    def token_layer_parts(self, index: int):
        layer = self.layer_modules()[index]
        attention = layer.attention
        return (
            attention.attn.q,
            attention.attn.k,
            attention.attn.v,
            attention.attn.num_attention_heads,
            lambda context, residual: attention.LayerNorm(attention.dropout(attention.attn.o(context)) + residual),
            lambda x: layer.output(layer.intermediate(x), x),
        )

    def token_position_bias(self, hidden_states, layer_kwargs):
        if layer_kwargs is not None and "position_bias" in layer_kwargs:
            return layer_kwargs["position_bias"][:1]
        return self.base_model.encoder.compute_position_bias(hidden_states[:1])

    def layer_inputs(self, hidden_states, attention_mask, position_ids=None):
        inputs = super().layer_inputs(hidden_states, attention_mask)
        # The bias depends only on positions: compute it for one row and broadcast, instead of once per row.
        inputs["position_bias"] = self.base_model.encoder.compute_position_bias(hidden_states[:1])
        return inputs

    def run_layer(self, index: int, state: EncoderState) -> torch.Tensor:
        bias = state.layer_kwargs["position_bias"].expand(state.num_rows, -1, -1, -1)
        output = self.layer_modules()[index](state.hidden_states, state.layer_kwargs["attention_mask"], bias)
        return output[0]


# The built-in text encoder families, by model_type.
TEXT_ENCODER_ADAPTERS: dict[str, type[TextEncoderAdapter]] = {
    adapter.model_type: add_adapter(adapter)
    for adapter in (
        TextEncoderAdapter,
        RobertaAdapter,
        XLMRobertaAdapter,
        DistilBertAdapter,
        AlbertAdapter,
        ElectraAdapter,
        MPNetAdapter,
    )
}


def text_encoder_families() -> list[str]:
    """The ``model_type`` of every known text family whose adapter runs layers (early exits, halting)."""
    return sorted(k for k, a in FAMILY_ADAPTERS.items() if a.modality == "text" and a.runs_layers)


def unsupported_architecture_error(model_type: str, technique: str = "early exit") -> ValueError:
    """The error raised for a backbone family that has no adapter.

    Args:
        model_type: The config's ``model_type``.
        technique: The technique that was asked for, for the message.
    """
    supported = ", ".join(text_encoder_families())
    return ValueError(
        f"Unsupported architecture for {technique}: model_type={model_type!r}. Supported text encoder families: "
        f"{supported}. To add one, subclass adaptive_hf.TextEncoderAdapter (set family, model_type, class_prefix, "
        "config_class, base_model_class, pretrained_model_class, and ffn_slot/task_classes for switch MoE; override "
        "embed/run_layer if the layout differs) and call adaptive_hf.register_family(YourAdapter): it gets every "
        "technique it is compatible with."
    )


def get_text_encoder_adapter(model_type: str, technique: str = "early exit") -> type[TextEncoderAdapter]:
    """Returns the adapter class for ``model_type`` or raises a clear ``ValueError``.

    Args:
        model_type: A config ``model_type`` such as ``"bert"``.
        technique: The technique that was asked for, for the error message.
    """
    adapter = FAMILY_ADAPTERS.get(model_type)
    if adapter is None or adapter.modality != "text" or not adapter.runs_layers:
        raise unsupported_architecture_error(model_type, technique)
    return adapter
