"""The early-exit technique's spec (text and vision), registered once."""

from __future__ import annotations

import numpy as np
import torch

from ..core.technique import Knob, TechniqueSpec, register_technique
from .commands import cli_bench, cli_evaluate

# Thresholds from most to least compute: a confidence/margin head exits at >= t, so t = 1 exits least; an entropy
# head exits at <= t, so t = 0 exits least.
_DESCENDING = tuple(round(float(t), 4) for t in np.linspace(1.0, 0.0, 101))
_FINE_HIGH = (0.9999, 0.9995, 0.999, 0.998, 0.997, 0.995, 0.99, 0.985, 0.98, 0.975)
CONFIDENCE_THRESHOLDS = tuple(sorted(set(_DESCENDING) | set(_FINE_HIGH), reverse=True))
ENTROPY_THRESHOLDS = tuple(sorted({round(1.0 - t, 5) for t in CONFIDENCE_THRESHOLDS}))


def _patience_values(config) -> list[int]:
    return list(range(len(config.exit_layers), 0, -1))


def _token_counts(batch) -> torch.Tensor:
    mask = batch.get("attention_mask")
    if mask is not None:
        return mask.sum(1).cpu().long()
    ids = batch["input_ids"]
    return torch.full((ids.size(0),), ids.size(1), dtype=torch.long)


def exit_cost(model, outputs, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample FLOPs spent (up to the exit each sample took, every head on the way) and at full depth.

    Args:
        model: An early-exit classifier (text or image).
        outputs: Its eval-mode output (``exit_layer`` per sample).
        batch: The inputs: ``input_ids`` (+ ``attention_mask``) for text, ``pixel_values`` for images.
    """
    layers = outputs.exit_layer.cpu().long().view(-1)
    count = layers.numel()
    if "pixel_values" in batch:
        costs, full = model.exit_flops()  # one cost per image at the configured input size
        per_exit = torch.tensor(costs, dtype=torch.float64).expand(count, -1)
        full_cost = torch.full((count,), float(full), dtype=torch.float64)
    else:
        from .calibration import sample_costs

        per_exit, full_cost = sample_costs(model, _token_counts(batch))
    if model.config.exit_policy == "none":
        return full_cost.clone(), full_cost  # full depth evaluates the final head only
    head_of_layer = torch.full((max(model.config.exit_layers) + 1,), -1, dtype=torch.long)
    head_of_layer[torch.tensor(model.config.exit_layers)] = torch.arange(len(model.config.exit_layers))
    spent = per_exit.gather(1, head_of_layer[layers].view(-1, 1)).view(-1)
    return spent, full_cost


def _replay(*args, **kwargs):
    from .replay import replay_candidates

    return replay_candidates(*args, **kwargs)


SPEC = register_technique(
    TechniqueSpec(
        name="early_exit",
        adaptive_modules=("exit_heads",),
        model_types=("early_exit_",),
        knobs=(
            Knob("exit_threshold", CONFIDENCE_THRESHOLDS, when={"exit_policy": "confidence"}),
            Knob("exit_threshold", ENTROPY_THRESHOLDS, when={"exit_policy": "entropy"}),
            Knob("exit_threshold", CONFIDENCE_THRESHOLDS, when={"exit_policy": "margin"}),
            Knob("patience", _patience_values, when={"exit_policy": "patience", "exit_threshold": None}),
        ),
        full_compute={"exit_policy": "none"},
        structural_fields=("exit_layers", "head_pooling", "head_type", "exit_granularity", "architecture"),
        training_fields=("exit_training", "exit_loss_weights", "exit_training_stage", "distill_temperature"),
        cost=exit_cost,
        description="early exits: classifier heads after chosen layers; a sample stops at the first confident one",
        replay=_replay,
        cli={"evaluate": cli_evaluate, "bench": cli_bench},
        exportable=True,
    )
)
