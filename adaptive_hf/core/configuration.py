"""Validation helpers shared by every technique's config.

Configs validate in ``__post_init__`` (and again at each forward for the runtime knobs), so a bad value fails
early with an error that names the field and the values it accepts.
"""

from __future__ import annotations

import copy
import functools
import math
import sys
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar


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


# Frames a deprecation warning skips to reach the line that used the old name: the transformers / huggingface_hub
# config machinery (``__getattribute__``, ``__setattr__``, ``from_dict``) and this module; for keywords also the rest
# of this package (or of the folder of a remote-code copy, whose flat ``ahf_*`` modules sit side by side), which only
# passes them on.
_CONFIG_MACHINERY = (__name__, "transformers.", "huggingface_hub.")
_PACKAGE = (__name__.split(".core.")[0] if ".core." in __name__ else __name__.rpartition(".")[0]) + "."


def warn_renamed(old: str, new: str, *, keyword: bool = False) -> None:
    """Warns (``FutureWarning``) that field ``old`` is now ``new``, pointing at the code that used the old name.

    Args:
        old: The deprecated field name.
        new: Its new name.
        keyword: The old name came as a keyword: point past this package's frames too, at the caller that passed it.
    """
    skipped = _CONFIG_MACHINERY + ((_PACKAGE,) if keyword else ())
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith(skipped):
        frame, level = frame.f_back, level + 1
    message = f"`{old}` is a deprecated name of `{new}` and will be removed in the next release; use `{new}`."
    warnings.warn(message, FutureWarning, stacklevel=level)


def rename_deprecated_fields(kwargs: Mapping[str, Any], renamed: Mapping[str, str], owner: str) -> dict[str, Any]:
    """Maps deprecated field names in ``kwargs`` to their new names, with a ``FutureWarning`` for each.

    Args:
        kwargs: Config keyword arguments (or a ``config.json`` dict).
        renamed: ``old name -> new name``.
        owner: Who received them (a config class name), for the error message.

    Returns:
        A new dict with only the new names.

    Raises:
        ValueError: When an old name and its new name are both given.
    """
    result = dict(kwargs)
    for old, new in renamed.items():
        if old not in result:
            continue
        if new in result:
            raise ValueError(
                f"{owner} got both `{old}` and `{new}`; `{old}` is the deprecated name of `{new}`. Pass `{new}` only."
            )
        warn_renamed(old, new, keyword=True)
        result[new] = result.pop(old)
    return result


def _deprecated_alias(old: str, new: str) -> property:
    def read(self) -> Any:
        warn_renamed(old, new)
        return getattr(self, new)

    def write(self, value: Any) -> None:
        warn_renamed(old, new)
        setattr(self, new, value)

    return property(read, write, doc=f"Deprecated name of ``{new}``.")


class RenamedFieldsMixin:
    """Config mixin: fields renamed in this release keep their old names as deprecated aliases for one release.

    A subclass lists ``renamed_fields = {"old_name": "new_name"}``. The old name is accepted as a constructor keyword
    (so old ``config.json`` files still load) and as an attribute (a property reading and writing the new field);
    each use warns with a ``FutureWarning`` naming the new name. Passing both names is a ``ValueError``. Only the new
    name is stored, so ``to_dict`` and ``save_pretrained`` never write the old one. A config class that still
    declares a field under its old name (e.g. a family's default, ``exit_pooling: str = "last"``) declares the new
    field instead, with a ``DeprecationWarning``.
    """

    renamed_fields: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        _declare_under_new_names(cls)
        super().__init_subclass__(**kwargs)
        for old, new in cls.renamed_fields.items():
            if not isinstance(cls.__dict__.get(old), property):
                setattr(cls, old, _deprecated_alias(old, new))
        # PreTrainedConfig.__init_subclass__ (run above) gave a config class its own dataclass ``__init__``; the old
        # names must be mapped before it runs, because it sets the new field to its default without them.
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_renames_fields", False) or not cls.renamed_fields:
            return

        @functools.wraps(init)
        def __init__(self, *args: Any, **init_kwargs: Any) -> None:
            init(self, *args, **rename_deprecated_fields(init_kwargs, type(self).renamed_fields, type(self).__name__))

        __init__._renames_fields = True
        cls.__init__ = __init__


def _declare_under_new_names(cls: type) -> None:
    """Moves fields a class body declares under a deprecated name to the new name, before the dataclass is made.

    The declaration under the old name wins over one under the new name in the same body: a body such as
    ``{**TECHNIQUE_FIELDS, "old_name": (annotation, family_default)}`` means to override the technique's default.
    """
    annotations = cls.__dict__.get("__annotations__", {})
    for old, new in getattr(cls, "renamed_fields", {}).items():
        if old not in annotations:
            continue
        warnings.warn(
            f"{cls.__name__} declares the field `{old}`, now named `{new}`; it is declared as `{new}`.",
            DeprecationWarning,
            stacklevel=3,
        )
        annotations[new] = annotations.pop(old)
        if old in cls.__dict__:
            setattr(cls, new, cls.__dict__[old])
            delattr(cls, old)
