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

from torch import nn

from ..core.adapters.timm import TimmViTAdapter
from .config import MOE_FIELDS, SwitchMoEConfig
from .conversion import copy_dense_ffn_into_experts, match_dense_placement, upcycle_from_dense
from .modeling import SwitchMoEModelMixin, upcycle_hf_model
from .timm_config import SwitchMoETimmConfig
from .timm_modeling import SwitchMoETimmForImageClassification, is_timm_model, timm_model_description

__all__ = ["copy_dense_ffn_into_experts", "upcycle"]


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
            GPT-2, Llama, ViT, and any family registered with ``adaptive_hf.register_family`` whose adapter has an
            ``ffn_slot``), any task head; or a timm vision transformer made by ``timm.create_model`` (ViT, DeiT),
            which becomes a ``SwitchMoETimmForImageClassification`` (``moe_layers`` are then block indices).
        moe_config: The MoE settings; ``None`` = :class:`SwitchMoEConfig` defaults.
        seed: Seed for the router initialization and the expert noise (``None`` = the global RNG).
        **overrides: MoE fields that replace those of ``moe_config`` (e.g. ``num_experts=4``).

    Returns:
        The ``SwitchMoE`` model, in the dense model's dtype, device and train/eval mode. Its config is the dense
        config (for timm: the architecture and constructor arguments) plus the MoE fields, so
        ``save_pretrained``/``from_pretrained`` round-trip it.

    Raises:
        RuntimeError: The dense weights do not all find a place (only the replaced FFN weights may be left over).
    """
    if isinstance(model, SwitchMoEModelMixin):
        raise ValueError("`model` is already a switch-MoE model; upcycle a dense model.")
    settings = (moe_config or SwitchMoEConfig()).to_moe_dict()
    unknown = sorted(set(overrides) - set(MOE_FIELDS))
    if unknown:
        raise TypeError(f"Unknown MoE settings {unknown}; the fields are {list(MOE_FIELDS)}.")
    settings.update(overrides)
    if not is_timm_model(model):
        return upcycle_hf_model(model, settings, seed)
    config = SwitchMoETimmConfig(**timm_model_description(model), **settings)
    moe_model = SwitchMoETimmForImageClassification(config)
    # the timm model holds the dense model's own state-dict names
    upcycle_from_dense(moe_model, model, TimmViTAdapter, target=moe_model.timm_model, seed=seed)
    return match_dense_placement(moe_model, model)
