"""Early-exit inference over a stream of image batches, the continuing images pooled across batches.

The loop is :func:`adaptive_hf.early_exit.streaming.stream_exits`; this module supplies how an image batch is checked
and embedded and how feature maps of several batches are put together.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..core.vision_backbones import ImageState, check_pixel_values
from .streaming import stream_exits


def classify_image_stream(model, batches: Iterable[Any], pool_rows: int | None = None) -> Iterator:
    """Classifies a stream of image batches with early exits, pooling the continuing images across batches.

    Args:
        model: An early-exit image classifier (:class:`~adaptive_hf.EarlyExitTimmForImageClassification` or
            :class:`~adaptive_hf.EarlyExitViTForImageClassification`) in eval mode. Its config's exit policy and
            threshold apply, as in ``model(pixel_values)``.
        batches: Iterable of ``(batch, channels, height, width)`` normalized float image tensors, or of mappings
            holding them under ``"pixel_values"`` (other keys, e.g. ``labels``, are not used). Batches may differ in
            size.
        pool_rows: How many images must wait in front of a segment of the backbone (the units between two exits)
            before it runs; defaults to the size of the first batch. Larger pools use the hardware better and hold
            more images (and their feature maps) back. Whatever is still waiting when the input ends runs then.

    Yields:
        One :class:`~adaptive_hf.early_exit.vision_modeling.EarlyExitImageClassifierOutput` per input batch, in input
        order, with ``logits`` and ``exit_layer`` as ``model(pixel_values)`` returns them (no ``loss``).
    """

    def embed(batch) -> ImageState:
        # DataLoader batches of an image dataset are mappings ({"pixel_values": ..., "labels": ...}).
        pixel_values = batch["pixel_values"] if isinstance(batch, Mapping) else batch
        check_pixel_values(pixel_values, model._in_chans(), getattr(model, "timm_model", None))
        return model._embed(pixel_values)

    def concat_states(states: list[ImageState]) -> ImageState:
        return states[0] if len(states) == 1 else ImageState.cat(states)

    return stream_exits(model, batches, pool_rows, embed, concat_states)
