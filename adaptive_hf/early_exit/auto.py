"""``AutoEarlyExitModelForSequenceClassification``: load any supported encoder checkpoint with exit heads."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig

from ..core.registry import lookup
from .config import EXIT_FIELDS

# from_pretrained keyword arguments that concern where and how files are fetched, shared by config and weights.
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "trust_remote_code", "subfolder")


class AutoEarlyExitModelForSequenceClassification:
    """Builds the right ``EarlyExit<Arch>ForSequenceClassification`` for a checkpoint or config.

    Plain checkpoints (``bert-base-uncased``, a fine-tuned ``BertForSequenceClassification``, the packaged MiniLM)
    load their backbone weights; only the exit heads are new. Saved early-exit checkpoints reload as they were,
    with any exit settings passed here applied on top.
    """

    def __init__(self):
        raise OSError("Use AutoEarlyExitModelForSequenceClassification.from_pretrained(...) or .from_config(...).")

    @staticmethod
    def _split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        exit_settings = {key: kwargs.pop(key) for key in list(kwargs) if key in EXIT_FIELDS}
        return exit_settings, kwargs

    @classmethod
    def from_config(cls, config, **exit_settings: Any):
        """A randomly initialised early-exit model for a backbone or early-exit config.

        Args:
            config: A supported backbone config (e.g. ``BertConfig``) or an early-exit config.
            **exit_settings: Early-exit fields (``exit_policy=...``) and other config overrides.
        """
        config_class, model_class = lookup("early_exit", config.model_type)
        early_exit_config = cls._convert_config(config, config_class, None, exit_settings)
        return model_class(early_exit_config)

    @staticmethod
    def _convert_config(config, config_class: type, num_labels: int | None, overrides: dict[str, Any]):
        if isinstance(config, config_class):
            if num_labels is not None and num_labels != config.num_labels:
                raise ValueError(
                    f"`num_labels={num_labels}` disagrees with the checkpoint's exit heads, which have "
                    f"num_labels={config.num_labels}. Load without num_labels, or start from the backbone checkpoint."
                )
            values = config.to_dict()
        else:
            is_classifier = any(name.endswith("ForSequenceClassification") for name in config.architectures or [])
            if is_classifier and num_labels is not None and num_labels != config.num_labels:
                raise ValueError(
                    f"`num_labels={num_labels}` disagrees with the checkpoint's classification head "
                    f"(num_labels={config.num_labels}, {config.architectures[0]})."
                )
            values = config.to_dict()
            values.pop("architectures", None)
            if num_labels is not None:
                values.pop("id2label", None)
                values.pop("label2id", None)
                values["num_labels"] = num_labels
        values.pop("model_type", None)
        values.pop("transformers_version", None)
        if "num_labels" in overrides and "id2label" not in overrides:
            if len(values.get("id2label") or {}) != overrides["num_labels"]:
                values.pop("id2label", None)
                values.pop("label2id", None)
        values.update(overrides)
        new_config = config_class(**values)
        new_config._attn_implementation = config._attn_implementation
        return new_config

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, *model_args: Any, num_labels: int | None = None, **kwargs):
        """Loads a checkpoint as an early-exit classifier.

        Args:
            pretrained_model_name_or_path: A Hub name or a local folder.
            *model_args: Passed to the model's ``from_pretrained``.
            num_labels: Number of classes. Must agree with the checkpoint's head if it has one.
            **kwargs: Early-exit fields (``exit_layers``, ``exit_policy``, ``exit_threshold``, ``patience``,
                ``exit_training``, ...), other config overrides (``id2label``, ...) and ``from_pretrained`` options.
        """
        exit_settings, kwargs = cls._split_kwargs(kwargs)
        hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        config_overrides = {key: kwargs.pop(key) for key in ("id2label", "label2id") if key in kwargs}
        attn_implementation = kwargs.get("attn_implementation")
        config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation
        config_class, model_class = lookup("early_exit", config.model_type)
        early_exit_config = cls._convert_config(config, config_class, num_labels, {**config_overrides, **exit_settings})
        return model_class.from_pretrained(pretrained_model_name_or_path, *model_args, config=early_exit_config, **kwargs)
