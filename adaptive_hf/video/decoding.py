"""Video decoding with PyAV (FFmpeg): a frame index read without decoding, then only the frames asked for.

* :func:`probe_video` demuxes a file once (packets only, nothing decoded) into a :class:`VideoIndex`: every frame's
  presentation time and which frames are key frames.
* :class:`FrameDecoder` decodes the frames asked for by number. It seeks to the key frame at or before each wanted
  frame and decodes forward from there, or keeps decoding when the wanted frame lies ahead in the same group of
  pictures, and counts every frame the decoder produced on the way (``frames_decoded``). Options make a cheap pass:
  ``keyframes_only`` (the decoder skips every other frame) and ``lowres`` (MJPEG and a few other intra codecs
  decode at 1/2, 1/4 or 1/8 of the resolution; others ignore it).
* :func:`write_video` encodes uint8 frames (tests and benchmarks build their clips with it).

PyAV is the optional ``video`` extra: ``pip install 'adaptive-hf[video]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ogv")
LOWRES_FACTORS = (0, 1, 2, 3)
WRITE_CODECS = {"libx264": "yuv420p", "mjpeg": "yuvj420p", "ffv1": "gray", "mpeg4": "yuv420p"}


class VideoDecodingError(ValueError):
    """A video file that cannot be read, decoded or used; the message and ``path`` name the file.

    Args:
        path: The file.
        reason: What is wrong with it.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {reason}")


def import_av():
    """The ``av`` module, or an ImportError that says how to install it."""
    try:
        import av
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading video files needs PyAV: pip install 'adaptive-hf[video]' (or pip install av)."
        ) from error
    return av


@dataclass(frozen=True)
class VideoIndex:
    """Frame table of one video stream, read by demuxing only.

    Args:
        path: The file.
        pts: ``(n,)`` presentation timestamps of the frames, in presentation order (frame ``i`` is ``pts[i]``).
        keyframe: ``(n,)`` bool, True for frames that decode without earlier frames.
        codec: The stream's codec name.
        width: Frame width.
        height: Frame height.
    """

    path: str
    pts: np.ndarray
    keyframe: np.ndarray
    codec: str
    width: int
    height: int

    @property
    def num_frames(self) -> int:
        """Frames in the stream."""
        return len(self.pts)

    def keyframe_before(self, frame: int) -> int:
        """The last key frame at or before ``frame`` (the first frame when none is marked)."""
        keys = np.flatnonzero(self.keyframe[: frame + 1])
        return int(keys[-1]) if len(keys) else 0


def _open(path: str):
    av = import_av()
    try:
        container = av.open(path)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"Video file {path!r} does not exist.") from error
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as error:
        raise VideoDecodingError(path, f"cannot be read as a video ({error}).") from error
    if not container.streams.video:
        container.close()
        raise VideoDecodingError(path, "has no video stream.")
    return container


# Files probed and still open, for the decoder that reads them next (opening a file costs as much as decoding a few
# small frames). Bounded: the oldest is closed when a probe would exceed it.
_OPENED: dict = {}
_MAX_OPENED = 64


def _hand_over(path: str, container) -> None:
    previous = _OPENED.pop(path, None)
    if previous is not None:
        previous.close()
    while len(_OPENED) >= _MAX_OPENED:
        _OPENED.pop(next(iter(_OPENED))).close()
    _OPENED[path] = container


def probe_video(path: str | Path, keep_open: bool = False) -> VideoIndex:
    """Reads the frame table of the first video stream of ``path`` without decoding any frame.

    Args:
        path: A video file.
        keep_open: Leave the file open for the next :class:`FrameDecoder` of it in this process (at most 64 files
            are kept; the collator does this so each file is opened once).

    Raises:
        FileNotFoundError: The file does not exist.
        VideoDecodingError: It is not a readable video, has no video stream or frames, or no decoder for its codec.
    """
    av = import_av()
    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"Video file {path!r} does not exist.")
    container = _open(path)
    try:
        stream = container.streams.video[0]
        name = stream.codec_context.name if stream.codec_context is not None else None
        try:
            if name is None:
                raise ValueError("no codec")
            av.codec.Codec(name, "r")
        except (ValueError, av.error.FFmpegError) as error:
            raise VideoDecodingError(
                path, f"uses codec {name!r}, which this FFmpeg build cannot decode (unsupported codec)."
            ) from error
        stamps, keys = [], []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None:
                    raise VideoDecodingError(path, "has frames without timestamps; re-encode it (e.g. to .mp4).")
                stamps.append(int(stamp))
                keys.append(bool(packet.is_keyframe))
        except av.error.FFmpegError as error:
            raise VideoDecodingError(path, f"is corrupt: demuxing failed ({error}).") from error
        if not stamps:
            raise VideoDecodingError(path, "has no video frames.")
        order = np.argsort(stamps, kind="stable")  # packets come in decode order; frames play in pts order
        pts = np.asarray(stamps, dtype=np.int64)[order]
        if len(np.unique(pts)) != len(pts):
            raise VideoDecodingError(path, "has frames with duplicate timestamps; re-encode it.")
        keyframe = np.zeros(len(pts), dtype=bool)
        # A key packet decodes on its own; with B-frames it may not be the first in pts order of its group.
        keyframe[np.searchsorted(pts, np.asarray(stamps)[np.asarray(keys, dtype=bool)])] = True
        keyframe[0] = True
        index = VideoIndex(path, pts, keyframe, name, int(stream.width), int(stream.height))
    except BaseException:
        container.close()
        raise
    if keep_open:
        _hand_over(path, container)
    else:
        container.close()
    return index


