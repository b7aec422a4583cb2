"""Hugging Face vision adapters: transformers ``ViTModel``, for early exits and switch MoE."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from transformers import ViTConfig, ViTForImageClassification, ViTModel, ViTPreTrainedModel

from ..flops import encoder_layer_flops
from .base import BackboneAdapter, FfnSlot, add_adapter
from .timm import ImageState, pool_features


class HFViTAdapter(BackboneAdapter):
    """Adapter over a transformers ``ViTModel``: one unit per encoder layer; the final exit is the ViT classifier.

    Args:
        base_model: A ``ViTModel`` (built without its pooler).
    """

    family: ClassVar[str] = "vit"
    model_type: ClassVar[str] = "vit"
    class_prefix: ClassVar[str] = "ViT"
    config_class: ClassVar[type] = ViTConfig
    pretrained_model_class: ClassVar[type] = ViTPreTrainedModel
    modality: ClassVar[str] = "image"
    runs_layers: ClassVar[bool] = True
    has_pooler: ClassVar[bool] = False
    # `mlp` is fc1, activation, fc2; the layer applies dropout and the residual.
    ffn_slot: ClassVar[FfnSlot | None] = FfnSlot("mlp", up="mlp.fc1", down="mlp.fc2")
    task_classes: ClassVar[tuple[type, ...]] = (ViTModel, ViTForImageClassification)

    def layer_modules(self) -> nn.ModuleList:
        # transformers 5 keeps the layers on the model; earlier versions under ``encoder.layer``.
        base = self.base_model
        return base.layers if hasattr(base, "layers") else base.encoder.layer

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> ImageState:
        """Patch and position embeddings of ``pixel_values`` (cast to the weights' dtype).

        Args:
            pixel_values: ``(batch, channels, height, width)`` images.
            interpolate_pos_encoding: Interpolate the position embeddings to another image size.
        """
        expected = self.base_model.embeddings.patch_embeddings.projection.weight.dtype
        hidden = self.base_model.embeddings(
            pixel_values.to(expected), interpolate_pos_encoding=interpolate_pos_encoding
        )
        return ImageState(hidden)

    def run_layer(self, index: int, state: ImageState) -> torch.Tensor:
        """Runs layer ``index`` (0-based) on the rows in ``state``; returns their new hidden states."""
        # ViT attends over every patch: no attention mask (the stock ViTModel builds none either).
        return self.layer_modules()[index](state.hidden_states, None)

    def final_features(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The layer-normed first token that ``ViTForImageClassification`` classifies."""
        return self.base_model.layernorm(hidden_states)[:, 0]

    def pool(self, hidden_states: torch.Tensor, pooling: str) -> torch.Tensor:
        """Pools ``(rows, tokens, hidden)`` into ``(rows, hidden)`` (``"mean"`` over patches or ``"cls"``)."""
        return pool_features(hidden_states, pooling, 1)

    def layer_flops(self, seq_len: int) -> int:
        """Theoretical FLOPs of one layer on one image of ``seq_len`` tokens."""
        return encoder_layer_flops(seq_len, self.config.hidden_size, self.config.intermediate_size)


HF_VISION_ADAPTERS = {adapter.model_type: add_adapter(adapter) for adapter in (HFViTAdapter,)}
