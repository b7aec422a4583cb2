"""ConvNeXt v1/v2 adapters: transformers ``ConvNextModel`` / ``ConvNextV2Model`` for early exits.

The units are the stages (a stage is its downsampling layer, then its blocks), so a ConvNeXt-T has 4 exit points.
Each unit outputs a ``(rows, channels, height, width)`` feature map; heads average it over space, as the stock model
does before its final LayerNorm and classifier.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from transformers import (
    ConvNextConfig,
    ConvNextModel,
    ConvNextPreTrainedModel,
    ConvNextV2Config,
    ConvNextV2Model,
    ConvNextV2PreTrainedModel,
)

from ..flops import linear_flops
from .hf_vision import HFVisionAdapter, UnitCosts, side_pair
from .timm import ImageState

# Depthwise 7x7 convolution of every ConvNeXt block.
_DEPTHWISE_KERNEL = 7 * 7


class ConvNextAdapter(HFVisionAdapter):
    """Adapter over a transformers ``ConvNextModel``: one unit per stage; the final exit is the stock classifier
    on the global average, after the final LayerNorm.

    Args:
        base_model: A ``ConvNextModel``.
    """

    family: ClassVar[str] = "convnext"
    model_type: ClassVar[str] = "convnext"
    class_prefix: ClassVar[str] = "ConvNext"
    config_class: ClassVar[type] = ConvNextConfig
    pretrained_model_class: ClassVar[type] = ConvNextPreTrainedModel
    base_model_class: ClassVar[type] = ConvNextModel
    token_model: ClassVar[bool] = False
    default_head_pooling: ClassVar[str] = "mean"

    @classmethod
    def num_layers_of(cls, config) -> int:
        return config.num_stages

    @classmethod
    def hidden_size_of(cls, config) -> int:
        return config.hidden_sizes[-1]

    @classmethod
    def unit_widths_of(cls, config) -> list[int]:
        return list(config.hidden_sizes)

    def layer_modules(self) -> nn.ModuleList:
        return self.base_model.encoder.stages

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool | None = None) -> ImageState:
        """The patchify stem (convolution and LayerNorm) on ``pixel_values``.

        Args:
            pixel_values: ``(batch, channels, height, width)`` images.
            interpolate_pos_encoding: Must be ``None`` or ``False``: ConvNeXt has no position embeddings.
        """
        if interpolate_pos_encoding:
            raise ValueError(
                f"{self.family}: `interpolate_pos_encoding` does not apply, ConvNeXt has no position embeddings and "
                "takes any image size. Leave it None."
            )
        expected = self.base_model.embeddings.patch_embeddings.weight.dtype
        return ImageState(self.base_model.embeddings(pixel_values.to(expected)))

    def run_layer(self, index: int, state: ImageState) -> torch.Tensor:
        return self.layer_modules()[index](state.hidden_states)

    def pool(self, hidden_states: torch.Tensor, pooling: str) -> torch.Tensor:
        return hidden_states.mean((-2, -1))

    def final_features(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The LayerNorm of the global average, as ``ConvNextModel``'s ``pooler_output``."""
        return self.base_model.layernorm(hidden_states.mean([-2, -1]))

    def unit_costs(self, image_size: tuple[int, int] | None) -> UnitCosts:
        config = self.config
        height, width = image_size if image_size is not None else side_pair(config.image_size)
        height, width = height // config.patch_size, width // config.patch_size
        widths = list(config.hidden_sizes)
        stem = linear_flops(height * width, config.num_channels * config.patch_size**2, widths[0])
        units, spatial = [], []
        for index, (channels, depth) in enumerate(zip(widths, config.depths, strict=True)):
            downsampling = 0
            if index > 0:
                height, width = height // 2, width // 2
                downsampling = linear_flops(height * width, widths[index - 1] * 4, channels)  # 2x2, stride 2
            positions = height * width
            block = 2 * positions * channels * _DEPTHWISE_KERNEL + 2 * linear_flops(positions, channels, 4 * channels)
            units.append(downsampling + depth * block)
            spatial.append(positions)
        return stem, units, widths, spatial


class ConvNextV2Adapter(ConvNextAdapter):
    """Adapter over a transformers ``ConvNextV2Model`` (ConvNeXt with global response normalization): one unit per
    stage, like :class:`ConvNextAdapter`.

    Args:
        base_model: A ``ConvNextV2Model``.
    """

    family: ClassVar[str] = "convnextv2"
    model_type: ClassVar[str] = "convnextv2"
    class_prefix: ClassVar[str] = "ConvNextV2"
    config_class: ClassVar[type] = ConvNextV2Config
    pretrained_model_class: ClassVar[type] = ConvNextV2PreTrainedModel
    base_model_class: ClassVar[type] = ConvNextV2Model
