"""The early-exit technique's spec (text and vision), registered once."""

from __future__ import annotations

import numpy as np

from ..core.technique import Knob, TechniqueSpec, register_technique
from .commands import cli_bench, cli_calibrate, cli_evaluate

# Thresholds from most to least compute: a confidence/margin head exits at >= t, so t = 1 exits least; an entropy
# head exits at <= t, so t = 0 exits least.
_DESCENDING = tuple(round(float(t), 4) for t in np.linspace(1.0, 0.0, 101))
_FINE_HIGH = (0.9999, 0.9995, 0.999, 0.998, 0.997, 0.995, 0.99, 0.985, 0.98, 0.975)
CONFIDENCE_THRESHOLDS = tuple(sorted(set(_DESCENDING) | set(_FINE_HIGH), reverse=True))
ENTROPY_THRESHOLDS = tuple(sorted({round(1.0 - t, 5) for t in CONFIDENCE_THRESHOLDS}))


def _patience_values(config) -> list[int]:
    return list(range(len(config.exit_layers), 0, -1))


SPEC = register_technique(
    TechniqueSpec(
        name="early_exit",
        model_types=("early_exit_",),
        knobs=(
            Knob("exit_threshold", CONFIDENCE_THRESHOLDS, when={"exit_policy": "confidence"}),
            Knob("exit_threshold", ENTROPY_THRESHOLDS, when={"exit_policy": "entropy"}),
            Knob("exit_threshold", CONFIDENCE_THRESHOLDS, when={"exit_policy": "margin"}),
            Knob("patience", _patience_values, when={"exit_policy": "patience", "exit_threshold": None}),
        ),
        full_compute={"exit_policy": "none"},
        structural_fields=("exit_layers", "exit_pooling", "exit_head", "exit_granularity", "architecture"),
        training_fields=("exit_training", "exit_loss_weights", "exit_training_stage", "distill_temperature"),
        description="early exits: classifier heads after chosen layers; a sample stops at the first confident one",
        cli={"calibrate": cli_calibrate, "evaluate": cli_evaluate, "bench": cli_bench},
        exportable=True,
    )
)
