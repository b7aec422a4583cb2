"""``adaptive-hf``: calibrate, evaluate, benchmark and describe a saved adaptive classifier (text or images).

Each subcommand works on a folder written by ``save_pretrained`` and a dataset.

* Text models (early exit, halting, Skim-RNN/LSTM-Jump; with their tokenizer, or pass ``--tokenizer``): an offline
  name (``amazon_fine_food``, ``trump_tweets``), a Hub dataset name, a local ``.json``/``.jsonl``/``.csv``/``.tsv``/
  ``.parquet`` file (used whole) or a folder written by ``Dataset.save_to_disk``.
* Image models (``EarlyExitTimmForImageClassification``, ``EarlyExitViTForImageClassification``,
  ``HaltingTimmForImageClassification``): an offline image set of :func:`adaptive_hf.data.load_image_arrays`
  (``fashion_mnist``, ``mnist_subset``; splits ``train``/``validation``/``test``), a Hub dataset name or a
  ``save_to_disk`` folder with an image column. Images are prepared the way the model records: its input size and
  channels, and the normalization in ``config.image_mean``/``image_std`` (else a saved ``preprocessor_config.json``,
  else the timm model's ``pretrained_cfg``, else 0.5).

Examples::

    adaptive-hf calibrate out --dataset amazon_fine_food --split validation --max-accuracy-drop 0.005 --save
    adaptive-hf evaluate out --dataset amazon_fine_food --json eval.json --plot tradeoff.png
    adaptive-hf bench out --dataset amazon_fine_food --batch-sizes 1 64 --threads 2 --repeats 5
    adaptive-hf evaluate outputs/early_exit_vision --dataset fashion_mnist --max-samples 2000 --plot tradeoff.png
    adaptive-hf card out
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


class CliError(Exception):
    """A user error: printed without a traceback, exit status 2."""


# ------------------------------------------------------------------------------------------------------ loading
def load_model(model_dir: str):
    """Loads a saved early-exit classifier from a local folder.

    Args:
        model_dir: Folder written by ``save_pretrained``.
    """
    path = Path(model_dir)
    if not path.is_dir():
        raise CliError(f"Model folder {model_dir!r} does not exist (expected a folder written by save_pretrained).")
    if not (path / "config.json").is_file():
        raise CliError(f"{model_dir!r} has no config.json; expected a folder written by save_pretrained.")
    # Importing this module imported the adaptive_hf package, which registered its classes with the Auto classes.
    from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(str(path))
    except (ValueError, KeyError) as error:
        raise CliError(f"{model_dir!r} holds a config that transformers cannot read ({error}).") from error
    is_image = type(config) in AutoModelForImageClassification._model_mapping
    auto = AutoModelForImageClassification if is_image else AutoModelForSequenceClassification
    model = auto.from_pretrained(str(path))
    technique_of(model, model_dir)
    model.eval()
    return model


def technique_of(model, model_dir: str = "the model") -> str:
    """Which text technique a loaded model belongs to: ``early_exit``, ``halting`` or ``readers``.

    Args:
        model: A loaded model.
        model_dir: Its folder, for the error message.
    """
    if hasattr(model, "exit_flops"):
        return "early_exit"
    if hasattr(model, "halting_flops"):
        return "halting"
    if getattr(model.config, "model_type", None) in ("skim_rnn", "jump_lstm"):
        return "readers"
    raise CliError(
        f"{model_dir!r} holds a {type(model).__name__}, not an adaptive classifier. The CLI works on early-exit "
        "(text and image), halting (ACT/PonderNet, text and timm ViT) and Skim-RNN/LSTM-Jump classifiers saved with "
        "save_pretrained."
    )


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


def _load_local(name: str, split: str):
    """A local data file (used whole) or ``save_to_disk`` folder as a ``Dataset``; ``None`` for other names."""
    import datasets

    path = Path(name)
    suffix = path.suffix.lower()
    if suffix in LOCAL_FORMATS or path.is_file():
        if not path.is_file():
            raise CliError(f"No such data file: {name!r}.")
        kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
        try:
            return datasets.load_dataset(
                LOCAL_FORMATS.get(suffix, "json"), data_files=str(path), split="train", **kwargs
            )
        except Exception as error:
            raise CliError(
                f"Could not read {name!r} as {suffix or 'json'} ({type(error).__name__}: {error})."
            ) from error
    if path.is_dir():
        try:
            dataset = datasets.load_from_disk(str(path))
        except Exception as error:
            raise CliError(f"{name!r} is a folder but not a dataset saved with save_to_disk ({error}).") from error
        if isinstance(dataset, datasets.DatasetDict):
            if split not in dataset:
                raise CliError(f"{name!r} has no split {split!r}; its splits are {list(dataset)}.")
            dataset = dataset[split]
        return dataset
    return None


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
    import datasets

    dataset = _load_local(name, split)
    if dataset is None:
        try:
            from .data import load_text_classification
        except ImportError:
            load_text_classification = None
        try:
            if load_text_classification is not None:
                dataset = load_text_classification(
                    name, split=split, max_samples=max_samples, text_column=text_column, label_column=label_column
                )
                text_column, label_column = "text", "label"
            else:
                dataset = datasets.load_dataset(name, split=split)
        except (ValueError, ImportError, FileNotFoundError) as error:
            raise CliError(f"Unknown dataset {name!r}: {error}") from error
        except Exception as error:  # the Hub client raises many types when offline or the name is unknown
            raise CliError(
                f"Unknown dataset {name!r} ({type(error).__name__}: {error}). Use an offline name "
                "(amazon_fine_food, trump_tweets), a local .json/.csv file, or a Hub name with Hub access."
            ) from error
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


# ------------------------------------------------------------------------------------------------------ images
def is_image_model(model) -> bool:
    """Whether a loaded model classifies images (its main input is ``pixel_values``)."""
    return getattr(model, "main_input_name", None) == "pixel_values"


def _per_channel(values, channels: int, field: str) -> list[float]:
    values = [float(v) for v in ([values] if isinstance(values, (int, float)) else values)]
    if len(values) not in (1, channels):
        if channels == 1 and len(values) == 3:  # an RGB normalization on a gray model: the gray image is the mean
            return [sum(values) / 3]
        raise CliError(f"`{field}` has {len(values)} values; the model takes {channels} channel(s).")
    return values


def image_preprocessing(model, model_dir: str | None = None, mean=None, std=None) -> dict[str, Any]:
    """How a loaded image model's inputs are prepared: ``image_size`` ``[height, width]``, ``num_channels``,
    ``mean`` and ``std`` (per channel, applied after scaling pixels to [0, 1]).

    The normalization is the first of: the ``mean``/``std`` arguments (``--image-mean``/``--image-std``), the
    config's ``image_mean``/``image_std`` (recorded by the recipes), a ``preprocessor_config.json`` in
    ``model_dir``, the timm model's ``pretrained_cfg``, and 0.5 (the ViT image processor's default).

    Args:
        model: An image classifier of this package.
        model_dir: The model folder (for a saved image processor config).
        mean: Override of the per-channel mean.
        std: Override of the per-channel standard deviation.
    """
    from .core.vision_backbones import stem_conv

    config = model.config
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None:
        size = getattr(config, "image_size", None)
        if size is None:
            size = getattr(getattr(timm_model, "patch_embed", None), "img_size", None)
        if size is None:
            size = timm_model.pretrained_cfg.get("input_size", (3, 224, 224))[1:]
        conv = stem_conv(timm_model)
        channels = conv.in_channels if conv is not None else 3
        default_mean = timm_model.pretrained_cfg.get("mean", (0.5,) * 3)
        default_std = timm_model.pretrained_cfg.get("std", (0.5,) * 3)
    else:
        size, channels = config.image_size, config.num_channels
        default_mean = default_std = (0.5,) * 3
    processor: dict[str, Any] = {}
    if model_dir is not None and (Path(model_dir) / "preprocessor_config.json").is_file():
        processor = json.loads((Path(model_dir) / "preprocessor_config.json").read_text())
    chosen = {}
    for field, override, default in (("image_mean", mean, default_mean), ("image_std", std, default_std)):
        value = override
        if value is None:
            value = getattr(config, field, None)
        if value is None:
            value = processor.get(field)
        if value is None:
            value = default
        chosen[field] = _per_channel(value, channels, field)
    if min(chosen["image_std"]) <= 0:
        raise CliError(f"`image_std` values must be > 0; got {chosen['image_std']}.")
    size = [int(size), int(size)] if isinstance(size, (int, float)) else [int(side) for side in size]
    return {"image_size": size, "num_channels": channels, "mean": chosen["image_mean"], "std": chosen["image_std"]}


def _image_array(image):
    import numpy as np

    if hasattr(image, "convert"):  # PIL: palette, CMYK, 16-bit, ... become RGB or gray
        if image.mode not in ("L", "RGB", "RGBA", "LA"):
            image = image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        if array.dtype.kind == "f" and array.size and float(array.max()) <= 1.0:
            array = array * 255.0
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # channels-first arrays
    if array.ndim not in (2, 3):
        raise CliError(f"Expected images of shape (H, W) or (H, W, C); got an array of shape {array.shape}.")
    return array


def load_image_data(
    name: str,
    split: str,
    config,
    max_samples: int | None = None,
    image_column: str | None = None,
    label_column: str = "label",
    require_labels: bool = True,
    seed: int = 0,
):
    """Loads one split of an image classification dataset as a list of uint8 images and their labels.

    Args:
        name: ``fashion_mnist`` / ``mnist_subset`` (offline, :func:`adaptive_hf.data.load_image_arrays`), a
            ``save_to_disk`` folder or a Hub dataset name.
        split: ``train``, ``validation`` or ``test``.
        config: The model config (string labels map through its ``label2id``).
        max_samples: Keep the first this many images.
        image_column: The image column; ``None`` = the first ``Image`` column, or ``image``/``img``.
        label_column: The label column.
        require_labels: Raise when there are no labels.
        seed: Seed of the offline sets' split.

    Returns:
        ``(images, labels)``: a sequence of ``(H, W)`` or ``(H, W, C)`` uint8 arrays (or one stacked array) and a
        ``(n,)`` int64 tensor (``None`` without labels).
    """
    import datasets
    import torch

    from .data import IMAGE_DATASETS, load_image_arrays

    key = name.lower().replace("-", "_")
    if key in IMAGE_DATASETS and not Path(name).exists():
        splits = ("train", "validation", "test")
        if split not in splits:
            raise CliError(f"`--split` must be one of {splits} for {name!r}; got {split!r}.")
        try:
            images, labels = load_image_arrays(key, seed=seed, validation=True)[split]
        except (ImportError, FileNotFoundError) as error:
            raise CliError(f"The offline image set {name!r} is not available: {error}") from error
        if max_samples is not None:
            images, labels = images[:max_samples], labels[:max_samples]
        return images, torch.as_tensor(labels, dtype=torch.long)
    dataset = _load_local(name, split)
    if dataset is None:
        try:
            dataset = datasets.load_dataset(name, split=split)
        except Exception as error:  # the Hub client raises many types when offline or the name is unknown
            raise CliError(
                f"Unknown dataset {name!r} ({type(error).__name__}: {error}). Use an offline image set "
                f"({', '.join(IMAGE_DATASETS)}), a save_to_disk folder, or a Hub name with Hub access."
            ) from error
    if max_samples is not None and len(dataset) > max_samples:
        dataset = dataset.select(range(max_samples))
    if len(dataset) == 0:
        raise CliError(f"Dataset {name!r} (split {split!r}) is empty.")
    if image_column is None:
        image_column = next(
            (c for c, f in dataset.features.items() if isinstance(f, datasets.Image)),
            next((c for c in ("image", "img", "pixel_values") if c in dataset.column_names), None),
        )
    if image_column is None or image_column not in dataset.column_names:
        raise CliError(
            f"The dataset has no image column ({image_column or 'image'!r}; columns: {dataset.column_names}). "
            "Pass --image-column."
        )
    if label_column != "label" and label_column in dataset.column_names:
        if "label" in dataset.column_names:
            dataset = dataset.remove_columns("label")
        dataset = dataset.rename_column(label_column, "label")
    dataset = encode_labels(dataset, config, require_labels)
    images = [_image_array(image) for image in dataset[image_column]]
    labels = torch.as_tensor(dataset["label"], dtype=torch.long) if "label" in dataset.column_names else None
    return images, labels


def image_batches(images, preprocessing: dict[str, Any], batch_size: int, device=None, limit: int | None = None):
    """Yields ``{"pixel_values": ...}`` batches of the images, prepared as ``preprocessing`` says (lazily, so a
    large split never sits in memory at the model's resolution).

    Args:
        images: uint8 images (a stacked array or a sequence of arrays, sizes may differ).
        preprocessing: :func:`image_preprocessing`'s result.
        batch_size: Images per batch.
        device: Put the batches here.
        limit: Only the first this many images.
    """
    import numpy as np
    import torch

    from .data import to_pixel_values

    count = len(images) if limit is None else min(limit, len(images))
    prepare = {
        "image_size": preprocessing["image_size"],
        "num_channels": preprocessing["num_channels"],
        "mean": preprocessing["mean"],
        "std": preprocessing["std"],
    }
    for start in range(0, count, batch_size):
        chunk = images[start : min(start + batch_size, count)]
        if isinstance(chunk, np.ndarray) or len({np.shape(image) for image in chunk}) == 1:
            pixels = to_pixel_values(np.stack(list(chunk)) if not isinstance(chunk, np.ndarray) else chunk, **prepare)
        else:
            pixels = torch.cat([to_pixel_values(image[None], **prepare) for image in chunk])
        yield {"pixel_values": pixels if device is None else pixels.to(device)}


# ----------------------------------------------------------------------------------------------------- inputs
@dataclass
class Prepared:
    """A loaded model and its evaluation data, text or images, behind one interface."""

    model: Any
    labels: Any
    num_samples: int
    make_batches: Callable[..., Iterable[dict]]
    tokenizer: Any = None
    dataset: Any = None
    preprocessing: dict[str, Any] | None = None

    @property
    def is_image(self) -> bool:
        return self.preprocessing is not None

    def batches(self, batch_size: int, limit: int | None = None) -> list[dict]:
        """Model-input batches on the model's device (the first ``limit`` samples)."""
        return list(self.make_batches(batch_size, limit))


def prepare_data(args, model, require_labels: bool) -> Prepared:
    """The evaluation data of a subcommand for a loaded model: tokenized text or prepared images."""
    import torch

    device = next(model.parameters()).device
    if is_image_model(model):
        if getattr(args, "channels_last", False):
            # Both the adaptive and the full-depth runs use it; CPU CNNs then cost in proportion to their FLOPs.
            model.to(memory_format=torch.channels_last)
        if getattr(args, "fold_batch_norms", False):
            if not hasattr(model, "fold_batch_norms"):
                raise CliError(f"--fold-batch-norms works on timm CNN early-exit models; got {type(model).__name__}.")
            model.fold_batch_norms()
        preprocessing = image_preprocessing(model, args.model_dir, args.image_mean, args.image_std)
        images, labels = load_image_data(
            args.dataset,
            args.split,
            model.config,
            args.max_samples,
            args.image_column,
            args.label_column,
            require_labels,
            args.seed,
        )

        def make_batches(batch_size, limit=None):
            return image_batches(images, preprocessing, batch_size, device, limit)

        return Prepared(model, labels, len(images), make_batches, preprocessing=preprocessing)
    tokenizer = load_tokenizer(args.model_dir, args.tokenizer)
    dataset = load_dataset(args.dataset, args.split, args.max_samples, args.text_column, args.label_column)
    dataset = encode_labels(dataset, model.config, require_labels)
    dataset = tokenize(dataset, tokenizer, args.max_length)
    labels = torch.as_tensor(dataset["label"]) if "label" in dataset.column_names else None

    def make_batches(batch_size, limit=None):
        subset = dataset if limit is None else dataset.select(range(min(limit, len(dataset))))
        return _batches(subset, tokenizer, batch_size, device)

    return Prepared(model, labels, len(dataset), make_batches, tokenizer=tokenizer, dataset=dataset)


def prepare(args, require_labels: bool) -> Prepared:
    """Model and evaluation data for a subcommand."""
    model = load_model(args.model_dir)
    return prepare_data(args, model, require_labels)


def _write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"Wrote {path}")


