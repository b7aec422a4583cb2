"""``AdaptiveOnnxModel``: runs an exported early-exit model's segments in onnxruntime, skipping as PyTorch does.

After each segment the exit policy (:func:`adaptive_hf.early_exit.policies.decide_exit`, the very function the
PyTorch model calls) decides which rows stop; their logits are kept, and only the other rows' hidden states and
attention mask go on to the next segment. So each row gets the exit and the logits ``model(...)`` gives it in eval
mode, and later segments run on fewer rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.inputs import report_nonfinite_rows
from ..early_exit.config import validate_exit_settings
from ..early_exit.policies import decide_exit, initial_state
from .dependencies import require_runtime
from .export import EXPORT_ID_KEY, FORMAT, FORMAT_VERSION, MANIFEST
from .segments import HIDDEN, LOGITS, MASK

_UNSET = object()
KNOBS = ("exit_policy", "exit_threshold", "patience")
_MANIFEST_KEYS = ("export_id", "modality", "num_labels", "num_layers", "exit_layers", "policy", "segments")


@dataclass
class OnnxExitConfig:
    """The runtime knobs of an exported model (read at every call, like ``model.config`` in PyTorch), and what the
    export recorded about it.

    Args:
        exit_policy: ``"none"``, ``"confidence"``, ``"entropy"``, ``"margin"`` or ``"patience"``.
        exit_threshold: Threshold of the threshold policies; ``None`` = the policy's default.
        patience: Consecutive agreeing heads for ``"patience"``.
        exit_layers: 1-based layers with an exit (fixed by the export).
        num_labels: Classes.
        id2label: Class names.
        model_type: The exported model's ``model_type``.
        modality: ``"text"`` or ``"image"``.
        nonfinite_logits: ``"warn"`` or ``"error"``: how rows with NaN/inf logits are reported (they never exit
            early), as in PyTorch.
    """

    exit_policy: str
    exit_threshold: float | None
    patience: int
    exit_layers: tuple[int, ...]
    num_labels: int
    id2label: dict[int, str] = field(default_factory=dict)
    model_type: str = ""
    modality: str = "text"
    nonfinite_logits: str = "warn"


@dataclass
class OnnxExitOutput:
    """What :class:`AdaptiveOnnxModel` returns.

    Args:
        logits: ``(batch, num_labels)`` float32 logits of the exit each row took.
        exit_layer: ``(batch,)`` 1-based layer at which each row exited.
    """

    logits: np.ndarray
    exit_layer: np.ndarray


class AdaptiveOnnxModel:
    """An early-exit model exported by :func:`adaptive_hf.onnx.export`, run in onnxruntime with its exit policy.

    Args:
        folder: The export folder (``adaptive_onnx.json`` and its graphs).
        providers: onnxruntime execution providers (default: CPU).
        threads: onnxruntime intra-op threads (default: onnxruntime's choice). Idle threads sleep instead of
            spin-waiting, since each graph has its own pool and they run in turn.
        session_options: An ``onnxruntime.SessionOptions`` to use instead (``threads`` is then ignored).

    Example:
        >>> ort_model = AdaptiveOnnxModel("onnx_out")
        >>> ort_model.config.exit_threshold = 0.8  # read at every call, as in PyTorch
        >>> out = ort_model(**tokenizer(texts, padding=True, return_tensors="np"))
        >>> out.logits, out.exit_layer

    Raises:
        FileNotFoundError: The folder, its manifest or one of its graphs is missing.
        ValueError: The manifest is malformed or does not match its graphs (names, exits, export id).
        ImportError: onnxruntime is not installed (install ``adaptive-hf[export]``).
    """

    def __init__(
        self,
        folder: str | Path,
        providers: list[str] | None = None,
        threads: int | None = None,
        session_options: Any = None,
    ):
        require_runtime()
        import onnxruntime

        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        manifest = self.manifest
        policy = manifest["policy"]
        self.config = OnnxExitConfig(
            exit_policy=policy["exit_policy"],
            exit_threshold=policy.get("exit_threshold"),
            patience=int(policy.get("patience", 2)),
            exit_layers=tuple(manifest["exit_layers"]),
            num_labels=int(manifest["num_labels"]),
            id2label={int(k): v for k, v in (manifest.get("id2label") or {}).items()},
            model_type=manifest.get("model_type", ""),
            modality=manifest["modality"],
            nonfinite_logits=policy.get("nonfinite_logits", "warn"),
        )
        validate_exit_settings(self.config)
        if session_options is None:
            session_options = onnxruntime.SessionOptions()
            if threads is not None:
                session_options.intra_op_num_threads = threads
            # Each graph has its own thread pool, and the segments run one after another: threads that spin-wait
            # after one segment would take the cores the next segment needs (several times slower at batch 1).
            session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = providers or ["CPUExecutionProvider"]

        def open_graph(entry: dict[str, Any]):
            return _open_session(self.folder, entry, manifest, session_options, providers)

        self.segments = [open_graph(entry) for entry in manifest["segments"]]
        self.full_graph = open_graph(manifest["full_graph"]) if manifest.get("full_graph") else None
        self.input_names = list(manifest["segments"][0]["inputs"])
        self.segment_inputs = [list(entry["inputs"]) for entry in manifest["segments"]]
        self.segment_outputs = [list(entry["outputs"]) for entry in manifest["segments"]]
        available = {HIDDEN, *self.segment_outputs[0][1:-1], *(name for name in self.input_names if name == MASK)}
        for entry in manifest["segments"][1:]:
            missing = [name for name in entry["inputs"] if name not in available]
            if missing:
                raise ValueError(
                    f"{self.folder / MANIFEST}: {entry['file']} takes {missing}, which neither the model's inputs nor "
                    "the first segment provide; re-export the model."
                )

    # ------------------------------------------------------------------------------------------------ inputs
    def _first_feeds(self, inputs: dict[str, Any]) -> tuple[dict[str, np.ndarray], int]:
        unknown = sorted(name for name, value in inputs.items() if value is not None and name not in self.input_names)
        if unknown:
            raise TypeError(
                f"{unknown} are not inputs of this exported {self.config.model_type} model; its inputs are "
                f"{self.input_names}."
            )
        if self.config.modality == "image":
            pixels = _array("pixel_values", inputs.get("pixel_values"), np.float32)
            expected = tuple(self.manifest["image_size"])
            if pixels.ndim != 4 or pixels.shape[0] == 0 or tuple(pixels.shape[2:]) != expected:
                raise ValueError(
                    f"`pixel_values` must have shape (batch >= 1, channels, {expected[0]}, {expected[1]}) (the "
                    f"exported input size); got {tuple(pixels.shape)}."
                )
            return {"pixel_values": pixels}, pixels.shape[0]
        input_ids = _array("input_ids", inputs.get("input_ids"), np.int64)
        if input_ids.ndim != 2 or input_ids.shape[0] == 0:
            raise ValueError(f"`input_ids` must have shape (batch, sequence) with batch >= 1; got {input_ids.shape}.")
        feeds = {"input_ids": input_ids}
        for name in self.input_names[1:]:
            value = inputs.get(name)
            if value is None:  # what the PyTorch model assumes: every token real, segment 0
                feeds[name] = np.ones_like(input_ids) if name == MASK else np.zeros_like(input_ids)
            else:
                feeds[name] = _array(name, value, np.int64)
            if feeds[name].shape != input_ids.shape:
                raise ValueError(
                    f"`{name}` must have the shape of `input_ids` {input_ids.shape}; got {feeds[name].shape}."
                )
        return feeds, input_ids.shape[0]

    # ----------------------------------------------------------------------------------------------- running
    def __call__(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        token_type_ids: Any = None,
        pixel_values: Any = None,
        exit_policy: Any = _UNSET,
        exit_threshold: Any = _UNSET,
        patience: Any = _UNSET,
    ) -> OnnxExitOutput:
        """Classifies a batch, rows leaving at the exit their policy picks.

        Args:
            input_ids: ``(batch, seq)`` token ids (text models); numpy arrays, torch tensors or nested lists.
            attention_mask: ``(batch, seq)`` 1 for tokens, 0 for padding (default: all ones).
            token_type_ids: ``(batch, seq)`` segment ids, for families that have them (default: zeros).
            pixel_values: ``(batch, channels, height, width)`` normalized images (image models).
            exit_policy: Override ``config.exit_policy`` for this call.
            exit_threshold: Override ``config.exit_threshold`` for this call.
            patience: Override ``config.patience`` for this call.
        """
        overrides = {
            name: value
            for name, value in zip(KNOBS, (exit_policy, exit_threshold, patience), strict=True)
            if value is not _UNSET
        }
        saved = {name: getattr(self.config, name) for name in overrides}
        try:
            for name, value in overrides.items():
                setattr(self.config, name, value)
            validate_exit_settings(self.config)
            inputs = dict(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                pixel_values=pixel_values,
            )
            feeds, batch_size = self._first_feeds(inputs)
            return self._run(feeds, batch_size)
        finally:
            for name, value in saved.items():
                setattr(self.config, name, value)

    def run_full_depth(self, **inputs: Any) -> OnnxExitOutput:
        """Every row through every layer (policy ``none``); uses ``full.onnx`` when the export wrote it."""
        return self(**inputs, exit_policy="none", exit_threshold=None)

    def _run(self, feeds: dict[str, np.ndarray], batch_size: int) -> OnnxExitOutput:
        config = self.config
        policy, threshold, patience = config.exit_policy, config.exit_threshold, config.patience
        exit_layer = np.full(batch_size, config.exit_layers[-1], dtype=np.int64)
        if policy == "none" and self.full_graph is not None:
            (logits,) = self.full_graph.run(None, feeds)
            return OnnxExitOutput(logits, exit_layer)
        logits_out = np.full((batch_size, config.num_labels), np.nan, dtype=np.float32)
        active = np.arange(batch_size)
        policy_state = initial_state(policy, batch_size, torch.device("cpu"))
        # What later segments may read besides the hidden states: the token mask, and what the first segment
        # prepared for them (the layer mask); all follow the kept rows.
        carried = {MASK: feeds[MASK]} if MASK in feeds else {}
        last = len(self.segments) - 1
        for k, session in enumerate(self.segments):
            outputs = session.run(None, feeds)
            logits = outputs[-1]
            if k == last:
                logits_out[active] = logits
                break
            hidden = outputs[0]
            if k == 0:
                carried.update(zip(self.segment_outputs[0][1:-1], outputs[1:-1]))
            if policy != "none":
                done, policy_state = decide_exit(policy, torch.from_numpy(logits), threshold, patience, policy_state)
                done = done.numpy()
                if done.any():
                    finished = active[done]
                    logits_out[finished] = logits[done]
                    exit_layer[finished] = config.exit_layers[k]
                    if done.all():
                        break
                    keep = np.flatnonzero(~done)
                    active, hidden = active[keep], hidden[keep]
                    carried = {name: value[keep] for name, value in carried.items()}
                    if policy_state is not None:
                        policy_state = policy_state.select(torch.from_numpy(keep))
            feeds = {HIDDEN: hidden, **carried}
            feeds = {name: feeds[name] for name in self.segment_inputs[k + 1]}
        report_nonfinite_rows(torch.from_numpy(logits_out), config.nonfinite_logits)
        return OnnxExitOutput(logits_out, exit_layer)


def _array(name: str, value: Any, dtype) -> np.ndarray:
    if value is None:
        raise ValueError(f"`{name}` is required by this exported model.")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "iuf b" or (dtype == np.int64 and array.dtype.kind == "f"):
        raise TypeError(f"`{name}` must hold {np.dtype(dtype).name} values; got dtype {array.dtype}.")
    return np.ascontiguousarray(array, dtype=dtype)


# ------------------------------------------------------------------------------------------------- the folder
def read_manifest(folder: Path) -> dict[str, Any]:
    """Reads and checks ``adaptive_onnx.json`` of an export folder (its graphs are checked when opened).

    Args:
        folder: The export folder.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"ONNX export folder {str(folder)!r} does not exist.")
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} has no {MANIFEST}; write the folder with adaptive_hf.onnx.export or "
            "`adaptive-hf export`."
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-export the model.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not an adaptive_hf ONNX manifest (its `format` must be {FORMAT!r}).")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {manifest.get('format_version')!r}; this adaptive_hf reads version "
            f"{FORMAT_VERSION}. Re-export the model with this version."
        )
    missing = [key for key in _MANIFEST_KEYS if key not in manifest]
    if missing:
        raise ValueError(f"{path} lacks the fields {missing}; re-export the model.")
    _check_segments(path, manifest)
    return manifest


