"""The video frame samplers' spec, registered once."""

from __future__ import annotations

import torch

from ..core.technique import Knob, TechniqueSpec, register_technique
from .evaluation import cli_bench, cli_evaluate

# Early stop ends a clip once the gate's stop probability reaches the threshold: a higher threshold sees more frames.
EXIT_THRESHOLDS = (0.999, 0.99, 0.98, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


def _budgets(config) -> list[int]:
    return list(range(config.num_frames, 0, -1))


def _all_frames(config) -> dict:
    if getattr(config, "clip_classifier", "frame_backbone") == "hf_video":
        return {"sampler": "uniform"}  # an HF video model always sees its fixed frame count
    return {"sampler": "uniform", "frame_budget": None}


def _has_budget_knob(config) -> bool:
    return getattr(config, "clip_classifier", "frame_backbone") != "hf_video"


def video_cost(model, outputs, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-video FLOPs spent (``outputs.flops``: backbone frames, glance and gate) and with every frame.

    Args:
        model: A frame-sampling video classifier.
        outputs: Its output (``flops`` per video).
        batch: The inputs: ``pixel_values`` of shape ``(batch, frames, channels, height, width)``.
    """
    spent = outputs.flops.detach().cpu().to(torch.float64).view(-1)
    full = float(model.full_flops(tuple(batch["pixel_values"].shape[2:])))
    return spent, torch.full_like(spent, full)


SPEC = register_technique(
    TechniqueSpec(
        name="video",
        model_types=("frame_sampling_video",),
        # The saliency glance (with its frame classifier), the attention pooling and the early-stop gate.
        adaptive_children=("glance", "attention", "gate"),
        knobs=(
            Knob("exit_threshold", EXIT_THRESHOLDS, when={"sampler": "early_stop"}, applies=_has_budget_knob),
            Knob("frame_budget", _budgets, when={"sampler": "saliency"}, applies=_has_budget_knob),
        ),
        full_compute=_all_frames,
        structural_fields=(
            "architecture",
            "num_frames",
            "aggregation",
            "attention_hidden_size",
            "glance_architecture",
            "glance_resolution",
            "glance_width",
            "gate_hidden_size",
            "clip_classifier",
        ),
        training_fields=(
            "glance_loss_weight",
            "glance_usefulness_weight",
            "sampler_training",
            "topk_temperature",
            "policy_loss_weight",
            "gate_loss_weight",
        ),
        cost=video_cost,
        description="video frame samplers: a cheap glance or a stop gate picks which frames the backbone sees",
        cli={"evaluate": cli_evaluate, "bench": cli_bench},
        export_refusal=(
            "frame samplers choose, clip by clip, which frames the image backbone sees (a data-dependent number "
            "of backbone calls per clip), not rows leaving between fixed segments of layers; adaptive_hf.onnx "
            "exports early exits only."
        ),
    )
)
