"""Auto-class registration of the video classifier.

It lives apart from the modeling module: a saved model's code bundle copies the modeling module and everything it
imports, and the registry's imports must not travel with it.
"""

from __future__ import annotations


def register_video() -> None:
    """Registers the video config/model with ``AutoConfig`` and ``AutoModelForVideoClassification``."""
    from transformers import AutoModelForVideoClassification

    from ..core.registry import register
    from .modeling import FrameSamplingVideoClassifier, FrameSamplingVideoConfig

    register(
        "frame_sampling",
        "timm",
        FrameSamplingVideoConfig,
        FrameSamplingVideoClassifier,
        AutoModelForVideoClassification,
    )
