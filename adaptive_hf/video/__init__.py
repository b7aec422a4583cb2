"""Adaptive video frame samplers (uniform, saliency, early stop), the Moving Fashion-MNIST video set, and video files
decoded lazily (only the frames a sampler picks; PyAV from the ``video`` extra, imported when a file is read)."""

from .auto import register_video
from .config import FrameSamplingVideoConfig
from .data import VideoCollator, load_fashion_mnist_frames, load_moving_fashion_mnist
from .decoding import VideoDecodingError, probe_video, write_video
from .file_evaluation import evaluate_video_files
from .files import VideoFileCollator, VideoFileSource, load_video_folder
from .modeling import FrameSamplingVideoClassifier, FrameSamplingVideoClassifierOutput
from .sources import FrameSource, TensorFrameSource

__all__ = [
    "FrameSamplingVideoClassifier",
    "FrameSamplingVideoClassifierOutput",
    "FrameSamplingVideoConfig",
    "FrameSource",
    "TensorFrameSource",
    "VideoCollator",
    "VideoDecodingError",
    "VideoFileCollator",
    "VideoFileSource",
    "evaluate_video_files",
    "load_fashion_mnist_frames",
    "load_moving_fashion_mnist",
    "load_video_folder",
    "probe_video",
    "register_video",
    "write_video",
]
