"""Adaptive video frame samplers (uniform, saliency, early stop) and the Moving Fashion-MNIST video set."""

from .auto import register_video
from .config import FrameSamplingVideoConfig
from .data import VideoCollator, load_fashion_mnist_frames, load_moving_fashion_mnist
from .modeling import FrameSamplingVideoClassifier, FrameSamplingVideoClassifierOutput

__all__ = [
    "FrameSamplingVideoClassifier",
    "FrameSamplingVideoClassifierOutput",
    "FrameSamplingVideoConfig",
    "VideoCollator",
    "load_fashion_mnist_frames",
    "load_moving_fashion_mnist",
    "register_video",
]
