"""Helpers shared by the technique models: per-family class factories."""

from __future__ import annotations


def make_family_model_class(
    adapter, *, class_name: str, mixin: type, config_class: type, module: str, doc: str
) -> type:
    """Builds a technique's model class for one backbone family.

    The class combines the technique's mixin with the family's ``PreTrainedModel`` base (weight init, attention
    implementation flags, ``base_model_prefix``), so the base model sits under the family's usual attribute name and
    plain checkpoints of the family load into it.

    Args:
        adapter: The family's backbone adapter class.
        class_name: Name of the new class.
        mixin: The technique's model mixin.
        config_class: The technique's config class for the family.
        module: ``__module__`` of the new class (the technique's modeling module, for the Hub bundle).
        doc: Class docstring.
    """
    namespace = {
        "__module__": module,
        "__qualname__": class_name,
        "__doc__": doc,
        "config_class": config_class,
        "adapter_class": adapter,
        "base_model_prefix": adapter.pretrained_model_class.base_model_prefix,
    }
    return type(class_name, (mixin, adapter.pretrained_model_class), namespace)
