"""``AutoEarlyExit...`` / ``AutoHalting...``: load any supported encoder checkpoint with a technique's heads."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig

from .configuration import rename_deprecated_fields
from .registry import REGISTRY, lookup

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

    Subclasses set ``technique`` (a registry key), ``setting_fields`` (the technique's config fields) and, for
    image classifiers, ``modality = "image"`` (the families they load) and ``task_suffix``.
    """

    technique: str = ""
    setting_fields: tuple[str, ...] = ()
    modality: str = "text"
    task_suffix: str = "ForSequenceClassification"

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
        config_class, model_class = cls._lookup(config.model_type)
        return model_class(cls._convert_config(config, config_class, None, settings))

    @classmethod
    def _lookup(cls, model_type: str) -> tuple[type, type]:
        try:
            config_class, model_class = lookup(cls.technique, model_type)
        except ValueError as error:
            if cls.modality != "image":
                raise
            supported = sorted(family for family in cls._families() if family != "timm")
            raise ValueError(
                f"Unsupported architecture for {cls.technique.replace('_', ' ')} on images: "
                f"model_type={model_type!r}. Supported image families: {', '.join(supported)}."
            ) from error
        adapter = getattr(config_class, "backbone_adapter", None)
        modality = getattr(adapter, "modality", cls.modality)
        if modality != cls.modality:
            other = "ImageClassification" if modality == "image" else "SequenceClassification"
            raise ValueError(
                f"model_type={model_type!r} is a{'n' if modality == 'image' else ''} {modality} family; "
                f"{cls.__name__} loads {cls.modality} families. Use "
                f"{cls.__name__.replace(cls.task_suffix, 'For' + other)}."
            )
        return config_class, model_class

    @classmethod
    def _families(cls) -> dict[str, type]:
        """``model_type -> config class`` of the families registered for ``technique`` in this modality."""
        families = {}
        for (technique, family), (config_class, _, _) in REGISTRY.items():
            adapter = getattr(config_class, "backbone_adapter", None)
            if technique == cls.technique and getattr(adapter, "modality", None) == cls.modality:
                families[family] = config_class
        return families

    @classmethod
    def _convert_config(cls, config, config_class: type, num_labels: int | None, overrides: dict[str, Any]):
        is_ours = isinstance(config, config_class)
        is_classifier = any(name.endswith(cls.task_suffix) for name in config.architectures or [])
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
        config_class, model_class = cls._lookup(config.model_type)
        new_config = cls._convert_config(config, config_class, num_labels, {**overrides, **settings})
        return model_class.from_pretrained(pretrained_model_name_or_path, *model_args, config=new_config, **kwargs)
