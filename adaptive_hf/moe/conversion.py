"""Dense-to-MoE weight conversion: every expert starts as a copy of the layer's dense FFN.

Used by ``adaptive_hf.upcycle`` and by ``SwitchMoE<Class>.from_pretrained`` on a dense checkpoint. It needs only the
family's adapter (the layer list and the FFN slot), so it imports no model class.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.adapters.base import BackboneAdapter


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
        dense: ``(in, out)`` matrices and biases as returned by ``BackboneAdapter.dense_ffn_weights``.
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


def _prefixes(root: nn.Module, modules: list[nn.Module]) -> tuple[str, ...]:
    names = {id(module): name for name, module in root.named_modules()}
    return tuple(names[id(module)] + "." for module in modules)


def replaced_dense_prefixes(
    dense_model: nn.Module, adapter: type[BackboneAdapter], moe_layers: list[int]
) -> tuple[str, ...]:
    """State-dict prefixes of the dense FFN modules that the MoE layers replace (their weights go to the experts).

    Args:
        dense_model: The dense model.
        adapter: Its family's adapter.
        moe_layers: 1-based layer indices that become MoE layers.
    """
    slot = adapter.require_ffn_slot()
    layers = adapter.model_layers(dense_model)
    modules = [layers[number - 1].get_submodule(path) for number in moe_layers for path in slot.replaced_paths()]
    return _prefixes(dense_model, modules)


def load_dense_into_moe(
    target: nn.Module,
    moe_modules: list[nn.Module],
    dense_model: nn.Module,
    adapter: type[BackboneAdapter],
    moe_layers: list[int],
    *,
    expert_noise: float = 0.0,
    initializer_range: float = 0.02,
    seed: int | None = None,
) -> None:
    """Loads a dense model's weights into its MoE counterpart and fills the experts with the dense FFNs.

    Only the weights of the replaced FFN modules may be left over and only the MoE modules' own weights may be
    missing; anything else means the two models do not match and raises ``RuntimeError``.

    Args:
        target: The MoE module whose state-dict names match the dense model's (the model, or the timm model
            inside it).
        moe_modules: The MoE layers, in ``moe_layers`` order.
        dense_model: The dense model.
        adapter: The family's adapter.
        moe_layers: 1-based layer indices of the MoE layers.
        expert_noise: Noise added to each expert's copy (standard deviations of each weight tensor).
        initializer_range: Standard deviation of the fresh router weights.
        seed: Seed for the router and the noise (``None`` = the global RNG).
    """
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    missing, unexpected = target.load_state_dict(dense_model.state_dict(), strict=False)
    moe_prefixes = _prefixes(target, moe_modules)
    bad_missing = [key for key in missing if not key.startswith(moe_prefixes)]
    if bad_missing:
        raise RuntimeError(f"Upcycling left weights uninitialized: {bad_missing[:5]}")
    replaced = replaced_dense_prefixes(dense_model, adapter, moe_layers)
    bad_unexpected = [key for key in unexpected if not key.startswith(replaced)]
    if bad_unexpected:
        raise RuntimeError(
            f"Upcycling found dense weights that the switch-MoE model has no place for: {bad_unexpected[:5]}. Only "
            "the replaced feed-forward weights may be left over."
        )
    dense_layers = adapter.model_layers(dense_model)
    for module, layer_number in zip(moe_modules, moe_layers, strict=True):
        dense = adapter.dense_ffn_weights(dense_layers[layer_number - 1])
        copy_dense_ffn_into_experts(module.experts, dense, expert_noise, generator)
        with torch.no_grad():
            weight = torch.randn(module.router.weight.shape, generator=generator) * initializer_range
            module.router.weight.copy_(weight)


def upcycle_from_dense(
    moe_model: nn.Module,
    dense_model: nn.Module,
    adapter: type[BackboneAdapter],
    *,
    target: nn.Module | None = None,
    seed: int | None = None,
) -> None:
    """:func:`load_dense_into_moe` with the MoE model's own settings (layers, expert noise, router init).

    Args:
        moe_model: The freshly built switch-MoE model (its ``config`` holds the MoE fields).
        dense_model: The dense model.
        adapter: The family's adapter.
        target: The module whose state-dict names match the dense model's (``None`` = ``moe_model``).
        seed: Seed for the router and the noise (``None`` = the global RNG).
    """
    config = moe_model.config
    load_dense_into_moe(
        moe_model if target is None else target,
        moe_model.moe_modules(),
        dense_model,
        adapter,
        config.moe_layers,
        expert_noise=config.expert_noise,
        initializer_range=getattr(config, "initializer_range", None) or 0.02,
        seed=seed,
    )


def match_dense_placement(moe_model: nn.Module, dense_model: nn.Module) -> nn.Module:
    """Puts an upcycled model on the dense model's device and dtype, in its train/eval mode, and returns it.

    Args:
        moe_model: The upcycled model.
        dense_model: The dense model it came from.
    """
    parameter = next(dense_model.parameters())
    moe_model.to(device=parameter.device, dtype=parameter.dtype)
    moe_model.train(dense_model.training)
    return moe_model
