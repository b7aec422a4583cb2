"""Halting (ACT / PonderNet, per image or per patch token) on Hugging Face vision transformers: DINOv2, and any
:class:`~adaptive_hf.core.adapters.hf_vision.HFVisionAdapter` token family that runs layers on token subsets.

``Halting<Arch>ForImageClassification`` holds the family's base model under its usual prefix and the stock
``classifier`` (plain ``...ForImageClassification`` checkpoints load unchanged), so with halting disabled the model
gives the stock logits. The halting itself is the text models' (the same mixin, over an all-ones token mask, as the
timm ViT does): per-token halting follows A-ViT, a halted token's state is frozen and still serves as key and value.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import initialization as hf_init

from ..core.adapters.dinov2 import Dinov2Adapter
from ..core.adapters.hf_vision import HFVisionAdapter
from ..core.adapters.text import EncoderState
from ..core.configuration import make_family_config_class
from ..core.inputs import check_class_labels
from ..core.layer_keyed import LayerKeyedModules
from ..core.vision_backbones import check_pixel_values
from .config import HALTING_FIELDS, HaltingConfigMixin, validate_halting_settings
from .layers import HaltingUnit
from .modeling import HaltingForSequenceClassificationMixin


class HFVisionHaltingConfigMixin(HaltingConfigMixin):
    """The halting fields on an HF image family's own config; the classifier is the family's stock linear one."""

    def validate_halting(self) -> None:
        if self.head_type != "linear":
            raise ValueError(
                f"`head_type` must be 'linear' for {self.backbone_adapter.family} halting, which classifies "
                "with the family's own linear classifier so that halting disabled reproduces the stock model; got "
                f"{self.head_type!r}."
            )
        super().validate_halting()


def supports_hf_image_halting(adapter: type) -> bool:
    """Whether halting applies to an HF image family: a token model whose adapter runs layers on token subsets.

    Args:
        adapter: The family's adapter class.
    """
    return (
        isinstance(adapter, type)
        and issubclass(adapter, HFVisionAdapter)
        and adapter.runs_layers
        and adapter.token_model
        and adapter.supports_token_subsets
        and adapter.pretrained_model_class is not None
    )


def make_hf_vision_halting_config_class(adapter: type[HFVisionAdapter]) -> type:
    """``Halting<Arch>Config``: the family's config plus the halting fields (class-token pooling, linear head).

    Args:
        adapter: The family's adapter class.
    """
    fields = {**HALTING_FIELDS, "head_pooling": ("str", "cls"), "head_type": ("str", "linear")}
    return make_family_config_class(
        adapter,
        class_name=f"Halting{adapter.class_prefix}Config",
        model_type=f"halting_{adapter.model_type}",
        mixin=HFVisionHaltingConfigMixin,
        fields=fields,
        module=__name__,
    )


class HFVisionHaltingMixin(HaltingForSequenceClassificationMixin):
    """ACT / PonderNet halting over the layers of an HF vision transformer, per image or per patch token.

    Args:
        config: The family's halting config (``Halting<Arch>Config``).
    """

    adapter_class: type[HFVisionAdapter] = HFVisionAdapter
    auto_class_name = "AutoModelForImageClassification"
    main_input_name = "pixel_values"

    def __init__(self, config):
        # The family's PreTrainedModel directly: the text mixin's __init__ builds a text classifier head.
        self.adapter_class.pretrained_model_class.__init__(self, config)
        adapter = self.adapter_class
        self.num_labels = config.num_labels
        setattr(self, self.base_model_prefix, adapter.build_base_model(config))
        self.halting_units = LayerKeyedModules(
            range(1, config.num_ponder_steps + 1),
            [
                HaltingUnit(adapter.hidden_size_of(config), config.halting_bias_init)
                for _ in range(config.num_ponder_steps)
            ],
            config_field="max_ponder_steps",
        )
        self.classifier = nn.Linear(adapter.classifier_width_of(config), config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        self.adapter_class.pretrained_model_class._init_weights(self, module)
        if isinstance(module, HaltingUnit):
            hf_init.zeros_(module.proj.weight)  # hf_init skips tensors already loaded from a checkpoint
            hf_init.constant_(module.proj.bias, module.bias_init)

    def _pool(self, hidden: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        return self.adapter.pool(hidden, self.config.head_pooling)

    def _classify(self, hidden: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.adapter.final_features(hidden))

    def forward(
        self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None, return_dict=None
    ) -> Any:
        """Classifies a batch of images, halting per image or per patch token.

        Args:
            pixel_values: ``(batch, channels, height, width)`` images as the family's image processor returns them.
            labels: ``(batch,)`` class ids; adds ``loss`` (task loss plus ponder cost or KL).
            return_dict: Return a tuple when ``False``.
        """
        batch_size = check_pixel_values(pixel_values, self.config.num_channels)
        if labels is not None:
            check_class_labels(labels, batch_size, self.config.num_labels)
        validate_halting_settings(self.config)
        hidden = self.adapter.embed(pixel_values).hidden_states
        # Every patch token is real: the text models' state with an all-ones token mask.
        state = EncoderState(hidden, torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device), {})
        return self._forward_encoded(state, labels, return_dict)

    def halting_flops(
        self, halting_steps: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[int, int]:
        """Theoretical FLOPs of full depth and of what was spent (see the text models' ``halting_flops``)."""
        if attention_mask is None:
            tokens = self.adapter.unit_costs(None)[3][0]
            attention_mask = torch.ones((halting_steps.size(0), tokens), dtype=torch.long)
        return super().halting_flops(halting_steps, attention_mask)

    def model_card_details(self) -> tuple[list[str], str]:
        config = self.config
        family = self.adapter_class.family
        tags = ["adaptive-hf", "halting", config.halting, family, "image-classification"]
        body = (
            f"## Halting\n\n`{config.halting}` per `{config.halting_granularity}` over the layers of a {family} "
            f"image classifier, threshold `{config.effective_threshold()}`.\n"
        )
        return tags, body

    def pipeline_tag(self) -> str:
        return "image-classification"


def make_hf_vision_halting_model_class(adapter: type[HFVisionAdapter], config_class: type) -> type:
    """Builds ``Halting<Arch>ForImageClassification`` for an HF image family and its halting config class.

    Args:
        adapter: The family's adapter class.
        config_class: The family's halting config class.
    """
    name = f"Halting{adapter.class_prefix}ForImageClassification"
    namespace = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": (
            f"ACT/PonderNet halting on a {adapter.family} image classifier; see :class:`HFVisionHaltingMixin`.\n\n"
            "    Args:\n        config: The family's halting config.\n"
        ),
        "config_class": config_class,
        "adapter_class": adapter,
        "base_model_prefix": adapter.pretrained_model_class.base_model_prefix,
        "input_modalities": ("image",),
    }
    return type(name, (HFVisionHaltingMixin, adapter.pretrained_model_class), namespace)


HaltingDinov2Config = make_hf_vision_halting_config_class(Dinov2Adapter)
HaltingDinov2ForImageClassification = make_hf_vision_halting_model_class(Dinov2Adapter, HaltingDinov2Config)
# model_type -> class, for the registry's halting builder (which adds new families).
HF_VISION_HALTING_CONFIGS: dict[str, type] = {"dinov2": HaltingDinov2Config}
HF_VISION_HALTING_MODELS: dict[str, type] = {"dinov2": HaltingDinov2ForImageClassification}