def _check_segments(path: Path, manifest: dict[str, Any]) -> None:
    exits, segments = list(manifest["exit_layers"]), manifest["segments"]
    if [entry.get("exit_layer") for entry in segments] != exits:
        raise ValueError(
            f"{path} lists segments ending at layers {[entry.get('exit_layer') for entry in segments]}, but its "
            f"exit_layers are {exits}: one segment per exit, in order. Re-export the model."
        )
    if not exits or exits[-1] != manifest["num_layers"]:
        raise ValueError(f"{path}: the last exit must be the last layer ({manifest['num_layers']}); got {exits}.")
    starts = [entry.get("first_layer") for entry in segments]
    if starts != [0, *exits[:-1]]:
        raise ValueError(
            f"{path}: segment k must start where segment k-1 ended; first layers {starts}, exits {exits}."
        )
    if manifest["modality"] not in ("text", "image"):
        raise ValueError(f"{path}: `modality` must be 'text' or 'image'; got {manifest['modality']!r}.")


def _open_session(folder: Path, entry: dict[str, Any], manifest: dict[str, Any], options, providers):
    """Opens one graph and checks it is the one the manifest describes."""
    import onnxruntime

    name = entry.get("file")
    graph = folder / str(name)
    if not name or not graph.is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} lacks the graph {name!r} that {MANIFEST} lists (segment ending at layer "
            f"{entry.get('exit_layer')}); the export is incomplete. Re-export the model."
        )
    try:
        session = onnxruntime.InferenceSession(str(graph), sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types for unreadable graphs
        raise ValueError(f"onnxruntime cannot load {graph}: {error}") from error
    inputs = [node.name for node in session.get_inputs()]
    outputs = [node.name for node in session.get_outputs()]
    if inputs != list(entry["inputs"]) or outputs != list(entry["outputs"]):
        raise ValueError(
            f"{graph} has inputs {inputs} and outputs {outputs}, but {MANIFEST} lists {entry['inputs']} and "
            f"{entry['outputs']}: the manifest does not match its graphs. Re-export the model."
        )
    export_id = session.get_modelmeta().custom_metadata_map.get(EXPORT_ID_KEY)
    if export_id != manifest["export_id"]:
        raise ValueError(
            f"{graph} comes from another export (id {export_id!r}, the manifest's is {manifest['export_id']!r}): "
            "the manifest does not match its graphs. Re-export the model into an empty folder."
        )
    width = session.get_outputs()[outputs.index(LOGITS)].shape[-1]
    if isinstance(width, int) and width != manifest["num_labels"]:
        raise ValueError(
            f"{graph} returns {width} logits per row, but {MANIFEST} says num_labels={manifest['num_labels']}."
        )
    return session