_FULL_RANGE_PLANAR = ("yuvj420p", "yuvj422p", "yuvj444p", "gray")
_LIMITED_RANGE_PLANAR = ("yuv420p", "yuv422p", "yuv444p", "nv12")
# Limited-range luma (16..235) to full range, rounded: what FFmpeg's converter to "gray" computes.
_LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)


def frame_to_gray(frame) -> np.ndarray:
    """A decoded frame as ``(H, W)`` uint8 gray, equal to ``frame.to_ndarray(format="gray")``.

    For 8-bit planar YUV the luma plane is the gray image (range-expanded when limited): reading it directly skips
    a colour conversion that costs as much as decoding a small frame.

    Args:
        frame: An ``av.VideoFrame``.
    """
    name = frame.format.name
    full = name in _FULL_RANGE_PLANAR or (name in _LIMITED_RANGE_PLANAR and frame.color_range == 2)
    if not full and name not in _LIMITED_RANGE_PLANAR:
        return frame.to_ndarray(format="gray")
    plane = frame.planes[0]
    luma = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
    return luma.copy() if full else _LIMITED_TO_FULL[luma]


class FrameDecoder:
    """Decodes chosen frames of one file, seeking to key frames, and counts the frames it decoded.

    Args:
        index: The file's :class:`VideoIndex`.
        color: ``"gray"`` (``(H, W)`` frames) or ``"rgb"`` (``(H, W, 3)``).
        keyframes_only: Let the decoder skip every frame that is not a key frame (only key frames can be asked for).
        lowres: Decode at ``1 / 2**lowres`` of the resolution where the codec supports it (MJPEG does), 0..3.
        threads: Decoder threads (1 keeps timing comparable with a one-thread model; 0 lets FFmpeg choose).
    """

    def __init__(
        self,
        index: VideoIndex,
        color: str = "gray",
        keyframes_only: bool = False,
        lowres: int = 0,
        threads: int = 1,
    ):
        if color not in ("gray", "rgb"):
            raise ValueError(f"`color` must be one of 'gray', 'rgb'; got {color!r}.")
        if lowres not in LOWRES_FACTORS:
            raise ValueError(f"`lowres` must be one of {LOWRES_FACTORS}; got {lowres!r}.")
        self.index = index
        self.color = color
        self.keyframes_only = keyframes_only
        self.lowres = lowres
        self.threads = threads
        self.frames_decoded = 0
        self._lookup = {int(stamp): i for i, stamp in enumerate(index.pts)}
        # Every frame decoded, kept unconverted: frames passed on the way to a target are free when asked for later.
        self._held: dict = {}
        self._container = None
        self._frames = None
        self._position = -1  # last frame the decoder produced; -1: must seek first
        # Every frame a key frame (MJPEG, intra-only streams): frames between the wanted ones need no decoding. With
        # decoder threads frames come out late, so that path is for one thread only.
        self._intra = bool(index.keyframe.all()) and threads == 1 and not keyframes_only
        self._pending: set[int] = set()

    def _start(self, frame: int) -> None:
        """Seeks to the key frame at or before ``frame`` and starts a fresh decode from it."""
        if self._container is None:
            self._container = _OPENED.pop(self.index.path, None)
            if self._container is None:
                self._container = _open(self.index.path)
            else:
                self._frames = ()  # the probe read the file to its end: seek back even to frame 0
            stream = self._container.streams.video[0]
            context = stream.codec_context
            context.thread_count = self.threads
            if self.lowres:
                context.options = {"lowres": str(self.lowres)}
            if self.keyframes_only:
                context.skip_frame = "NONKEY"
        stream = self._container.streams.video[0]
        key = self.index.keyframe_before(frame)
        if key > 0 or self._frames is not None:
            self._container.seek(int(self.index.pts[key]), stream=stream, backward=True, any_frame=False)
        self._frames = self._intra_frames(stream) if self._intra else self._container.decode(stream)
        self._position = -1

    def _intra_frames(self, stream):
        """Decoded frames of an all-key-frame stream: packets are read in order and only the wanted ones decoded
        (reading a packet costs next to nothing; decoding it is the expense)."""
        for packet in self._container.demux(stream):
            stamp = packet.pts if packet.pts is not None else packet.dts
            if packet.size and self._lookup.get(stamp) in self._pending:
                yield from packet.decode()

    def decode(self, frames: Sequence[int]) -> dict[int, np.ndarray]:
        """Decodes ``frames`` (frame numbers of the file, any order, repeats allowed).

        Returns:
            ``{frame number: uint8 array}``.

        Frames decoded on the way to a wanted one (from its key frame) are kept, so asking for them later costs no
        decoding; an all-key-frame stream decodes only the wanted frames.

        Raises:
            VideoDecodingError: The file is corrupt or a frame could not be decoded.
        """
        av = import_av()
        wanted = sorted({int(f) for f in frames})
        if wanted and not 0 <= wanted[0] <= wanted[-1] < self.index.num_frames:
            raise ValueError(f"{self.index.path}: frame numbers must be in 0..{self.index.num_frames - 1}.")
        out = {target: self._convert(self._held[target]) for target in wanted if target in self._held}
        self._pending = {target for target in wanted if target not in out}
        try:
            for target in (t for t in wanted if t not in out):
                if self.keyframes_only and not self.index.keyframe[target]:
                    raise ValueError(f"{self.index.path}: frame {target} is not a key frame.")
                # Decoding on costs target - position frames, a seek target - key + 1 (and the seek): go on from
                # within the target's group of pictures or the frame before its key frame (or from anywhere when
                # the decoder skips the frames between key frames anyway).
                start = 0 if self.keyframes_only or self._intra else self.index.keyframe_before(target) - 1
                if not (self._position >= 0 and start <= self._position < target):
                    self._start(target)
                while self._position < target:
                    frame = next(self._frames, None)
                    if frame is None:
                        raise VideoDecodingError(self.index.path, f"ended before frame {target} could be decoded.")
                    self.frames_decoded += 1
                    position = self._lookup.get(frame.pts if frame.pts is not None else -1)
                    if position is None:
                        raise VideoDecodingError(self.index.path, f"decoded a frame with unknown pts {frame.pts}.")
                    self._position = position
                    self._held[position] = frame
                    if position == target:
                        out[target] = self._convert(frame)
                if target not in out:
                    raise VideoDecodingError(self.index.path, f"frame {target} could not be decoded.")
        except av.error.FFmpegError as error:
            raise VideoDecodingError(self.index.path, f"is corrupt: decoding failed ({error}).") from error
        return out

    def _convert(self, frame) -> np.ndarray:
        return frame_to_gray(frame) if self.color == "gray" else frame.to_ndarray(format="rgb24")

    def close(self) -> None:
        """Closes the file and drops the decoded frames (a later :meth:`decode` reopens it)."""
        if self._container is not None:
            self._container.close()
        self._container, self._frames, self._position = None, None, -1
        self._held.clear()


