"""The optional packages of ``adaptive_hf.onnx``, checked when first needed, with an error that names the extra."""

from __future__ import annotations

import importlib

EXTRA = "adaptive-hf[export]"


def _missing(names: list[str]) -> list[str]:
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def require(names: list[str], purpose: str) -> None:
    """Raises an ``ImportError`` naming the extra when any of ``names`` cannot be imported.

    Args:
        names: Top-level module names (``"onnxruntime"``).
        purpose: What they are needed for, for the message.
    """
    missing = _missing(names)
    if missing:
        raise ImportError(
            f"{purpose} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed. "
            f"Install the export extra: pip install '{EXTRA}'."
        )


def require_export_dependencies(need_onnxscript: bool = True) -> None:
    """Checks what :func:`adaptive_hf.onnx.export` needs (onnx; onnxscript for the dynamo exporter)."""
    require(["onnx", "onnxscript"] if need_onnxscript else ["onnx"], "Exporting to ONNX")


def require_runtime() -> None:
    """Checks what :class:`adaptive_hf.onnx.AdaptiveOnnxModel` needs (onnxruntime)."""
    require(["onnxruntime"], "Running exported ONNX segments")
