"""Where each architecture family keeps its feed-forward block, for switch-MoE conversion.

This is the MoE counterpart of ``core/backbones.py`` (which describes how to embed and run layers for the early
exits): it knows, per family, the transformer layers, the dense FFN's weights and how to put an MoE layer in its
place. Nothing here copies modeling code: the stock layer keeps running, only its FFN module is swapped.

To support a new family, subclass :class:`MoEFamily` and pass it to ``adaptive_hf.register_moe_family``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForMaskedLM,
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
    DistilBertModel,
    ElectraConfig,
    ElectraForMaskedLM,
    ElectraForSequenceClassification,
    ElectraForTokenClassification,
    ElectraModel,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    GPT2Model,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaModel,
    MPNetConfig,
    MPNetForMaskedLM,
    MPNetForSequenceClassification,
    MPNetForTokenClassification,
    MPNetModel,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
    XLMRobertaForSequenceClassification,
    XLMRobertaForTokenClassification,
    XLMRobertaModel,
)

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


def auto_class_name_for(class_name: str) -> str:
    """The Auto class name that loads a stock task class (``BertForMaskedLM`` -> ``AutoModelForMaskedLM``)."""
    for suffix, auto_name in TASK_AUTO_CLASSES.items():
        if class_name.endswith(suffix):
            return auto_name
    raise ValueError(f"No Auto class is known for {class_name!r}.")


class MoEFamily:
    """A family whose layers hold ``intermediate`` (dense + activation) and ``output.dense`` (BERT layout).

    The MoE layer replaces ``layer.intermediate`` and ``layer.output.dense`` becomes an identity, so the family's
    own dropout, residual and LayerNorm in ``layer.output`` still run on the MoE output.

    Class attributes:
        family: Short family name.
        model_type: The family config's ``model_type``.
        class_prefix: CamelCase used in ``SwitchMoE<class_prefix>Config``.
        config_class: The family's config class.
        task_classes: The stock classes that get a ``SwitchMoE`` variant.
        gated: Whether the FFN is gated (``down(act(gate(x)) * up(x))``, Llama).
        text: Whether inputs are token sequences with an ``attention_mask`` (padding never takes capacity).
        layers_attr: Path of the layer list under ``model.base_model`` (read by :meth:`layers`).
        ffn_attr: Attribute of a layer that holds the FFN; the MoE layer takes its place (:meth:`install`).
        up_attr, down_attr, gate_attr: Paths of the FFN's projections inside a layer (``gate_attr`` only for gated
            families), read by :meth:`dense_ffn_weights`. A ``down_attr`` outside ``ffn_attr`` (BERT's
            ``output.dense``) becomes an identity when the MoE layer is installed.
        weights_in_out: Whether the projections store their weights ``(in, out)`` already (GPT-2's ``Conv1D``)
            rather than ``(out, in)`` (``nn.Linear``).
    """

    family: ClassVar[str] = "bert"
    model_type: ClassVar[str] = "bert"
    class_prefix: ClassVar[str] = "Bert"
    config_class: ClassVar[type] = BertConfig
    task_classes: ClassVar[tuple[type, ...]] = (
        BertModel,
        BertForSequenceClassification,
        BertForMaskedLM,
        BertForTokenClassification,
    )
    gated: ClassVar[bool] = False
    text: ClassVar[bool] = True
    layers_attr: ClassVar[str] = "encoder.layer"
    ffn_attr: ClassVar[str] = "intermediate"
    up_attr: ClassVar[str] = "intermediate.dense"
    down_attr: ClassVar[str] = "output.dense"
    gate_attr: ClassVar[str | None] = None
    weights_in_out: ClassVar[bool] = False

    @classmethod
    def num_layers_of(cls, config) -> int:
        """Number of transformer layers."""
        return config.num_hidden_layers

    @classmethod
    def hidden_size_of(cls, config) -> int:
        """Model width."""
        return config.hidden_size

    @classmethod
    def intermediate_size_of(cls, config) -> int:
        """FFN width of one expert (the dense FFN's width)."""
        return config.intermediate_size

    @classmethod
    def activation_of(cls, config) -> str:
        """Name of the FFN activation in ``transformers.activations.ACT2FN``."""
        return config.hidden_act

    @classmethod
    def has_bias(cls, config) -> bool:
        """Whether the FFN projections have biases."""
        return True

    @classmethod
    def ffn_dropout_of(cls, config) -> float:
        """Dropout that the MoE layer itself applies to its output (0 where the layer applies it after the FFN)."""
        return 0.0

    @classmethod
    def ffn_spec(cls, config, layer: nn.Module | None = None) -> dict:
        """Shape of one expert, as keyword arguments of ``SwitchMoEFeedForward`` (after ``config``).

        By default read from the config; families whose config does not describe the FFN (timm) read ``layer``.

        Args:
            config: The model config.
            layer: The transformer layer whose FFN becomes the MoE layer, when available.
        """
        return {
            "hidden_size": cls.hidden_size_of(config),
            "intermediate_size": cls.intermediate_size_of(config),
            "activation": cls.activation_of(config),
            "gated": cls.gated,
            "bias": cls.has_bias(config),
            "dropout": cls.ffn_dropout_of(config),
        }

    @classmethod
    def check_config(cls, config) -> None:
        """Rejects family settings the MoE layer cannot honour."""
        if getattr(config, "chunk_size_feed_forward", 0):
            raise ValueError(
                "`chunk_size_feed_forward` must be 0 for switch-MoE models: chunking the sequence would split a "
                "capacity group."
            )

    @classmethod
    def layers(cls, model: nn.Module) -> nn.ModuleList:
        """The transformer layers of a family model (base or task model)."""
        return model.base_model.get_submodule(cls.layers_attr)

    @classmethod
    def dense_ffn_weights(cls, layer: nn.Module) -> dict[str, torch.Tensor | None]:
        """The dense FFN of ``layer`` as ``(in, out)`` matrices: ``up``, ``up_bias``, ``down``, ``down_bias``
        (and ``gate``, ``gate_bias`` for gated families)."""
        weights = {}
        for role, path in (("gate", cls.gate_attr), ("up", cls.up_attr), ("down", cls.down_attr)):
            if path is None:
                continue
            projection = layer.get_submodule(path)
            weights[role] = projection.weight if cls.weights_in_out else projection.weight.t()
            weights[f"{role}_bias"] = projection.bias
        return weights

    @classmethod
    def install(cls, layer: nn.Module, moe: nn.Module) -> None:
        """Puts ``moe`` in place of the FFN of ``layer``."""
        setattr(layer, cls.ffn_attr, moe)
        if not cls.down_attr.startswith(cls.ffn_attr + "."):
            # BERT layout: the down projection sits in `layer.output`, before the family's own dropout, residual
            # and LayerNorm; the MoE layer computes it, so it becomes an identity and the rest still runs.
            parent, _, name = cls.down_attr.rpartition(".")
            setattr(layer.get_submodule(parent), name, nn.Identity())

    @classmethod
    def ffn_module_name(cls) -> str:
        """Attribute of a layer that holds the MoE module once installed."""
        return cls.ffn_attr


class RobertaMoEFamily(MoEFamily):
    family = "roberta"
    model_type = "roberta"
    class_prefix = "Roberta"
    config_class = RobertaConfig
    task_classes = (RobertaModel, RobertaForSequenceClassification, RobertaForMaskedLM, RobertaForTokenClassification)


class XLMRobertaMoEFamily(MoEFamily):
    family = "xlm-roberta"
    model_type = "xlm-roberta"
    class_prefix = "XLMRoberta"
    config_class = XLMRobertaConfig
    task_classes = (
        XLMRobertaModel,
        XLMRobertaForSequenceClassification,
        XLMRobertaForMaskedLM,
        XLMRobertaForTokenClassification,
    )


class ElectraMoEFamily(MoEFamily):
    family = "electra"
    model_type = "electra"
    class_prefix = "Electra"
    config_class = ElectraConfig
    task_classes = (ElectraModel, ElectraForSequenceClassification, ElectraForMaskedLM, ElectraForTokenClassification)


class MPNetMoEFamily(MoEFamily):
    family = "mpnet"
    model_type = "mpnet"
    class_prefix = "MPNet"
    config_class = MPNetConfig
    task_classes = (MPNetModel, MPNetForSequenceClassification, MPNetForMaskedLM, MPNetForTokenClassification)


class DistilBertMoEFamily(MoEFamily):
    """DistilBERT: ``transformer.layer[i].ffn`` (lin1, activation, lin2, dropout)."""

    family = "distilbert"
    model_type = "distilbert"
    class_prefix = "DistilBert"
    config_class = DistilBertConfig
    task_classes = (
        DistilBertModel,
        DistilBertForSequenceClassification,
        DistilBertForMaskedLM,
        DistilBertForTokenClassification,
    )
    layers_attr = "transformer.layer"
    ffn_attr = "ffn"
    up_attr = "ffn.lin1"
    down_attr = "ffn.lin2"

    @classmethod
    def num_layers_of(cls, config) -> int:
        return config.n_layers

    @classmethod
    def hidden_size_of(cls, config) -> int:
        return config.dim

    @classmethod
    def intermediate_size_of(cls, config) -> int:
        return config.hidden_dim

    @classmethod
    def activation_of(cls, config) -> str:
        return config.activation

    @classmethod
    def ffn_dropout_of(cls, config) -> float:
        return config.dropout


class GPT2MoEFamily(MoEFamily):
    """GPT-2: ``h[i].mlp`` with ``Conv1D`` projections (weights already stored ``(in, out)``)."""

    family = "gpt2"
    model_type = "gpt2"
    class_prefix = "GPT2"
    config_class = GPT2Config
    task_classes = (GPT2Model, GPT2LMHeadModel, GPT2ForSequenceClassification)
    layers_attr = "h"
    ffn_attr = "mlp"
    up_attr = "mlp.c_fc"
    down_attr = "mlp.c_proj"
    weights_in_out = True

    @classmethod
    def num_layers_of(cls, config) -> int:
        return config.n_layer

    @classmethod
    def hidden_size_of(cls, config) -> int:
        return config.n_embd

    @classmethod
    def intermediate_size_of(cls, config) -> int:
        return config.n_inner if config.n_inner is not None else 4 * config.n_embd

    @classmethod
    def activation_of(cls, config) -> str:
        return config.activation_function

    @classmethod
    def ffn_dropout_of(cls, config) -> float:
        return config.resid_pdrop


class LlamaMoEFamily(MoEFamily):
    """Llama-family decoders: ``layers[i].mlp`` = ``down(act(gate(x)) * up(x))``."""

    family = "llama"
    model_type = "llama"
    class_prefix = "Llama"
    config_class = LlamaConfig
    task_classes = (LlamaModel, LlamaForCausalLM, LlamaForSequenceClassification)
    gated = True
    layers_attr = "layers"
    ffn_attr = "mlp"
    up_attr = "mlp.up_proj"
    down_attr = "mlp.down_proj"
    gate_attr = "mlp.gate_proj"

    @classmethod
    def has_bias(cls, config) -> bool:
        return bool(getattr(config, "mlp_bias", False))


class ViTMoEFamily(MoEFamily):
    """HF ViT: ``layers[i].mlp`` (fc1, activation, fc2); the layer applies dropout and the residual."""

    family = "vit"
    model_type = "vit"
    class_prefix = "ViT"
    config_class = ViTConfig
    task_classes = (ViTModel, ViTForImageClassification)
    text = False
    ffn_attr = "mlp"
    up_attr = "mlp.fc1"
    down_attr = "mlp.fc2"

    @classmethod
    def layers(cls, model: nn.Module) -> nn.ModuleList:
        base = model.base_model
        # transformers 5 keeps the layers on the model; earlier versions under ``encoder.layer``.
        return base.layers if hasattr(base, "layers") else base.encoder.layer


MOE_FAMILIES: dict[str, type[MoEFamily]] = {
    family.model_type: family
    for family in (
        MoEFamily,
        RobertaMoEFamily,
        XLMRobertaMoEFamily,
        ElectraMoEFamily,
        MPNetMoEFamily,
        DistilBertMoEFamily,
        GPT2MoEFamily,
        LlamaMoEFamily,
        ViTMoEFamily,
    )
}


def get_moe_family(model_type: str) -> type[MoEFamily]:
    """The :class:`MoEFamily` for a config ``model_type``, or a ``ValueError`` listing the supported ones.

    Args:
        model_type: E.g. ``"bert"``; ``"switch_moe_bert"`` also works.
    """
    if model_type.startswith("switch_moe_"):
        model_type = model_type[len("switch_moe_") :]
    try:
        return MOE_FAMILIES[model_type]
    except KeyError:
        supported = ", ".join(sorted(MOE_FAMILIES))
        raise ValueError(
            f"Unsupported architecture for switch MoE: model_type={model_type!r}. Supported families: {supported}. "
            "To add one, subclass adaptive_hf.moe.families.MoEFamily (layers, dense_ffn_weights, install) and call "
            "adaptive_hf.register_moe_family(YourFamily)."
        ) from None