def _setting_override(args) -> dict[str, Any] | None:
    setting: dict[str, Any] = {}
    if args.policy is not None:
        setting["exit_policy"] = args.policy
    if args.threshold is not None:
        setting["exit_threshold"] = args.threshold
    if args.patience is not None:
        setting["patience"] = args.patience
    return setting or None


# ---------------------------------------------------------------------------------------------------- commands
def collect_logits(data: Prepared, batch_size: int, show_progress: bool):
    """Every exit's logits on the data (the calibration table), for text or image early-exit models."""
    if data.is_image:
        from .early_exit.vision_calibration import collect_image_exit_logits

        pixels = (batch["pixel_values"] for batch in data.make_batches(batch_size))
        return collect_image_exit_logits(data.model, pixels, data.labels)
    from .early_exit.calibration import collect_exit_logits

    return collect_exit_logits(
        data.model, data.dataset, batch_size, tokenizer=data.tokenizer, show_progress=show_progress
    )


def measure(
    model, batches: list[dict], setting, repeats: int, threads: int | None, pool_rows: int | None = None
) -> dict[str, Any]:
    """Realized against theoretical speedup of an early-exit model on ready batches (text or images).

    ``pool_rows`` (image models only) times the adaptive run through ``classify_stream``.
    """
    if is_image_model(model):
        from .early_exit.vision_calibration import measure_image_speedup

        pixels = [batch["pixel_values"] for batch in batches]
        result = measure_image_speedup(
            model, pixels, setting, repeats=repeats, warmup=1, threads=threads, pool_rows=pool_rows
        )
        result["num_samples"] = result.pop("num_images")
        return result
    if pool_rows is not None:
        raise ValueError("--pool-rows applies to image early-exit models only (classify_stream).")
    from .early_exit.benchmarking import measure_speedup

    return measure_speedup(model, batches, setting, repeats=repeats, warmup=1, threads=threads)


