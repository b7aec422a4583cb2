"""Moving Fashion-MNIST: a labelled video set built from real images, where frame choice matters.

No labelled video ships offline, so clips are made the way Moving MNIST was made, from the Fashion-MNIST images of
the Debian package ``dataset-fashion-mnist`` (``apt-get update && apt-get install -y dataset-fashion-mnist``):

* A labelled item (28x28) bounces across a ``image_size`` x ``image_size`` canvas for ``num_frames`` frames.
* It is *clear* in only a random subset of ``min_clear_frames``..``max_clear_frames`` frames (full contrast, no
  noise). Every other frame is corrupted, drawn per frame from ``corruptions``:

  - ``"distractor"``: a bouncing item of another class (one per clip) replaces the labelled item;
  - ``"occlusion"``: the labelled item is mostly covered by a noise block;
  - ``"noise"``: the labelled item is nearly invisible (contrast 0.15),

  and carries additive Gaussian noise (``noise_std``). A classifier that looks at a few frames chosen blindly often
  sees only corrupted ones; a sampler that finds the clear frames does not.

Splits never share a source image: ``train`` and ``validation`` draw from a fixed partition (50,000 / 10,000) of
Fashion-MNIST's training images, ``test`` from its 10,000 test images. Clip ``i`` of a split depends only on
``(seed, split, i)``, so a larger ``num_videos`` extends a smaller one.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist/"
FASHION_MNIST_CLASSES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
VIDEO_SPLITS = ("train", "validation", "test")
CORRUPTIONS = ("distractor", "occlusion", "noise")
ITEM_SIZE = 28
_PARTITION_SEED = 20240606  # fixed: the train/validation partition must not move with the clip seed
_NUM_VALIDATION_SOURCES = 10_000
_NOISE_BANK = 256
_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
INSTALL_HINT = "Install it with `apt-get update && apt-get install -y dataset-fashion-mnist` (Debian package, 30 MB)."


def _read_idx(path: str, offset: int) -> np.ndarray:
    with gzip.open(path) as handle:
        return np.frombuffer(handle.read(), np.uint8, offset=offset)


_CACHE: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def load_fashion_mnist_arrays(part: str, data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The Fashion-MNIST images ``(n, 28, 28)`` uint8 and labels ``(n,)`` of the Debian package.

    Args:
        part: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        data_dir: Folder with the four ``*-ubyte.gz`` files; default ``/usr/share/datasets/fashion-mnist/``.

    Raises:
        FileNotFoundError: When the files are missing, with the command that installs them.
    """
    if part not in ("train", "test"):
        raise ValueError(f"`part` must be one of 'train', 'test'; got {part!r}.")
    folder = data_dir or os.environ.get("ADAPTIVE_HF_FASHION_MNIST_DIR", FASHION_MNIST_DIR)
    key = (folder, part)
    if key not in _CACHE:
        prefix = "train" if part == "train" else "t10k"
        images_path = os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz")
        labels_path = os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz")
        missing = [path for path in (images_path, labels_path) if not os.path.isfile(path)]
        if missing:
            raise FileNotFoundError(f"Fashion-MNIST is missing ({', '.join(missing)}). {INSTALL_HINT}")
        images = _read_idx(images_path, 16).reshape(-1, ITEM_SIZE, ITEM_SIZE)
        labels = _read_idx(labels_path, 8).astype(np.int64)
        _CACHE[key] = (images, labels)
    return _CACHE[key]


def fashion_mnist_available(data_dir: str | None = None) -> bool:
    """Whether the Debian Fashion-MNIST files are present.

    Args:
        data_dir: Folder to look in; default ``/usr/share/datasets/fashion-mnist/``.
    """
    try:
        load_fashion_mnist_arrays("test", data_dir)
    except FileNotFoundError:
        return False
    return True


def split_source_indices(split: str, data_dir: str | None = None) -> tuple[str, np.ndarray]:
    """Which Fashion-MNIST images a split draws from: ``(file part, image indices)``.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        data_dir: Fashion-MNIST folder.
    """
    if split not in VIDEO_SPLITS:
        raise ValueError(f"`split` must be one of {', '.join(map(repr, VIDEO_SPLITS))}; got {split!r}.")
    if split == "test":
        return "test", np.arange(len(load_fashion_mnist_arrays("test", data_dir)[1]))
    count = len(load_fashion_mnist_arrays("train", data_dir)[1])
    order = np.random.default_rng(_PARTITION_SEED).permutation(count)
    cut = count - _NUM_VALIDATION_SOURCES
    return "train", np.sort(order[:cut] if split == "train" else order[cut:])


