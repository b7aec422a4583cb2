"""Frame sources: how the video classifier asks for frames, so a decoder can hand over only the frames it needs.

The classifier never needs a whole clip at once. It asks a :class:`FrameSource` for

* the *glance frames* (what the glance network scores: every frame, every k-th frame or a key frame standing in for
  each frame, at full or low resolution), and
* the *backbone frames*: the frames its sampler picked, at full resolution, asked for chunk by chunk by an early stop.

:class:`TensorFrameSource` serves clips already in memory (the ``pixel_values`` path is this source with every frame
glanced, so it is unchanged). ``adaptive_hf.video.files.VideoFileSource`` decodes video files lazily behind the same
interface and counts the frames it decoded.

This module imports torch only: it travels with a saved model's code bundle.
"""

from __future__ import annotations

from typing import Any

import torch


class FrameSource:
    """What :class:`~adaptive_hf.video.modeling.FrameSamplingVideoClassifier` reads frames from.

    Frame numbers are the model's frame slots ``0..num_frames-1``; a source maps them to its own frames.
    Subclasses implement :meth:`glance_frames`, :meth:`frames` and the three properties.
    """

    @property
    def num_videos(self) -> int:
        """Videos in the batch."""
        raise NotImplementedError

    @property
    def num_frames(self) -> int:
        """Frame slots per video (the model's ``num_frames``)."""
        raise NotImplementedError

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of the backbone frames (what the FLOP count is taken at)."""
        raise NotImplementedError

    def glance_frames(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The frames the glance network scores.

        Returns:
            ``indices`` ``(batch, g)`` long (frame slots, ascending) and ``pixels`` ``(batch, g, C, h, w)`` float
            (any ``h, w``: the glance network area-averages them to its own resolution).
        """
        raise NotImplementedError

    def frames(self, rows: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Full-resolution frames for the backbone.

        Args:
            rows: ``(n,)`` videos of the batch.
            indices: ``(n, k)`` frame slots of each of those videos.

        Returns:
            ``(n * k, C, H, W)`` float frames, video-major.
        """
        raise NotImplementedError

    def frames_decoded(self) -> torch.Tensor | None:
        """``(batch,)`` frames the decoder produced per video so far (``None`` when nothing is decoded)."""
        return None

    def glance_decoded(self) -> torch.Tensor | None:
        """``(batch,)`` of those, the ones decoded for the glance pass (``None`` when nothing is decoded)."""
        return None


class TensorFrameSource(FrameSource):
    """Clips already in memory.

    Args:
        pixel_values: ``(batch, T, C, H, W)`` normalized float frames.
        glance_stride: The glance network scores every ``glance_stride``-th frame (0, k, 2k, ...); 1 = every frame
            (what ``model(pixel_values=...)`` does). A file source with the same stride glances at the same frames.
    """

    def __init__(self, pixel_values: torch.Tensor, glance_stride: int = 1):
        if not isinstance(glance_stride, int) or isinstance(glance_stride, bool) or glance_stride < 1:
            raise ValueError(f"`glance_stride` must be a positive integer; got {glance_stride!r}.")
        self.pixel_values = pixel_values
        self.glance_stride = glance_stride

    @property
    def num_videos(self) -> int:
        return self.pixel_values.size(0)

    @property
    def num_frames(self) -> int:
        return self.pixel_values.size(1)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.pixel_values.shape[2:])

    def glance_frames(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.glance_stride == 1:
            indices = torch.arange(self.num_frames, device=self.pixel_values.device)
            return indices.expand(self.num_videos, -1), self.pixel_values
        indices = torch.arange(0, self.num_frames, self.glance_stride, device=self.pixel_values.device)
        return indices.expand(self.num_videos, -1), self.pixel_values[:, indices]

    def frames(self, rows: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self.pixel_values[rows[:, None], indices].flatten(0, 1)


def check_video_tensor(pixel_values: Any, num_frames: int) -> tuple[int, int]:
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"`pixel_values` must be a torch.Tensor of video frames; got {type(pixel_values).__name__}.")
    if not pixel_values.dtype.is_floating_point:
        raise TypeError(
            f"`pixel_values` must be a floating-point tensor of normalized frames; got {pixel_values.dtype}. Convert "
            "uint8 frames with adaptive_hf.video.data.VideoCollator (or `.float() / 255` and normalize)."
        )
    if pixel_values.dim() != 5:
        raise ValueError(
            "`pixel_values` must have shape (batch, num_frames, channels, height, width); got shape "
            f"{tuple(pixel_values.shape)}."
            + (" Add a batch dimension with `.unsqueeze(0)`." if pixel_values.dim() == 4 else "")
        )
    if pixel_values.size(0) == 0:
        raise ValueError("Empty batch: `pixel_values` has 0 videos; pass at least one.")
    if pixel_values.size(1) != num_frames:
        raise ValueError(
            f"`pixel_values` has {pixel_values.size(1)} frames per video (dim 1) but `num_frames` is {num_frames}; "
            "sample or pad clips to num_frames, or build the model with that many frames."
        )
    return pixel_values.size(0), pixel_values.size(1)


def resolve_frame_source(
    pixel_values: Any, frame_source: Any, num_frames: int, in_chans: int, training: bool
) -> FrameSource:
    """The checked frame source of one forward: ``frame_source``, or the ``pixel_values`` tensor as one.

    Args:
        pixel_values: ``(batch, T, C, H, W)`` float frames, or ``None`` with a ``frame_source``.
        frame_source: A :class:`FrameSource`, or ``None``.
        num_frames: The model's frames per clip.
        in_chans: The model's input channels.
        training: Whether the model trains (lazy sources are for inference).
    """
    if frame_source is None:
        check_video_tensor(pixel_values, num_frames)
        source = TensorFrameSource(pixel_values)
    elif pixel_values is not None:
        raise ValueError("Pass either `pixel_values` or `frame_source`, not both.")
    elif not isinstance(frame_source, FrameSource):
        raise TypeError(
            f"`frame_source` must be an adaptive_hf.video.sources.FrameSource; got {type(frame_source).__name__}."
        )
    elif training and not isinstance(frame_source, TensorFrameSource):
        raise ValueError(
            "`frame_source` decodes frames lazily, for inference: call model.eval(), or train on `pixel_values`."
        )
    else:
        source = frame_source
        if source.num_videos == 0:
            raise ValueError("Empty batch: `frame_source` has 0 videos; pass at least one.")
        if source.num_frames != num_frames:
            raise ValueError(
                f"`frame_source` has {source.num_frames} frames per video but `num_frames` is {num_frames}; build "
                f"the source with num_frames={num_frames}."
            )
    if source.frame_shape[0] != in_chans:
        raise ValueError(f"`pixel_values` must have {in_chans} channels (dim 2); got {source.frame_shape[0]}.")
    if training and source.glance_stride != 1:
        raise ValueError("Training glances at every frame: use `glance_stride=1` (or `pixel_values`).")
    return source
