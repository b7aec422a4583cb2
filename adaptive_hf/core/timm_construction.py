"""One constructor rule for every timm-backed technique model.

``Model.from_timm(architecture, pretrained_weights=None, num_labels=None, model_args=None, **kwargs)``: the model's
config fields among ``kwargs`` (and ``id2label``/``label2id``) configure the technique, every other keyword is a
``timm.create_model`` argument added to ``model_args``; ``pretrained_weights`` is a plain timm state dict or a file
of one. Every such model keeps the timm model under ``timm_model`` and exposes it as ``backbone`` too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .vision_backbones import create_timm_model, load_timm_state_dict, read_state_dict, timm_classifier_keys

LABEL_FIELDS = ("id2label", "label2id")


def classifier_width(architecture: str, model_args: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> int:
    """The classifier width of a timm state dict (1000 when it has no classifier).

    Args:
        architecture: timm model name.
        model_args: timm constructor arguments.
        state_dict: timm-named tensors, or the same tensors under other names in timm's order.
    """
    with torch.device("meta"):
        reference = create_timm_model(architecture, 1000, model_args)
    names = list(reference.state_dict())
    weight = next((k for k in timm_classifier_keys(reference) if k.endswith("weight")), None)
    if weight is None:
        return 1000
    tensor = state_dict.get(weight)
    if tensor is None and len(state_dict) == len(names):
        tensor = list(state_dict.values())[names.index(weight)]
    return int(tensor.shape[0]) if tensor is not None else 1000


def split_timm_keywords(config_class: type, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Splits ``from_timm`` keywords into the config's fields and ``timm.create_model`` arguments.

    Args:
        config_class: The technique's config class (its dataclass fields are its settings).
        kwargs: The keywords.

    Returns:
        ``(settings, timm_kwargs)``.
    """
    fields = set(getattr(config_class, "__dataclass_fields__", {})) | set(LABEL_FIELDS)
    fields |= set(getattr(config_class, "renamed_fields", {}))  # deprecated names: settings too, not timm arguments
    fields -= {"architecture", "model_args", "num_labels"}
    settings = {key: value for key, value in kwargs.items() if key in fields}
    timm_kwargs = {key: value for key, value in kwargs.items() if key not in fields}
    for key in ("num_classes", "pretrained"):
        if key in timm_kwargs:
            raise ValueError(f"from_timm takes `num_labels` and `pretrained_weights`, not `{key}`.")
    return settings, timm_kwargs


def timm_config_and_weights(
    config_class: type,
    architecture: str,
    pretrained_weights: str | Path | dict[str, torch.Tensor] | None,
    num_labels: int | None,
    model_args: dict[str, Any] | None,
    kwargs: dict[str, Any],
) -> tuple[Any, dict[str, torch.Tensor] | None]:
    """The config and the (read) weights that ``from_timm`` builds a model from.

    Args:
        config_class: The technique's timm config class.
        architecture: timm model name.
        pretrained_weights: A plain timm state dict, a file of one, or ``None``.
        num_labels: Number of classes; ``None`` = the weights' classifier width (1000 without weights).
        model_args: timm constructor arguments.
        kwargs: Config fields and further timm constructor arguments.
    """
    settings, timm_kwargs = split_timm_keywords(config_class, kwargs)
    model_args = {**(model_args or {}), **timm_kwargs}
    state_dict = read_state_dict(pretrained_weights) if pretrained_weights is not None else None
    if num_labels is None:
        num_labels = classifier_width(architecture, model_args, state_dict) if state_dict is not None else 1000
    config = config_class(architecture=architecture, model_args=model_args, num_labels=num_labels, **settings)
    return config, state_dict


class TimmBackboneMixin:
    """``from_timm`` and the ``backbone`` alias for technique models that keep a timm model under ``timm_model``.

    Subclasses may override ``load_timm_weights(state_dict)`` (the default loads into ``timm_model`` only).
    """

    @property
    def backbone(self) -> nn.Module:
        """The timm model (the same attribute name in every technique)."""
        return self.timm_model

    @classmethod
    def from_timm(
        cls,
        architecture: str,
        pretrained_weights: str | Path | dict[str, torch.Tensor] | None = None,
        num_labels: int | None = None,
        model_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        """Builds the model from a timm model name and, optionally, local timm weights.

        Args:
            architecture: A timm model name, e.g. ``"vit_tiny_patch16_224"``.
            pretrained_weights: A plain timm state dict, or a path to one (``.safetensors``, ``.pt``/``.pth``).
            num_labels: Number of classes; ``None`` = the weights' classifier width (1000 without weights).
            model_args: Extra ``timm.create_model`` arguments.
            **kwargs: The technique's config fields (and ``id2label``/``label2id``); any other keyword is a
                ``timm.create_model`` argument.
        """
        config, state_dict = timm_config_and_weights(
            cls.config_class, architecture, pretrained_weights, num_labels, model_args, kwargs
        )
        model = cls(config)
        if state_dict is not None:
            model.load_timm_weights(state_dict)
        return model

    def load_timm_weights(self, state_dict) -> list[str]:
        """Loads a plain timm state dict (or a file of one) into ``self.timm_model``; the technique's own modules
        (halting units, routers) are untouched.

        Args:
            state_dict: timm-named tensors, or the same tensors under other names in timm's order, or a file.

        Returns:
            The names of the timm tensors left as initialized (the classifier when its width differs).
        """
        config = self.config
        return load_timm_state_dict(
            self.timm_model, read_state_dict(state_dict), config.architecture, config.num_labels
        )
