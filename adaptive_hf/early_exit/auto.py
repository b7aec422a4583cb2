"""``AutoEarlyExitModelForSequenceClassification``, and the early-exit family builder for the registry."""

from __future__ import annotations

from transformers import AutoModelForSequenceClassification

from ..core.adapters.base import BackboneAdapter
from ..core.auto import AutoAdaptiveModel
from ..core.registry import build_family_config, build_family_model, register_family_builder, runs_text_layers
from . import config as early_exit_config
from . import modeling as early_exit_modeling
from .config import EXIT_FIELDS, EXIT_RENAMED_FIELDS


class AutoEarlyExitModelForSequenceClassification(AutoAdaptiveModel):
    """Loads any supported encoder checkpoint as an ``EarlyExit<Arch>ForSequenceClassification``.

    ``from_pretrained(name_or_path, num_labels=..., **exit_settings)``: plain checkpoints get new exit heads; saved
    early-exit checkpoints reload with ``exit_settings`` applied on top.
    """

    technique = "early_exit"
    setting_fields = EXIT_FIELDS + tuple(EXIT_RENAMED_FIELDS)  # the deprecated names map to the new ones


def supports_early_exit(adapter: type[BackboneAdapter]) -> bool:
    """Whether text early exits apply to a family: a text adapter that runs layers on a ``PreTrainedModel`` base."""
    return runs_text_layers(adapter)


def build_early_exit_classes(adapter: type[BackboneAdapter]) -> list[tuple[str, type, type, type]]:
    """The family's ``EarlyExit<Arch>Config`` and ``EarlyExit<Arch>ForSequenceClassification`` (built once).

    New classes are also set on the technique's config and modeling modules, where ``auto_map`` names them.

    Args:
        adapter: The family's adapter class.
    """
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
