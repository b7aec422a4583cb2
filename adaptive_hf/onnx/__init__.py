"""Export that keeps the skipping: early-exit models as ONNX segments, run adaptively in onnxruntime.

* :func:`export` writes one graph per segment between exits (plus the full-depth graph and a manifest);
  ``adaptive-hf export MODEL_DIR OUT_DIR`` does the same from the command line.
* :class:`AdaptiveOnnxModel` runs the segments with the model's exit policy and row compaction: the same exit
  layer and logits as the PyTorch model in eval mode; ``config`` knobs change at run time.

onnx, onnxscript and onnxruntime come with the ``adaptive-hf[export]`` extra; importing this package does not
need them (the functions check when called).
"""

from __future__ import annotations

from .export import EXPORTERS, MANIFEST, export, load_exportable_model
from .runtime import AdaptiveOnnxModel, OnnxExitConfig, OnnxExitOutput, read_manifest

__all__ = [
    "EXPORTERS",
    "MANIFEST",
    "AdaptiveOnnxModel",
    "OnnxExitConfig",
    "OnnxExitOutput",
    "export",
    "load_exportable_model",
    "read_manifest",
]
