"""The switch mixture-of-experts technique's spec, registered once.

A switch layer runs one expert per token by design, so there is no knob to calibrate; full compute means dropless
routing (no token loses its expert to a capacity limit).
"""

from __future__ import annotations

import torch

from ..core.technique import TechniqueSpec, register_technique


def _active_parameters(model) -> float:
    from .layer import SwitchMoEFeedForward

    total = sum(p.numel() for p in model.parameters())
    top_k = getattr(model.config, "num_experts_per_tok", 1) or 1
    for module in model.modules():
        if isinstance(module, SwitchMoEFeedForward):
            experts = sum(p.numel() for p in module.experts.parameters())
            total -= experts * (1 - min(top_k, module.num_experts) / module.num_experts)
    return float(total)


def moe_cost(model, outputs, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample FLOPs as 2 x active parameters x tokens; spent equals full.

    A switch layer runs ``num_experts_per_tok`` experts per token by design, so nothing is skipped against the
    model's own full compute (dropless routing) and ``spent == full``. The count is the standard 2N-per-token
    approximation; tokens are the real tokens of a text row, or the tokens each image sent through the routers.

    Args:
        model: A switch-MoE model (text or timm).
        outputs: Its output (``expert_counts`` for images).
        batch: The inputs.
    """
    if "input_ids" in batch:
        mask = batch.get("attention_mask")
        ids = batch["input_ids"]
        tokens = mask.sum(1).double().cpu() if mask is not None else torch.full((ids.size(0),), float(ids.size(1)))
    else:
        rows = next(iter(batch.values())).size(0)
        counts = getattr(outputs, "expert_counts", None)
        per_image = float(counts[0].sum()) / rows if counts is not None else 1.0
        tokens = torch.full((rows,), per_image, dtype=torch.float64)
    full = 2.0 * _active_parameters(model) * tokens.to(torch.float64)
    return full.clone(), full


SPEC = register_technique(
    TechniqueSpec(
        name="switch_moe",
        adaptive_modules=("router",),
        # "switch_moe" is the standalone settings config; the models' configs are "switch_moe_<family>".
        model_types=("switch_moe", "switch_moe_"),
        knobs=(),
        full_compute={"capacity_factor": 0},
        # num_experts_per_tok (top-k) is a routing knob read at every forward, not structure: the router always scores
        # every expert.
        structural_fields=("num_experts", "moe_layers", "architecture"),
        training_fields=("router_z_loss_coef", "router_aux_loss_coef", "router_jitter", "expert_noise"),
        cost=moe_cost,
        description="switch mixture-of-experts: each token runs one expert feed-forward of several",
        export_refusal=(
            "switch MoE skips inside every layer (each token runs the one expert its router picks), not between "
            "segments of layers, so there is no segment boundary at which rows leave; adaptive_hf.onnx exports "
            "early exits only."
        ),
    )
)
