"""Decoder families: GPT-2 (switch MoE only) and the Llama-layout classifiers (Llama, Qwen2, Qwen3).

:class:`DecoderClassifierAdapter` runs the stock decoder layers one at a time (early exits, per-sample halting) and
describes each layer's gated FFN (switch MoE). It reuses the stock modules and weights: ``embed_tokens``, the
rotary embedding, the decoder layers, the final ``norm``, and the ``score`` layer of
``<Arch>ForSequenceClassification``, which stays the final classifier. Qwen2 and Qwen3 only change the classes.

What it computes follows transformers' ``<Arch>Model`` and ``GenericForSequenceClassification``:

* the causal mask combined with the padding mask (``create_causal_mask``; families with sliding-window layers also
  get ``create_sliding_window_causal_mask``), rotary ``position_embeddings`` for ``position_ids`` (``0..seq-1``
  when not given, as transformers counts them, padding included);
* pooling reads the rightmost token that is not ``pad_token_id`` (any padding side), after the final norm. The
  state's ``token_mask`` is that non-pad mask (``input_ids != pad_token_id``); without ``input_ids`` or without a
  pad token it marks every position, so the last position is read, as transformers does.

GPT-2 keeps ``runs_layers = False``: it is upcycled to switch MoE only.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    GPT2Model,
    GPT2PreTrainedModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaModel,
    LlamaPreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
    Qwen2Model,
    Qwen2PreTrainedModel,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3ForSequenceClassification,
    Qwen3Model,
    Qwen3PreTrainedModel,
)
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from ..flops import classifier_head_flops, decoder_layer_flops
from .base import BackboneAdapter, FfnSlot, add_adapter
from .states import EncoderState, regroup_positions, to_width

DECODER_POOLINGS = ("last",)


class GPT2Adapter(BackboneAdapter):
    """GPT-2: ``h[i].mlp`` with ``Conv1D`` projections (weights already stored ``(in, out)``)."""

    family = "gpt2"
    model_type = "gpt2"
    class_prefix = "GPT2"
    config_class = GPT2Config
    pretrained_model_class = GPT2PreTrainedModel
    ffn_slot = FfnSlot("mlp", up="mlp.c_fc", down="mlp.c_proj", weights_in_out=True)
    task_classes = (GPT2Model, GPT2LMHeadModel, GPT2ForSequenceClassification)

    @classmethod
    def num_layers_of(cls, config) -> int:
        return config.n_layer

    @classmethod
    def hidden_size_of(cls, config) -> int:
        return config.n_embd

    @classmethod
    def intermediate_size_of(cls, config) -> int:
        return config.n_inner if config.n_inner is not None else 4 * config.n_embd

    @classmethod
    def activation_of(cls, config) -> str:
        return config.activation_function

    @classmethod
    def ffn_dropout_of(cls, config) -> float:
        return config.resid_pdrop

    def layer_modules(self) -> nn.ModuleList:
        return self.base_model.h


class DecoderClassifierAdapter(BackboneAdapter):
    """Llama-layout decoders as sequence classifiers: ``layers[i].mlp`` = ``down(act(gate(x)) * up(x))``.

    Args:
        base_model: The family's base model (e.g. a ``LlamaModel``).

    Class attributes (besides those of :class:`BackboneAdapter`):
        base_model_class: The family's base model class.
        sequence_classifier_class: The stock ``<Arch>ForSequenceClassification`` (named in error messages).
        has_pooler: Always ``False`` (no trained pooler).
        accepts_token_type_ids: Always ``False``.
        poolings: The poolings a head may use: ``"last"`` (the last non-pad token after the final norm).
    """

    family: ClassVar[str] = "llama"
    model_type: ClassVar[str] = "llama"
    class_prefix: ClassVar[str] = "Llama"
    config_class: ClassVar[type] = LlamaConfig
    base_model_class: ClassVar[type] = LlamaModel
    pretrained_model_class: ClassVar[type] = LlamaPreTrainedModel
    sequence_classifier_class: ClassVar[type] = LlamaForSequenceClassification
    ffn_slot: ClassVar[FfnSlot | None] = FfnSlot("mlp", up="mlp.up_proj", down="mlp.down_proj", gate="mlp.gate_proj")
    task_classes: ClassVar[tuple[type, ...]] = (LlamaModel, LlamaForCausalLM, LlamaForSequenceClassification)
    runs_layers: ClassVar[bool] = True
    supports_token_subsets: ClassVar[bool] = False
    causal: ClassVar[bool] = True
    has_pooler: ClassVar[bool] = False
    accepts_token_type_ids: ClassVar[bool] = False
    poolings: ClassVar[tuple[str, ...]] = DECODER_POOLINGS
    # The final exit / halting classifier is the stock `score` (linear, on the last token): heads pool alike.
    config_defaults: ClassVar[dict[str, Any]] = {
        "head_pooling": "last",
        "head_type": "linear",
    }

    # --------------------------------------------------------------------------------------- building blocks
    @classmethod
    def ffn_bias_of(cls, config) -> bool:
        return bool(getattr(config, "mlp_bias", False))

    @classmethod
    def build_base_model(cls, config, *, add_pooling_layer: bool = False) -> nn.Module:
        """Builds the family's base model from ``config`` (decoders have no pooler: ``add_pooling_layer`` is moot).

        Args:
            config: A config of the family (or a subclass of it).
            add_pooling_layer: Ignored; accepted for the text-adapter interface.
        """
        return cls.base_model_class(config)

    @classmethod
    def stock_head_modules(cls, config) -> dict[str, nn.Module]:
        """The stock ``score`` layer (linear, no bias, as in ``<Arch>ForSequenceClassification``): the final exit
        and the halting classifier, so a fine-tuned stock checkpoint gives the same logits at full compute.

        Args:
            config: The model config (``num_labels`` set).
        """
        return {"score": nn.Linear(cls.hidden_size_of(config), config.num_labels, bias=False)}

    def stock_head_logits(self, owner: nn.Module, hidden_states: torch.Tensor, token_mask: torch.Tensor):
        """``score`` on the final norm of each row's last non-pad token, as the stock classifier computes it.

        Args:
            owner: The model holding ``score``.
            hidden_states: ``(rows, seq, hidden)`` states after the last layer.
            token_mask: ``(rows, seq)`` 1 where the token is not padding.
        """
        return owner.score(self.pool(hidden_states, token_mask, "last"))

    @classmethod
    def stock_head_flops(cls, config, seq_len: int) -> int:
        """Theoretical FLOPs of ``score`` on one pooled token.

        Args:
            config: The model config.
            seq_len: Tokens in the sequence (``score`` reads one).
        """
        return classifier_head_flops(cls.hidden_size_of(config), config.num_labels, mlp=False, pooler=False)

    @classmethod
    def classifier_dropout_of(cls, config) -> float:
        """Dropout of the intermediate exit heads: ``classifier_dropout`` if the config has one, else 0 (the stock
        ``score`` has none)."""
        value = getattr(config, "classifier_dropout", None)
        return float(value) if value is not None else 0.0

    @classmethod
    def pad_token_id_of(cls, config) -> int | None:
        """The pad token the pooling looks for (``config.get_text_config().pad_token_id``, as transformers reads
        it)."""
        return config.get_text_config().pad_token_id

    def layer_modules(self) -> nn.ModuleList:
        """The decoder layers, in order."""
        return self.base_model.layers

    def _layer_types(self) -> list[str]:
        cached = self.__dict__.get("_types")
        if cached is None:
            types = getattr(self.config, "layer_types", None) or ["full_attention"] * self.num_layers
            cached = self.__dict__["_types"] = list(types)
        return cached

    # -------------------------------------------------------------------------------------------- running
    def embed(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> EncoderState:
        """Embeds the tokens and prepares what every layer reads: masks, rotary embeddings, position ids.

        Args:
            input_ids: ``(batch, seq)`` token ids.
            attention_mask: ``(batch, seq)`` 1 for tokens, 0 for padding (left or right).
            token_type_ids: Not an input of decoders; refused.
            position_ids: ``(batch or 1, seq)`` positions; ``0..seq-1`` by default, as transformers counts them.
            inputs_embeds: ``(batch, seq, hidden)`` instead of ``input_ids``.
        """
        if token_type_ids is not None:
            raise ValueError(f"`token_type_ids` is not an input of {self.family} models; do not pass it.")
        hidden = self.base_model.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        batch, seq = hidden.shape[:2]
        pad_token_id = self.pad_token_id_of(self.config)
        if pad_token_id is None and batch > 1:
            raise ValueError(
                f"This {self.family} classifier has no pad token (`config.pad_token_id` is None), so it cannot find "
                f"the last real token of each row in a batch of {batch}; transformers' "
                f"{self.sequence_classifier_class.__name__} refuses such batches too. Set "
                "`model.config.pad_token_id` to the tokenizer's pad token id (e.g. tokenizer.pad_token_id, or its "
                "eos_token_id if it has no pad token), or classify one sequence at a time."
            )
        if pad_token_id is not None and input_ids is not None:
            token_mask = (input_ids != pad_token_id).long()
        else:  # transformers then reads the last position
            token_mask = torch.ones(batch, seq, dtype=torch.long, device=hidden.device)
        return EncoderState(hidden, token_mask, self.layer_inputs(hidden, attention_mask, position_ids))

    def layer_inputs(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """The causal masks (and sliding-window ones where the family has them), the rotary embeddings, the
        positions, and the padding mask they were built from (kept so :meth:`concat_states` can rebuild them).

        Args:
            hidden_states: ``(rows, seq, hidden)`` embeddings (only their shape, dtype and device are read).
            attention_mask: ``(rows, seq)`` 1 for tokens, 0 for padding (left or right), or ``None``.
            position_ids: ``(rows or 1, seq)`` positions; ``None`` for ``0 .. seq - 1``, as transformers counts
                them (padding included).
        """
        if position_ids is None:
            position_ids = torch.arange(hidden_states.size(1), device=hidden_states.device).unsqueeze(0)
        mask_kwargs = {
            "config": self.config,
            "inputs_embeds": hidden_states,
            "attention_mask": attention_mask,
            "cache": None,
            "position_ids": position_ids,
        }
        masks = {"full_attention": create_causal_mask(**mask_kwargs)}
        if "sliding_attention" in self._layer_types():
            masks["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)
        return {
            "masks": masks,
            "position_embeddings": self.base_model.rotary_emb(hidden_states, position_ids),
            "position_ids": position_ids,
            "padding_mask": attention_mask,
        }

    def concat_states(self, states: list[EncoderState]) -> EncoderState:
        """The rows of several states as one state, left-padded or trimmed to the widest row's tokens.

        Continuous batching (``classify_stream``) pools rows of batches with different padded lengths. Columns that
        are padding in every row of a state are dropped at either end, narrower states are padded on the left
        (masked columns), and the masks and rotary tables are rebuilt from each row's own position ids, so every
        token keeps its position, attends to the same keys in the same order, and the pooled token (the last
        non-pad one) stays the last. Each row's result is unchanged up to float rounding, left or right padded.

        Args:
            states: States of this adapter's model (from :meth:`embed`, or selections of their rows).
        """
        spans = []
        for state in states:
            padding = state.layer_kwargs["padding_mask"]
            used = torch.ones(state.hidden_states.size(1), dtype=torch.bool) if padding is None else padding.any(0)
            columns = used.nonzero().flatten().tolist() or [0]
            spans.append((columns[0], columns[-1] + 1))
        width = max(end - start for start, end in spans)
        if len(states) == 1 and spans[0] == (0, states[0].hidden_states.size(1)):
            return states[0]
        hidden, token_masks, paddings, positions = [], [], [], []
        for state, (start, end) in zip(states, spans):
            padding = state.layer_kwargs["padding_mask"]
            if padding is None:
                padding = state.token_mask.new_ones(state.token_mask.shape)
            hidden.append(to_width(state.hidden_states[:, start:end], width, left=True))
            token_masks.append(to_width(state.token_mask[:, start:end], width, left=True))
            paddings.append(to_width(padding[:, start:end], width, left=True))
            positions.append(state.layer_kwargs["position_ids"][:, start:end])
        rows = [state.num_rows for state in states]
        position_ids = regroup_positions(positions, rows, width, left=True)
        hidden = torch.cat(hidden)
        layer_inputs = self.layer_inputs(hidden, torch.cat(paddings), position_ids)
        return EncoderState(hidden, torch.cat(token_masks), layer_inputs)

    def run_layer(self, index: int, state: EncoderState) -> torch.Tensor:
        """Runs decoder layer ``index`` (0-based) on the rows in ``state``; returns their new hidden states."""
        kwargs = state.layer_kwargs
        output = self.layer_modules()[index](
            state.hidden_states,
            attention_mask=kwargs["masks"][self._layer_types()[index]],
            position_embeddings=kwargs["position_embeddings"],
            position_ids=kwargs["position_ids"],
        )
        return output[0] if isinstance(output, tuple) else output

    def pool(self, hidden_states: torch.Tensor, token_mask: torch.Tensor, pooling: str) -> torch.Tensor:
        """The final norm of each row's last non-pad token: what ``score`` reads in the stock classifier.

        Intermediate exits read the same token through the same final norm (as early-exit LLM work applies the
        final norm before an intermediate head), so every exit sees states on the scale the last layer's have.

        Args:
            hidden_states: ``(rows, seq, hidden)`` decoder activations.
            token_mask: ``(rows, seq)`` 1 where the token is not padding (see the module docstring).
            pooling: ``"last"``.
        """
        if pooling != "last":
            raise ValueError(
                f"{self.family} classifiers pool the last non-pad token: the pooling must be 'last'; got {pooling!r}."
            )
        rows, seq = token_mask.shape
        positions = torch.arange(seq, device=token_mask.device)
        last = (positions * token_mask).argmax(-1)
        return self.base_model.norm(hidden_states[torch.arange(rows, device=last.device), last])

    def layer_flops(self, seq_len: int) -> int:
        """Theoretical FLOPs of one decoder layer on one sequence of ``seq_len`` tokens."""
        config = self.config
        heads = config.num_attention_heads
        return decoder_layer_flops(
            seq_len,
            self.hidden_size_of(config),
            self.intermediate_size_of(config),
            num_heads=heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or self.hidden_size_of(config) // heads,
        )

    def run_layer_on_tokens(self, index: int, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise ValueError(
            f"Per-token halting is not sound on the causal {self.family} decoder: a token that halts early would "
            "still be read as key and value by every later token, at a stale depth, and the classifier reads the "
            "last token, so an early halt changes what that token sees. Use halting_granularity='sample'."
        )


# Kept under its old name: the Llama adapter served switch MoE before decoders ran layers.
LlamaAdapter = DecoderClassifierAdapter


class Qwen2Adapter(DecoderClassifierAdapter):
    """Qwen2: the Llama layout (biased q/k/v projections inside the stock attention)."""

    family = "qwen2"
    model_type = "qwen2"
    class_prefix = "Qwen2"
    config_class = Qwen2Config
    base_model_class = Qwen2Model
    pretrained_model_class = Qwen2PreTrainedModel
    sequence_classifier_class = Qwen2ForSequenceClassification
    task_classes = (Qwen2Model, Qwen2ForCausalLM, Qwen2ForSequenceClassification)


class Qwen3Adapter(DecoderClassifierAdapter):
    """Qwen3: the Llama layout (per-head q/k norms inside the stock attention)."""

    family = "qwen3"
    model_type = "qwen3"
    class_prefix = "Qwen3"
    config_class = Qwen3Config
    base_model_class = Qwen3Model
    pretrained_model_class = Qwen3PreTrainedModel
    sequence_classifier_class = Qwen3ForSequenceClassification
    task_classes = (Qwen3Model, Qwen3ForCausalLM, Qwen3ForSequenceClassification)


DECODER_ADAPTERS = {
    adapter.model_type: add_adapter(adapter)
    for adapter in (GPT2Adapter, DecoderClassifierAdapter, Qwen2Adapter, Qwen3Adapter)
}
# The decoder families that run layers (early exits, per-sample halting).
DECODER_CLASSIFIER_ADAPTERS: dict[str, type[DecoderClassifierAdapter]] = {
    model_type: adapter for model_type, adapter in DECODER_ADAPTERS.items() if adapter.runs_layers
}
