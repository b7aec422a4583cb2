"""Early exits on Hugging Face image classifiers: ``EarlyExit<Arch>ForImageClassification``, one class per
:class:`~adaptive_hf.core.adapters.hf_vision.HFVisionAdapter` family (ViT, DINOv2, ConvNeXt v1/v2).

A class is the shared :class:`HFVisionEarlyExitMixin` over the family's ``PreTrainedModel``: it holds the family's
base model under its usual prefix (``vit``, ``dinov2``, ``convnext``, ...) and the stock ``classifier``, exactly like
the family's ``...ForImageClassification``, so plain checkpoints load unchanged and give the final exit. Only the
intermediate ``exit_heads`` are new. :func:`make_hf_vision_early_exit_model_class` builds the class for a family;
the early-exit family builder (``early_exit/auto.py``) calls it for every registered image family.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.adapters.convnext import ConvNextAdapter, ConvNextV2Adapter
from ..core.adapters.dinov2 import Dinov2Adapter
from ..core.adapters.hf_vision import HFVisionAdapter, HFViTAdapter
from ..core.flops import linear_flops
from ..core.inputs import check_pixel_forward_options
from .vision_config import HF_VISION_EXIT_CONFIGS, split_exit_settings
from .vision_modeling import EarlyExitImageClassifierOutput, _VisionEarlyExitMixin


class HFVisionEarlyExitMixin(_VisionEarlyExitMixin):
    """Early exits on a Hugging Face image family, one exit point per unit of its adapter (layer or stage).

    Subclasses set ``adapter_class``, ``config_class`` and ``base_model_prefix`` (see
    :func:`make_hf_vision_early_exit_model_class`).

    Args:
        config: The family's early-exit config (``EarlyExit<Arch>Config``).
    """

    adapter_class: type[HFVisionAdapter] = HFVisionAdapter

    def __init__(self, config):
        super().__init__(config)
        adapter = self.adapter_class
        self.num_labels = config.num_labels
        setattr(self, self.base_model_prefix, adapter.build_base_model(config))
        self.classifier = nn.Linear(adapter.classifier_width_of(config), config.num_labels)
        self.exit_heads = self._build_exit_heads(adapter.unit_widths_of(config))
        self.post_init()
        self._apply_training_stage()

    def _init_weights(self, module: nn.Module) -> None:
        # The family's own initialisation for every module, the exit heads included (Linear and LayerNorm).
        self.adapter_class.pretrained_model_class._init_weights(self, module)

    @property
    def adapter(self) -> HFVisionAdapter:
        base = getattr(self, self.base_model_prefix)
        cached = self.__dict__.get("_adapter")
        if cached is None or cached.base_model is not base:
            cached = self.adapter_class(base)
            self.__dict__["_adapter"] = cached
        return cached

    def backbone_parameters(self):
        return getattr(self, self.base_model_prefix).parameters()

    def final_exit_parameters(self):
        return self.classifier.parameters()

    def _in_chans(self) -> int:
        return self.config.num_channels

    def _final_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.adapter.final_features(hidden_states))

    def _unit_costs(self, image_size):
        stem, units, widths, spatial = self.adapter.unit_costs(tuple(image_size) if image_size is not None else None)
        final_head = linear_flops(1, self.adapter_class.classifier_width_of(self.config), self.config.num_labels)
        return stem, units, widths, spatial, final_head

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_exit_logits: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **unsupported,
    ) -> EarlyExitImageClassifierOutput | tuple:
        """Classifies a batch of images, exiting early per image in eval mode.

        Args:
            pixel_values: ``(batch, channels, height, width)`` images as the family's image processor returns them.
            labels: ``(batch,)`` class ids; adds ``loss``.
            output_exit_logits: Also return every exit's logits (with policy ``none`` in eval mode: every head on
                every image).
            interpolate_pos_encoding: Interpolate the position embeddings for another image size (ViT; DINOv2
                always interpolates; ConvNeXt has no position embeddings and refuses ``True``).
            return_dict: Return a tuple when ``False``.
            output_attentions: Accepted as ``None``/``False`` (what peft and the pipelines pass); ``True`` is refused.
            output_hidden_states: Accepted as ``None``/``False``; ``True`` is refused.
            **unsupported: Text inputs given as ``None`` (peft's ``SEQ_CLS`` wrapper passes them) are accepted;
                any other keyword is refused by name.
        """
        check_pixel_forward_options(type(self).__name__, output_attentions, output_hidden_states, unsupported)
        return self._run(
            pixel_values, labels, output_exit_logits, return_dict, interpolate_pos_encoding=interpolate_pos_encoding
        )

    @classmethod
    def from_plain(cls, pretrained_model_name_or_path, num_labels: int | None = None, **kwargs: Any):
        """Loads a plain checkpoint of the family (base model or ``...ForImageClassification``) or our own.

        Only the intermediate exit heads are new (and the classifier, when the checkpoint has none). A classifier
        of another width than ``num_labels`` is an error unless ``ignore_mismatched_sizes=True`` is passed, which
        re-initializes it.

        Args:
            pretrained_model_name_or_path: Hub name or local folder.
            num_labels: Number of classes.
            **kwargs: Exit fields (``exit_policy=...``) and ``from_pretrained`` options.
        """
        from transformers import AutoConfig

        settings, kwargs = split_exit_settings(kwargs)
        hub = {
            k: kwargs[k] for k in ("cache_dir", "local_files_only", "token", "revision", "subfolder") if k in kwargs
        }
        source = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub)
        family = cls.adapter_class.model_type
        if source.model_type not in (family, cls.config_class.model_type):
            raise ValueError(
                f"{pretrained_model_name_or_path!r} is a {source.model_type!r} checkpoint; {cls.__name__} loads "
                f"{family!r} or {cls.config_class.model_type!r} checkpoints. Use "
                "adaptive_hf.AutoEarlyExitModelForImageClassification for any supported image family, or "
                "EarlyExitTimmForImageClassification.from_timm for timm models."
            )
        values = source.to_dict()
        is_classifier = isinstance(source, cls.config_class) or any(
            name.endswith("ForImageClassification") for name in source.architectures or []
        )
        if num_labels is not None and num_labels != source.num_labels:
            if is_classifier and not kwargs.get("ignore_mismatched_sizes"):
                raise ValueError(
                    f"`num_labels={num_labels}` disagrees with the checkpoint's classifier (num_labels="
                    f"{source.num_labels}). Pass ignore_mismatched_sizes=True to re-initialize the classifier."
                )
            values.pop("id2label", None)
            values.pop("label2id", None)
            values["num_labels"] = num_labels
        for key in ("model_type", "transformers_version", "architectures", "auto_map"):
            values.pop(key, None)
        values.update(settings)
        config = cls.config_class(**values)
        return cls.from_pretrained(pretrained_model_name_or_path, config=config, **kwargs)

    @classmethod
    def from_vit(cls, pretrained_model_name_or_path, num_labels: int | None = None, **kwargs: Any):
        """Alias of :meth:`from_plain`, the name it had when only ViT had an HF image class.

        Args:
            pretrained_model_name_or_path: Hub name or local folder.
            num_labels: Number of classes.
            **kwargs: Exit fields and ``from_pretrained`` options.
        """
        return cls.from_plain(pretrained_model_name_or_path, num_labels=num_labels, **kwargs)


def make_hf_vision_early_exit_model_class(adapter: type[HFVisionAdapter], config_class: type) -> type:
    """Builds ``EarlyExit<Arch>ForImageClassification`` for an HF image family and its early-exit config class.

    Args:
        adapter: The family's :class:`~adaptive_hf.core.adapters.hf_vision.HFVisionAdapter`.
        config_class: The family's early-exit config class.
    """
    name = f"EarlyExit{adapter.class_prefix}ForImageClassification"
    namespace = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": (
            f"Early exits on a {adapter.family} image classifier; see :class:`HFVisionEarlyExitMixin`.\n\n"
            "    Args:\n        config: The family's early-exit config.\n"
        ),
        "config_class": config_class,
        "adapter_class": adapter,
        "base_model_prefix": adapter.pretrained_model_class.base_model_prefix,
        "input_modalities": ("image",),
    }
    return type(name, (HFVisionEarlyExitMixin, adapter.pretrained_model_class), namespace)


EarlyExitViTForImageClassification = make_hf_vision_early_exit_model_class(HFViTAdapter, HF_VISION_EXIT_CONFIGS["vit"])
EarlyExitDinov2ForImageClassification = make_hf_vision_early_exit_model_class(
    Dinov2Adapter, HF_VISION_EXIT_CONFIGS["dinov2"]
)
EarlyExitConvNextForImageClassification = make_hf_vision_early_exit_model_class(
    ConvNextAdapter, HF_VISION_EXIT_CONFIGS["convnext"]
)
EarlyExitConvNextV2ForImageClassification = make_hf_vision_early_exit_model_class(
    ConvNextV2Adapter, HF_VISION_EXIT_CONFIGS["convnextv2"]
)
# model_type of the family -> its early-exit model class (the registry's early-exit builder adds new families).
HF_VISION_EXIT_MODELS: dict[str, type] = {
    cls.adapter_class.model_type: cls
    for cls in (
        EarlyExitViTForImageClassification,
        EarlyExitDinov2ForImageClassification,
        EarlyExitConvNextForImageClassification,
        EarlyExitConvNextV2ForImageClassification,
    )
}
