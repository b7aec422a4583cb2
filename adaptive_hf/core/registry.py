"""Family x technique registry: ``register_family(adapter)`` gives a backbone family every compatible technique.

``core`` imports no technique. Each technique registers a *family builder* from its own module
(``register_family_builder("early_exit", build)``); :func:`register_family` records the family's adapter and calls
every builder, which returns the config and model classes it made for the family (or none, when the family lacks
what the technique needs). Each class is registered with ``AutoConfig`` and its Auto model class, and saved models
carry an ``auto_map``. A builder registered after some families replays over them, so import order does not matter.

Importing ``adaptive_hf`` registers the built-in families (``core.adapters.builtin.BUILTIN_ADAPTERS``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from transformers import AutoConfig

from .adapters.base import BackboneAdapter, add_adapter, check_adapter
from .adapters.builtin import BUILTIN_ADAPTERS
from .adapters.text import get_text_encoder_adapter

# (technique key, backbone model_type) -> (config class, model class, Auto model class)
REGISTRY: dict[tuple[str, str], tuple[type, type, Any]] = {}
# A builder takes an adapter class and returns (technique key, config class, model class, Auto model class) tuples.
FamilyBuilder = Callable[[type[BackboneAdapter]], list[tuple[str, type, type, Any]]]
FAMILY_BUILDERS: dict[str, FamilyBuilder] = {}
# model_type -> adapter, for every family passed to register_family.
REGISTERED_FAMILIES: dict[str, type[BackboneAdapter]] = {}


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
    raise ValueError(
        f"No {technique} classes are registered for model_type={backbone_model_type!r}: its adapter lacks what "
        f"{technique} needs, or the family was not passed to adaptive_hf.register_family."
    )


def runs_text_layers(adapter: type[BackboneAdapter]) -> bool:
    """Whether a family is a text adapter that runs layers on a ``PreTrainedModel`` base (what the per-layer text
    techniques, early exits and halting, need).

    Args:
        adapter: The family's adapter class.
    """
    return adapter.modality == "text" and adapter.runs_layers and adapter.pretrained_model_class is not None


def _build_once(built: dict[str, type], key: str, module: Any, is_current: Callable[[type], bool], make) -> type:
    cls = built.get(key)
    if cls is None or not is_current(cls):
        cls = make()
        setattr(module, cls.__name__, cls)  # where auto_map finds it
        built[key] = cls
    return cls


def build_family_config(
    built: dict[str, type], module: Any, adapter: type[BackboneAdapter], make: Callable[[type], type]
) -> type:
    """A technique's config class for a family, made only when ``built`` lacks one made for this very adapter.

    A new class is recorded in ``built`` under the family's model type and set on ``module`` under its name.

    Args:
        built: The technique's config classes made so far, by model type.
        module: The technique's config module.
        adapter: The family's adapter class.
        make: Makes the class from the adapter.
    """
    return _build_once(
        built, adapter.model_type, module, lambda cls: cls.backbone_adapter is adapter, lambda: make(adapter)
    )


def build_family_model(
    built: dict[str, type], key: str, module: Any, config_class: type, make: Callable[[], type]
) -> type:
    """A technique's model class for a family, made only when ``built`` lacks one for ``config_class``.

    A new class is recorded in ``built`` under ``key`` and set on ``module`` under its name.

    Args:
        built: The technique's model classes made so far.
        key: The class's key in ``built`` (the family's model type, or the class name).
        module: The technique's modeling module.
        config_class: The family's config class of the technique.
        make: Makes the class.
    """
    return _build_once(built, key, module, lambda cls: cls.config_class is config_class, make)


def _build(technique: str, builder: FamilyBuilder, adapter: type[BackboneAdapter]) -> list[tuple[type, type]]:
    built = []
    for key, config_class, model_class, auto_class in builder(adapter):
        register(key, adapter.model_type, config_class, model_class, auto_class)
        built.append((config_class, model_class))
    return built


def register_family_builder(technique: str, builder: FamilyBuilder) -> None:
    """Lets ``technique`` build its classes for every registered backbone family, now and later.

    Args:
        technique: The technique's name, e.g. ``"early_exit"``.
        builder: Called with each family's adapter class; returns ``(technique key, config class, model class, Auto
            model class)`` tuples, empty when the family is not compatible with the technique.
    """
    FAMILY_BUILDERS[technique] = builder
    for adapter in REGISTERED_FAMILIES.values():
        _build(technique, builder, adapter)


def register_family(adapter: type[BackboneAdapter]) -> dict[str, list[tuple[type, type]]]:
    """Adds a backbone family: every technique compatible with its adapter gets config and model classes for it.

    Early exits and halting need an adapter that runs layers (``runs_layers``; per-token halting also
    ``supports_token_subsets``); switch MoE needs an ``ffn_slot`` and ``task_classes``. The classes are registered
    with the Auto classes. A saved model of a family registered this way reloads with ``trust_remote_code`` only in
    a process that runs the same registration first.

    Args:
        adapter: A :class:`~adaptive_hf.core.adapters.base.BackboneAdapter` subclass describing the family.

    Returns:
        Technique -> the ``(config class, model class)`` pairs built for the family.
    """
    check_adapter(adapter)
    built = {technique: _build(technique, builder, adapter) for technique, builder in FAMILY_BUILDERS.items()}
    built = {technique: classes for technique, classes in built.items() if classes}
    if FAMILY_BUILDERS and not built:
        raise ValueError(
            f"No technique is compatible with {adapter.__name__}: early exits and halting need `runs_layers = True` "
            "(embed, run_layer, pool, layer_flops), switch MoE needs `ffn_slot` and `task_classes`."
        )
    add_adapter(adapter)
    REGISTERED_FAMILIES[adapter.model_type] = adapter
    return built


def register_text_encoder(adapter: type[BackboneAdapter]) -> tuple[type, type]:
    """Deprecated alias of :func:`register_family` (which gives the family every technique, not only early exits).

    Args:
        adapter: A ``TextEncoderAdapter`` subclass describing the family.

    Returns:
        The family's early-exit ``(config class, model class)``.
    """
    warnings.warn(
        "register_text_encoder is deprecated and will be removed in the next release; use "
        "adaptive_hf.register_family, which gives the family every compatible technique.",
        FutureWarning,
        stacklevel=2,
    )
    register_family(adapter)
    return lookup("early_exit", adapter.model_type)


def register_builtin_families() -> None:
    """Registers every built-in family (with every technique whose builder is registered)."""
    for adapter in BUILTIN_ADAPTERS:
        register_family(adapter)
