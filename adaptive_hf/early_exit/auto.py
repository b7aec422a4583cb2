"""``AutoEarlyExitModelForSequenceClassification``, and the early-exit family builder for the registry."""

from __future__ import annotations

from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

from ..core.adapters.base import BackboneAdapter
from ..core.adapters.hf_vision import HFVisionAdapter
from ..core.auto import AutoAdaptiveModel
from ..core.registry import build_family_config, build_family_model, register_family_builder, runs_text_layers
from . import config as early_exit_config
from . import hf_vision_modeling, vision_config
from . import modeling as early_exit_modeling
from .config import EXIT_FIELDS, EXIT_RENAMED_FIELDS


class AutoEarlyExitModelForSequenceClassification(AutoAdaptiveModel):
    """Loads any supported encoder checkpoint as an ``EarlyExit<Arch>ForSequenceClassification``.

    ``from_pretrained(name_or_path, num_labels=..., **exit_settings)``: plain checkpoints get new exit heads; saved
    early-exit checkpoints reload with ``exit_settings`` applied on top.
    """

    technique = "early_exit"
    setting_fields = EXIT_FIELDS + tuple(EXIT_RENAMED_FIELDS)  # the deprecated names map to the new ones


class AutoEarlyExitModelForImageClassification(AutoAdaptiveModel):
    """Loads any supported Hugging Face image checkpoint (ViT, DINOv2, ConvNeXt v1/v2, ...) as an
    ``EarlyExit<Arch>ForImageClassification``.

    ``from_pretrained(name_or_path, num_labels=..., **exit_settings)``: plain checkpoints (the base model or the
    family's ``...ForImageClassification``) get new intermediate exit heads, the stock classifier being the final
    exit; saved early-exit checkpoints reload with ``exit_settings`` applied on top.
    """

    technique = "early_exit"
    # The timm-only fields (exit_granularity, eval_chunk_elements) are not settings of these families.
    setting_fields = EXIT_FIELDS + tuple(EXIT_RENAMED_FIELDS) + ("exit_dropout", "image_mean", "image_std")
    modality = "image"
    task_suffix = "ForImageClassification"


def supports_early_exit(adapter: type[BackboneAdapter]) -> bool:
    """Whether early exits apply to a family: a text adapter that runs layers on a ``PreTrainedModel`` base, or an
    :class:`~adaptive_hf.core.adapters.hf_vision.HFVisionAdapter` image family."""
    return runs_text_layers(adapter) or runs_hf_image_layers(adapter)


def runs_hf_image_layers(adapter: type[BackboneAdapter]) -> bool:
    """Whether a family is a Hugging Face image family whose adapter runs its units (``EarlyExit<Arch>For
    ImageClassification``).

    Args:
        adapter: The family's adapter class.
    """
    return (
        adapter.modality == "image"
        and adapter.runs_layers
        and issubclass(adapter, HFVisionAdapter)
        and adapter.pretrained_model_class is not None
    )


def build_image_early_exit_classes(adapter: type[HFVisionAdapter]) -> list[tuple[str, type, type, type]]:
    """The image family's ``EarlyExit<Arch>Config`` and ``EarlyExit<Arch>ForImageClassification`` (built once).

    Args:
        adapter: The family's :class:`~adaptive_hf.core.adapters.hf_vision.HFVisionAdapter`.
    """
    config_class = build_family_config(
        vision_config.HF_VISION_EXIT_CONFIGS, vision_config, adapter, vision_config.make_hf_vision_exit_config_class
    )
    model_class = build_family_model(
        hf_vision_modeling.HF_VISION_EXIT_MODELS,
        adapter.model_type,
        hf_vision_modeling,
        config_class,
        lambda: hf_vision_modeling.make_hf_vision_early_exit_model_class(adapter, config_class),
    )
    return [("early_exit", config_class, model_class, AutoModelForImageClassification)]


def build_early_exit_classes(adapter: type[BackboneAdapter]) -> list[tuple[str, type, type, type]]:
    """The family's ``EarlyExit<Arch>Config`` and ``EarlyExit<Arch>ForSequenceClassification`` (text) or
    ``EarlyExit<Arch>ForImageClassification`` (HF image families), built once.

    New classes are also set on the technique's config and modeling modules, where ``auto_map`` names them.

    Args:
        adapter: The family's adapter class.
    """
    if runs_hf_image_layers(adapter):
        return build_image_early_exit_classes(adapter)
    if not supports_early_exit(adapter):
        return []
    config_class = build_family_config(
        early_exit_config.EARLY_EXIT_CONFIGS,
        early_exit_config,
        adapter,
        early_exit_config.make_early_exit_config_class,
    )
    model_class = build_family_model(
        early_exit_modeling.EARLY_EXIT_MODELS,
        adapter.model_type,
        early_exit_modeling,
        config_class,
        lambda: early_exit_modeling.make_early_exit_model_class(adapter, config_class),
    )
    return [("early_exit", config_class, model_class, AutoModelForSequenceClassification)]


register_family_builder("early_exit", build_early_exit_classes)
