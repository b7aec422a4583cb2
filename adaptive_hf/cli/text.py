"""Text data for the commands: the tokenizer, one split of a dataset (through :mod:`adaptive_hf.data`), labels mapped
to the model's class ids, and tokenized batches."""

from __future__ import annotations

from .errors import CliError


def load_tokenizer(model_dir: str, tokenizer: str | None):
    """The tokenizer saved with the model, or the one named by ``--tokenizer``.

    Args:
        model_dir: The model folder.
        tokenizer: A tokenizer folder or Hub name overriding the model folder's.
    """
    from transformers import AutoTokenizer

    source = tokenizer or model_dir
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as error:  # transformers raises OSError/ValueError/... depending on what is missing
        raise CliError(
            f"Could not load a tokenizer from {source!r} ({type(error).__name__}: {error}). Save the tokenizer "
            "next to the model (tokenizer.save_pretrained(MODEL_DIR)) or pass --tokenizer."
        ) from error


def load_local(name: str, split: str):
    """A local data file (used whole) or ``save_to_disk`` folder as a ``Dataset``; ``None`` for other names.

    Args:
        name: The ``--dataset`` value.
        split: The split of a saved ``DatasetDict``.
    """
    from ..data import load_local_dataset

    try:
        return load_local_dataset(name, split)
    except (FileNotFoundError, ValueError) as error:
        raise CliError(str(error)) from error


def load_dataset(
    name: str, split: str, max_samples: int | None = None, text_column: str = "text", label_column: str = "label"
):
    """Loads one split of a text classification dataset.

    Args:
        name: Offline dataset name, Hub dataset name, local data file (used whole) or ``save_to_disk`` folder.
        split: ``train``, ``validation`` or ``test`` (ignored for a single local file).
        max_samples: Keep at most this many rows.
        text_column: The text column of a Hub dataset or file.
        label_column: The label column of a Hub dataset or file.
    """
    from ..data import load_text_classification

    dataset = load_local(name, split)
    if dataset is None:
        try:
            dataset = load_text_classification(
                name, split=split, max_samples=max_samples, text_column=text_column, label_column=label_column
            )
        except (ValueError, ImportError, FileNotFoundError) as error:
            raise CliError(f"Unknown dataset {name!r}: {error}") from error
        text_column, label_column = "text", "label"
    if max_samples is not None and len(dataset) > max_samples:
        dataset = dataset.select(range(max_samples))
    renames = {
        c: t for c, t in ((text_column, "text"), (label_column, "label")) if c != t and c in dataset.column_names
    }
    if renames:
        dataset = dataset.rename_columns(renames)
    if len(dataset) == 0:
        raise CliError(f"Dataset {name!r} (split {split!r}) is empty.")
    return dataset


def encode_labels(dataset, config, require: bool):
    """Maps a ``label`` column to the model's class ids (string labels through ``config.label2id``).

    Args:
        dataset: A dataset with a ``label`` column.
        config: The model config.
        require: Raise when there is no label column.
    """
    import datasets

    if "label" not in dataset.column_names:
        if require:
            raise CliError(
                f"The dataset has no label column ('label'; columns: {dataset.column_names}). Pass --label-column."
            )
        return dataset
    feature = dataset.features["label"]
    if isinstance(feature, datasets.ClassLabel):
        return dataset
    values = dataset["label"]
    if values and isinstance(values[0], str):
        label2id = {str(k): int(v) for k, v in (config.label2id or {}).items()}
        unknown = sorted({v for v in values if v not in label2id})
        if unknown:
            raise CliError(
                f"Labels {unknown[:5]} are not in the model's label2id ({sorted(label2id)}); use integer class ids "
                "or save the model with matching id2label/label2id."
            )
        names = [None] * config.num_labels
        for label, index in label2id.items():
            if 0 <= index < config.num_labels:
                names[index] = label
        names = [name if name is not None else f"LABEL_{i}" for i, name in enumerate(names)]
        # Casting string labels to a ClassLabel with the model's names maps each name to its class id.
        return dataset.cast_column("label", datasets.ClassLabel(names=names))
    return dataset


def tokenize(dataset, tokenizer, max_length: int):
    """Tokenizes the ``text`` column (truncated, unpadded) unless the dataset already has ``input_ids``.

    Args:
        dataset: A dataset with a ``text`` column or ``input_ids``.
        tokenizer: The model's tokenizer.
        max_length: Truncation length.
    """
    if "input_ids" in dataset.column_names:
        return dataset
    if "text" not in dataset.column_names:
        raise CliError(
            f"The dataset has no text column ('text'; columns: {dataset.column_names}). Pass --text-column."
        )
    keep = [c for c in dataset.column_names if c == "label"]
    return dataset.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=[c for c in dataset.column_names if c not in keep],
        desc="Tokenizing",
    )


def text_batches(dataset, tokenizer, batch_size: int, device) -> list[dict]:
    """The tokenized dataset as padded model-input batches on ``device`` (labels left out).

    Args:
        dataset: A tokenized dataset.
        tokenizer: Its tokenizer (pads each batch).
        batch_size: Rows per batch.
        device: The model's device.
    """
    from ..core.batching import iterate_batches

    return [{k: v.to(device) for k, v in b.items()} for b in iterate_batches(dataset, batch_size, tokenizer=tokenizer)]
