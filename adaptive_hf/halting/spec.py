"""The halting technique's spec (ACT / PonderNet, text and timm ViT), registered once."""

from __future__ import annotations

import torch

from ..core.technique import Knob, TechniqueSpec, register_technique
from .commands import cli_bench, cli_evaluate

# A unit halts once its cumulative halting probability reaches the threshold: a higher threshold runs more layers.
HALTING_THRESHOLDS = (0.9999, 0.999, 0.995, 0.99, 0.98, 0.97, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


def halting_cost(model, outputs, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample FLOPs spent (from ``halting_steps``, see ``model.halting_flops``) and at full depth.

    With ``halting_enabled=False`` every layer runs and no halting unit is counted, so spent equals full.

    Args:
        model: A halting classifier (text or image).
        outputs: Its eval-mode output (``halting_steps`` per sample or per token).
        batch: The inputs (``attention_mask`` gives the real tokens of text rows).
    """
    from .benchmarking import token_mask_of

    steps = outputs.halting_steps.cpu()
    mask = token_mask_of(batch, steps)
    spent, full = [], []
    for row in range(steps.size(0)):
        row_full, row_spent = model.halting_flops(steps[row : row + 1], None if mask is None else mask[row : row + 1])
        full.append(float(row_full))
        spent.append(float(row_spent))
    full = torch.tensor(full, dtype=torch.float64)
    if not model.config.halting_enabled:
        return full.clone(), full
    return torch.tensor(spent, dtype=torch.float64), full


SPEC = register_technique(
    TechniqueSpec(
        name="halting",
        adaptive_modules=("halting_units",),
        model_types=("halting_",),
        knobs=(Knob("halting_threshold", HALTING_THRESHOLDS, when={"halting_enabled": True}),),
        full_compute={"halting_enabled": False},
        structural_fields=(
            "head_pooling",
            "head_type",
            "halting_granularity",
            "max_ponder_steps",
            "architecture",
        ),
        training_fields=("ponder_cost", "prior_lambda", "kl_weight"),
        cost=halting_cost,
        description="halting (ACT / PonderNet): a learned unit after each layer decides when a sample or token stops",
        cli={"evaluate": cli_evaluate, "bench": cli_bench},
        export_refusal=(
            "halting decides after every layer, per sample or per token; token-level halting changes which tokens"
            " a layer updates inside the layer (data-dependent token subsets), which the segment graphs of "
            "adaptive_hf.onnx (whole rows leaving between fixed segments) cannot express. Only early exits are "
            "exportable so far."
        ),
    )
)
