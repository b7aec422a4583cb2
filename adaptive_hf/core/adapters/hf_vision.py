"""Hugging Face vision adapters: the image-classifier contract (:class:`HFVisionAdapter`) and transformers ViT.

An HF image family is one :class:`HFVisionAdapter` subclass: the registry's early-exit builder makes its
``EarlyExit<Arch>Config`` and ``EarlyExit<Arch>ForImageClassification`` from the hooks below (the base model,
the stock classifier's input, per-unit widths and FLOPs), and switch MoE uses ``ffn_slot`` as for text families.
DINOv2 lives in ``dinov2.py``, ConvNeXt v1/v2 in ``convnext.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers import ViTConfig, ViTForImageClassification, ViTModel, ViTPreTrainedModel

from ..flops import encoder_layer_flops, linear_flops
from .base import BackboneAdapter, FfnSlot
from .timm import ImageState, pool_features

# (stem FLOPs, per-unit FLOPs, per-unit widths, per-unit positions pooled by a head) for one image.
UnitCosts = tuple[int, list[int], list[int], list[int]]


def side_pair(value: Any) -> tuple[int, int]:
    """``(height, width)`` of an ``image_size``/``patch_size`` config value (one int or a pair)."""
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


class HFVisionAdapter(BackboneAdapter):
    """Base of the adapters over a transformers image model whose ``...ForImageClassification`` has one linear
    ``classifier`` on features of the base model (ViT, DINOv2, ConvNeXt).

    Class attributes (besides :class:`BackboneAdapter`'s):
        base_model_class: The family's base model class (``ViTModel``, ...), built by :meth:`build_base_model`.
        token_model: Units output ``(rows, tokens, hidden)`` tokens (``False``: ``(rows, C, H, W)`` maps).
        default_head_pooling: Pooling of the intermediate exit heads unless set (``"cls"`` or ``"mean"``).
    """

    modality: ClassVar[str] = "image"
    runs_layers: ClassVar[bool] = True
    has_pooler: ClassVar[bool] = False
    base_model_class: ClassVar[type | None] = None
    token_model: ClassVar[bool] = True
    default_head_pooling: ClassVar[str] = "cls"

    @classmethod
    def build_base_model(cls, config) -> nn.Module:
        """The family's base model, as its ``...ForImageClassification`` builds it (same parameter names).

        Args:
            config: The family config.
        """
        return cls.base_model_class(config)

    @classmethod
    def classifier_width_of(cls, config) -> int:
        """Input width of the stock linear classifier."""
        return cls.hidden_size_of(config)

    @classmethod
    def unit_widths_of(cls, config) -> list[int]:
        """Width of each unit's pooled output (an intermediate exit head's input)."""
        return [cls.hidden_size_of(config)] * cls.num_layers_of(config)

    def final_features(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """What the stock ``...ForImageClassification`` feeds its classifier, from the last unit's output."""
        raise self._missing("final_features")

    def unit_costs(self, image_size: tuple[int, int] | None) -> UnitCosts:
        """Theoretical FLOPs of one image: ``(stem, per unit, widths, positions pooled per unit)``.

        Args:
            image_size: ``(height, width)``; ``None`` = the config's ``image_size``.
        """
        raise self._missing("unit_costs")

    def pool(self, hidden_states: torch.Tensor, pooling: str) -> torch.Tensor:
        """Pools ``(rows, tokens, hidden)`` (``"mean"`` over patches or ``"cls"``) or ``(rows, C, H, W)`` (mean)."""
        return pool_features(hidden_states, pooling, 1)

    def run_layer(self, index: int, state: ImageState) -> torch.Tensor:
        """Runs unit ``index`` (0-based) on the rows in ``state``; returns their new hidden states."""
        # Vision transformers attend over every patch: no attention mask (the stock models build none either).
        return self.layer_modules()[index](state.hidden_states, None)


class HFViTAdapter(HFVisionAdapter):
    """Adapter over a transformers ``ViTModel``: one unit per encoder layer; the final exit is the ViT classifier.

    Args:
        base_model: A ``ViTModel`` (built without its pooler).
    """

    family: ClassVar[str] = "vit"
    model_type: ClassVar[str] = "vit"
    class_prefix: ClassVar[str] = "ViT"
    config_class: ClassVar[type] = ViTConfig
    pretrained_model_class: ClassVar[type] = ViTPreTrainedModel
    base_model_class: ClassVar[type] = ViTModel
    # `mlp` is fc1, activation, fc2; the layer applies dropout and the residual.
    ffn_slot: ClassVar[FfnSlot | None] = FfnSlot("mlp", up="mlp.fc1", down="mlp.fc2")
    task_classes: ClassVar[tuple[type, ...]] = (ViTModel, ViTForImageClassification)

    @classmethod
    def build_base_model(cls, config) -> nn.Module:
        return ViTModel(config, add_pooling_layer=False)

    def layer_modules(self) -> nn.ModuleList:
        # transformers 5 keeps the layers on the model; earlier versions under ``encoder.layer``.
        base = self.base_model
        return base.layers if hasattr(base, "layers") else base.encoder.layer

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool | None = False) -> ImageState:
        """Patch and position embeddings of ``pixel_values`` (cast to the weights' dtype).

        Args:
            pixel_values: ``(batch, channels, height, width)`` images.
            interpolate_pos_encoding: Interpolate the position embeddings to another image size.
        """
        expected = self.base_model.embeddings.patch_embeddings.projection.weight.dtype
        hidden = self.base_model.embeddings(
            pixel_values.to(expected), interpolate_pos_encoding=bool(interpolate_pos_encoding)
        )
        return ImageState(hidden)

    def final_features(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The layer-normed first token that ``ViTForImageClassification`` classifies."""
        return self.base_model.layernorm(hidden_states)[:, 0]

    def layer_flops(self, seq_len: int) -> int:
        """Theoretical FLOPs of one layer on one image of ``seq_len`` tokens."""
        return encoder_layer_flops(seq_len, self.config.hidden_size, self.intermediate_size_of(self.config))

    def unit_costs(self, image_size: tuple[int, int] | None) -> UnitCosts:
        config = self.config
        height, width = image_size if image_size is not None else side_pair(config.image_size)
        patch_height, patch_width = side_pair(config.patch_size)
        patches = (height // patch_height) * (width // patch_width)
        tokens = patches + 1
        stem = linear_flops(patches, config.num_channels * patch_height * patch_width, config.hidden_size)
        layers = self.num_layers
        return stem, [self.layer_flops(tokens)] * layers, [config.hidden_size] * layers, [tokens] * layers
