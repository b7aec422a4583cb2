"""The built-in family adapters, imported together so that each one is known by its ``model_type``."""

from __future__ import annotations

from .base import BackboneAdapter, add_adapter
from .convnext import ConvNextAdapter, ConvNextV2Adapter
from .deberta import DEBERTA_ADAPTERS
from .decoders import DECODER_ADAPTERS
from .dinov2 import Dinov2Adapter
from .hf_vision import HFViTAdapter
from .modernbert import MODERNBERT_ADAPTERS
from .text import TEXT_ENCODER_ADAPTERS

HF_VISION_ADAPTERS: dict[str, type[BackboneAdapter]] = {
    adapter.model_type: add_adapter(adapter)
    for adapter in (HFViTAdapter, Dinov2Adapter, ConvNextAdapter, ConvNextV2Adapter)
}

BUILTIN_ADAPTERS: tuple[type[BackboneAdapter], ...] = (
    *TEXT_ENCODER_ADAPTERS.values(),
    *MODERNBERT_ADAPTERS.values(),
    *DEBERTA_ADAPTERS.values(),
    *DECODER_ADAPTERS.values(),
    *HF_VISION_ADAPTERS.values(),
)

# The built-in text families that run layers one at a time (early exits, halting). The technique modules build their
# classes for each at import, so the code bundle of a saved model defines its class without any registration.
BUILTIN_TEXT_LAYER_ADAPTERS: tuple[type[BackboneAdapter], ...] = tuple(
    adapter for adapter in BUILTIN_ADAPTERS if adapter.modality == "text" and adapter.runs_layers
)