def write_video(
    path: str | Path, frames: np.ndarray, codec: str = "libx264", fps: int = 8, gop: int | None = None, **options
) -> Path:
    """Encodes uint8 frames into a video file with PyAV.

    Args:
        path: Output file (its extension picks the container: ``.mp4``, ``.avi``, ``.mkv``...).
        frames: ``(T, H, W)`` gray or ``(T, H, W, 3)`` RGB uint8 frames (even ``H`` and ``W`` for 4:2:0 codecs).
        codec: ``"libx264"`` (H.264), ``"mjpeg"`` (every frame a key frame), ``"ffv1"`` (lossless gray) or
            ``"mpeg4"``.
        fps: Frame rate.
        gop: Frames per group of pictures (a key frame every ``gop`` frames); ``None`` = the codec's default.
        **options: Encoder options passed to FFmpeg as strings (e.g. ``crf="18"``, ``bf="0"``).
    """
    av = import_av()
    if codec not in WRITE_CODECS:
        raise ValueError(f"`codec` must be one of {', '.join(map(repr, WRITE_CODECS))}; got {codec!r}.")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
        raise ValueError(
            f"`frames` must be uint8 of shape (T, H, W) or (T, H, W, 3); got {frames.dtype} {frames.shape}."
        )
    path = Path(path)
    source_format = "gray" if frames.ndim == 3 else "rgb24"
    pixel_format = WRITE_CODECS[codec] if not (codec == "ffv1" and frames.ndim == 4) else "yuv444p"
    settings = {key: str(value) for key, value in options.items()}
    if gop is not None:
        settings["g"] = str(gop)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pixel_format
        stream.options = settings
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=source_format)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
