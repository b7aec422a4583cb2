"""Decoder families that switch MoE upcycles (GPT-2, Llama): today only their feed-forward slot.

These adapters describe the layer list and the FFN of each layer; they do not run layers one at a time, so early
exits and halting do not apply to them yet (``runs_layers`` is False).
"""

from __future__ import annotations

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
)

from .base import BackboneAdapter, FfnSlot, add_adapter


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


class LlamaAdapter(BackboneAdapter):
    """Llama-family decoders: ``layers[i].mlp`` = ``down(act(gate(x)) * up(x))``."""

    family = "llama"
    model_type = "llama"
    class_prefix = "Llama"
    config_class = LlamaConfig
    pretrained_model_class = LlamaPreTrainedModel
    ffn_slot = FfnSlot("mlp", up="mlp.up_proj", down="mlp.down_proj", gate="mlp.gate_proj")
    task_classes = (LlamaModel, LlamaForCausalLM, LlamaForSequenceClassification)

    @classmethod
    def ffn_bias_of(cls, config) -> bool:
        return bool(getattr(config, "mlp_bias", False))

    def layer_modules(self) -> nn.ModuleList:
        return self.base_model.layers


DECODER_ADAPTERS = {adapter.model_type: add_adapter(adapter) for adapter in (GPT2Adapter, LlamaAdapter)}
