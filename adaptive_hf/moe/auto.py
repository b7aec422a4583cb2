"""Auto-class registration of the switch-MoE configs and models, and adding new families."""

from __future__ import annotations

import transformers

from ..core.registry import register
from . import config as moe_config
from . import modeling as moe_modeling
from .families import MOE_FAMILIES, MoEFamily, auto_class_name_for
from .timm_config import SwitchMoETimmConfig
from .timm_modeling import SwitchMoETimmForImageClassification


def _register_classes(model_type: str, config_class: type, model_classes: list[type]) -> list[type]:
    # `SwitchMoE<Task class>` ends like its task class, so it names the same Auto class.
    for model_class in model_classes:
        auto_name = auto_class_name_for(model_class.__name__)
        register(f"switch_moe:{auto_name}", model_type, config_class, model_class, getattr(transformers, auto_name))
    return model_classes


def _register_family_classes(family: type[MoEFamily]) -> list[type]:
    return _register_classes(
        family.model_type,
        moe_config.SWITCH_MOE_CONFIGS[family.model_type],
        [moe_modeling.SWITCH_MOE_MODELS[f"SwitchMoE{task_class.__name__}"] for task_class in family.task_classes],
    )


def register_switch_moe() -> None:
    """Registers every built-in ``SwitchMoE<Arch>Config`` and ``SwitchMoE<Arch><Task>`` (timm ViTs included) with the
    Auto classes."""
    for family in MOE_FAMILIES.values():
        _register_family_classes(family)
    _register_classes("timm", SwitchMoETimmConfig, [SwitchMoETimmForImageClassification])


def register_moe_family(family: type[MoEFamily]) -> tuple[type, list[type]]:
    """Adds an architecture family to switch MoE: builds and registers its config and model classes.

    The new classes live in ``adaptive_hf.moe.config`` / ``adaptive_hf.moe.modeling``; a saved model of a family
    registered this way reloads with ``trust_remote_code`` only where the same registration code runs first.

    Args:
        family: A :class:`~adaptive_hf.moe.families.MoEFamily` subclass (``model_type``, ``class_prefix``,
            ``config_class``, ``task_classes``, and the layer/FFN paths ``layers_attr``, ``ffn_attr``,
            ``up_attr``, ``down_attr``, or overrides of ``layers``, ``dense_ffn_weights``, ``install``).

    Returns:
        ``(config class, [model classes])``.
    """
    MOE_FAMILIES[family.model_type] = family
    config_class = moe_config.make_moe_config_class(family)
    setattr(moe_config, config_class.__name__, config_class)
    moe_config.SWITCH_MOE_CONFIGS[family.model_type] = config_class
    for task_class in family.task_classes:
        model_class = moe_modeling.make_moe_model_class(family, task_class, config_class)
        setattr(moe_modeling, model_class.__name__, model_class)
        moe_modeling.SWITCH_MOE_MODELS[model_class.__name__] = model_class
    return config_class, _register_family_classes(family)
