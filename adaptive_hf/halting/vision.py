"""Halting (ACT / PonderNet, per image or per patch token) for timm vision transformers (ViT, DeiT).

``HaltingTimmForImageClassification`` wraps a timm ``VisionTransformer`` built from the config's ``architecture``
and ``model_args``. The final classifier is the timm model's own head (final norm + pooling + linear), so with
halting disabled the model reproduces the timm model's logits. Token halting follows A-ViT: a halted token's state
is frozen and still serves as key and value; only active tokens run the queries, projection and MLP.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from ..core.adapters.text import EncoderState
from ..core.adapters.timm import TimmViTAdapter
from ..core.configuration import check_number
from ..core.inputs import check_class_labels, check_pixel_forward_options
from ..core.layer_keyed import LayerKeyedModules
from ..core.peft import refuse_nested_peft_wrappers
from ..core.timm_construction import TimmBackboneMixin
from ..core.vision_backbones import (
    TimmClassifierConfig,
    check_pixel_values,
    create_timm_model,
)
from .config import HaltingConfigMixin, validate_halting_settings
from .layers import HaltingUnit
from .modeling import HaltingForSequenceClassificationMixin


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
    backbone_adapter = TimmViTAdapter
    halting: str = "act"
    halting_granularity: str = "sample"
    halting_threshold: float | None = None
    halting_enabled: bool = True
    ponder_cost: float = 0.01
    max_ponder_steps: int | None = None
    prior_lambda: float = 0.2
    kl_weight: float = 0.01
    pondernet_inference: str = "threshold"
    head_pooling: str = "cls"
    halting_bias_init: float = -2.0
    head_type: str = "linear"

    def validate_halting(self) -> None:
        self.check_vision_transformer(
            "HaltingTimmForImageClassification supports timm vision transformers (ViT, DeiT)",
            " Use EarlyExitTimmForImageClassification.",
        )
        check_number("halting_bias_init", self.halting_bias_init)
        if self.head_type != "linear":
            raise ValueError(
                f"`head_type` must be 'linear' for HaltingTimmForImageClassification, which classifies with the "
                f"timm model's own (linear) head so that halting disabled reproduces the timm model; got "
                f"{self.head_type!r}."
            )
        super().validate_halting()


class HaltingTimmForImageClassification(TimmBackboneMixin, HaltingForSequenceClassificationMixin, PreTrainedModel):
    """ACT / PonderNet halting over the blocks of a timm ViT, per image or per patch token.

    Args:
        config: A :class:`HaltingTimmConfig`.
    """

    config_class = HaltingTimmConfig
    adapter_class = TimmViTAdapter
    base_model_prefix = "timm_model"
    main_input_name = "pixel_values"
    # forward takes ``**unsupported`` only to refuse it by name; the Trainer must not read it as loss keywords.
    accepts_loss_kwargs = False
    auto_class_name = "AutoModelForImageClassification"

    def __init__(self, config: HaltingTimmConfig):
        PreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.timm_model = create_timm_model(config.architecture, config.num_labels, config.model_args)
        hidden_size = self.adapter.units[0].norm1.normalized_shape[0]
        self.halting_units = LayerKeyedModules(
            range(1, config.num_ponder_steps + 1),
            [HaltingUnit(hidden_size, config.halting_bias_init) for _ in range(config.num_ponder_steps)],
            config_field="max_ponder_steps",
        )
        self.post_init()

    def _init_weights(self, module):
        # The timm model initialises itself; only the halting units are ours.
        if isinstance(module, HaltingUnit):
            super()._init_weights(module)

    @property
    def adapter(self) -> TimmViTAdapter:
        cached = self.__dict__.get("_adapter")
        if cached is None or cached.model is not self.timm_model:
            cached = TimmViTAdapter(self.timm_model, "block")
            self.__dict__["_adapter"] = cached
        return cached

    def _pool(self, hidden: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        return self.adapter.pool(hidden, self.config.head_pooling)

    def _classify(self, hidden: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        return self.adapter.final_logits(hidden)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict=None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **unsupported,
    ) -> Any:
        """Classifies a batch of images, halting per image or per patch token.

        Args:
            pixel_values: ``(batch, channels, height, width)`` normalized images.
            labels: ``(batch,)`` class ids; adds ``loss`` (task loss plus ponder cost or KL).
            return_dict: Return a tuple when ``False``.
            output_attentions: Accepted as ``None``/``False`` (what peft and the pipelines pass); ``True`` is refused.
            output_hidden_states: Accepted as ``None``/``False``; ``True`` is refused.
            **unsupported: Text inputs given as ``None`` (peft's ``SEQ_CLS`` wrapper passes them) are accepted;
                any other keyword is refused by name.
        """
        reason = "images or patch tokens halt at different layers, so no per-layer tensor covers the whole batch"
        check_pixel_forward_options(
            type(self).__name__, output_attentions, output_hidden_states, unsupported, reason=reason
        )
        refuse_nested_peft_wrappers(self)
        batch_size = check_pixel_values(pixel_values, self.timm_model.patch_embed.proj.in_channels, self.timm_model)
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
            tokens = self.config.describe_blocks().spatial[0]
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
