"""Auto-class registration of the switch-MoE configs and models: the MoE family builder for the registry."""

from __future__ import annotations

import warnings

import transformers

from ..core.adapters.base import BackboneAdapter
from ..core.registry import build_family_config, build_family_model, register, register_family, register_family_builder
from . import config as moe_config
from . import modeling as moe_modeling
from .config import supports_moe
from .modeling import auto_class_name_for
from .timm_config import SwitchMoETimmConfig
from .timm_modeling import SwitchMoETimmForImageClassification


def _registrations(config_class: type, model_classes: list[type]) -> list[tuple[str, type, type, type]]:
    # `SwitchMoE<Task class>` ends like its task class, so it names the same Auto class.
    registrations = []
    for model_class in model_classes:
        auto_name = auto_class_name_for(model_class.__name__)
        registrations.append((f"switch_moe:{auto_name}", config_class, model_class, getattr(transformers, auto_name)))
    return registrations


def build_moe_classes(adapter: type[BackboneAdapter]) -> list[tuple[str, type, type, type]]:
    """The family's ``SwitchMoE<Arch>Config`` and one ``SwitchMoE<StockClass>`` per task class (built once).

    New classes are also set on ``adaptive_hf.moe.config`` / ``adaptive_hf.moe.modeling``, where ``auto_map``
    names them.

    Args:
        adapter: The family's adapter class.
    """
    if not supports_moe(adapter):
        return []
    config_class = build_family_config(
        moe_config.SWITCH_MOE_CONFIGS, moe_config, adapter, moe_config.make_moe_config_class
    )
    model_classes = [
        build_family_model(
            moe_modeling.SWITCH_MOE_MODELS,
            f"SwitchMoE{task_class.__name__}",
            moe_modeling,
            config_class,
            lambda task_class=task_class: moe_modeling.make_moe_model_class(adapter, task_class, config_class),
        )
        for task_class in adapter.task_classes
    ]
    return _registrations(config_class, model_classes)


def register_switch_moe() -> None:
    """Registers the timm ``SwitchMoETimmForImageClassification`` (the Hugging Face families come with
    ``register_family``)."""
    for key, config_class, model_class, auto_class in _registrations(
        SwitchMoETimmConfig, [SwitchMoETimmForImageClassification]
    ):
        register(key, "timm", config_class, model_class, auto_class)


def register_moe_family(adapter: type[BackboneAdapter]) -> tuple[type, list[type]]:
    """Deprecated alias of ``adaptive_hf.register_family`` (which also gives the family every other technique).

    Args:
        adapter: The family's adapter, with an ``ffn_slot`` and ``task_classes``.

    Returns:
        ``(config class, [model classes])``.
    """
    warnings.warn(
        "register_moe_family is deprecated and will be removed in the next release; use "
        "adaptive_hf.register_family, which gives the family every compatible technique.",
        FutureWarning,
        stacklevel=2,
    )
    if not supports_moe(adapter):
        raise ValueError(f"{adapter.__name__} needs an `ffn_slot` and `task_classes` for switch MoE.")
    register_family(adapter)
    config_class = moe_config.SWITCH_MOE_CONFIGS[adapter.model_type]
    models = [moe_modeling.SWITCH_MOE_MODELS[f"SwitchMoE{task.__name__}"] for task in adapter.task_classes]
    return config_class, models


register_family_builder("switch_moe", build_moe_classes)
register_switch_moe()