def cmd_calibrate(args) -> int:
    from .calibration import calibrate

    model = load_model(args.model_dir)
    if technique_of(model) != "early_exit":
        raise CliError(
            f"calibrate picks the exit policy of early-exit classifiers; {args.model_dir!r} holds a "
            f"{type(model).__name__}. Use `adaptive-hf evaluate` to sweep its runtime knob instead."
        )
    data = prepare_data(args, model, require_labels=True)
    common = dict(
        max_accuracy_drop=args.max_accuracy_drop,
        target_speedup=args.target_speedup,
        policies=args.policies,
        show_progress=not args.no_progress,
    )
    if data.is_image:
        table = collect_logits(data, args.batch_size, not args.no_progress)
        report = calibrate(model, None, exit_logits=table, **common)
    else:
        report = calibrate(model, data.dataset, batch_size=args.batch_size, tokenizer=data.tokenizer, **common)
    print(report.to_markdown())
    _write_json(args.json, report.to_dict())
    if args.save:
        model.save_pretrained(args.model_dir)
        print(f"Saved the calibrated setting to {args.model_dir}")
    return 0


def _batches(dataset, tokenizer, batch_size: int, device, with_labels: bool = False) -> list[dict]:
    import torch

    from .early_exit.calibration import iterate_batches

    batches = [
        {k: v.to(device) for k, v in b.items()} for b in iterate_batches(dataset, batch_size, tokenizer=tokenizer)
    ]
    if with_labels:
        column = "labels" if "labels" in dataset.column_names else "label"
        labels = torch.as_tensor(dataset[column])
        for start, batch in zip(range(0, len(labels), batch_size), batches):
            batch["labels"] = labels[start : start + batch_size].to(device)
    return batches


