"""Switch-MoE config for timm vision transformers: the timm ``architecture`` and ``model_args`` plus the MoE fields.

:class:`SwitchMoETimmConfig` is a ``core.vision_backbones.TimmClassifierConfig`` (the timm model by name and
constructor arguments, like the vision early-exit, halting and video configs), so ``from_pretrained`` rebuilds the
timm model exactly, plus the MoE layout (``num_experts``, ``moe_layers``, ...). ``moe_layers`` are 1-based block
indices.

:class:`TimmViTMoEAdapter` tells the MoE machinery where a timm ViT keeps its blocks and their ``Mlp``; unlike the
Hugging Face families it reads the FFN's shape from the block, since a timm config holds only constructor
arguments.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..core.adapters.base import BackboneAdapter, FfnSlot
from ..core.vision_backbones import TimmClassifierConfig, TimmViTAdapter
from .config import make_moe_config_class

# timm activation modules (by class name) -> the transformers ACT2FN name computing the same function.
_TIMM_ACTIVATIONS = {
    "GELU": "gelu",
    "GELUTanh": "gelu_pytorch_tanh",
    "QuickGELU": "quick_gelu",
    "SiLU": "silu",
    "Swish": "silu",
    "ReLU": "relu",
}


def timm_activation_name(module: nn.Module) -> str:
    """The ``ACT2FN`` name of a timm MLP activation module, or a ``ValueError`` naming the supported ones.

    Args:
        module: E.g. ``nn.GELU()``.
    """
    name = type(module).__name__
    if name == "GELU" and getattr(module, "approximate", "none") == "tanh":
        return "gelu_pytorch_tanh"
    if name in _TIMM_ACTIVATIONS:
        return _TIMM_ACTIVATIONS[name]
    raise ValueError(
        f"Unsupported timm MLP activation {name} for switch MoE; supported: {', '.join(sorted(_TIMM_ACTIVATIONS))}."
    )


class TimmViTMoEAdapter(BackboneAdapter):
    """timm vision transformers (``VisionTransformer`` and subclasses: ViT, DeiT): ``blocks[i].mlp`` is a timm
    ``Mlp`` (``fc1``, activation, ``fc2``); the block applies ``drop_path``, layer scale and the residual."""

    family: ClassVar[str] = "timm"
    model_type: ClassVar[str] = "timm"
    class_prefix: ClassVar[str] = "Timm"
    config_class: ClassVar[type] = TimmClassifierConfig
    modality: ClassVar[str] = "image"
    ffn_slot: ClassVar[FfnSlot | None] = FfnSlot("mlp", up="mlp.fc1", down="mlp.fc2")

    @classmethod
    def num_layers_of(cls, config) -> int:
        return config.check_vision_transformer(
            "Switch MoE for timm supports vision transformers (ViT, DeiT: `VisionTransformer` and its subclasses)"
        ).num_units

    @classmethod
    def check_moe_config(cls, config) -> None:
        pass  # nothing to reject beyond what num_layers_of checks

    @classmethod
    def model_layers(cls, model: nn.Module) -> list[nn.Module]:
        """The blocks of a timm ViT, or of the one inside a ``SwitchMoETimmForImageClassification``."""
        return TimmViTAdapter(getattr(model, "timm_model", model), "block").units

    @classmethod
    def _mlp(cls, layer: nn.Module) -> nn.Module:
        mlp = getattr(layer, "mlp", None)
        parts = ("fc1", "act", "fc2")
        if mlp is None or not all(hasattr(mlp, part) for part in parts) or hasattr(mlp, "fc1_g"):
            raise ValueError(
                "Switch MoE for timm needs blocks whose `mlp` is a timm `Mlp` (fc1, act, fc2); got "
                f"{type(mlp).__name__}. Gated MLPs (SwiGLU, GluMlp) are not supported yet."
            )
        if not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity):
            raise ValueError("Switch MoE for timm does not support an `Mlp` with a norm layer inside it.")
        return mlp

    @classmethod
    def ffn_spec(cls, config, layer: nn.Module | None = None) -> dict:
        if layer is None:
            raise ValueError("The timm family reads the FFN's shape from the block; pass `layer`.")
        mlp = cls._mlp(layer)
        # drop1 (inside the MLP) is not reproduced by the experts; the output dropout drop2 is.
        return {
            "hidden_size": mlp.fc1.in_features,
            "intermediate_size": mlp.fc1.out_features,
            "activation": timm_activation_name(mlp.act),
            "gated": False,
            "bias": mlp.fc1.bias is not None,
            "dropout": float(getattr(mlp.drop2, "p", 0.0)),
        }

    @classmethod
    def dense_ffn_weights(cls, layer: nn.Module) -> dict[str, torch.Tensor | None]:
        cls._mlp(layer)  # rejects the MLPs the experts cannot reproduce
        return super().dense_ffn_weights(layer)


SwitchMoETimmConfig = make_moe_config_class(TimmViTMoEAdapter, module=__name__)
SwitchMoETimmConfig.__doc__ = (
    "Config of ``SwitchMoETimmForImageClassification``: the timm ``architecture`` and ``model_args`` (see "
    ":class:`~adaptive_hf.core.vision_backbones.TimmClassifierConfig`) plus the switch-MoE fields (see "
    ":class:`~adaptive_hf.moe.config.SwitchMoEConfig`); ``moe_layers`` are 1-based block indices."
)
