"""Validation helpers shared by every technique's config.

Configs validate in ``__post_init__`` (and again at each forward for the runtime knobs), so a bad value fails
early with an error that names the field and the values it accepts.
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any


def check_choice(field: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Raises ``ValueError`` unless ``value`` is one of ``allowed``.

    Args:
        field: Name of the config field, used in the message.
        value: The value to check.
        allowed: The accepted values.

    Returns:
        ``value`` unchanged.
    """
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"`{field}` must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}.")
    return value


def check_number(
    field: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
) -> Any:
    """Raises ``TypeError``/``ValueError`` unless ``value`` is a finite number in the given range.

    Args:
        field: Name of the config field, used in the message.
        value: The value to check.
        low: Lower bound, or ``None`` for none.
        high: Upper bound, or ``None`` for none.
        low_inclusive: Whether ``low`` itself is allowed.
        high_inclusive: Whether ``high`` itself is allowed.
        integer: Whether the value must be an ``int``.

    Returns:
        ``value`` unchanged.
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise TypeError(f"`{field}` must be {kind}; got {value!r} ({type(value).__name__}).")
    if not integer and not math.isfinite(value):
        raise ValueError(f"`{field}` must be finite; got {value!r}.")
    left = "[" if low_inclusive else "("
    right = "]" if high_inclusive else ")"
    interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        raise ValueError(f"`{field}` must be {kind} in {interval}; got {value!r}.")
    return value


def normalize_layer_list(
    field: str, layers: Sequence[int] | None, num_layers: int, *, include_last: bool
) -> list[int]:
    """Validates a list of 1-based layer indices and returns it sorted.

    Args:
        field: Name of the config field, used in the message.
        layers: 1-based layer indices, or ``None`` for every layer.
        num_layers: Number of layers of the backbone.
        include_last: Whether the last layer is appended when missing (it must always carry an exit).

    Returns:
        The sorted list of layer indices.
    """
    if layers is None:
        return list(range(1, num_layers + 1))
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise TypeError(f"`{field}` must be a list of 1-based layer indices; got {layers!r}.")
    if len(layers) == 0:
        raise ValueError(f"`{field}` must not be empty; pass None for every layer 1..{num_layers}.")
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise TypeError(f"`{field}` entries must be integers in 1..{num_layers}; got {layer!r}.")
        if not 1 <= layer <= num_layers:
            raise ValueError(f"`{field}` entries must be 1-based layer indices in 1..{num_layers}; got {layer}.")
    duplicates = sorted({layer for layer in layers if list(layers).count(layer) > 1})
    if duplicates:
        raise ValueError(f"`{field}` must not repeat a layer; {duplicates} appear more than once.")
    result = sorted(layers)
    if include_last and result[-1] != num_layers:
        result.append(num_layers)
    return result


def make_family_config_class(
    adapter,
    *,
    class_name: str,
    model_type: str,
    mixin: type,
    fields: dict[str, tuple[str, Any]],
    module: str,
) -> type:
    """Builds a technique's config class for one backbone family.

    The class subclasses the family's own config (so the stock backbone builds from it and plain checkpoints load
    into it) and adds the technique's fields as dataclass fields. A field named in the adapter's
    ``config_defaults`` takes the family's default instead of the technique's.

    Args:
        adapter: The family's backbone adapter class (``config_class`` and ``model_type`` are read from it).
        class_name: Name of the new class, e.g. ``"HaltingBertConfig"``.
        model_type: Its ``model_type``, e.g. ``"halting_bert"``.
        mixin: The technique's mixin with ``__post_init__`` validation and helpers.
        fields: ``name -> (annotation, default)`` of the technique's fields.
        module: ``__module__`` of the new class (the technique's config module, so the Hub bundle includes it).
    """
    namespace = {
        "__module__": module,
        "__qualname__": class_name,
        "__doc__": f"{adapter.config_class.__name__} plus the fields of :class:`{mixin.__name__}`.",
        "__annotations__": {name: annotation for name, (annotation, _) in fields.items()},
        "model_type": model_type,
        "backbone_adapter": adapter,
        **{name: default for name, (_, default) in fields.items()},
        **{name: value for name, value in adapter.config_defaults.items() if name in fields},
    }
    return type(class_name, (mixin, adapter.config_class), namespace)


# Structural fields are frozen per config object once a model is built from it. The registry lives outside the
# config's __dict__ so that it is never serialized into config.json and a deep copy starts unfrozen (a copy is a new
# config, free to build another model).
_FROZEN: dict[int, tuple[weakref.ref, dict[str, Any]]] = {}


def _forget(config_id: int) -> Callable[[weakref.ref], None]:
    def callback(_: weakref.ref) -> None:
        _FROZEN.pop(config_id, None)

    return callback


def frozen_fields(config: Any) -> dict[str, Any]:
    """The structural fields frozen on ``config`` and the values they were frozen with (empty when not frozen).

    Args:
        config: A config.
    """
    entry = _FROZEN.get(id(config))
    if entry is None or entry[0]() is not config:
        return {}
    return entry[1]


def freeze_structural_fields(config: Any, fields: Iterable[str]) -> None:
    """Fixes ``fields`` of ``config`` at their current values: the model built from it depends on them.

    Setting one of them to another value afterwards raises ``ValueError`` (for configs with
    :class:`FrozenStructureMixin`), and :func:`check_structure_unchanged` catches edits made in place.

    Args:
        config: The config a model was just built from.
        fields: The structural field names (the technique's ``TechniqueSpec.structural_fields``); names the config
            does not have are skipped.
    """
    present = {name: copy.deepcopy(getattr(config, name)) for name in fields if hasattr(config, name)}
    present.update(frozen_fields(config))
    _FROZEN[id(config)] = (weakref.ref(config, _forget(id(config))), present)


def _same_value(first: Any, second: Any) -> bool:
    if isinstance(first, (list, tuple)) and isinstance(second, (list, tuple)):
        return list(first) == list(second)
    return first == second


def _rebuild_error(config: Any, name: str, built_with: Any, new_value: Any) -> ValueError:
    return ValueError(
        f"`{name}` is a structural field: the model was built with {name}={built_with!r}, and changing it to "
        f"{new_value!r} would not change the model's modules. Rebuild the model instead, e.g. "
        f"`model = type(model).from_pretrained(folder, {name}=...)` or build it from a copy of the config "
        f"(`config = copy.deepcopy(model.config); config.{name} = ...; type(model)(config)`). Runtime knobs (for "
        f"{type(config).__name__}) stay changeable."
    )


def check_structure_unchanged(config: Any) -> None:
    """Raises ``ValueError`` when a frozen structural field was changed in place (e.g. ``exit_layers.append(5)``).

    Called at every forward, next to the runtime-knob validation.

    Args:
        config: The config of a built model.
    """
    for name, built_with in frozen_fields(config).items():
        current = getattr(config, name, None)
        if not _same_value(current, built_with):
            raise _rebuild_error(config, name, built_with, current)


class FrozenStructureMixin:
    """Config mixin: structural fields cannot be set to a new value once a model was built from the config."""

    def __setattr__(self, key: str, value: Any) -> None:
        frozen = frozen_fields(self)
        if key in frozen and not _same_value(value, frozen[key]):
            raise _rebuild_error(self, key, frozen[key], value)
        super().__setattr__(key, value)
