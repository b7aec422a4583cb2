"""Halting (ACT / PonderNet, per image or per patch token) for timm vision transformers (ViT, DeiT).

``HaltingTimmForImageClassification`` wraps a timm ``VisionTransformer`` built from the config's ``architecture``
and ``model_args``. The final classifier is the timm model's own head (final norm + pooling + linear), so with
halting disabled the model reproduces the timm model's logits. Token halting follows A-ViT: a halted token's state
is frozen and still serves as key and value; only active tokens run the queries, projection and MLP.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from ..core.backbones import EncoderState, TokenSubset
from ..core.configuration import check_number
from ..core.inputs import check_class_labels
from ..core.vision_backbones import TimmClassifierConfig, TimmViTAdapter, check_pixel_values, create_timm_model
from .config import HaltingConfigMixin, validate_halting_settings
from .layers import HaltingUnit
from .modeling import HaltingForSequenceClassificationMixin


def _apply(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, skipping the call for ``nn.Identity`` (timm blocks hold several; each call costs time at
    batch 1, where a block is a few small matmuls)."""
    return x if isinstance(module, nn.Identity) else module(x)


class TimmViTHaltingAdapter(TimmViTAdapter):
    """A timm ViT seen by the halting models: token states with an all-ones mask, and token-subset blocks.

    Args:
        model: A timm ``VisionTransformer``.
    """

    family = "vit"
    supports_token_subsets = True

    def __init__(self, model: nn.Module):
        super().__init__(model, "block")
        self.base_model = model

    @classmethod
    def num_layers_of(cls, config) -> int:
        return config.describe_blocks().num_units

    def embed(self, pixel_values: torch.Tensor) -> EncoderState:
        hidden = super().embed(pixel_values).hidden_states
        return EncoderState(hidden, torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device), {})

    def pool(self, hidden_states: torch.Tensor, token_mask: torch.Tensor, pooling: str) -> torch.Tensor:
        return super().pool(hidden_states, pooling)

    def run_layer_on_tokens(
        self,
        index: int,
        hidden_states: torch.Tensor,
        active: torch.Tensor | None,
        key_mask: torch.Tensor,
        layer_kwargs: dict[str, Any] | None = None,
        subset: TokenSubset | None = None,
    ) -> torch.Tensor:
        """Runs block ``index`` for the ``active`` tokens only; every token still serves as key and value.

        Args:
            index: 0-based block index.
            hidden_states: ``(rows, tokens, dim)`` current states of every token.
            active: ``(rows, tokens)`` bool, tokens to update.
            key_mask: ``(rows, tokens)`` bool, tokens that may be attended to.
            layer_kwargs: Unused (timm blocks take no extra per-layer inputs); kept for the adapter interface.
            subset: The active tokens already packed (then ``active`` may be ``None``).

        Returns:
            ``(num_active, dim)`` new states of the active tokens, in ``active.nonzero()`` order.
        """
        block = self.units[index]
        attention = block.attn
        if getattr(attention, "gate", None) is not None or not hasattr(attention, "qkv"):
            raise NotImplementedError(
                f"Token halting needs a fused-qkv timm Attention; got {type(attention).__name__}."
            )
        rows, seq, _ = hidden_states.shape
        heads, head_dim, width = attention.num_heads, attention.head_dim, attention.attn_dim
        normed = block.norm1(hidden_states)
        subset = subset if subset is not None else TokenSubset.from_mask(active)
        row_index, token_index, slot, slots = subset.rows, subset.tokens, subset.slot, subset.slots
        tokens = subset.gather_states(hidden_states)
        weight, bias = attention.qkv.weight, attention.qkv.bias
        query = F.linear(normed[row_index, token_index], weight[:width], None if bias is None else bias[:width])
        key_value = F.linear(normed, weight[width:], None if bias is None else bias[width:])
        keys, values = key_value.view(rows, seq, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        keys = _apply(attention.k_norm, keys)
        if slot is None:  # one row: the packed tokens are the queries as they are, no scatter into slots
            queries = query.view(1, slots, heads, head_dim)
        else:
            queries = tokens.new_zeros(rows, slots, heads, head_dim)
            queries[row_index, slot] = query.view(-1, heads, head_dim)
        queries = _apply(attention.q_norm, queries.transpose(1, 2))
        # Every token is real in an image, so an all-true key mask is no mask (SDPA then takes its fastest kernel).
        attn_mask = None if bool(key_mask.all()) else key_mask[:, None, None, :]
        context = F.scaled_dot_product_attention(queries, keys, values, attn_mask=attn_mask)
        context = context.transpose(1, 2).reshape(rows, slots, width)
        context = context[0] if slot is None else context[row_index, slot]
        update = _apply(attention.proj_drop, attention.proj(_apply(attention.norm, context)))
        tokens = tokens + _apply(block.drop_path1, _apply(block.ls1, update))
        return tokens + _apply(block.drop_path2, _apply(block.ls2, block.mlp(block.norm2(tokens))))

    def layer_flops(self, seq_len: int) -> int:
        return self.description.unit_flops[0]

    @classmethod
    def hidden_size_of(cls, config) -> int:
        return config.describe_blocks().widths[0]

    @classmethod
    def intermediate_size_of(cls, config) -> int:
        return 4 * cls.hidden_size_of(config)


class HaltingTimmConfig(HaltingConfigMixin, TimmClassifierConfig):
    """Config of :class:`HaltingTimmForImageClassification`.

    Args:
        architecture: A timm vision transformer name, e.g. ``"vit_tiny_patch16_224"`` or ``"deit_tiny_patch16_224"``.
        model_args: Extra ``timm.create_model`` arguments (``img_size``, ``depth``, ``embed_dim``, ...); see
            :class:`~adaptive_hf.core.vision_backbones.TimmClassifierConfig`.
        **kwargs: The halting fields of :class:`~adaptive_hf.halting.config.HaltingConfigMixin` and
            ``PreTrainedConfig`` fields (``num_labels``, ...).
    """

    model_type = "halting_timm"
    backbone_adapter = TimmViTHaltingAdapter
    halting: str = "act"
    halting_granularity: str = "sample"
    halting_threshold: float | None = None
    halting_enabled: bool = True
    ponder_cost: float = 0.01
    max_ponder_steps: int | None = None
    prior_lambda: float = 0.2
    kl_weight: float = 0.01
    pondernet_inference: str = "threshold"
    halting_pooling: str = "cls"
    halting_bias_init: float = -2.0
    classifier_head: str = "linear"

    def validate_halting(self) -> None:
        self.check_vision_transformer(
            "HaltingTimmForImageClassification supports timm vision transformers (ViT, DeiT)",
            " Use EarlyExitTimmForImageClassification.",
        )
        check_number("halting_bias_init", self.halting_bias_init)
        super().validate_halting()


class HaltingTimmForImageClassification(HaltingForSequenceClassificationMixin, PreTrainedModel):
    """ACT / PonderNet halting over the blocks of a timm ViT, per image or per patch token.

    Args:
        config: A :class:`HaltingTimmConfig`.
    """

    config_class = HaltingTimmConfig
    adapter_class = TimmViTHaltingAdapter
    base_model_prefix = "timm_model"
    main_input_name = "pixel_values"
    auto_class_name = "AutoModelForImageClassification"

    def __init__(self, config: HaltingTimmConfig):
        PreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.timm_model = create_timm_model(config.architecture, config.num_labels, config.model_args)
        hidden_size = self.adapter.units[0].norm1.normalized_shape[0]
        self.halting_units = nn.ModuleList(
            [HaltingUnit(hidden_size, config.halting_bias_init) for _ in range(config.num_ponder_steps)]
        )
        self.post_init()

    def _init_weights(self, module):
        # The timm model initialises itself; only the halting units are ours.
        if isinstance(module, HaltingUnit):
            super()._init_weights(module)

    @property
    def adapter(self) -> TimmViTHaltingAdapter:
        cached = self.__dict__.get("_adapter")
        if cached is None or cached.model is not self.timm_model:
            cached = TimmViTHaltingAdapter(self.timm_model)
            cached.description = self.config.describe_blocks()
            self.__dict__["_adapter"] = cached
        return cached

    def _classify(self, hidden: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        return self.adapter.final_logits(hidden)

    def forward(
        self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None, return_dict=None
    ) -> Any:
        """Classifies a batch of images, halting per image or per patch token.

        Args:
            pixel_values: ``(batch, channels, height, width)`` normalized images.
            labels: ``(batch,)`` class ids; adds ``loss`` (task loss plus ponder cost or KL).
            return_dict: Return a tuple when ``False``.
        """
        batch_size = check_pixel_values(pixel_values, self.timm_model.patch_embed.proj.in_channels)
        if labels is not None:
            check_class_labels(labels, batch_size, self.config.num_labels)
        validate_halting_settings(self.config)
        state = self.adapter.embed(pixel_values)
        return self._forward_encoded(state, labels, return_dict)

    def halting_flops(
        self, halting_steps: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[int, int]:
        """Theoretical FLOPs of full depth and of what was spent (see the text models' ``halting_flops``)."""
        if attention_mask is None:
            tokens = self.adapter.description.spatial[0]
            shape = (halting_steps.size(0), tokens)
            attention_mask = torch.ones(shape, dtype=torch.long)
        return super().halting_flops(halting_steps, attention_mask)

    def model_card_details(self) -> tuple[list[str], str]:
        config = self.config
        tags = ["adaptive-hf", "halting", config.halting, "timm", "image-classification"]
        body = (
            f"## Halting\n\n`{config.halting}` per `{config.halting_granularity}` over the blocks of timm "
            f"`{config.architecture}` (`model_args={config.model_args}`), threshold "
            f"`{config.effective_threshold()}`.\n"
        )
        return tags, body

    def pipeline_tag(self) -> str:
        return "image-classification"
