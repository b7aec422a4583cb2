"""Switch-MoE timm vision transformers: ``SwitchMoETimmForImageClassification``.

:class:`TimmForImageClassification` is a timm classifier as a ``PreTrainedModel`` (``self.timm_model``, built from
the config's ``architecture`` and ``model_args``; forward = the timm model's forward, plus cross-entropy with
``labels``). ``SwitchMoETimmForImageClassification`` is built from it by the same factory as every
``SwitchMoE<StockClass>``: the ``Mlp`` of each block in ``config.moe_layers`` is replaced by a
``SwitchMoEFeedForward`` while the model is built, the timm block keeps running its attention, layer scale,
drop path and residual, and the auxiliary losses join ``loss`` in training.

``adaptive_hf.upcycle(timm_model, SwitchMoEConfig(...))`` reads the architecture and constructor arguments timm
recorded on the model (``pretrained_cfg["architecture"]``, ``_model_args``).
"""

from __future__ import annotations

import json
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from ..core.adapters.timm import TimmViTAdapter
from ..core.hub import own_loaded_tensors
from ..core.inputs import check_class_labels, check_pixel_forward_options
from ..core.peft import refuse_nested_peft_wrappers
from ..core.timm_construction import TimmBackboneMixin
from ..core.vision_backbones import (
    TimmClassifierConfig,
    check_pixel_values,
    create_timm_model,
    load_timm_state_dict,
    read_state_dict,
)
from .conversion import upcycle_from_dense
from .modeling import make_moe_model_class
from .timm_config import SwitchMoETimmConfig


class TimmForImageClassification(TimmBackboneMixin, PreTrainedModel):
    """A timm classifier as a ``PreTrainedModel``; the "stock" class that the switch-MoE timm class extends.

    Args:
        config: A :class:`~adaptive_hf.core.vision_backbones.TimmClassifierConfig` (or a subclass).
    """

    config_class = TimmClassifierConfig
    base_model_prefix = "timm_model"
    main_input_name = "pixel_values"
    # forward takes ``**unsupported`` only to refuse it by name; the Trainer must not read it as loss keywords.
    accepts_loss_kwargs = False
    input_modalities = ("image",)

    def __init__(self, config: TimmClassifierConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.timm_model = create_timm_model(config.architecture, config.num_labels, config.model_args or {})
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        pass  # timm initialises its own modules

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        """``PreTrainedModel.from_pretrained``, with aligned copies of the tensors (see ``own_loaded_tensors``)."""
        return own_loaded_tensors(super().from_pretrained(*args, **kwargs))

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **unsupported,
    ) -> ImageClassifierOutput | tuple:
        """Classifies a batch of images with the timm model.

        Args:
            pixel_values: ``(batch, channels, height, width)`` normalized float images.
            labels: ``(batch,)`` class ids; adds the cross-entropy ``loss``.
            return_dict: Return a tuple when ``False``.
            output_attentions: Accepted as ``None``/``False`` (what peft and the pipelines pass); ``True`` is refused.
            output_hidden_states: Accepted as ``None``/``False``; ``True`` is refused.
            **unsupported: Text inputs given as ``None`` (peft's ``SEQ_CLS`` wrapper passes them) are accepted;
                any other keyword is refused by name.
        """
        reason = "a timm model returns its logits only, not per-layer attentions or hidden states"
        check_pixel_forward_options(
            type(self).__name__, output_attentions, output_hidden_states, unsupported, reason=reason
        )
        config = self.config
        refuse_nested_peft_wrappers(self)
        batch_size = check_pixel_values(pixel_values, config.describe_blocks().in_chans, self.timm_model)
        logits = self.timm_model(pixel_values)
        loss = None
        if labels is not None:
            check_class_labels(labels, batch_size, config.num_labels)
            loss = F.cross_entropy(logits.float(), labels)
        output = ImageClassifierOutput(loss=loss, logits=logits)
        return output.to_tuple() if return_dict is False else output


SwitchMoETimmForImageClassification = make_moe_model_class(
    TimmViTAdapter, TimmForImageClassification, SwitchMoETimmConfig, module=__name__
)


def _upcycle_timm_weights(self, state_dict) -> list[str]:
    """Upcycles a plain (dense) timm state dict: every tensor loads as is, except the FFN of each MoE block, which
    every expert of that block copies (``from_timm(..., pretrained_weights=...)`` calls this).

    Args:
        state_dict: Dense timm-named tensors, or the same tensors under other names in timm's order, or a file.

    Returns:
        The names of the timm tensors left as initialized (the classifier when its width differs).
    """
    config = self.config
    dense = create_timm_model(config.architecture, config.num_labels, config.model_args or {})
    left = load_timm_state_dict(dense, read_state_dict(state_dict), config.architecture, config.num_labels)
    upcycle_from_dense(self, dense, TimmViTAdapter, target=self.timm_model)
    return left


SwitchMoETimmForImageClassification.load_timm_weights = _upcycle_timm_weights


def timm_model_description(model: nn.Module) -> dict[str, Any]:
    """The config fields that rebuild a timm model: ``architecture``, ``model_args``, ``num_labels``.

    timm's ``create_model`` records the name in ``pretrained_cfg["architecture"]`` and the keyword arguments in
    ``_model_args``; a model built some other way cannot be described and is rejected.

    Args:
        model: A timm model made by ``timm.create_model``.
    """
    architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    recorded = getattr(model, "_model_args", None)
    if architecture is None or recorded is None:
        raise ValueError(
            f"Cannot tell how this {type(model).__name__} was built: upcycling a timm model needs one made by "
            "`timm.create_model(name, ...)`, which records the name and the constructor arguments."
        )
    model_args = {k: v for k, v in recorded.items() if k not in ("num_classes", "pretrained")}
    try:
        json.dumps(model_args)
    except TypeError as error:
        raise ValueError(
            f"The timm model's constructor arguments {sorted(model_args)} must be JSON-serializable to be stored in "
            f"the config ({error}); pass layers by name (e.g. act_layer='gelu') rather than as classes."
        ) from None
    return {"architecture": architecture, "model_args": model_args, "num_labels": int(model.num_classes)}


def is_timm_model(model: nn.Module) -> bool:
    """Whether ``model`` is a plain timm model (not a ``PreTrainedModel``)."""
    if isinstance(model, PreTrainedModel):
        return False
    return hasattr(model, "pretrained_cfg") or type(model).__module__.startswith("timm.")
