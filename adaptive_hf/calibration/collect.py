"""The generic collector: run the model once per candidate setting (eval mode) and record predictions and costs.

Techniques without a faster ``replay`` (halting, readers, video) are measured this way: the model's config gets
each candidate's values, the data runs through the model in eval mode, and the technique's declared ``cost`` counts
the FLOPs each sample spent. The config and training mode are restored afterwards, also after an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from ..core.batching import LABEL_COLUMNS, MODEL_INPUT_COLUMNS, iterate_batches
from ..core.candidates import CandidateOutcomes
from ..core.technique import compute_cost, config_overrides

INPUT_COLUMNS = (*MODEL_INPUT_COLUMNS, "pixel_values")


def _labels_from(values, name: str) -> torch.Tensor:
    if any(isinstance(v, str) for v in (values if isinstance(values, list) else [])):
        raise TypeError(f"`{name}` holds strings; map them to integer class ids first.")
    labels = torch.as_tensor(values)
    if labels.dim() != 1 or labels.is_floating_point():
        raise TypeError(f"`{name}` must hold one integer class id per row; got shape {tuple(labels.shape)}.")
    return labels.long()


def prepare_batches(
    data, batch_size: int = 64, data_collator: Callable | None = None, tokenizer=None
) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor | None]:
    """Model-input batches and the labels (or ``None``) of calibration data in any of the accepted forms.

    Args:
        data: A ``datasets.Dataset`` (tokenized text, or a ``pixel_values`` column), a dict of columns or tensors
            (e.g. ``{"pixel_values": clips, "labels": labels}``), or an iterable of batch dicts whose optional
            ``labels`` key holds the batch's labels.
        batch_size: Rows per forward (datasets and dicts).
        data_collator: Pads a list of feature dicts (datasets).
        tokenizer: Pads with ``DataCollatorWithPadding`` when no collator is given (datasets).

    Raises:
        ValueError: When the data has no rows, or no model input.
        TypeError: When the data is of no accepted form.
    """
    import datasets

    if isinstance(data, datasets.DatasetDict):
        raise TypeError(
            f"Expected one split, got a DatasetDict with splits {list(data)}; pass e.g. data['validation']."
        )
    if isinstance(data, Mapping) and not any(isinstance(v, torch.Tensor) for v in data.values()):
        data = datasets.Dataset.from_dict({k: list(v) for k, v in data.items()})
    if isinstance(data, datasets.Dataset):
        if len(data) == 0:
            raise ValueError("The calibration data is empty (0 rows); calibration needs at least one row.")
        label = next((c for c in LABEL_COLUMNS if c in data.column_names), None)
        labels = None if label is None else _labels_from(data.with_format(None)[label], label)
        batches = iterate_batches(data, batch_size, data_collator, tokenizer, input_columns=INPUT_COLUMNS)
        return list(batches), labels
    if isinstance(data, Mapping):
        label = next((k for k in LABEL_COLUMNS if k in data), None)
        inputs = {k: v for k, v in data.items() if k not in LABEL_COLUMNS}
        rows = next(iter(inputs.values())).shape[0] if inputs else 0
        if rows == 0:
            raise ValueError("The calibration data is empty (0 rows); calibration needs at least one row.")
        batches = [{k: v[s : s + batch_size] for k, v in inputs.items()} for s in range(0, rows, batch_size)]
        return batches, None if label is None else _labels_from(data[label], label)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, torch.Tensor)):
        return _iterable_batches(data)
    raise TypeError(
        "Calibration data must be a datasets.Dataset, a dict of columns or tensors, or an iterable of batch dicts; "
        f"got {type(data).__name__}."
    )


def _iterable_batches(data: Iterable) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor | None]:
    batches, labels = [], []
    for batch in data:
        if not isinstance(batch, Mapping):
            raise TypeError(f"Each batch must be a dict of model inputs; got {type(batch).__name__}.")
        label = next((k for k in LABEL_COLUMNS if k in batch), None)
        labels.append(None if label is None else _labels_from(batch[label], label))
        batches.append({k: v for k, v in batch.items() if k not in LABEL_COLUMNS})
    if not batches:
        raise ValueError("The calibration data is empty (no batches); calibration needs at least one row.")
    if any(x is None for x in labels):
        return batches, None
    return batches, torch.cat(labels)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _run(model, batches: Sequence[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    device = _device_of(model)
    predictions, spent, full = [], [], []
    for batch in batches:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        outputs = model(**batch)
        predictions.append(outputs.logits.argmax(-1).cpu())
        batch_spent, batch_full = compute_cost(model, outputs, batch)
        spent.append(batch_spent)
        full.append(batch_full)
    return torch.cat(predictions), torch.cat(spent), torch.cat(full)


def collect_outcomes(
    model,
    data,
    chains: Sequence[Sequence[Mapping[str, Any]]],
    full_settings: Mapping[str, Any],
    *,
    batch_size: int = 64,
    data_collator: Callable | None = None,
    tokenizer=None,
    show_progress: bool = True,
    require_labels: bool = True,
) -> CandidateOutcomes:
    """Runs the model at full compute and at every candidate setting, in eval mode, on the same batches.

    Args:
        model: An adaptive model of a technique with a declared ``cost``.
        data: Calibration data (see :func:`prepare_batches`).
        chains: Candidate settings per knob, each from most to least compute.
        full_settings: Config values for full compute.
        batch_size: Rows per forward.
        data_collator: Pads a list of feature dicts.
        tokenizer: Pads with ``DataCollatorWithPadding`` when no collator is given.
        show_progress: Show a progress bar over the settings.
        require_labels: Raise when the data has no labels.
    """
    from tqdm.auto import tqdm

    batches, labels = prepare_batches(data, batch_size, data_collator, tokenizer)
    if require_labels and labels is None:
        raise ValueError(
            f"The data has no label column ({' or '.join(LABEL_COLUMNS)}): `max_accuracy_drop` needs labels; use "
            "`max_disagreement` to calibrate on unlabelled data."
        )
    was_training = model.training
    model.eval()
    total = 1 + sum(len(chain) for chain in chains)
    progress = tqdm(total=total, desc="calibration settings", disable=not show_progress)
    try:
        with torch.inference_mode():
            with config_overrides(model.config, full_settings):
                full_predictions, _, full_costs = _run(model, batches)
            progress.update()
            predictions, costs = [], []
            for chain in chains:
                chain_predictions, chain_costs = [], []
                for setting in chain:
                    with config_overrides(model.config, setting):
                        candidate, spent, _ = _run(model, batches)
                    chain_predictions.append(candidate)
                    chain_costs.append(spent)
                    progress.update()
                n = full_predictions.numel()
                predictions.append(torch.stack(chain_predictions) if chain else torch.empty(0, n, dtype=torch.long))
                costs.append(torch.stack(chain_costs) if chain else torch.empty(0, n, dtype=torch.float64))
    finally:
        progress.close()
        model.train(was_training)
    if labels is not None and labels.numel() != full_predictions.numel():
        raise ValueError(f"Got {labels.numel()} labels for {full_predictions.numel()} rows.")
    return CandidateOutcomes(
        chains=[[dict(s) for s in chain] for chain in chains],
        predictions=predictions,
        costs=costs,
        full_predictions=full_predictions,
        full_costs=full_costs,
        labels=labels,
    )
