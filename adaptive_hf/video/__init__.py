"""Adaptive video frame samplers (uniform, saliency, early stop) and the Moving Fashion-MNIST video set."""

from .config import FrameSamplingVideoConfig
from .data import VideoCollator, load_moving_fashion_mnist
from .modeling import FrameSamplingVideoClassifier, FrameSamplingVideoClassifierOutput, register_video

__all__ = [
    "FrameSamplingVideoClassifier",
    "FrameSamplingVideoClassifierOutput",
    "FrameSamplingVideoConfig",
    "VideoCollator",
    "load_moving_fashion_mnist",
    "register_video",
]
