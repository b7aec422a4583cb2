"""``AutoEarlyExit...`` / ``AutoHalting...``: load any supported encoder checkpoint with a technique's heads."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig

from .configuration import rename_deprecated_fields
from .registry import lookup

# from_pretrained keyword arguments that concern where and how files are fetched, shared by config and weights.
_HUB_KWARGS = (
    "cache_dir",
    "force_download",
    "local_files_only",
    "token",
    "revision",
    "trust_remote_code",
    "subfolder",
)


class AutoAdaptiveModel:
    """Builds the right ``<Technique><Arch>For...`` class for a checkpoint or config.

    Plain checkpoints (``bert-base-uncased``, a fine-tuned ``BertForSequenceClassification``, the packaged MiniLM)
    load their backbone weights; only the technique's new modules are initialised. Saved checkpoints of the
    technique reload as they were, with any settings passed here applied on top.

    Subclasses set ``technique`` (a registry key) and ``setting_fields`` (the technique's config fields).
    """

    technique: str = ""
    setting_fields: tuple[str, ...] = ()

    def __init__(self):
        raise OSError(f"Use {type(self).__name__}.from_pretrained(...) or .from_config(...).")

    @classmethod
    def _split_kwargs(cls, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        settings = {key: kwargs.pop(key) for key in list(kwargs) if key in cls.setting_fields}
        return settings, kwargs

    @classmethod
    def from_config(cls, config, **settings: Any):
        """A randomly initialised model for a backbone config or one of the technique's configs.

        Args:
            config: A supported backbone config (e.g. ``BertConfig``) or a config of the technique.
            **settings: The technique's fields and other config overrides (``num_labels``, ...).
        """
        config_class, model_class = lookup(cls.technique, config.model_type)
        return model_class(cls._convert_config(config, config_class, None, settings))

    @staticmethod
    def _convert_config(config, config_class: type, num_labels: int | None, overrides: dict[str, Any]):
        is_ours = isinstance(config, config_class)
        is_classifier = any(name.endswith("ForSequenceClassification") for name in config.architectures or [])
        if (is_ours or is_classifier) and num_labels is not None and num_labels != config.num_labels:
            head = "heads" if is_ours else f"classification head ({config.architectures[0]})"
            raise ValueError(
                f"`num_labels={num_labels}` disagrees with the checkpoint's {head}, which has "
                f"num_labels={config.num_labels}. Load without num_labels, or start from the backbone checkpoint."
            )
        values = config.to_dict()
        for key in ("model_type", "transformers_version") + (() if is_ours else ("architectures",)):
            values.pop(key, None)
        if num_labels is not None:
            overrides = {**overrides, "num_labels": num_labels}
        if "num_labels" in overrides and "id2label" not in overrides:
            if len(values.get("id2label") or {}) != overrides["num_labels"]:
                values.pop("id2label", None)
                values.pop("label2id", None)
        # A deprecated field name in the overrides replaces the saved value of its new name (not both given).
        renamed = getattr(config_class, "renamed_fields", {})
        values.update(rename_deprecated_fields(overrides, renamed, config_class.__name__))
        new_config = config_class(**values)
        new_config._attn_implementation = config._attn_implementation
        return new_config

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str, *model_args: Any, num_labels: int | None = None, **kwargs
    ):
        """Loads a checkpoint as a model of this technique.

        Args:
            pretrained_model_name_or_path: A Hub name or a local folder.
            *model_args: Passed to the model's ``from_pretrained``.
            num_labels: Number of classes. Must agree with the checkpoint's head if it has one.
            **kwargs: The technique's fields (e.g. ``exit_policy``, ``halting``), other config overrides
                (``id2label``, ...) and ``from_pretrained`` options.
        """
        settings, kwargs = cls._split_kwargs(kwargs)
        hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        overrides = {key: kwargs.pop(key) for key in ("id2label", "label2id") if key in kwargs}
        config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        if kwargs.get("attn_implementation") is not None:
            config._attn_implementation = kwargs["attn_implementation"]
        config_class, model_class = lookup(cls.technique, config.model_type)
        new_config = cls._convert_config(config, config_class, num_labels, {**overrides, **settings})
        return model_class.from_pretrained(pretrained_model_name_or_path, *model_args, config=new_config, **kwargs)
