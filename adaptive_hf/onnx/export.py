"""``adaptive_hf.onnx.export``: an early-exit model as one ONNX graph per segment between exits, plus a manifest.

The folder holds ``segment_<k>.onnx`` for each exit ``k``, ``full.onnx`` (every layer and the final head in one
graph: the full-depth baseline, which the runner also uses under policy ``none``), and ``adaptive_onnx.json``: the
policy settings, the exits, and each graph's file, inputs and outputs. Every graph carries the export's id in its
metadata, so the runner can tell a graph of another export from one of this one. Batch and sequence axes are
dynamic.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.io import write_json
from ..core.technique import technique_of
from ..early_exit.config import validate_exit_settings
from .dependencies import require_export_dependencies
from .segments import (
    HIDDEN_OUT,
    LAYER_MASK,
    LAYER_MASK_AXES,
    MASK,
    TOKEN_MASK,
    Segment,
    build_segments,
    is_text_model,
    text_inputs,
)

FORMAT = "adaptive_hf.onnx"
FORMAT_VERSION = 1
MANIFEST = "adaptive_onnx.json"
FULL_GRAPH = "full.onnx"
EXPORTERS = ("dynamo", "torchscript")
EXPORT_ID_KEY = "adaptive_hf.export_id"
GRAPH_KEY = "adaptive_hf.graph"
# Files of the source folder that a runner needs beside the graphs (tokenizer, image preprocessing).
COMPANION_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "preprocessor_config.json",
)


def load_exportable_model(model_dir_or_model: Any) -> nn.Module:
    """The model to export, in eval mode: the model itself, or the one saved in a folder.

    Args:
        model_dir_or_model: An adaptive model, or a folder written by its ``save_pretrained``.

    Raises:
        ValueError: When the model's technique cannot be exported (the error says why), or the folder holds no
            saved model.
    """
    if isinstance(model_dir_or_model, nn.Module):
        model = model_dir_or_model
    else:
        model = _load_folder(Path(model_dir_or_model))
    try:
        spec = technique_of(model)
    except TypeError as error:
        raise ValueError(f"adaptive_hf.onnx.export exports adaptive_hf early-exit models: {error}") from None
    if not spec.exportable:
        reason = spec.export_refusal or "its technique declares no ONNX export."
        raise ValueError(
            f"{type(model).__name__} ({spec.name}) is not exportable to ONNX segments that keep the skipping: {reason}"
        )
    return model.eval()


def _load_folder(folder: Path) -> nn.Module:
    from transformers import (
        AutoConfig,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
        AutoModelForVideoClassification,
    )

    import adaptive_hf  # noqa: F401  (registers the adaptive configs and models with the Auto classes)

    if not (folder / "config.json").is_file():
        raise ValueError(f"{str(folder)!r} holds no config.json; expected a folder written by save_pretrained.")
    config = AutoConfig.from_pretrained(str(folder))
    technique_of(config)  # a plain transformers model is refused before its weights load
    autos = (AutoModelForImageClassification, AutoModelForVideoClassification, AutoModelForSequenceClassification)
    auto = next((a for a in autos if type(config) in a._model_mapping), AutoModelForSequenceClassification)
    return auto.from_pretrained(str(folder))


def example_inputs(model: nn.Module, batch_size: int = 2, seq_len: int = 8) -> tuple[torch.Tensor, ...]:
    """A small batch to trace the first segment with (token ids with one padded row, or random images).

    Args:
        model: The early-exit model.
        batch_size: Rows (at least 2, so the batch axis is not traced as a constant 1).
        seq_len: Tokens per row for text models.
    """
    generator = torch.Generator().manual_seed(0)
    if is_text_model(model):
        vocab = int(getattr(model.config, "vocab_size", 100))
        # Ids above the special tokens of common vocabularies (and RoBERTa's padding id 1).
        ids = torch.randint(min(5, vocab - 1), vocab, (batch_size, seq_len), generator=generator)
        mask = torch.ones(batch_size, seq_len, dtype=torch.long)
        mask[-1, seq_len // 2 :] = 0
        inputs = [ids, mask]
        if "token_type_ids" in text_inputs(model):
            inputs.append(torch.zeros_like(ids))
        return tuple(inputs)
    height, width = _image_size(model.config)
    channels = model._in_chans()
    return (torch.randn(batch_size, channels, height, width, generator=generator),)


def _image_size(config) -> tuple[int, int]:
    size = config.image_size
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def export(
    model_dir_or_model: Any,
    out_dir: str | Path,
    *,
    exporter: str = "dynamo",
    full_graph: bool = True,
    opset_version: int = 18,
) -> Path:
    """Writes an early-exit model as ONNX segments between exits that :class:`AdaptiveOnnxModel` runs adaptively.

    Args:
        model_dir_or_model: An early-exit model (text, timm or Hugging Face ViT), or a folder written by its
            ``save_pretrained`` (its tokenizer and preprocessing files are copied along).
        out_dir: Folder to write (created; existing graphs of an earlier export are overwritten).
        exporter: ``"dynamo"`` (``torch.onnx.export(dynamo=True)``, the default) or ``"torchscript"`` (the
            legacy tracer, several times faster to export).
        full_graph: Also write ``full.onnx``, the whole model in one graph (the full-depth baseline, used by the
            runner under policy ``none``).
        opset_version: ONNX opset of the graphs.

    Returns:
        The output folder.

    Raises:
        ValueError: A model whose technique is not exportable, or a bad ``exporter``.
        ImportError: onnx, onnxscript or onnxruntime missing (install ``adaptive-hf[export]``).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"`exporter` must be one of {EXPORTERS}; got {exporter!r}.")
    require_export_dependencies(need_onnxscript=exporter == "dynamo")
    model = load_exportable_model(model_dir_or_model)
    validate_exit_settings(model.config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    export_id = uuid.uuid4().hex
    inputs = example_inputs(model)
    graphs = []
    segments = build_segments(model)
    with torch.no_grad():
        for number, segment in enumerate(segments):
            name = f"segment_{number}.onnx"
            outputs = _export_graph(segment, inputs, out / name, exporter, opset_version, export_id, name)
            graphs.append(_graph_entry(name, segment, out / name))
            if number == 0:
                mask, carried = (inputs[1], outputs[1:-1]) if is_text_model(model) else (None, ())
            if number + 1 < len(segments):
                inputs = (outputs[0], mask, *carried) if mask is not None else (outputs[0],)
        full = None
        if full_graph:
            (whole,) = build_segments(model, [model.config.exit_layers[-1]])
            first = example_inputs(model)
            _export_graph(whole, first, out / FULL_GRAPH, exporter, opset_version, export_id, FULL_GRAPH)
            full = _graph_entry(FULL_GRAPH, whole, out / FULL_GRAPH)
    manifest = write_json(out / MANIFEST, _manifest(model, graphs, full, export_id, exporter, opset_version))
    manifest.chmod(0o644)  # the atomic write creates it private; a deployed folder is read by other users
    if not isinstance(model_dir_or_model, nn.Module):
        copy_companion_files(model_dir_or_model, out)
    return out


def _graph_entry(file: str, segment: Segment, path: Path) -> dict[str, Any]:
    return {
        "file": file,
        "first_layer": segment.first_layer,
        "exit_layer": segment.exit_layer,
        "inputs": _graph_inputs(path, segment.inputs),
        "outputs": segment.outputs,
    }


def _graph_inputs(path: Path, declared: list[str]) -> list[str]:
    """The inputs the written graph kept, in order: an exporter drops an input the graph does not read (a later
    segment whose head reads the first token has no use for the token mask once the layer mask comes prepared)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    kept = {node.name for node in graph.input} - {init.name for init in graph.initializer}
    return [name for name in declared if name in kept]


def _manifest(model, graphs, full, export_id: str, exporter: str, opset_version: int) -> dict[str, Any]:
    config = model.config
    text = is_text_model(model)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "export_id": export_id,
        "technique": technique_of(model).name,
        "model_type": config.model_type,
        "modality": "text" if text else "image",
        "num_labels": int(config.num_labels),
        "id2label": {str(k): v for k, v in (config.id2label or {}).items()},
        "num_layers": int(model.adapter.num_layers),
        "exit_layers": [int(layer) for layer in config.exit_layers],
        "policy": {
            "exit_policy": config.exit_policy,
            "exit_threshold": config.exit_threshold,
            "patience": int(config.patience),
            "nonfinite_logits": config.nonfinite_logits,
        },
        "image_size": None if text else list(_image_size(config)),
        "exporter": exporter,
        "opset_version": opset_version,
        "torch_version": torch.__version__,
        "segments": graphs,
        "full_graph": full,
    }


def _export_graph(
    segment: Segment,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    exporter: str,
    opset_version: int,
    export_id: str,
    graph_name: str,
) -> tuple[torch.Tensor, ...]:
    """Exports one segment; returns its PyTorch outputs on ``inputs`` (the next segment's example inputs)."""
    module = segment.module
    outputs = module(*inputs)
    metadata = {EXPORT_ID_KEY: export_id, GRAPH_KEY: graph_name}
    if exporter == "dynamo":
        program = torch.onnx.export(
            module,
            inputs,
            dynamo=True,
            input_names=segment.inputs,
            output_names=segment.outputs,
            dynamic_shapes=_dynamic_shapes(segment),
            opset_version=opset_version,
            verbose=False,
        )
        program.model.metadata_props.update(metadata)
        program.save(str(path))
    else:
        output_axes = {
            HIDDEN_OUT: segment.dynamic.get(MASK, {0: "batch"}),
            LAYER_MASK: LAYER_MASK_AXES,
            TOKEN_MASK: {0: "batch", 1: "sequence"},
            "logits": {0: "batch"},
        }
        torch.onnx.export(
            module,
            inputs,
            str(path),
            dynamo=False,
            input_names=segment.inputs,
            output_names=segment.outputs,
            dynamic_axes={**segment.dynamic, **{k: v for k, v in output_axes.items() if k in segment.outputs}},
            opset_version=opset_version,
        )
        _add_metadata(path, metadata)
    return outputs


def _dynamic_shapes(segment: Segment) -> tuple[dict[int, Any], ...]:
    # One entry per positional input, in order; axes with the same label share one symbol.
    dims: dict[str, Any] = {}
    return tuple(
        {axis: dims.setdefault(label, torch.export.Dim(label)) for axis, label in segment.dynamic[name].items()}
        for name in segment.inputs
    )


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    graph = onnx.load(str(path))
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))


def copy_companion_files(model_dir: str | Path, out: str | Path) -> None:
    """Copies the tokenizer and image-preprocessing files of a saved model folder into an export folder.

    Args:
        model_dir: The folder written by ``save_pretrained`` (and the tokenizer's or processor's).
        out: The export folder.
    """
    source, out = Path(model_dir), Path(out)
    for name in COMPANION_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
