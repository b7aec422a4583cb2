"""The switch mixture-of-experts technique's spec, registered once.

A switch layer runs one expert per token by design, so there is no knob to calibrate; full compute means dropless
routing (no token loses its expert to a capacity limit).
"""

from __future__ import annotations

from ..core.technique import TechniqueSpec, register_technique

SPEC = register_technique(
    TechniqueSpec(
        name="switch_moe",
        # "switch_moe" is the standalone settings config; the models' configs are "switch_moe_<family>".
        model_types=("switch_moe", "switch_moe_"),
        knobs=(),
        full_compute={"capacity_factor": 0},
        # num_experts_per_tok (top-k) is a routing knob read at every forward, not structure: the router always scores
        # every expert.
        structural_fields=("num_experts", "moe_layers", "architecture"),
        training_fields=("router_z_loss_coef", "router_aux_loss_coef", "router_jitter", "expert_noise"),
        description="switch mixture-of-experts: each token runs one expert feed-forward of several",
        export_refusal=(
            "switch MoE skips inside every layer (each token runs the one expert its router picks), not between "
            "segments of layers, so there is no segment boundary at which rows leave; adaptive_hf.onnx exports "
            "early exits only."
        ),
    )
)
