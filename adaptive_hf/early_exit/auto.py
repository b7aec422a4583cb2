"""``AutoEarlyExitModelForSequenceClassification``."""

from __future__ import annotations

from ..core.auto import AutoAdaptiveModel
from .config import EXIT_FIELDS


class AutoEarlyExitModelForSequenceClassification(AutoAdaptiveModel):
    """Loads any supported encoder checkpoint as an ``EarlyExit<Arch>ForSequenceClassification``.

    ``from_pretrained(name_or_path, num_labels=..., **exit_settings)``: plain checkpoints get new exit heads; saved
    early-exit checkpoints reload with ``exit_settings`` applied on top.
    """

    technique = "early_exit"
    setting_fields = EXIT_FIELDS
