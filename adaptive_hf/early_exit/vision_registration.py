"""Registration of the vision early-exit classes (Auto classes and timm names), run on ``import adaptive_hf``.

Kept apart from the modeling module: a saved model's code bundle copies every package module that its modeling
module imports, and the registry imports every technique.
"""

from __future__ import annotations

from transformers import AutoModelForImageClassification

from ..core.registry import register
from .vision_config import EarlyExitTimmConfig, EarlyExitViTConfig
from .vision_modeling import (
    BUILTIN_TIMM_ARCHITECTURES,
    EarlyExitTimmForImageClassification,
    EarlyExitViTForImageClassification,
    register_timm_early_exit,
)


def register_vision_early_exit() -> None:
    """Registers the vision early-exit configs/models with the Auto classes and the built-in timm names."""
    register(
        "early_exit", "timm", EarlyExitTimmConfig, EarlyExitTimmForImageClassification, AutoModelForImageClassification
    )
    register(
        "early_exit", "vit", EarlyExitViTConfig, EarlyExitViTForImageClassification, AutoModelForImageClassification
    )
    for architecture in BUILTIN_TIMM_ARCHITECTURES:
        register_timm_early_exit(architecture)