def _current_setting(config) -> dict[str, Any]:
    setting: dict[str, Any] = {"exit_policy": config.exit_policy}
    if config.exit_policy == "patience":
        setting["patience"] = config.patience
    else:
        setting["exit_threshold"] = config.exit_threshold
    return setting


def _thin(rows: list[dict], count: int) -> list[dict]:
    if len(rows) <= count:
        return rows
    import numpy as np

    return [rows[i] for i in np.unique(np.linspace(0, len(rows) - 1, count).round().astype(int))]


def cmd_evaluate(args) -> int:
    from .video.evaluation import cli_evaluate, is_video_model_dir

    if is_video_model_dir(args.model_dir):  # frame-sampling video models: adaptive_hf/video/evaluation.py
        return cli_evaluate(args)
    from tqdm.auto import tqdm

    from .early_exit.calibration import _check_policies, default_candidates, evaluate_setting, pareto_front, sweep

    data = prepare(args, require_labels=True)
    model = data.model
    if technique_of(model) != "early_exit":
        return _evaluate_sweep(args, data)
    policies = _check_policies(args.policies)
    exit_logits = collect_logits(data, args.batch_size, not args.no_progress)
    rows = sweep(exit_logits, default_candidates(len(model.config.exit_layers), policies))
    full_depth_accuracy = rows[0]["accuracy"]
    current = _current_setting(model.config)
    current_row = evaluate_setting(exit_logits, **current)
    fronts = {p: pareto_front([r for r in rows if r["exit_policy"] == p]) for p in policies}
    realized: list[dict[str, Any]] = []
    if args.realized_points > 0:
        batches = data.batches(args.batch_size, args.realized_samples)
        points = [row for p in policies for row in _thin(fronts[p], args.realized_points)]
        for row in tqdm(points, desc="Timing settings", disable=args.no_progress):
            setting = {k: row[k] for k in ("exit_policy", "exit_threshold", "patience") if k in row}
            result = measure(model, batches, setting, args.repeats, args.threads)
            realized.append({**{k: v for k, v in row.items() if k != "exit_fractions"}, **_timing_fields(result)})
    payload = {
        "model": str(args.model_dir),
        "dataset": args.dataset,
        "split": args.split,
        "num_samples": exit_logits.num_samples,
        "full_depth_accuracy": full_depth_accuracy,
        **({"preprocessing": data.preprocessing} if data.is_image else {}),
        "current_setting": current_row,
        "pareto": fronts,
        "realized": realized,
        "rows": rows,
    }
    print(_evaluate_table(full_depth_accuracy, current_row, fronts, realized))
    _write_json(args.json, payload)
    if args.plot:
        plot_tradeoff(payload, args.plot)
        print(f"Wrote {args.plot}")
    return 0


