"""Validation helpers shared by every technique's config.

Configs validate in ``__post_init__`` (and again at each forward for the runtime knobs), so a bad value fails
early with an error that names the field and the values it accepts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
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
    into it) and adds the technique's fields as dataclass fields.

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
    }
    return type(class_name, (mixin, adapter.config_class), namespace)
