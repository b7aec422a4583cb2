"""Registration of the timm early-exit classes (Auto classes and timm names), run on ``import adaptive_hf``.

The Hugging Face image families (ViT, DINOv2, ConvNeXt, ...) come with ``register_family`` through the early-exit
family builder. Kept apart from the modeling module: a saved model's code bundle copies every package module that
its modeling module imports, and the registry imports every technique.
"""

from __future__ import annotations

from transformers import AutoModelForImageClassification

from ..core.registry import register
from .vision_config import EarlyExitTimmConfig
from .vision_modeling import BUILTIN_TIMM_ARCHITECTURES, EarlyExitTimmForImageClassification, register_timm_early_exit


def register_vision_early_exit() -> None:
    """Registers the timm early-exit config/model with the Auto classes and the built-in timm names."""
    register(
        "early_exit", "timm", EarlyExitTimmConfig, EarlyExitTimmForImageClassification, AutoModelForImageClassification
    )
    for architecture in BUILTIN_TIMM_ARCHITECTURES:
        register_timm_early_exit(architecture)
