"""Deprecated location of the text encoder adapters; use :mod:`adaptive_hf.core.adapters.text` (one release)."""

from .adapters.text import (  # noqa: F401
    POOLINGS,
    TEXT_ENCODER_ADAPTERS,
    AlbertAdapter,
    DistilBertAdapter,
    ElectraAdapter,
    EncoderState,
    MPNetAdapter,
    RobertaAdapter,
    TextEncoderAdapter,
    TokenSubset,
    XLMRobertaAdapter,
    get_text_encoder_adapter,
    unsupported_architecture_error,
)
