"""Video files for the frame samplers: a labelled folder as a dataset, and a lazy collator that decodes only what the
sampler asks for.

* :func:`load_video_folder` reads one subfolder per class, or a CSV of ``path,label``, into a ``datasets.Dataset``
  of paths (``video``) and labels (``label``).
* :class:`VideoFileCollator` turns rows into ``{"frame_source": VideoFileSource, "labels": ...}``. It reads each
  file's frame table (demux only) and checks it, but decodes nothing.
* :class:`VideoFileSource` decodes in two passes when the model asks: the glance pass decodes only what the glance
  network scores (every ``glance_stride``-th frame, or the key frames, optionally at low resolution); the backbone
  pass seeks to the chosen frames and decodes them at full resolution. An early stop asks chunk by chunk, so
  decoding stops when the video stops. Frames decoded are counted per video.

A clip of ``n`` frames fills the model's ``num_frames`` slots with evenly spaced frames (slot ``i`` shows frame
``floor((i + 0.5) * n / num_frames)``, every frame when ``n == num_frames``).
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import VideoCollator
from .decoding import VIDEO_EXTENSIONS, FrameDecoder, VideoDecodingError, VideoIndex, probe_video
from .sources import FrameSource

logger = logging.getLogger(__name__)
PAD_MODES = ("error", "repeat")
ON_ERROR = ("raise", "skip")


def _labelled_paths_from_csv(csv_path: Path) -> list[tuple[str, str]]:
    with csv_path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if rows and [cell.strip().lower() for cell in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    if not rows:
        raise ValueError(f"{csv_path}: no labelled videos; expected rows of `path,label` (a header is optional).")
    pairs = []
    for number, row in enumerate(rows, start=1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{csv_path}: row {number} ({row!r}) is not `path,label`.")
        path = Path(row[0].strip())
        path = path if path.is_absolute() else csv_path.parent / path
        if not path.is_file():
            raise FileNotFoundError(f"{csv_path}: row {number} names {str(path)!r}, which does not exist.")
        pairs.append((str(path), row[1].strip()))
    return pairs


def _labelled_paths_from_folders(folder: Path, extensions: Sequence[str]) -> list[tuple[str, str]]:
    suffixes = {e.lower() for e in extensions}
    pairs = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        pairs += [(str(p), class_dir.name) for p in files]
    return pairs


def load_video_folder(path: str | Path, extensions: Sequence[str] = VIDEO_EXTENSIONS):
    """A folder of labelled video files as a ``datasets.Dataset`` of paths.

    Args:
        path: A folder with one subfolder per class (the subfolder names are the labels; files found recursively),
            a folder with a single ``.csv`` of ``path,label`` rows, or such a CSV file. CSV paths are relative to
            the CSV's folder unless absolute.
        extensions: File endings counted as videos in class subfolders.

    Returns:
        A ``datasets.Dataset`` with ``video`` (the file path) and ``label`` (a ``ClassLabel`` over the sorted label
        names). Nothing is decoded; :class:`VideoFileCollator` reads the files lazily.

    Raises:
        FileNotFoundError: ``path``, or a file a CSV names, does not exist.
        ValueError: The folder holds no labelled videos (no class subfolder with videos, no CSV).
    """
    import datasets

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Video folder {str(path)!r} does not exist.")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise ValueError(f"{path}: expected a folder or a `.csv` of `path,label` rows.")
        pairs = _labelled_paths_from_csv(path)
    else:
        pairs = _labelled_paths_from_folders(path, extensions)
        csvs = sorted(path.glob("*.csv"))
        if not pairs and len(csvs) == 1:
            pairs = _labelled_paths_from_csv(csvs[0])
        if not pairs:
            raise ValueError(
                f"{path}: no labelled videos. Expected one subfolder per class holding video files (endings "
                f"{', '.join(extensions)}) or a single CSV of `path,label` rows."
            )
    names = sorted({label for _, label in pairs})
    features = datasets.Features({"video": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    ids = {name: i for i, name in enumerate(names)}
    return datasets.Dataset.from_dict(
        {"video": [p for p, _ in pairs], "label": [ids[label] for _, label in pairs]}, features=features
    )


def slot_frames(num_file_frames: int, num_frames: int) -> np.ndarray:
    """File frame shown in each of the model's ``num_frames`` slots: evenly spaced, segment centres.

    Args:
        num_file_frames: Frames in the file.
        num_frames: The model's frame slots.
    """
    positions = (np.arange(num_frames, dtype=np.float64) + 0.5) * num_file_frames / num_frames
    return np.minimum(np.floor(positions).astype(np.int64), num_file_frames - 1)


class _Video:
    """One file of a :class:`VideoFileSource`: its slot mapping, decoders and decoded full-resolution frames."""

    def __init__(self, index: VideoIndex, slots: np.ndarray, color: str, threads: int):
        self.index = index
        self.slots = slots
        self.color = color
        self.threads = threads
        self.decoder = FrameDecoder(index, color, threads=threads)
        self.frames: dict[int, np.ndarray] = {}  # full resolution, by file frame number
        self.glance_decoded = 0
        self.extra_decoded = 0  # frames of decoders other than the full-resolution one

    @property
    def frames_decoded(self) -> int:
        return self.decoder.frames_decoded + self.extra_decoded

    def full(self, numbers: Sequence[int]) -> list[np.ndarray]:
        missing = [n for n in numbers if n not in self.frames]
        if missing:
            self.frames.update(self.decoder.decode(missing))
        return [self.frames[n] for n in numbers]

    def close(self) -> None:
        self.decoder.close()


class VideoFileSource(FrameSource):
    """Video files decoded lazily, in two passes, for the frame-sampling video classifier.

    Build it with :class:`VideoFileCollator` (which also checks the files), or directly from probed files.

    Args:
        indexes: Each file's :class:`~adaptive_hf.video.decoding.VideoIndex` (:func:`probe_video`).
        num_frames: The model's frames per clip.
        transform: A :class:`~adaptive_hf.video.data.VideoCollator` (channels, frame size, normalization).
        pad: ``"error"``: a file with fewer than ``num_frames`` frames is an error naming it; ``"repeat"``: its
            frames are repeated to fill the slots.
        glance_stride: The glance pass decodes every ``glance_stride``-th slot (0, k, 2k, ...).
        glance_keyframes: The glance pass decodes only key frames; each slot is scored on the key frame at or
            before it (``glance_stride`` must then be 1).
        glance_lowres: Decode glance frames at ``1 / 2**glance_lowres`` resolution where the codec can (MJPEG), 0..3.
        threads: Decoder threads per file.
    """

    def __init__(
        self,
        indexes: Sequence[VideoIndex],
        num_frames: int,
        transform: VideoCollator,
        pad: str = "error",
        glance_stride: int = 1,
        glance_keyframes: bool = False,
        glance_lowres: int = 0,
        threads: int = 1,
    ):
        _check_decoding_settings(pad, glance_stride, glance_keyframes, glance_lowres)
        self.transform = transform
        self._num_frames = num_frames
        self.glance_stride = glance_stride
        self.glance_keyframes = glance_keyframes
        self.glance_lowres = glance_lowres
        self.decode_seconds = 0.0
        self.paths = [index.path for index in indexes]
        color = "rgb" if transform.num_channels == 3 else "gray"
        self.videos = []
        for index in indexes:
            if index.num_frames < num_frames and pad == "error":
                raise VideoDecodingError(
                    index.path,
                    f"has {index.num_frames} frames, fewer than num_frames={num_frames}; pad it with pad='repeat' "
                    "or use a model with fewer frames.",
                )
            self.videos.append(_Video(index, slot_frames(index.num_frames, num_frames), color, threads))
        first = self.videos[0].index if self.videos else None
        size = transform.image_size
        height, width = (size, size) if size is not None else (first.height, first.width) if first else (0, 0)
        for video in self.videos:
            if size is None and (video.index.height, video.index.width) != (height, width):
                raise VideoDecodingError(
                    video.index.path,
                    f"is {video.index.width}x{video.index.height} but the batch's first video is {width}x{height}; "
                    "set the collator's `image_size` to resize every frame.",
                )
        self._frame_shape = (transform.num_channels, int(height), int(width))

    @property
    def num_videos(self) -> int:
        return len(self.videos)

    @property
    def num_frames(self) -> int:
        return self._num_frames

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return self._frame_shape

    def glance_frames(self) -> tuple[torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        slots = np.arange(0, self.num_frames, self.glance_stride)
        images = []
        for video in self.videos:
            before = video.frames_decoded
            numbers = video.slots[slots]
            if self.glance_keyframes:
                numbers = np.asarray([video.index.keyframe_before(int(n)) for n in numbers])
            images += self._glance_images(video, numbers)
            video.glance_decoded += video.frames_decoded - before
        resize = self.glance_lowres == 0
        pixels = self.transform.images_to_pixel_values(np.stack(images), resize=resize)
        pixels = pixels.view(self.num_videos, len(slots), *pixels.shape[1:])
        self.decode_seconds += time.perf_counter() - start
        return torch.as_tensor(slots).expand(self.num_videos, -1), pixels

    def _glance_images(self, video: _Video, numbers: np.ndarray) -> list[np.ndarray]:
        if self.glance_lowres == 0 and not self.glance_keyframes:
            return video.full(numbers.tolist())
        decoder = FrameDecoder(
            video.index, video.color, self.glance_keyframes, self.glance_lowres, threads=video.threads
        )
        try:
            decoded = decoder.decode(numbers.tolist())
        finally:
            decoder.close()
        video.extra_decoded += decoder.frames_decoded
        if self.glance_lowres == 0:  # full-resolution key frames serve the backbone pass too
            video.frames.update(decoded)
        return [decoded[int(n)] for n in numbers]

    def frames(self, rows: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        images = []
        for row, slots in zip(rows.tolist(), indices.tolist()):
            video = self.videos[row]
            images += video.full(video.slots[slots].tolist())
        pixels = self.transform.images_to_pixel_values(np.stack(images))
        self.decode_seconds += time.perf_counter() - start
        return pixels

    def frames_decoded(self) -> torch.Tensor:
        return torch.tensor([video.frames_decoded for video in self.videos], dtype=torch.long)

    def glance_decoded(self) -> torch.Tensor:
        return torch.tensor([video.glance_decoded for video in self.videos], dtype=torch.long)

    def close(self) -> None:
        """Closes the files (decoded frames stay cached)."""
        for video in self.videos:
            video.close()


def _check_decoding_settings(pad, glance_stride, glance_keyframes, glance_lowres) -> None:
    if pad not in PAD_MODES:
        raise ValueError(f"`pad` must be one of {', '.join(map(repr, PAD_MODES))}; got {pad!r}.")
    if not isinstance(glance_stride, int) or isinstance(glance_stride, bool) or glance_stride < 1:
        raise ValueError(f"`glance_stride` must be a positive integer; got {glance_stride!r}.")
    if not isinstance(glance_keyframes, bool):
        raise TypeError(f"`glance_keyframes` must be a bool; got {glance_keyframes!r}.")
    if glance_keyframes and glance_stride != 1:
        raise ValueError("`glance_keyframes=True` scores every frame on its key frame: leave `glance_stride` at 1.")
    if glance_lowres not in (0, 1, 2, 3):
        raise ValueError(f"`glance_lowres` must be one of 0, 1, 2, 3; got {glance_lowres!r}.")


class VideoFileCollator:
    """Rows of :func:`load_video_folder` to ``{"frame_source": VideoFileSource, "labels": (batch,)}``, decoding
    nothing: the model decodes through the source what its sampler needs.

    Each file's frame table is read here (demux only), so a missing, unreadable, too short or undecodable file fails
    at collation with an error naming it, or is skipped with a warning (``on_error="skip"``; :attr:`skipped` lists
    ``(path, reason)``).

    Args:
        num_frames: The model's frames per clip.
        transform: A :class:`~adaptive_hf.video.data.VideoCollator` (channels, frame size, normalization); default
            1 channel at the files' size, mean and std 0.5.
        pad: ``"error"`` or ``"repeat"`` for files shorter than ``num_frames`` (see :class:`VideoFileSource`).
        on_error: ``"raise"`` or ``"skip"`` a file that cannot be used.
        glance_stride: See :class:`VideoFileSource`.
        glance_keyframes: See :class:`VideoFileSource`.
        glance_lowres: See :class:`VideoFileSource`.
        threads: Decoder threads per file.
        path_column: Column of the file paths.
        label_column: Column of the labels (absent: no ``labels`` in the batch).
    """

    def __init__(
        self,
        num_frames: int,
        transform: VideoCollator | None = None,
        pad: str = "error",
        on_error: str = "raise",
        glance_stride: int = 1,
        glance_keyframes: bool = False,
        glance_lowres: int = 0,
        threads: int = 1,
        path_column: str = "video",
        label_column: str = "label",
    ):
        if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
            raise ValueError(f"`num_frames` must be a positive integer; got {num_frames!r}.")
        if on_error not in ON_ERROR:
            raise ValueError(f"`on_error` must be one of {', '.join(map(repr, ON_ERROR))}; got {on_error!r}.")
        _check_decoding_settings(pad, glance_stride, glance_keyframes, glance_lowres)
        self.num_frames = num_frames
        self.transform = transform or VideoCollator()
        self.pad = pad
        self.on_error = on_error
        self.decoding = dict(
            glance_stride=glance_stride,
            glance_keyframes=glance_keyframes,
            glance_lowres=glance_lowres,
            threads=threads,
        )
        self.path_column = path_column
        self.label_column = label_column
        self.skipped: list[tuple[str, str]] = []
        self.probe_seconds = 0.0

    def _usable(self, path: str) -> VideoIndex | None:
        try:
            # A DataLoader worker cannot hand its open file to the main process, where the model decodes.
            index = probe_video(path, keep_open=torch.utils.data.get_worker_info() is None)
            if index.num_frames < self.num_frames and self.pad == "error":
                raise VideoDecodingError(
                    path,
                    f"has {index.num_frames} frames, fewer than num_frames={self.num_frames}; pad it with "
                    "pad='repeat' or use a model with fewer frames.",
                )
            return index
        except (VideoDecodingError, FileNotFoundError) as error:
            if self.on_error == "raise":
                raise
            self.skip(path, error)
            return None

    def skip(self, path: str, error: Exception) -> None:
        """Records and logs a file left out of the batch."""
        self.skipped.append((path, str(error)))
        logger.warning("Skipping video %s: %s", path, error)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        start = time.perf_counter()
        kept, indexes = [], []
        for row in rows:
            if self.path_column not in row:
                raise KeyError(f"Row has no {self.path_column!r} column (the video path); its keys are {list(row)}.")
            index = self._usable(str(row[self.path_column]))
            if index is not None:
                kept.append(row)
                indexes.append(index)
        self.probe_seconds += time.perf_counter() - start
        source = VideoFileSource(indexes, self.num_frames, self.transform, self.pad, **self.decoding)
        batch: dict[str, Any] = {"frame_source": source}
        if kept and self.label_column in kept[0]:
            batch["labels"] = torch.as_tensor([int(row[self.label_column]) for row in kept], dtype=torch.long)
        return batch