def _timing_fields(result: dict[str, Any]) -> dict[str, Any]:
    # Timing runs on a subset, so the subset's own theoretical speedup is what the realized one compares with.
    renames = {"num_samples": "timed_samples", "theoretical_speedup": "timed_theoretical_speedup"}
    keys = ("realized_speedup", "theoretical_speedup", "efficiency", "batch_size", "threads", "repeats")
    return {renames.get(k, k): result[k] for k in (*keys, "num_samples", "noisy")}


def _fmt_setting(row: dict[str, Any]) -> str:
    value = row.get("exit_threshold", row.get("patience"))
    return "-" if value is None else f"{value:g}"


def _evaluate_table(full_depth_accuracy, current_row, fronts, realized) -> str:
    timed = {(r["exit_policy"], r.get("exit_threshold"), r.get("patience")): r for r in realized}
    lines = [
        f"Full-depth accuracy: {full_depth_accuracy:.4f}",
        f"Current setting ({current_row['exit_policy']}, {_fmt_setting(current_row)}): accuracy "
        f"{current_row['accuracy']:.4f}, average exit layer {current_row['average_exit_layer']:.2f}, theoretical "
        f"speedup {current_row['theoretical_speedup']:.2f}x",
        "",
        "| policy | threshold / patience | accuracy | average exit layer | theoretical speedup | realized speedup "
        "(on the timed rows) |",
        "|---|---|---|---|---|---|",
    ]
    for policy, front in fronts.items():
        for row in front:
            hit = timed.get((policy, row.get("exit_threshold"), row.get("patience")))
            realized_cell = "-"
            if hit:
                realized_cell = f"{hit['realized_speedup']:.2f}x (theoretical {hit['timed_theoretical_speedup']:.2f}x)"
            lines.append(
                f"| {policy} | {_fmt_setting(row)} | {row['accuracy']:.4f} | {row['average_exit_layer']:.2f} | "
                f"{row['theoretical_speedup']:.2f}x | {realized_cell} |"
            )
    return "\n".join(lines) + "\n"


