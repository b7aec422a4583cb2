"""The built-in family adapters, imported together so that each one is known by its ``model_type``."""

from __future__ import annotations

from .base import BackboneAdapter
from .deberta import DEBERTA_ADAPTERS
from .decoders import DECODER_ADAPTERS
from .hf_vision import HF_VISION_ADAPTERS
from .text import TEXT_ENCODER_ADAPTERS

BUILTIN_ADAPTERS: tuple[type[BackboneAdapter], ...] = (
    *TEXT_ENCODER_ADAPTERS.values(),
    *DEBERTA_ADAPTERS.values(),
    *DECODER_ADAPTERS.values(),
    *HF_VISION_ADAPTERS.values(),
)
