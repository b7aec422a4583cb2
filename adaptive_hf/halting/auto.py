"""``AutoHaltingModelForSequenceClassification``."""

from __future__ import annotations

from ..core.auto import AutoAdaptiveModel
from .config import HALTING_FIELDS


class AutoHaltingModelForSequenceClassification(AutoAdaptiveModel):
    """Loads any supported encoder checkpoint as a ``Halting<Arch>ForSequenceClassification``.

    ``from_pretrained(name_or_path, num_labels=..., halting="act", halting_granularity="token", ...)``.
    """

    technique = "halting"
    setting_fields = tuple(HALTING_FIELDS)
