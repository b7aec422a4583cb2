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
