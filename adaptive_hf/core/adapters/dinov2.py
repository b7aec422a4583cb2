"""DINOv2 adapter: transformers ``Dinov2Model`` / ``Dinov2ForImageClassification`` for every technique."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Dinov2Config, Dinov2ForImageClassification, Dinov2Model, Dinov2PreTrainedModel

from ..flops import encoder_layer_flops, linear_flops
from .base import FfnSlot
from .hf_vision import HFVisionAdapter, UnitCosts, side_pair
from .states import TokenSubset
from .timm import ImageState, pool_features


class Dinov2Adapter(HFVisionAdapter):
    """Adapter over a transformers ``Dinov2Model``: one unit per encoder layer (layer scale and drop path are the
    stock layer's own).

    The final exit is the stock classifier on ``cat(class token, mean of the patch tokens)`` after the final
    LayerNorm, so full compute gives ``Dinov2ForImageClassification``'s logits. The stock embeddings always
    interpolate the position embeddings to the input's patch grid, so any image whose height and width are
    multiples of ``patch_size`` is accepted; other sizes are refused (the stock patch convolution would silently
    drop the border).

    Args:
        base_model: A ``Dinov2Model``.
    """

    family: ClassVar[str] = "dinov2"
    model_type: ClassVar[str] = "dinov2"
    class_prefix: ClassVar[str] = "Dinov2"
    config_class: ClassVar[type] = Dinov2Config
    pretrained_model_class: ClassVar[type] = Dinov2PreTrainedModel
    base_model_class: ClassVar[type] = Dinov2Model
    supports_token_subsets: ClassVar[bool] = True
    # `mlp` is fc1, activation, fc2; the layer applies layer scale, drop path and the residual. With
    # `use_swiglu_ffn=True` it is gate/up/down projections instead (`SWIGLU_SLOT`): same place, so the MoE layer
    # replaces `mlp` either way and only the expert shape and the dense weights differ.
    ffn_slot: ClassVar[FfnSlot | None] = FfnSlot("mlp", up="mlp.fc1", down="mlp.fc2")
    SWIGLU_SLOT: ClassVar[FfnSlot] = FfnSlot("mlp", up="mlp.up_proj", down="mlp.down_proj", gate="mlp.gate_proj")
    task_classes: ClassVar[tuple[type, ...]] = (Dinov2Model, Dinov2ForImageClassification)

    @classmethod
    def intermediate_size_of(cls, config) -> int:
        hidden = int(config.hidden_size * config.mlp_ratio)
        if config.use_swiglu_ffn:
            return (int(hidden * 2 / 3) + 7) // 8 * 8  # as Dinov2SwiGLUFFN sizes its projections
        return hidden

    @classmethod
    def classifier_width_of(cls, config) -> int:
        return 2 * config.hidden_size  # class token and mean patch token, concatenated

    @classmethod
    def ffn_spec(cls, config, layer: nn.Module | None = None) -> dict[str, Any]:
        spec = super().ffn_spec(config, layer)
        if config.use_swiglu_ffn:  # down(silu(gate(x)) * up(x)), as Dinov2SwiGLUFFN
            spec.update(activation="silu", gated=True)
        return spec

    @classmethod
    def dense_ffn_weights(cls, layer: nn.Module) -> dict[str, torch.Tensor | None]:
        slot = cls.SWIGLU_SLOT if hasattr(layer.mlp, "gate_proj") else cls.ffn_slot
        return slot.dense_weights(layer)

    @classmethod
    def num_prefix_tokens_of(cls, config) -> int:
        """Tokens in front of the patch tokens: the class token and any register tokens (DINOv2 with registers)."""
        return 1 + getattr(config, "num_register_tokens", 0)

    def layer_modules(self) -> nn.ModuleList:
        return self.base_model.encoder.layer

    def pool(self, hidden_states: torch.Tensor, pooling: str) -> torch.Tensor:
        """The class token (``"cls"``) or the mean of the patch tokens (``"mean"``, registers excluded)."""
        return pool_features(hidden_states, pooling, self.num_prefix_tokens_of(self.config))

    def check_image_size(self, pixel_values: torch.Tensor) -> None:
        """Refuses images whose height or width is not a multiple of the patch size.

        Args:
            pixel_values: ``(batch, channels, height, width)`` images.
        """
        height, width = pixel_values.shape[-2:]
        patch_height, patch_width = side_pair(self.config.patch_size)
        if height % patch_height or width % patch_width:
            raise ValueError(
                f"{self.family}: image size {height}x{width} does not fit the patch grid of patch size "
                f"{patch_height}x{patch_width}. Supported: heights and widths that are multiples of the patch size "
                f"(the configured image_size is {self.config.image_size}); the position embeddings are always "
                "interpolated to the grid, as the stock Dinov2Model does, so `interpolate_pos_encoding` is not "
                "needed. Resize or crop the images to a multiple of the patch size."
            )

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool | None = None) -> ImageState:
        """Patch, class-token and (interpolated) position embeddings of ``pixel_values``.

        Args:
            pixel_values: ``(batch, channels, height, width)`` images, height and width multiples of the patch size.
            interpolate_pos_encoding: Accepted for the ViT signature; DINOv2 always interpolates.
        """
        self.check_image_size(pixel_values)
        return ImageState(self.base_model.embeddings(pixel_values))

    def final_features(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``cat(class token, mean patch token)`` of the layer-normed output, as ``Dinov2ForImageClassification``."""
        sequence = self.base_model.layernorm(hidden_states)
        patches = sequence[:, self.num_prefix_tokens_of(self.config) :]
        return torch.cat([sequence[:, 0], patches.mean(dim=1)], dim=1)

    def layer_flops(self, seq_len: int) -> int:
        """Theoretical FLOPs of one layer on one image of ``seq_len`` tokens."""
        config = self.config
        intermediate = self.intermediate_size_of(config)
        if config.use_swiglu_ffn:
            intermediate = intermediate * 3 // 2  # three projections instead of two
        return encoder_layer_flops(seq_len, config.hidden_size, intermediate)

    def unit_costs(self, image_size: tuple[int, int] | None) -> UnitCosts:
        config = self.config
        height, width = image_size if image_size is not None else side_pair(config.image_size)
        patch_height, patch_width = side_pair(config.patch_size)
        patches = (height // patch_height) * (width // patch_width)
        tokens = patches + self.num_prefix_tokens_of(config)
        stem = linear_flops(patches, config.num_channels * patch_height * patch_width, config.hidden_size)
        layers = self.num_layers
        return stem, [self.layer_flops(tokens)] * layers, [config.hidden_size] * layers, [tokens] * layers

    # ---------------------------------------------------------------------------------- token subsets (halting)
    def run_layer_on_tokens(
        self,
        index: int,
        hidden_states: torch.Tensor,
        active: torch.Tensor | None,
        key_mask: torch.Tensor,
        layer_kwargs: dict[str, Any] | None = None,
        subset: TokenSubset | None = None,
    ) -> torch.Tensor:
        """Runs layer ``index`` for the ``active`` tokens only; every token still serves as key and value.

        The stock layer's modules in its order (norm1, attention, layer scale, drop path, residual, norm2, MLP,
        layer scale, drop path, residual); only the queries, output projection and MLP are restricted to the
        active tokens.

        Args:
            index: 0-based layer index.
            hidden_states: ``(rows, tokens, hidden)`` current states of every token.
            active: ``(rows, tokens)`` bool, tokens to update.
            key_mask: ``(rows, tokens)`` bool, tokens that may be attended to.
            layer_kwargs: Unused (DINOv2 layers take no extra per-layer inputs); kept for the adapter interface.
            subset: The active tokens already packed (then ``active`` may be ``None``).

        Returns:
            ``(num_active, hidden)`` new states of the active tokens, in ``active.nonzero()`` order.
        """
        layer = self.layer_modules()[index]
        attention = layer.attention
        rows, seq, _ = hidden_states.shape
        heads, head_dim = attention.num_attention_heads, attention.head_dim
        normed = layer.norm1(hidden_states)
        subset = subset if subset is not None else TokenSubset.from_mask(active)
        row_index, token_index, slots = subset.rows, subset.tokens, subset.slots
        tokens = subset.gather_states(hidden_states)
        query = attention.q_proj(normed[row_index, token_index])
        keys = attention.k_proj(normed).view(rows, seq, heads, head_dim).transpose(1, 2)
        values = attention.v_proj(normed).view(rows, seq, heads, head_dim).transpose(1, 2)
        queries = subset.to_slots(query.view(-1, heads, head_dim), rows)
        # Every patch is real, so an all-true key mask is no mask (SDPA then takes its fastest kernel).
        attn_mask = None if bool(key_mask.all()) else key_mask[:, None, None, :]
        dropout = attention.attention_dropout if attention.training else 0.0
        context = F.scaled_dot_product_attention(
            queries.transpose(1, 2), keys, values, attn_mask=attn_mask, dropout_p=dropout, scale=attention.scaling
        )
        context = context.transpose(1, 2).reshape(rows, slots, heads * head_dim)
        context = subset.from_slots(context)
        tokens = tokens + layer.drop_path(layer.layer_scale1(attention.o_proj(context)))
        return tokens + layer.drop_path(layer.layer_scale2(layer.mlp(layer.norm2(tokens))))