def _trajectory(rng: np.random.Generator, num_frames: int, room: int, speed: tuple[float, float]) -> np.ndarray:
    """Integer top-left corners ``(num_frames, 2)`` of an item bouncing inside ``[0, room]`` (elastic walls)."""
    position = rng.uniform(0, room, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    velocity = rng.uniform(*speed) * np.array([np.sin(angle), np.cos(angle)])
    unfolded = position + np.arange(num_frames)[:, None] * velocity
    if room == 0:
        return np.zeros((num_frames, 2), dtype=np.int64)
    # Bouncing between two walls is the straight path folded back into the box.
    folded = np.mod(unfolded, 2 * room)
    folded = np.where(folded > room, 2 * room - folded, folded)
    return np.rint(folded).astype(np.int64)


def _paste(canvas: np.ndarray, item: np.ndarray, corner: np.ndarray) -> None:
    y, x = int(corner[0]), int(corner[1])
    region = canvas[y : y + ITEM_SIZE, x : x + ITEM_SIZE]
    np.maximum(region, item, out=region)


def _check_settings(
    split, num_videos, num_frames, image_size, min_clear_frames, max_clear_frames, noise_std, corruptions
) -> tuple[str, ...]:
    from ..core.configuration import check_choice, check_number

    check_choice("split", split, VIDEO_SPLITS)
    check_number("num_videos", num_videos, 0, None, integer=True)
    check_number("num_frames", num_frames, 2, None, integer=True)
    check_number("image_size", image_size, ITEM_SIZE, None, integer=True)
    check_number("min_clear_frames", min_clear_frames, 1, num_frames - 1, integer=True)
    check_number("max_clear_frames", max_clear_frames, min_clear_frames, num_frames - 1, integer=True)
    check_number("noise_std", noise_std, 0.0, None)
    if isinstance(corruptions, str) or not isinstance(corruptions, Sequence) or not corruptions:
        raise TypeError(f"`corruptions` must be a non-empty list drawn from {list(CORRUPTIONS)}; got {corruptions!r}.")
    for name in corruptions:
        check_choice("corruptions", name, CORRUPTIONS)
    return tuple(corruptions)


def generate_moving_fashion_mnist(
    split: str = "train",
    num_videos: int = 1000,
    num_frames: int = 16,
    image_size: int = 64,
    seed: int = 0,
    min_clear_frames: int = 3,
    max_clear_frames: int = 6,
    noise_std: float = 0.3,
    corruptions: Sequence[str] = CORRUPTIONS,
    data_dir: str | None = None,
) -> dict[str, np.ndarray]:
    """Generates Moving Fashion-MNIST clips as numpy arrays (see :func:`load_moving_fashion_mnist`).

    Returns:
        ``frames`` ``(num_videos, num_frames, image_size, image_size)`` uint8; ``label``, ``distractor_label``,
        ``source_index``, ``distractor_index`` ``(num_videos,)`` int64 (indices into the Fashion-MNIST file of the
        split); ``clear`` ``(num_videos, num_frames)`` bool, True where the labelled item is clear.
    """
    corruptions = _check_settings(
        split, num_videos, num_frames, image_size, min_clear_frames, max_clear_frames, noise_std, corruptions
    )
    part, sources = split_source_indices(split, data_dir)
    images, labels = load_fashion_mnist_arrays(part, data_dir)
    by_class = [sources[labels[sources] == c] for c in range(len(FASHION_MNIST_CLASSES))]
    room = image_size - ITEM_SIZE
    speed = (1.5 * image_size / 64, 3.5 * image_size / 64)
    frames = np.zeros((num_videos, num_frames, image_size, image_size), dtype=np.uint8)
    clear = np.zeros((num_videos, num_frames), dtype=bool)
    columns = {name: np.zeros(num_videos, dtype=np.int64) for name in ("label", "distractor_label")}
    columns.update({name: np.zeros(num_videos, dtype=np.int64) for name in ("source_index", "distractor_index")})
    canvas = np.zeros((num_frames, image_size, image_size), dtype=np.float32)
    # Fresh Gaussian noise for every frame would dominate the generation time; frames draw from a seeded bank of
    # noise fields instead, each flipped at random, which no classifier can memorise at these sizes.
    bank = np.random.default_rng([seed, _SPLIT_IDS[split], 2**31]).standard_normal(
        (_NOISE_BANK, image_size, image_size), dtype=np.float32
    )
    bank *= noise_std
    for i in range(num_videos):
        rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
        label = int(rng.integers(len(by_class)))
        distractor_label = int((label + rng.integers(1, len(by_class))) % len(by_class))
        source = int(by_class[label][rng.integers(len(by_class[label]))])
        distractor = int(by_class[distractor_label][rng.integers(len(by_class[distractor_label]))])
        item = images[source].astype(np.float32) / 255.0
        other = images[distractor].astype(np.float32) / 255.0
        path = _trajectory(rng, num_frames, room, speed)
        other_path = _trajectory(rng, num_frames, room, speed)
        num_clear = int(rng.integers(min_clear_frames, max_clear_frames + 1))
        is_clear = np.zeros(num_frames, dtype=bool)
        is_clear[rng.choice(num_frames, num_clear, replace=False)] = True
        kinds = rng.integers(len(corruptions), size=num_frames)
        noise_ids = rng.integers(_NOISE_BANK, size=num_frames)
        flips = rng.integers(4, size=num_frames)
        blocks = rng.uniform(size=(num_frames, 5))
        canvas.fill(0.0)
        for t in range(num_frames):
            frame = canvas[t]
            kind = None if is_clear[t] else corruptions[kinds[t]]
            if kind is None:
                _paste(frame, item, path[t])
                continue
            if kind == "distractor":
                _paste(frame, other, other_path[t])
            elif kind == "noise":
                _paste(frame, 0.15 * item, path[t])
            else:  # occlusion: a block covering 60-90% of each side of the item
                _paste(frame, item, path[t])
                height, width = (0.6 + 0.3 * blocks[t, :2]) * ITEM_SIZE
                height, width = int(height), int(width)
                top = path[t][0] + int(blocks[t, 2] * (ITEM_SIZE - height + 1))
                left = path[t][1] + int(blocks[t, 3] * (ITEM_SIZE - width + 1))
                frame[top : top + height, left : left + width] = 0.3 + 0.4 * blocks[t, 4]
            noise = bank[noise_ids[t]]
            if flips[t] & 1:
                noise = noise[::-1]
            if flips[t] & 2:
                noise = noise[:, ::-1]
            frame += noise
        canvas *= 255.0
        canvas += 0.5
        np.clip(canvas, 0.0, 255.0, out=canvas)
        frames[i] = canvas  # float -> uint8 truncates, which rounds after the +0.5
        clear[i] = is_clear
        columns["label"][i], columns["distractor_label"][i] = label, distractor_label
        columns["source_index"][i], columns["distractor_index"][i] = source, distractor
    return {"frames": frames, "clear": clear, **columns}


def load_moving_fashion_mnist(
    split: str = "train",
    num_videos: int = 1000,
    num_frames: int = 16,
    image_size: int = 64,
    seed: int = 0,
    min_clear_frames: int = 3,
    max_clear_frames: int = 6,
    noise_std: float = 0.3,
    corruptions: Sequence[str] = CORRUPTIONS,
    data_dir: str | None = None,
):
    """Moving Fashion-MNIST clips as a ``datasets.Dataset``.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"`` (disjoint source images).
        num_videos: Number of clips.
        num_frames: Frames per clip (T >= 2).
        image_size: Side of the square frames (>= 28).
        seed: Clip seed; clip ``i`` depends only on ``(seed, split, i)``.
        min_clear_frames: Fewest frames in which the labelled item is clear (>= 1).
        max_clear_frames: Most such frames (< ``num_frames``, so some frames are always corrupted).
        noise_std: Standard deviation of the additive noise on corrupted frames (pixel range 0..1).
        corruptions: Corruptions drawn for the other frames: any of ``"distractor"``, ``"occlusion"``,
            ``"noise"``.
        data_dir: Fashion-MNIST folder; default ``/usr/share/datasets/fashion-mnist/``.

    Returns:
        A ``datasets.Dataset`` with ``frames`` (``(T, H, W)`` uint8, grayscale), ``label`` (``ClassLabel`` with the
        Fashion-MNIST names), ``clear_frames`` (sorted indices of the clear frames), ``distractor_label``,
        ``source_index`` and ``distractor_index``. Turn rows into model inputs with :class:`VideoCollator`
        (use ``remove_unused_columns=False`` with the ``Trainer``, whose model takes ``pixel_values``, not
        ``frames``).
    """
    import datasets

    arrays = generate_moving_fashion_mnist(
        split,
        num_videos,
        num_frames,
        image_size,
        seed,
        min_clear_frames,
        max_clear_frames,
        noise_std,
        corruptions,
        data_dir,
    )
    features = datasets.Features(
        {
            "frames": datasets.Array3D((num_frames, image_size, image_size), "uint8"),
            "label": datasets.ClassLabel(names=list(FASHION_MNIST_CLASSES)),
            "clear_frames": datasets.Sequence(datasets.Value("int64")),
            "distractor_label": datasets.ClassLabel(names=list(FASHION_MNIST_CLASSES)),
            "source_index": datasets.Value("int64"),
            "distractor_index": datasets.Value("int64"),
        }
    )
    import pyarrow as pa

    clear = arrays["clear"]
    clear_offsets = np.concatenate([[0], np.cumsum(clear.sum(1))]).astype(np.int32)
    table = pa.table(
        {
            "frames": _frames_to_arrow(arrays["frames"]),
            "label": pa.array(arrays["label"]),
            "clear_frames": pa.ListArray.from_arrays(
                pa.array(clear_offsets), pa.array(np.nonzero(clear)[1].astype(np.int64))
            ),
            "distractor_label": pa.array(arrays["distractor_label"]),
            "source_index": pa.array(arrays["source_index"]),
            "distractor_index": pa.array(arrays["distractor_index"]),
        }
    )
    table = table.cast(features.arrow_schema)
    # The clips are a pure function of the settings, so those name the dataset; hashing 100+ MB of frames would
    # take longer than generating them.
    settings = (split, num_videos, num_frames, image_size, seed, min_clear_frames, max_clear_frames, noise_std)
    fingerprint = hashlib.sha256(repr((settings, tuple(corruptions), data_dir)).encode()).hexdigest()[:16]
    return datasets.Dataset(
        table,
        info=datasets.DatasetInfo(features=features),
        split=datasets.NamedSplit(split),
        fingerprint=f"moving_fashion_mnist_{fingerprint}",
    )


def _frames_to_arrow(frames: np.ndarray):
    """``(n, T, H, W)`` uint8 frames as an Arrow ``Array3D`` column."""
    import pyarrow as pa
    from datasets.features.features import Array3DExtensionType

    count, steps, height, width = frames.shape
    # Building the nested Arrow list by hand views the uint8 buffer instead of converting row by row.
    storage = pa.array(frames.reshape(-1))
    for size, total in ((width, count * steps * height), (height, count * steps), (steps, count)):
        storage = pa.ListArray.from_arrays(pa.array(np.arange(0, total + 1, dtype=np.int32) * size), storage)
    return pa.ExtensionArray.from_storage(Array3DExtensionType((steps, height, width), "uint8"), storage)


def load_fashion_mnist_frames(
    split: str = "train", num_images: int = 8000, image_size: int = 64, seed: int = 0, data_dir: str | None = None
):
    """Single clear frames for frame-level pretraining of a per-frame backbone: one Fashion-MNIST item pasted at a
    random place on an ``image_size`` canvas, from the same source images as the clips of ``split``.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"`` (the sources of :func:`load_moving_fashion_mnist`).
        num_images: Number of frames.
        image_size: Canvas side (>= 28).
        seed: Frame ``i`` depends only on ``(seed, split, i)``.
        data_dir: Fashion-MNIST folder.

    Returns:
        A ``datasets.Dataset`` with ``frames`` ``(1, H, W)`` uint8 (a one-frame clip, so :class:`VideoCollator`
        and a ``num_frames=1`` video classifier take it) and ``label``.
    """
    import datasets
    import pyarrow as pa

    from ..core.configuration import check_choice, check_number

    check_choice("split", split, VIDEO_SPLITS)
    check_number("num_images", num_images, 0, None, integer=True)
    check_number("image_size", image_size, ITEM_SIZE, None, integer=True)
    part, sources = split_source_indices(split, data_dir)
    images, labels = load_fashion_mnist_arrays(part, data_dir)
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], 2**30])
    chosen = sources[rng.integers(len(sources), size=num_images)]
    corners = rng.integers(image_size - ITEM_SIZE + 1, size=(num_images, 2))
    frames = np.zeros((num_images, 1, image_size, image_size), dtype=np.uint8)
    for i in range(num_images):
        _paste(frames[i, 0], images[chosen[i]], corners[i])
    features = datasets.Features(
        {
            "frames": datasets.Array3D((1, image_size, image_size), "uint8"),
            "label": datasets.ClassLabel(names=list(FASHION_MNIST_CLASSES)),
        }
    )
    table = pa.table({"frames": _frames_to_arrow(frames), "label": pa.array(labels[chosen])}).cast(
        features.arrow_schema
    )
    fingerprint = hashlib.sha256(repr(("frames", split, num_images, image_size, seed, data_dir)).encode()).hexdigest()
    return datasets.Dataset(
        table,
        info=datasets.DatasetInfo(features=features),
        split=datasets.NamedSplit(split),
        fingerprint=f"fashion_mnist_frames_{fingerprint[:16]}",
    )


