"""Image data for the commands: how a saved image model's inputs are prepared (size, channels, normalization), one
split of an image dataset, and lazily prepared ``pixel_values`` batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import CliError
from .text import encode_labels, load_local


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
    from ..core.vision_backbones import stem_conv

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

    from ..data import IMAGE_DATASETS, load_image_arrays

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
    dataset = load_local(name, split)
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

    from ..data import to_pixel_values

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
