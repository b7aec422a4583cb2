"""``AutoHaltingModelForSequenceClassification``, and the halting family builder for the registry."""

from __future__ import annotations

from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

from ..core.adapters.base import BackboneAdapter
from ..core.auto import AutoAdaptiveModel
from ..core.registry import register, register_family_builder
from . import config as halting_config
from . import modeling as halting_modeling
from .config import HALTING_FIELDS
from .vision import HaltingTimmConfig, HaltingTimmForImageClassification


class AutoHaltingModelForSequenceClassification(AutoAdaptiveModel):
    """Loads any supported encoder checkpoint as a ``Halting<Arch>ForSequenceClassification``.

    ``from_pretrained(name_or_path, num_labels=..., halting="act", halting_granularity="token", ...)``.
    """

    technique = "halting"
    setting_fields = tuple(HALTING_FIELDS)


def supports_halting(adapter: type[BackboneAdapter]) -> bool:
    """Whether text halting applies to a family: a text adapter that runs layers on a ``PreTrainedModel`` base.

    Per-token halting further needs ``supports_token_subsets`` (checked by the config).
    """
    return adapter.modality == "text" and adapter.runs_layers and adapter.pretrained_model_class is not None


def build_halting_classes(adapter: type[BackboneAdapter]) -> list[tuple[str, type, type, type]]:
    """The family's ``Halting<Arch>Config`` and ``Halting<Arch>ForSequenceClassification`` (built once).

    Args:
        adapter: The family's adapter class.
    """
    if not supports_halting(adapter):
        return []
    model_type = adapter.model_type
    config_class = halting_config.HALTING_CONFIGS.get(model_type)
    if config_class is None or config_class.backbone_adapter is not adapter:
        config_class = halting_config.make_halting_config_class(adapter)
        setattr(halting_config, config_class.__name__, config_class)
        halting_config.HALTING_CONFIGS[model_type] = config_class
    model_class = halting_modeling.HALTING_MODELS.get(model_type)
    if model_class is None or model_class.config_class is not config_class:
        model_class = halting_modeling.make_halting_model_class(adapter, config_class)
        setattr(halting_modeling, model_class.__name__, model_class)
        halting_modeling.HALTING_MODELS[model_type] = model_class
    return [("halting", config_class, model_class, AutoModelForSequenceClassification)]


register_family_builder("halting", build_halting_classes)
register("halting", "timm", HaltingTimmConfig, HaltingTimmForImageClassification, AutoModelForImageClassification)
