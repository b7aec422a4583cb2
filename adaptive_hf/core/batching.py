"""Batches of a tokenized text (or image) dataset, shared by every technique's evaluation and calibration."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from .configuration import check_number

MODEL_INPUT_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")
# The columns that make a row a model input on their own (a mask alone does not).
PRIMARY_INPUT_COLUMNS = ("input_ids", "pixel_values")
LABEL_COLUMNS = ("labels", "label")


def as_dataset(dataset, required: Sequence[str] = ("input_ids",)):
    """The one ``datasets.Dataset`` split a dataset argument names, checked for rows and a model input column.

    Args:
        dataset: A ``datasets.Dataset`` or a dict of columns.
        required: The dataset must have at least one of these columns (``input_ids`` for text).
    """
    import datasets

    if isinstance(dataset, Mapping):
        dataset = datasets.Dataset.from_dict({k: list(v) for k, v in dataset.items()})
    if isinstance(dataset, datasets.DatasetDict):
        raise TypeError(
            f"Expected one split (a datasets.Dataset); got a DatasetDict with splits {list(dataset)}. "
            "Pass e.g. dataset['validation']."
        )
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            "The dataset must be a datasets.Dataset (or a dict of columns) with `input_ids`, `attention_mask` and "
            f"`label`/`labels`; got {type(dataset).__name__}."
        )
    if len(dataset) == 0:
        raise ValueError("The dataset is empty: it has 0 rows; calibration needs labelled examples.")
    if not any(column in dataset.column_names for column in required):
        names = " or ".join(f"`{column}`" for column in required)
        raise ValueError(
            f"The dataset has no {names} column (columns: {dataset.column_names}). Tokenize it first, e.g. "
            "dataset.map(lambda b: tokenizer(b['text'], truncation=True), batched=True)."
        )
    return dataset


def labels_of(dataset, num_labels: int, require: bool) -> torch.Tensor | None:
    """The dataset's class ids as a ``(rows,)`` tensor, checked against ``num_labels``; ``None`` when it has none.

    Args:
        dataset: A ``datasets.Dataset``.
        num_labels: The model's number of classes.
        require: Raise when the dataset has no label column.
    """
    import datasets

    column = next((c for c in LABEL_COLUMNS if c in dataset.column_names), None)
    if column is None:
        if require:
            raise ValueError(
                f"The dataset has no label column: expected one of {LABEL_COLUMNS}; its columns are "
                f"{dataset.column_names}."
            )
        return None
    feature = dataset.features[column]
    if isinstance(feature, datasets.ClassLabel) and feature.num_classes != num_labels:
        raise ValueError(
            f"The dataset's `{column}` has {feature.num_classes} classes ({feature.names}) but the model has "
            f"num_labels={num_labels}."
        )
    values = dataset.with_format(None)[column]
    if any(isinstance(v, str) for v in values):
        raise TypeError(
            f"`{column}` holds strings; map them to class ids in [0, {num_labels}) first (e.g. with "
            "dataset.class_encode_column or the model's config.label2id)."
        )
    array = np.asarray(values)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)):
        raise TypeError(f"`{column}` must hold one integer class id per row; got dtype {array.dtype}.")
    bad = (array < 0) | (array >= num_labels)
    if bad.any():
        raise ValueError(
            f"`{column}` must hold class ids in [0, {num_labels}) (the model's num_labels); found "
            f"{sorted(set(array[bad].tolist()))[:5]} at {int(bad.sum())} row(s)."
        )
    return torch.as_tensor(array, dtype=torch.long)


def iterate_batches(
    dataset,
    batch_size: int = 64,
    data_collator: Callable | None = None,
    tokenizer=None,
    input_columns: Sequence[str] = MODEL_INPUT_COLUMNS,
) -> Iterable[dict[str, torch.Tensor]]:
    """Yields padded model-input batches (``input_ids``, ``attention_mask``, ``token_type_ids``) in dataset order.

    Args:
        dataset: A tokenized ``datasets.Dataset`` (or a dict of columns).
        batch_size: Rows per batch.
        data_collator: Pads a list of feature dicts; defaults to ``DataCollatorWithPadding(tokenizer)`` when a
            tokenizer is given, else rows must already have equal lengths.
        tokenizer: Used to pad unpadded rows when no collator is given.
        input_columns: The model input columns to batch (those the dataset has); e.g. add ``"pixel_values"`` for
            image rows. The dataset needs ``input_ids`` or ``pixel_values`` among them.
    """
    check_number("batch_size", batch_size, 1, None, integer=True)
    dataset = as_dataset(dataset, required=[c for c in PRIMARY_INPUT_COLUMNS if c in input_columns])
    columns = [c for c in input_columns if c in dataset.column_names]
    table = dataset.select_columns(columns).with_format(None)
    if data_collator is None and tokenizer is not None:
        from transformers import DataCollatorWithPadding

        data_collator = DataCollatorWithPadding(tokenizer)
    for start in range(0, len(table), batch_size):
        rows = table[start : start + batch_size]
        if data_collator is not None:
            count = len(rows[columns[0]])
            batch = data_collator([{c: rows[c][i] for c in columns} for i in range(count)])
            yield {c: torch.as_tensor(batch[c]) for c in columns if c in batch}
        else:
            yield {c: _stacked(rows[c]) for c in columns}


def _stacked(values: list) -> torch.Tensor:
    try:
        return torch.as_tensor(values)
    except (ValueError, TypeError) as error:  # rows of different lengths (or shapes)
        lengths = sorted({len(row) for row in values if hasattr(row, "__len__")})
        raise ValueError(
            f"Rows have different lengths ({lengths[:5]}...) and cannot be stacked; pass `tokenizer=` (padding with "
            "DataCollatorWithPadding) or `data_collator=`, or pad when tokenizing."
        ) from error