def plot_tradeoff(payload: dict[str, Any], path: str) -> None:
    """Draws accuracy against speedup (theoretical lines, realized markers) per policy to a PNG.

    Args:
        payload: The ``evaluate`` JSON payload (``full_depth_accuracy``, ``pareto``, ``realized``).
        path: Output PNG path.
    """
    from .plotting import speedup_figure

    title = f"Accuracy vs speedup ({payload['num_samples']} samples)"
    with speedup_figure(path, "speedup over full depth (x)", title, missing_error=CliError) as axes:
        import matplotlib

        colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        for index, (policy, front) in enumerate(payload["pareto"].items()):
            color = colors[index % len(colors)]
            if front:
                axes.plot(
                    [r["theoretical_speedup"] for r in front],
                    [r["accuracy"] for r in front],
                    "-",
                    color=color,
                    label=f"{policy} (theoretical)",
                )
            timed = sorted(
                (r for r in payload["realized"] if r["exit_policy"] == policy), key=lambda r: r["realized_speedup"]
            )
            if timed:
                axes.plot(
                    [r["realized_speedup"] for r in timed],
                    [r["accuracy"] for r in timed],
                    "o--",
                    color=color,
                    label=f"{policy} (realized, batch {timed[0]['batch_size']})",
                )
        axes.axhline(payload["full_depth_accuracy"], color="gray", linestyle=":", label="full depth")
        axes.axvline(1.0, color="gray", linewidth=0.5)
        current = payload.get("current_setting")
        if current and current["exit_policy"] != "none":
            axes.plot(
                [current["theoretical_speedup"]], [current["accuracy"]], "k*", markersize=12, label="current setting"
            )


