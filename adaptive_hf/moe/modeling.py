"""``SwitchMoE<Arch><Task>`` models: the stock Hugging Face task model with switch-MoE feed-forward layers.

Each class subclasses the stock class (``SwitchMoEBertForSequenceClassification`` is a
``BertForSequenceClassification``), so the family's own layers, heads and weights are reused unchanged; only the
feed-forward block of each layer in ``config.moe_layers`` is replaced by a :class:`SwitchMoEFeedForward` while the
model is built. The config (``SwitchMoE<Arch>Config``) records the MoE layout, so ``from_pretrained`` rebuilds the
same model, and a dense checkpoint of the family passed to ``from_pretrained`` is upcycled.

The forward passes the padding mask to the MoE layers, runs the stock forward, then adds the auxiliary losses
(load balancing and z-loss, averaged over the MoE layers and weighted by their coefficients) into ``loss`` in
training mode, and returns the stock output class extended with ``aux_loss``, ``z_loss``, ``router_logits``,
``expert_counts`` and ``dropped_fraction``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any

import torch
from transformers import initialization as init

from ..core.adapters.base import BackboneAdapter
from ..core.hub import AdaptiveHubMixin, read_config_dict
from ..core.inputs import (
    check_class_labels,
    check_token_inputs,
    check_token_labels,
    position_limit,
    refuse_text_inputs,
)
from ..core.layer_keyed import LayerKeyedWeights
from ..core.vision_backbones import check_pixel_values
from .config import MOE_FIELDS, SWITCH_MOE_CONFIGS, SwitchMoEConfig, moe_adapter_for, validate_moe_runtime
from .conversion import match_dense_placement, upcycle_from_dense
from .experts import SwitchExperts
from .layer import SwitchMoEFeedForward, token_mask_from_attention_mask
from .router import SwitchRouter

# Auto class name of each task, by the suffix of the stock class name.
TASK_AUTO_CLASSES = {
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForTokenClassification": "AutoModelForTokenClassification",
    "ForMaskedLM": "AutoModelForMaskedLM",
    "ForCausalLM": "AutoModelForCausalLM",
    "LMHeadModel": "AutoModelForCausalLM",
    "ForImageClassification": "AutoModelForImageClassification",
    "Model": "AutoModel",
}
_DROPPED_CONFIG_KEYS = ("model_type", "architectures", "auto_map", "transformers_version")
MOE_OUTPUT_FIELDS = ("aux_loss", "z_loss", "router_logits", "expert_counts", "dropped_fraction")
_OUTPUT_CLASSES: dict[type, type] = {}


def moe_output_class(base: type) -> type:
    """The stock output class ``base`` extended with the MoE fields (created once per class).

    Added fields: ``aux_loss`` (mean load-balancing loss over the MoE layers), ``z_loss`` (mean router z-loss),
    ``router_logits`` (one ``(tokens, E)`` tensor per MoE layer, when requested), ``expert_counts``
    (``(moe layers, E)`` tokens processed per expert) and ``dropped_fraction`` (``(moe layers,)``).

    Args:
        base: A ``ModelOutput`` dataclass such as ``SequenceClassifierOutput``.
    """
    cls = _OUTPUT_CLASSES.get(base)
    if cls is None:
        fields = [(name, "torch.Tensor | None", dataclasses.field(default=None)) for name in MOE_OUTPUT_FIELDS]
        cls = dataclasses.make_dataclass(
            f"SwitchMoE{base.__name__}",
            fields,
            bases=(base,),
            namespace={"__module__": __name__, "__doc__": f"{base.__name__} plus the switch-MoE statistics."},
        )
        globals()[cls.__name__] = cls
        _OUTPUT_CLASSES[base] = cls
    return cls


def auto_class_name_for(class_name: str) -> str:
    """The Auto class name that loads a stock task class (``BertForMaskedLM`` -> ``AutoModelForMaskedLM``)."""
    for suffix, auto_name in TASK_AUTO_CLASSES.items():
        if class_name.endswith(suffix):
            return auto_name
    raise ValueError(f"No Auto class is known for {class_name!r}.")


def build_moe_layer(
    config, adapter: type[BackboneAdapter], layer: torch.nn.Module | None = None
) -> SwitchMoEFeedForward:
    """A fresh MoE layer shaped like the family's dense FFN for ``config``.

    Args:
        config: The model config (with the MoE fields).
        adapter: The family's adapter.
        layer: The transformer layer that receives it (families that read the FFN's shape from the layer).
    """
    return SwitchMoEFeedForward(config, **adapter.ffn_spec(config, layer))


class SwitchMoEModelMixin(AdaptiveHubMixin):
    """The switch-MoE behaviour shared by every ``SwitchMoE<Arch><Task>`` class.

    Combined with a stock task class by :func:`make_moe_model_class`.
    """

    adapter_class: type[BackboneAdapter] = BackboneAdapter
    auto_class_name = "AutoModel"

    def post_init(self):
        # The stock __init__ builds the dense layers and ends with post_init(); swapping the FFNs here, before the
        # weight initialization runs, means the new modules are initialized like every other module.
        if not self.__dict__.get("_moe_installed", False):
            adapter = self.adapter_class
            layers = adapter.model_layers(self)
            for layer_number in self.config.moe_layers:
                layer = layers[layer_number - 1]
                # Some task classes build their base model with AutoModel.from_config, which for our config is the
                # SwitchMoE base model: its layers are already converted.
                if not isinstance(adapter.require_ffn_slot().get(layer), SwitchMoEFeedForward):
                    adapter.install_ffn(layer, build_moe_layer(self.config, adapter, layer))
            self.__dict__["_moe_installed"] = True
        super().post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        std = getattr(self.config, "initializer_range", None) or 0.02
        if isinstance(module, SwitchRouter):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, SwitchExperts):
            init.normal_(module.up_proj, mean=0.0, std=std)
            init.normal_(module.down_proj, mean=0.0, std=std)
            if module.up_bias is not None:
                init.zeros_(module.up_bias)
                init.zeros_(module.down_bias)

    def moe_modules(self) -> list[SwitchMoEFeedForward]:
        """The MoE layers, in ``config.moe_layers`` order."""
        layers = self.adapter_class.model_layers(self)
        slot = self.adapter_class.require_ffn_slot()
        return [slot.get(layers[number - 1]) for number in self.config.moe_layers]

    def layer_keyed_weights(self) -> list[LayerKeyedWeights]:
        """Where the routers sit in the state dict, so loading checks them against ``config.moe_layers``."""
        layers = self.adapter_class.model_layers(self)
        prefix = next((name for name, module in self.named_modules() if module is layers), None)
        if prefix is None:
            return []
        ffn = re.escape(self.adapter_class.require_ffn_slot().module)
        return [
            LayerKeyedWeights(
                config_field="moe_layers",
                config_value=self.config.moe_layers,
                layers=tuple(self.config.moe_layers),
                key_pattern=rf"^{re.escape(prefix)}\.(?P<layer>\d+)\.{ffn}\.router\.",
                offset=1,
            )
        ]

    def _check_text_inputs(self, kwargs: dict[str, Any]) -> None:
        """The shared token-input check, plus the labels of the task (per sample or per token)."""
        input_ids, inputs_embeds = kwargs.get("input_ids"), kwargs.get("inputs_embeds")
        if input_ids is None and inputs_embeds is None:
            return  # the stock forward names what is missing
        # While generating with a cache, the mask spans the cached positions too and positions continue past seq.
        incremental = any(kwargs.get(name) is not None for name in ("past_key_values", "cache", "cache_params"))
        mask = kwargs.get("attention_mask")
        # The stock families also take a prepared 4-D mask (batch, heads, query, key); the MoE layer reads it too.
        four_d = isinstance(mask, torch.Tensor) and mask.dim() == 4
        config = self.config
        batch_size = check_token_inputs(
            input_ids,
            None if incremental or four_d else mask,
            inputs_embeds,
            vocab_size=config.vocab_size,
            max_length=None if incremental else position_limit(self),
        )
        labels = kwargs.get("labels")
        if labels is None:
            return
        tokens = input_ids if input_ids is not None else inputs_embeds
        task = self.auto_class_name
        if task == "AutoModelForSequenceClassification":
            self._check_sequence_labels(labels, batch_size)
        elif task == "AutoModelForTokenClassification":
            check_token_labels(labels, tuple(tokens.shape[:2]), config.num_labels)
        elif task in ("AutoModelForMaskedLM", "AutoModelForCausalLM"):
            check_token_labels(labels, tuple(tokens.shape[:2]), config.vocab_size)

    def _check_image_inputs(self, kwargs: dict[str, Any]) -> None:
        """The shared image check (shape, dtype, channels, empty batch), plus the class labels."""
        refuse_text_inputs(type(self).__name__, kwargs)  # peft's SEQ_CLS wrapper passes them as None
        pixel_values = kwargs.get("pixel_values")
        if pixel_values is None:
            return  # the stock forward names what is missing
        batch_size = check_pixel_values(pixel_values, getattr(self.config, "num_channels", 3))
        labels = kwargs.get("labels")
        if labels is not None and self.auto_class_name == "AutoModelForImageClassification":
            self._check_sequence_labels(labels, batch_size)

    def _check_sequence_labels(self, labels: Any, batch_size: int) -> None:
        """Sequence classification: class ids (single-label), or the stock class's float targets."""
        config = self.config
        problem = config.problem_type
        floating = isinstance(labels, torch.Tensor) and labels.dtype.is_floating_point
        if problem == "regression" or config.num_labels == 1:
            return  # float targets, checked by the stock loss
        if problem == "multi_label_classification" or (problem is None and floating):
            expected = (batch_size, config.num_labels)
            if not floating or tuple(labels.shape) != expected:
                got = f"{labels.dtype} of shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else labels
                raise TypeError(
                    f"`labels` must be an integer tensor of class ids in [0, {config.num_labels}) with shape "
                    f"({batch_size},) (single-label), or a float tensor of shape {expected} (multi-label); got {got}."
                )
            return
        check_class_labels(labels, batch_size, config.num_labels)

    @classmethod
    def _forward_arg_names(cls) -> list[str]:
        names = cls.__dict__.get("_cached_forward_arg_names")
        if names is None:
            parameters = inspect.signature(super().forward).parameters  # the stock class's forward
            names = [n for n, p in parameters.items() if n != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]
            cls._cached_forward_arg_names = names
        return names

    def forward(self, *args: Any, output_router_logits: bool | None = None, **kwargs: Any):
        """The stock forward plus routing: takes the stock arguments and returns the stock output class extended
        with ``aux_loss``, ``z_loss``, ``router_logits``, ``expert_counts`` and ``dropped_fraction``.

        Args:
            *args: Positional arguments of the stock forward.
            output_router_logits: Return every MoE layer's raw router logits (default ``config.output_router_logits``).
            **kwargs: Keyword arguments of the stock forward (``input_ids``, ``attention_mask``, ``labels``, ...).
        """
        if args:
            names = self._forward_arg_names()
            if len(args) > len(names):
                raise TypeError(f"{type(self).__name__}.forward takes at most {len(names)} positional arguments.")
            for name, value in zip(names, args, strict=False):
                if name in kwargs:
                    raise TypeError(f"{type(self).__name__}.forward got multiple values for argument {name!r}.")
                kwargs[name] = value
        config = self.config
        validate_moe_runtime(config)
        if self.adapter_class.modality == "text":
            self._check_text_inputs(kwargs)
        else:
            self._check_image_inputs(kwargs)
        if output_router_logits is None:
            output_router_logits = config.output_router_logits
        return_dict = kwargs.pop("return_dict", None)
        mask = None
        if self.adapter_class.modality == "text":
            mask = token_mask_from_attention_mask(kwargs.get("attention_mask"))
        modules = self.moe_modules()
        for module in modules:
            module.set_token_mask(mask)
        outputs = super().forward(**kwargs, return_dict=True)
        stats = [module.last_stats for module in modules]
        aux_loss = torch.stack([s.aux_loss for s in stats]).mean()
        z_loss = torch.stack([s.z_loss for s in stats]).mean()
        loss = outputs.get("loss")
        if self.training:
            weighted = config.router_aux_loss_coef * aux_loss + config.router_z_loss_coef * z_loss
            if loss is not None:
                loss = loss + weighted.to(loss.dtype)
            elif config.add_aux_loss_without_labels:
                loss = weighted
        output_class = moe_output_class(type(outputs))
        data = {key: value for key, value in outputs.items() if key != "loss"}
        if loss is not None or "loss" in output_class.__dataclass_fields__:
            data["loss"] = loss
        result = output_class(
            **data,
            aux_loss=aux_loss,
            z_loss=z_loss,
            router_logits=tuple(s.router_logits for s in stats) if output_router_logits else None,
            expert_counts=torch.stack([s.expert_counts for s in stats]),
            dropped_fraction=torch.stack([s.dropped_fraction for s in stats]),
        )
        if return_dict is False:
            return result.to_tuple()
        return result

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Loads a saved switch-MoE model, or upcycles a dense checkpoint of the same family.

        A dense checkpoint (``model_type`` of the plain family, e.g. ``"bert"``) is loaded with the stock class and
        converted by ``adaptive_hf.upcycle``; the MoE fields (``num_experts``, ``moe_layers``, ...) are taken from
        ``kwargs``.

        Args:
            pretrained_model_name_or_path: Folder or Hub name.
            *args: Passed to ``from_pretrained``.
            **kwargs: Passed to ``from_pretrained``; MoE fields configure the upcycling of a dense checkpoint.
        """
        config_dict = read_config_dict(pretrained_model_name_or_path) if kwargs.get("config") is None else None
        if config_dict is None and kwargs.get("config") is None:
            try:
                from transformers import AutoConfig

                config_dict = AutoConfig.from_pretrained(pretrained_model_name_or_path).to_dict()
            except (OSError, ValueError):
                config_dict = None
        if config_dict is not None and config_dict.get("model_type") == cls.adapter_class.model_type:
            moe_kwargs = {name: kwargs.pop(name) for name in MOE_FIELDS if name in kwargs}
            dense_class = next(c for c in cls.__mro__ if c in cls.adapter_class.task_classes)
            dense = dense_class.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
            return upcycle_hf_model(dense, SwitchMoEConfig(**moe_kwargs).to_moe_dict())
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    # ----------------------------------------------------------------------------------------------- model card
    def pipeline_tag(self) -> str | None:
        return {
            "AutoModelForSequenceClassification": "text-classification",
            "AutoModelForTokenClassification": "token-classification",
            "AutoModelForMaskedLM": "fill-mask",
            "AutoModelForCausalLM": "text-generation",
            "AutoModelForImageClassification": "image-classification",
        }.get(self.auto_class_name)

    def model_card_details(self) -> tuple[list[str], str]:
        config = self.config
        tags = ["adaptive-hf", "switch-moe", "mixture-of-experts", self.adapter_class.family]
        body = "## Mixture of experts\n\n| setting | value |\n|---|---|\n"
        body += "".join(f"| `{name}` | `{getattr(config, name)}` |\n" for name in MOE_FIELDS)
        body += (
            "\nThe routing knobs (`capacity_factor`, `capacity_group`, `num_experts_per_tok`, `router_jitter`, "
            "the loss coefficients) are read from `model.config` at every forward.\n"
        )
        return tags, body


def make_moe_model_class(
    adapter: type[BackboneAdapter], task_class: type, config_class: type, module: str | None = None
) -> type:
    """Builds ``SwitchMoE<StockClassName>`` for a family's stock task class.

    Args:
        adapter: The family's adapter.
        task_class: The stock class, e.g. ``BertForSequenceClassification``.
        config_class: The family's ``SwitchMoE<Arch>Config``.
        module: Module the class is attributed to (it must be defined there under its name, for
            ``trust_remote_code``); default this one.
    """
    name = f"SwitchMoE{task_class.__name__}"
    keep_fp32 = list(getattr(task_class, "_keep_in_fp32_modules", None) or [])

    def forward(self, *args, **kwargs):
        return SwitchMoEModelMixin.forward(self, *args, **kwargs)

    # The Trainer keeps only the dataset columns named in forward's signature: expose the stock one.
    stock = inspect.signature(task_class.forward)
    parameters = [p for p in stock.parameters.values() if p.kind is not p.VAR_KEYWORD]
    parameters.append(inspect.Parameter("output_router_logits", inspect.Parameter.KEYWORD_ONLY, default=None))
    parameters += [p for p in stock.parameters.values() if p.kind is p.VAR_KEYWORD]
    forward.__signature__ = stock.replace(parameters=parameters)
    forward.__doc__ = SwitchMoEModelMixin.forward.__doc__
    forward.__qualname__ = f"{name}.forward"
    namespace = {
        "__module__": module or __name__,
        "__qualname__": name,
        "__doc__": (
            f"{task_class.__name__} with switch mixture-of-experts feed-forward layers in ``config.moe_layers``. "
            "See :class:`SwitchMoEModelMixin` for the forward and outputs."
        ),
        "config_class": config_class,
        "forward": forward,
        "adapter_class": adapter,
        "auto_class_name": auto_class_name_for(task_class.__name__),
        # The router is computed in float32; keep its weights there when a model is loaded in half precision.
        "_keep_in_fp32_modules": keep_fp32 + ["router"],
    }
    return type(name, (SwitchMoEModelMixin, task_class), namespace)


def _build_model_classes() -> dict[str, type]:
    classes = {}
    for config_class in SWITCH_MOE_CONFIGS.values():
        adapter = config_class.backbone_adapter
        for task_class in adapter.task_classes:
            cls = make_moe_model_class(adapter, task_class, config_class)
            # Module-level names: auto_map and trust_remote_code find classes by attribute name.
            globals()[cls.__name__] = cls
            classes[cls.__name__] = cls
    return classes


# class name -> class, e.g. "SwitchMoEBertForSequenceClassification"
SWITCH_MOE_MODELS: dict[str, type] = _build_model_classes()


def moe_model_class_for(stock_class: type) -> type:
    """The ``SwitchMoE`` class of a stock class (``BertForMaskedLM`` -> ``SwitchMoEBertForMaskedLM``).

    Args:
        stock_class: A stock transformers model class (or an already-MoE class, returned as is).
    """
    if issubclass(stock_class, SwitchMoEModelMixin):
        return stock_class
    cls = SWITCH_MOE_MODELS.get(f"SwitchMoE{stock_class.__name__}")
    if cls is None:
        supported = ", ".join(sorted(name[len("SwitchMoE") :] for name in SWITCH_MOE_MODELS))
        raise ValueError(f"No switch-MoE class for {stock_class.__name__}. Supported stock classes: {supported}.")
    return cls


def upcycle_hf_model(model: torch.nn.Module, settings: dict[str, Any], seed: int | None = None) -> SwitchMoEModelMixin:
    """Converts a stock transformers model into its ``SwitchMoE`` class, experts copied from the dense FFNs.

    Args:
        model: A stock model of a family that switch MoE supports.
        settings: The MoE fields (:data:`~adaptive_hf.moe.config.MOE_FIELDS`).
        seed: Seed for the router initialization and the expert noise (``None`` = the global RNG).
    """
    adapter = moe_adapter_for(getattr(model.config, "model_type", ""))
    target_class = moe_model_class_for(type(model))
    config_dict = {k: v for k, v in model.config.to_dict().items() if k not in _DROPPED_CONFIG_KEYS}
    config_dict.update(settings)
    config = target_class.config_class.from_dict(config_dict)
    config._attn_implementation = model.config._attn_implementation
    moe_model = target_class(config)
    upcycle_from_dense(moe_model, model, adapter, seed=seed)
    return match_dense_placement(moe_model, model)
