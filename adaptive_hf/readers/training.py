"""Training schedule for the readers: read every token first, then learn to skim or jump.

A reader trained to jump from its first step learns its LSTM from the few tokens the (still random) policy reads,
and its policy from a reader that cannot yet classify. :class:`FullReadingWarmupCallback` first trains the reader as
a plain LSTM over every token (``reading_policy="full"``), then switches to adaptive reading for the rest of the same
``Trainer`` run, the way the halting models warm up at full depth.
"""

from __future__ import annotations

import logging

from transformers import TrainerCallback

from ..core.configuration import check_number

logger = logging.getLogger(__name__)


class FullReadingWarmupCallback(TrainerCallback):
    """Trains a Skim-RNN or LSTM-Jump reader with ``reading_policy="full"`` for the first steps.

    For optimizer steps ``s < full_reading_fraction * max_steps`` every token goes through the big LSTM and only the
    task loss trains it (the skim/jump decision networks are idle); afterwards the configured ``reading_policy`` is
    back and the decision networks learn on a reader that already classifies. The configured policy is restored when
    training ends, so the saved config is the one the user asked for. The phase is read from ``state.global_step``
    at each step, so a resumed run continues in the right phase.

    Args:
        full_reading_fraction: Fraction of the steps trained with full reading, in [0, 1).
    """

    def __init__(self, full_reading_fraction: float = 0.5):
        self.full_reading_fraction = float(
            check_number("full_reading_fraction", full_reading_fraction, 0.0, 1.0, high_inclusive=False)
        )
        self._saved: str | None = None

    def reads_fully(self, step: int, max_steps: int) -> bool:
        """Whether optimizer step ``step`` of ``max_steps`` trains with full reading."""
        return max_steps > 0 and step / max_steps < self.full_reading_fraction

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "reading_policy"):
            if model is not None:
                logger.warning("FullReadingWarmupCallback: the model has no reading_policy; nothing to schedule.")
            return
        self._saved = config.reading_policy
        self.on_step_begin(args, state, control, model=model)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and self._saved is not None:
            full = self.reads_fully(state.global_step, state.max_steps)
            model.config.reading_policy = "full" if full else self._saved

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if model is not None and self._saved is not None:
            model.config.reading_policy = self._saved
            self._saved = None