def cmd_bench(args) -> int:
    from .video.evaluation import cli_bench, is_video_model_dir

    if is_video_model_dir(args.model_dir):  # frame-sampling video models: adaptive_hf/video/evaluation.py
        return cli_bench(args)
    import torch

    data = prepare(args, require_labels=False)
    model = data.model
    if technique_of(model) != "early_exit":
        return _bench_other(args, data)
    if args.pool_rows is not None and not is_image_model(model):
        raise CliError("--pool-rows applies to image early-exit models only (classify_stream).")
    setting = _setting_override(args)
    effective = {**_current_setting(model.config), **(setting or {})}
    if effective["exit_policy"] == "none":
        print(
            "Note: the model's exit_policy is 'none' (not calibrated?), so both runs are full depth.", file=sys.stderr
        )
    threads = args.threads if args.threads is not None else torch.get_num_threads()
    results = []
    for batch_size in args.batch_sizes:
        batches = data.batches(batch_size)
        if not args.no_progress:
            print(
                f"Timing batch size {batch_size} ({len(batches)} batches, {args.repeats} repeats)...", file=sys.stderr
            )
        results.append(measure(model, batches, setting, args.repeats, threads))
        if args.pool_rows and batch_size > 1:
            results.append(measure(model, batches, setting, args.repeats, threads, pool_rows=args.pool_rows))
    lines = [
        f"Setting: {effective}; {data.num_samples} samples; torch {torch.__version__}, {threads} thread(s)",
        "",
        "| batch size | average exit layer | theoretical speedup | realized speedup | realized / theoretical "
        "| spread |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        spread = max(r["adaptive_spread"], r["full_spread"])
        pooled = f", pooled {r['pool_rows']}" if r.get("pool_rows") else ""
        lines.append(
            f"| {r['batch_size']}{pooled} | {r['average_exit_layer']:.2f} | {r['theoretical_speedup']:.2f}x | "
            f"{r['realized_speedup']:.2f}x | {r['efficiency']:.2f} | {spread:.0%}{' (noisy)' if r['noisy'] else ''} |"
        )
    print("\n".join(lines))
    _write_json(args.json, {"model": str(args.model_dir), "dataset": args.dataset, "results": results})
    return 0


HALTING_SWEEP = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
SKIM_SWEEP = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def _evaluate_sweep(args, data: Prepared) -> int:
    """``evaluate`` for halting and reader models: accuracy against theoretical speedup over their runtime knob."""
    model = data.model
    technique = technique_of(model)
    if technique == "halting":
        from .halting.evaluation import evaluate_halting

        batches = data.batches(args.batch_size)
        rows = evaluate_halting(model, thresholds=HALTING_SWEEP, batches=batches, labels=data.labels)
    else:
        from .readers.evaluation import evaluate_reader

        device = next(model.parameters()).device
        batches = _batches(data.dataset, data.tokenizer, args.batch_size, device, with_labels=True)
        rows = [{"setting": "full reading", **evaluate_reader(model, batches, reading_policy="full")}]
        if model.config.model_type == "skim_rnn":
            for threshold in dict.fromkeys([model.config.skim_threshold, *SKIM_SWEEP]):
                result = evaluate_reader(model, batches, reading_policy="adaptive", skim_threshold=threshold)
                rows.append({"setting": f"skim_threshold={threshold}", **result})
        else:
            rows.append({"setting": "adaptive", **evaluate_reader(model, batches, reading_policy="adaptive")})
    lines = ["| setting | accuracy | theoretical speedup |", "|---|---|---|"]
    lines += [f"| {r['setting']} | {r['accuracy']:.4f} | {r['theoretical_speedup']:.2f}x |" for r in rows]
    print("\n".join(lines))
    payload = {"model": str(args.model_dir), "dataset": args.dataset, "technique": technique, "rows": rows}
    _write_json(args.json, payload)
    if args.plot:
        _plot_sweep(rows, args.plot, f"{type(model).__name__} on {args.dataset}")
        print(f"Wrote {args.plot}")
    return 0


def _plot_sweep(rows: list[dict[str, Any]], path: str, title: str) -> None:
    from .plotting import speedup_figure

    xlabel = "theoretical speedup over full compute (x)"
    with speedup_figure(path, xlabel, title, title_fontsize=9, missing_error=CliError) as axes:
        points = sorted(rows[1:], key=lambda r: r["theoretical_speedup"])
        axes.plot([r["theoretical_speedup"] for r in points], [r["accuracy"] for r in points], "o-", label="sweep")
        axes.axhline(rows[0]["accuracy"], color="gray", linestyle=":", label=rows[0]["setting"])


def _bench_other(args, data: Prepared) -> int:
    """``bench`` for halting and reader models: the same weights with and without skipping, interleaved."""
    import torch

    model = data.model
    technique = technique_of(model)
    threads = args.threads if args.threads is not None else torch.get_num_threads()
    results = []
    for batch_size in args.batch_sizes:
        batches = data.batches(batch_size)
        if technique == "halting":
            from .halting.benchmarking import measure_halting_speedup

            result = measure_halting_speedup(model, batches, repeats=args.repeats, threads=threads)
        else:
            from .readers.evaluation import time_reader

            result = time_reader(model, batches, repetitions=args.repeats, threads=threads)
            result["batch_size"] = batch_size
        results.append(result)
    lines = [
        f"{type(model).__name__}; {data.num_samples} samples; torch {torch.__version__}, {threads} thread(s)",
        "",
        "| batch size | theoretical speedup | realized speedup | realized / theoretical | noisy |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['batch_size']} | {r['theoretical_speedup']:.2f}x | {r['realized_speedup']:.2f}x | "
            f"{r['efficiency']:.2f} | {'yes' if r['noisy'] else 'no'} |"
        )
    print("\n".join(lines))
    _write_json(args.json, {"model": str(args.model_dir), "dataset": args.dataset, "results": results})
    return 0


def cmd_card(args) -> int:
    model = load_model(args.model_dir)
    card = model.model_card(args.tags)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(card)
        print(f"Wrote {args.output}")
    else:
        print(card)
    return 0


# ----------------------------------------------------------------------------------------------------- parsing
def _data_arguments(parser: argparse.ArgumentParser, split: str) -> None:
    parser.add_argument(
        "model_dir", help="Folder written by save_pretrained (text models: with the tokenizer, or use --tokenizer)."
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help="Text: offline name (amazon_fine_food, trump_tweets), Hub name, local .json/.jsonl/.csv/.tsv/.parquet "
        "file (used whole) or a save_to_disk folder. Images: fashion_mnist, mnist_subset, a Hub name or a "
        "save_to_disk folder with an image column.",
    )
    parser.add_argument("--split", default=split, help=f"Split of a named dataset (default: {split}).")
    parser.add_argument("--text-column", default="text", help="Text column (default: text).")
    parser.add_argument("--label-column", default="label", help="Label column (default: label).")
    parser.add_argument("--max-samples", type=int, default=None, help="Use at most this many rows.")
    parser.add_argument("--max-length", type=int, default=128, help="Truncation length in tokens (default: 128).")
    parser.add_argument("--tokenizer", default=None, help="Tokenizer folder or name (default: the model folder).")
    parser.add_argument("--image-column", default=None, help="Image column (default: the first Image column).")
    parser.add_argument(
        "--image-mean",
        type=float,
        nargs="+",
        default=None,
        help="Per-channel mean of the image normalization (default: what the model records).",
    )
    parser.add_argument(
        "--image-std", type=float, nargs="+", default=None, help="Per-channel std (default: what the model records)."
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="Split seed of the offline image sets (default 0, as the recipes use)."
    )
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")


def build_parser() -> argparse.ArgumentParser:
    """The ``adaptive-hf`` argument parser."""
    from .early_exit.calibration import SWEEP_POLICIES

    parser = argparse.ArgumentParser(
        prog="adaptive-hf",
        description="Calibrate, evaluate, benchmark and describe saved adaptive text and image classifiers.",
    )
    parser.add_argument("--traceback", action="store_true", help="Show the full traceback on errors.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    calibrate = commands.add_parser("calibrate", help="Pick the exit policy and threshold on held-out data.")
    _data_arguments(calibrate, "validation")
    criterion = calibrate.add_mutually_exclusive_group(required=True)
    criterion.add_argument(
        "--max-accuracy-drop", type=float, help="Accuracy the model may lose, as a fraction (0.005 = 0.5 points)."
    )
    criterion.add_argument("--target-speedup", type=float, help="Theoretical speedup to reach (e.g. 2.0).")
    calibrate.add_argument("--policies", nargs="+", choices=SWEEP_POLICIES, default=list(SWEEP_POLICIES))
    calibrate.add_argument("--batch-size", type=int, default=64)
    calibrate.add_argument("--json", default=None, help="Write the full report as JSON here.")
    calibrate.add_argument("--save", action="store_true", help="Write the chosen setting back into MODEL_DIR.")
    calibrate.set_defaults(func=cmd_calibrate)

    evaluate = commands.add_parser("evaluate", help="Accuracy against speedup over a threshold sweep (JSON, PNG).")
    _data_arguments(evaluate, "test")
    evaluate.add_argument("--policies", nargs="+", choices=SWEEP_POLICIES, default=list(SWEEP_POLICIES))
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--json", default=None, help="Write the sweep as JSON here.")
    evaluate.add_argument("--plot", default=None, help="Draw the trade-off curve to this PNG.")
    evaluate.add_argument(
        "--realized-points",
        type=int,
        default=3,
        help="Time this many settings per policy along its Pareto front (0: theoretical only; default 3).",
    )
    evaluate.add_argument("--realized-samples", type=int, default=128, help="Rows timed per setting (default 128).")
    evaluate.add_argument("--repeats", type=int, default=5, help="Timed repetitions per setting (default 5).")
    evaluate.add_argument("--threads", type=int, default=None, help="torch.set_num_threads while timing.")
    evaluate.add_argument("--channels-last", action="store_true", help="Image CNNs: run in channels_last.")
    evaluate.add_argument(
        "--fold-batch-norms", action="store_true", help="timm CNNs: fold batch norms into the convolutions."
    )
    evaluate.set_defaults(func=cmd_evaluate)

    bench = commands.add_parser("bench", help="Realized against theoretical speedup at several batch sizes.")
    _data_arguments(bench, "test")
    bench.set_defaults(max_samples=256)
    bench.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    bench.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: current count).")
    bench.add_argument("--repeats", type=int, default=5, help="Timed repetitions, median reported (default 5).")
    bench.add_argument("--policy", choices=("none",) + tuple(SWEEP_POLICIES), default=None)
    bench.add_argument("--threshold", type=float, default=None)
    bench.add_argument("--patience", type=int, default=None)
    bench.add_argument("--channels-last", action="store_true", help="Image CNNs: run in channels_last.")
    bench.add_argument(
        "--fold-batch-norms", action="store_true", help="timm CNNs: fold batch norms into the convolutions."
    )
    bench.add_argument(
        "--pool-rows",
        type=int,
        default=None,
        help="Image early-exit models: also time each batch size above 1 through classify_stream, which pools the "
        "images that continue past an exit across batches until this many wait.",
    )
    bench.add_argument("--json", default=None, help="Write the results as JSON here.")
    bench.set_defaults(func=cmd_bench)

    card = commands.add_parser("card", help="Print or write the model card.")
    card.add_argument("model_dir", help="Folder written by save_pretrained.")
    card.add_argument("--output", default=None, help="Write the card here instead of printing it.")
    card.add_argument("--tags", nargs="*", default=None, help="Extra Hub tags.")
    card.set_defaults(func=cmd_card)
    return parser


def _check_positive(args) -> None:
    for name in ("batch_size", "max_samples", "max_length", "repeats", "realized_samples", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise CliError(f"--{name.replace('_', '-')} must be >= 1; got {value}.")
    if getattr(args, "realized_points", 0) < 0:
        raise CliError(f"--realized-points must be >= 0; got {args.realized_points}.")
    for size in getattr(args, "batch_sizes", None) or []:
        if size < 1:
            raise CliError(f"--batch-sizes must be >= 1; got {size}.")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``adaptive-hf``; returns the exit status (0 on success, 2 on a user error).

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_positive(args)
        return args.func(args)
    except (CliError, ValueError, TypeError, FileNotFoundError, ImportError) as error:
        if args.traceback or os.environ.get("ADAPTIVE_HF_TRACEBACK"):
            raise
        print(f"adaptive-hf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