class VideoCollator:
    """Turns Moving Fashion-MNIST rows into model inputs: ``pixel_values`` ``(batch, T, C, H, W)`` float and
    ``labels``.

    Args:
        num_channels: 1 (grayscale) or 3 (the gray frame repeated, e.g. for ImageNet backbones).
        image_size: Resize frames to this side (bilinear); ``None`` keeps them.
        mean: Per-channel mean subtracted after scaling to [0, 1] (one value or ``num_channels`` values).
        std: Per-channel standard deviation to divide by.
    """

    def __init__(
        self,
        num_channels: int = 1,
        image_size: int | None = None,
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.5,
    ):
        if num_channels not in (1, 3):
            raise ValueError(f"`num_channels` must be one of 1, 3; got {num_channels!r}.")
        if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
            raise ValueError(f"`image_size` must be None or a positive integer; got {image_size!r}.")
        self.num_channels = num_channels
        self.image_size = image_size
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
        for name, value in (("mean", self.mean), ("std", self.std)):
            if value.numel() not in (1, num_channels):
                raise ValueError(f"`{name}` must have 1 or {num_channels} values; got {value.numel()}.")

    def frames_to_pixel_values(self, frames: Any) -> torch.Tensor:
        """``(batch, T, H, W)`` uint8 frames to normalized ``(batch, T, C, H', W')`` float32.

        Args:
            frames: A uint8 array/tensor of frames.
        """
        frames = torch.as_tensor(np.asarray(frames))
        if frames.dim() != 4:
            raise ValueError(f"`frames` must have shape (batch, T, H, W); got {tuple(frames.shape)}.")
        pixels = self.images_to_pixel_values(frames.flatten(0, 1))
        return pixels.view(*frames.shape[:2], *pixels.shape[1:])

    def images_to_pixel_values(self, images: Any, resize: bool = True) -> torch.Tensor:
        """``(n, H, W)`` gray or ``(n, H, W, 3)`` RGB uint8 images to normalized ``(n, C, H', W')`` float32.

        Gray images are repeated over ``num_channels``; RGB images need ``num_channels=3``. Each image is handled on
        its own, so frames decoded one by one equal the same frames converted as a clip.

        Args:
            images: A uint8 array/tensor of images.
            resize: Resize to ``image_size`` (False keeps the size, e.g. for low-resolution glance frames).
        """
        images = torch.as_tensor(np.asarray(images))
        if images.dim() == 4 and images.size(-1) == 3:
            if self.num_channels != 3:
                raise ValueError("RGB frames need `num_channels=3`; decode them as gray for a 1-channel model.")
            pixels = images.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        elif images.dim() == 3:
            pixels = images.to(torch.float32).div_(255.0).unsqueeze(1)
        else:
            raise ValueError(f"`images` must have shape (n, H, W) or (n, H, W, 3); got {tuple(images.shape)}.")
        size = self.image_size
        if resize and size is not None and tuple(pixels.shape[-2:]) != (size, size):
            pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
        pixels = pixels.expand(-1, self.num_channels, -1, -1)
        return ((pixels - self.mean) / self.std).contiguous()

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        frames = np.stack([np.asarray(row["frames"], dtype=np.uint8) for row in rows])
        batch = {"pixel_values": self.frames_to_pixel_values(frames)}
        if "label" in rows[0] or "labels" in rows[0]:
            key = "label" if "label" in rows[0] else "labels"
            batch["labels"] = torch.as_tensor([int(row[key]) for row in rows], dtype=torch.long)
        return batch
