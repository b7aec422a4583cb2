"""``AutoHaltingModelForSequenceClassification``, and the halting family builder for the registry."""

from __future__ import annotations

from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

from ..core.adapters.base import BackboneAdapter
from ..core.auto import AutoAdaptiveModel
from ..core.registry import (
    build_family_config,
    build_family_model,
    register,
    register_family_builder,
    runs_text_layers,
)
from . import config as halting_config
from . import hf_vision as halting_hf_vision
from . import modeling as halting_modeling
from .config import HALTING_FIELDS, HALTING_RENAMED_FIELDS
from .hf_vision import supports_hf_image_halting
from .vision import HaltingTimmConfig, HaltingTimmForImageClassification


class AutoHaltingModelForSequenceClassification(AutoAdaptiveModel):
    """Loads any supported encoder checkpoint as a ``Halting<Arch>ForSequenceClassification``.

    ``from_pretrained(name_or_path, num_labels=..., halting="act", halting_granularity="token", ...)``.
    """

    technique = "halting"
    setting_fields = tuple(HALTING_FIELDS) + tuple(HALTING_RENAMED_FIELDS)  # deprecated names map to the new ones


class AutoHaltingModelForImageClassification(AutoAdaptiveModel):
    """Loads a supported Hugging Face image checkpoint (DINOv2, ...) as a ``Halting<Arch>ForImageClassification``.

    ``from_pretrained(name_or_path, num_labels=..., halting="act", halting_granularity="token", ...)``: plain
    checkpoints get new halting units (the stock classifier is kept); saved halting checkpoints reload as saved.
    """

    technique = "halting"
    setting_fields = tuple(HALTING_FIELDS)
    modality = "image"
    task_suffix = "ForImageClassification"


def build_image_halting_classes(adapter: type[BackboneAdapter]) -> list[tuple[str, type, type, type]]:
    """The image family's ``Halting<Arch>Config`` and ``Halting<Arch>ForImageClassification`` (built once).

    Args:
        adapter: The family's adapter class (an HF vision transformer that runs layers on token subsets).
    """
    config_class = build_family_config(
        halting_hf_vision.HF_VISION_HALTING_CONFIGS,
        halting_hf_vision,
        adapter,
        halting_hf_vision.make_hf_vision_halting_config_class,
    )
    model_class = build_family_model(
        halting_hf_vision.HF_VISION_HALTING_MODELS,
        adapter.model_type,
        halting_hf_vision,
        config_class,
        lambda: halting_hf_vision.make_hf_vision_halting_model_class(adapter, config_class),
    )
    return [("halting", config_class, model_class, AutoModelForImageClassification)]


def supports_halting(adapter: type[BackboneAdapter]) -> bool:
    """Whether text halting applies to a family: a text adapter that runs layers on a ``PreTrainedModel`` base.

    Per-token halting further needs ``supports_token_subsets`` (checked by the config).
    """
    return runs_text_layers(adapter)


def build_halting_classes(adapter: type[BackboneAdapter]) -> list[tuple[str, type, type, type]]:
    """The family's ``Halting<Arch>Config`` and ``Halting<Arch>ForSequenceClassification`` (built once).

    HF image families that run layers on token subsets (DINOv2) get ``Halting<Arch>ForImageClassification``.

    Args:
        adapter: The family's adapter class.
    """
    if supports_hf_image_halting(adapter):
        return build_image_halting_classes(adapter)
    if not supports_halting(adapter):
        return []
    config_class = build_family_config(
        halting_config.HALTING_CONFIGS, halting_config, adapter, halting_config.make_halting_config_class
    )
    model_class = build_family_model(
        halting_modeling.HALTING_MODELS,
        adapter.model_type,
        halting_modeling,
        config_class,
        lambda: halting_modeling.make_halting_model_class(adapter, config_class),
    )
    return [("halting", config_class, model_class, AutoModelForSequenceClassification)]


register_family_builder("halting", build_halting_classes)
register("halting", "timm", HaltingTimmConfig, HaltingTimmForImageClassification, AutoModelForImageClassification)
