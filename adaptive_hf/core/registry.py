"""Technique x architecture registry, Auto-class registration, and the ``AutoEarlyExit...`` entry point.

Importing ``adaptive_hf`` calls :func:`register_builtin` so ``AutoConfig`` and the Auto model classes know every
adaptive config and model.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, AutoModelForSequenceClassification

from .backbones import TEXT_ENCODER_ADAPTERS, TextEncoderAdapter, get_text_encoder_adapter

# (technique, backbone model_type) -> (config class, model class, Auto model class)
REGISTRY: dict[tuple[str, str], tuple[type, type, Any]] = {}


def register(technique: str, backbone_model_type: str, config_class: type, model_class: type, auto_class) -> None:
    """Records a technique's classes for a backbone family and registers them with the Auto classes.

    Args:
        technique: E.g. ``"early_exit"``.
        backbone_model_type: The backbone family's ``model_type``, e.g. ``"bert"``.
        config_class: The technique's config class for that family.
        model_class: The technique's model class for that family.
        auto_class: The Auto model class to register ``model_class`` with.
    """
    REGISTRY[(technique, backbone_model_type)] = (config_class, model_class, auto_class)
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    auto_class.register(config_class, model_class, exist_ok=True)


def lookup(technique: str, backbone_model_type: str) -> tuple[type, type]:
    """The ``(config class, model class)`` of a technique for a backbone ``model_type``.

    Args:
        technique: E.g. ``"early_exit"``.
        backbone_model_type: E.g. ``"bert"``; an adaptive model_type such as ``"early_exit_bert"`` also works.
    """
    for (registered_technique, family), (config_class, model_class, _) in REGISTRY.items():
        if registered_technique == technique and backbone_model_type in (family, config_class.model_type):
            return config_class, model_class
    get_text_encoder_adapter(backbone_model_type, technique.replace("_", " "))  # raises the helpful error
    raise ValueError(f"No {technique} classes are registered for model_type={backbone_model_type!r}.")


def register_text_encoder(adapter: type[TextEncoderAdapter]) -> tuple[type, type]:
    """Adds a text encoder family: builds and registers its early-exit config and model classes.

    Args:
        adapter: A :class:`TextEncoderAdapter` subclass describing the family.

    Returns:
        The new ``(config class, model class)``.
    """
    from ..early_exit.config import make_early_exit_config_class
    from ..early_exit.modeling import make_early_exit_model_class

    TEXT_ENCODER_ADAPTERS[adapter.model_type] = adapter
    config_class = make_early_exit_config_class(adapter)
    model_class = make_early_exit_model_class(adapter, config_class)
    register("early_exit", adapter.model_type, config_class, model_class, AutoModelForSequenceClassification)
    return config_class, model_class


def register_builtin() -> None:
    """Registers every built-in technique and family with the Auto classes."""
    from ..early_exit.modeling import EARLY_EXIT_MODELS
    from ..halting.modeling import HALTING_MODELS

    for technique, models in (("early_exit", EARLY_EXIT_MODELS), ("halting", HALTING_MODELS)):
        for model_type, model_class in models.items():
            register(technique, model_type, model_class.config_class, model_class, AutoModelForSequenceClassification)
    from transformers import AutoModelForImageClassification

    from ..halting.vision import HaltingTimmForImageClassification

    register(
        "halting",
        "timm",
        HaltingTimmForImageClassification.config_class,
        HaltingTimmForImageClassification,
        AutoModelForImageClassification,
    )
