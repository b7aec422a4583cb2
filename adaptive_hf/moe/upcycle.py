"""Dense-to-MoE upcycling: every expert starts as a copy of the pretrained dense FFN.

``upcycle(model, SwitchMoEConfig(num_experts=8, moe_layers=[2, 4, 6]))`` returns the matching
``SwitchMoE<StockClass>`` with all the dense weights, and in each MoE layer E copies of that layer's FFN (plus
optional noise) behind a fresh router. A timm vision transformer becomes a
``SwitchMoETimmForImageClassification`` whose config records the timm architecture and constructor arguments.
With the default ``gate_scaling="straight_through"`` every kept token's expert output is weighted by exactly 1, so
with enough capacity (or ``capacity_factor=0``) and no noise the upcycled model computes the same function as the
dense one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import MOE_FIELDS, SWITCH_MOE_CONFIGS, SwitchMoEConfig
from .families import get_moe_family
from .modeling import SwitchMoEModelMixin, moe_model_class_for
from .timm_config import SwitchMoETimmConfig, TimmViTMoEFamily
from .timm_modeling import SwitchMoETimmForImageClassification, is_timm_model, timm_model_description

_DROPPED_CONFIG_KEYS = ("model_type", "architectures", "auto_map", "transformers_version")


def _noisy_copy(weight: torch.Tensor, noise: float, generator: torch.Generator | None) -> torch.Tensor:
    weight = weight.detach().to(torch.float32)
    if noise <= 0:
        return weight
    scale = weight.std() if weight.numel() > 1 else weight.abs().mean()
    perturbation = torch.randn(weight.shape, generator=generator, dtype=torch.float32, device="cpu").to(weight.device)
    return weight + noise * scale * perturbation


@torch.no_grad()
def copy_dense_ffn_into_experts(
    experts: nn.Module,
    dense: dict[str, torch.Tensor | None],
    noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> None:
    """Fills every expert of a ``SwitchExperts`` with the dense FFN weights (plus optional noise per expert).

    Args:
        experts: The ``SwitchExperts`` module.
        dense: ``(in, out)`` matrices and biases as returned by ``MoEFamily.dense_ffn_weights``.
        noise: Standard deviations (of each weight tensor) of Gaussian noise added independently per expert.
        generator: Random generator for the noise.
    """
    up = dense["up"] if "gate" not in dense else torch.cat([dense["gate"], dense["up"]], dim=-1)
    up_bias = dense.get("up_bias")
    if "gate" in dense and up_bias is not None:
        up_bias = torch.cat([dense["gate_bias"], up_bias], dim=-1)
    for expert in range(experts.num_experts):
        experts.up_proj[expert].copy_(_noisy_copy(up, noise, generator))
        experts.down_proj[expert].copy_(_noisy_copy(dense["down"], noise, generator))
        if experts.up_bias is not None:
            experts.up_bias[expert].copy_(up_bias.detach())
            experts.down_bias[expert].copy_(dense["down_bias"].detach())


def upcycle(
    model: nn.Module,
    moe_config: SwitchMoEConfig | None = None,
    *,
    seed: int | None = None,
    **overrides: Any,
) -> SwitchMoEModelMixin:
    """Converts a dense model into its ``SwitchMoE`` counterpart, experts copied from the dense FFNs.

    Args:
        model: A stock Hugging Face model of a supported family (BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT, MPNet,
            GPT-2, Llama, ViT), any task head; or a timm vision transformer made by ``timm.create_model`` (ViT,
            DeiT), which becomes a ``SwitchMoETimmForImageClassification`` (``moe_layers`` are then block indices).
        moe_config: The MoE settings; ``None`` = :class:`SwitchMoEConfig` defaults.
        seed: Seed for the router initialization and the expert noise (``None`` = the global RNG).
        **overrides: MoE fields that replace those of ``moe_config`` (e.g. ``num_experts=4``).

    Returns:
        The ``SwitchMoE`` model, in the dense model's dtype, device and train/eval mode. Its config is the dense
        config (for timm: the architecture and constructor arguments) plus the MoE fields, so
        ``save_pretrained``/``from_pretrained`` round-trip it.
    """
    if isinstance(model, SwitchMoEModelMixin):
        raise ValueError("`model` is already a switch-MoE model; upcycle a dense model.")
    settings = (moe_config or SwitchMoEConfig()).to_moe_dict()
    unknown = sorted(set(overrides) - set(MOE_FIELDS))
    if unknown:
        raise TypeError(f"Unknown MoE settings {unknown}; the fields are {list(MOE_FIELDS)}.")
    settings.update(overrides)
    if is_timm_model(model):
        family = TimmViTMoEFamily
        config = SwitchMoETimmConfig(**timm_model_description(model), **settings)
        moe_model = SwitchMoETimmForImageClassification(config)
        target = moe_model.timm_model  # the timm model's own state-dict names
    else:
        family = get_moe_family(getattr(model.config, "model_type", ""))
        target_class = moe_model_class_for(type(model))
        config_dict = {k: v for k, v in model.config.to_dict().items() if k not in _DROPPED_CONFIG_KEYS}
        config_dict.update(settings)
        config = SWITCH_MOE_CONFIGS[family.model_type].from_dict(config_dict)
        config._attn_implementation = model.config._attn_implementation
        moe_model = target_class(config)
        target = moe_model

    parameter = next(model.parameters())
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    missing, unexpected = target.load_state_dict(model.state_dict(), strict=False)
    moe_prefixes = _moe_key_prefixes(target, moe_model.moe_modules())
    dense_layers = family.layers(model)
    bad_missing = [key for key in missing if not key.startswith(moe_prefixes)]
    if bad_missing:
        raise RuntimeError(f"Upcycling left weights uninitialized: {bad_missing[:5]}")
    for module, layer_number in zip(moe_model.moe_modules(), config.moe_layers, strict=True):
        dense = family.dense_ffn_weights(dense_layers[layer_number - 1])
        copy_dense_ffn_into_experts(module.experts, dense, config.expert_noise, generator)
        std = getattr(config, "initializer_range", None) or 0.02
        with torch.no_grad():
            weight = torch.randn(module.router.weight.shape, generator=generator) * std
            module.router.weight.copy_(weight)
    del unexpected  # the dense FFN weights of the converted layers, now in the experts
    moe_model.to(device=parameter.device, dtype=parameter.dtype)
    moe_model.train(model.training)
    return moe_model


def _moe_key_prefixes(root: nn.Module, modules: list[nn.Module]) -> tuple[str, ...]:
    names = {id(module): name for name, module in root.named_modules()}
    return tuple(names[id(module)] + "." for module in modules)
