"""Training schedule for halting models: a full-depth warm-up, then halting with the ponder cost ramped in.

A halting model trained from scratch with halting on from the first step learns to stop after a block or two, and
its later blocks never learn anything: "full depth" is then no reference and the halting units never get to choose
between shallow and deep computation. A-ViT avoids this by starting from a network trained at full depth. The
:class:`HaltingCurriculumCallback` does the same within one ``Trainer`` run.
"""

from __future__ import annotations

import logging

from transformers import TrainerCallback

logger = logging.getLogger(__name__)


def _check_fraction(name: str, value, high_inclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number in [0, 1); got {value!r}.")
    if not (0.0 <= value <= 1.0 if high_inclusive else 0.0 <= value < 1.0):
        raise ValueError(f"`{name}` must be in [0, 1{']' if high_inclusive else ')'}; got {value!r}.")
    return float(value)


class HaltingCurriculumCallback(TrainerCallback):
    """Trains a halting model at full depth first, then turns halting on and ramps its cost up.

    Phases, by optimizer step ``s`` out of ``max_steps``:

    1. ``s < full_depth_fraction * max_steps``: ``halting_enabled=False``. Every block runs on every token and
       the task loss trains them all; the halting units are idle.
    2. Afterwards halting is on. The ponder cost (ACT's ``ponder_cost``, PonderNet's ``kl_weight``) rises
       linearly from 0 to its configured value over ``ramp_fraction * max_steps`` steps, so the units first learn
       where stopping loses nothing and only then are pushed to stop early.
    3. With ``full_depth_every=k > 0``, every k-th step of phase 2 still trains at full depth, which keeps the later
       blocks usable for the inputs that need them (and keeps full depth a fair reference).

    The configured values are restored when training ends (``halting_enabled`` and the cost), so the saved config is
    the one the user asked for; evaluations during training see the current phase's settings. The schedule is read
    from ``state.global_step`` at each step, so a resumed run continues in the right phase.

    Args:
        full_depth_fraction: Fraction of the steps trained at full depth, in [0, 1).
        ramp_fraction: Fraction of the steps over which the cost ramps up after the warm-up, in [0, 1]; 0 applies
            the full cost at once.
        full_depth_every: In the halting phase, train every ``full_depth_every``-th step at full depth (0: never).
    """

    def __init__(self, full_depth_fraction: float = 0.5, ramp_fraction: float = 0.2, full_depth_every: int = 0):
        self.full_depth_fraction = _check_fraction("full_depth_fraction", full_depth_fraction)
        self.ramp_fraction = _check_fraction("ramp_fraction", ramp_fraction, high_inclusive=True)
        if isinstance(full_depth_every, bool) or not isinstance(full_depth_every, int) or full_depth_every < 0:
            raise ValueError(f"`full_depth_every` must be an integer >= 0; got {full_depth_every!r}.")
        self.full_depth_every = full_depth_every
        self._saved: dict | None = None

    def schedule(self, step: int, max_steps: int) -> tuple[bool, float]:
        """``(halting_enabled, cost_scale)`` for optimizer step ``step`` of ``max_steps``."""
        if max_steps <= 0:
            return True, 1.0
        progress = step / max_steps
        if progress < self.full_depth_fraction:
            return False, 0.0
        if self.ramp_fraction > 0:
            scale = min(1.0, (progress - self.full_depth_fraction) / self.ramp_fraction)
        else:
            scale = 1.0
        if self.full_depth_every and step % self.full_depth_every == 0:
            return False, scale
        return True, scale

    @staticmethod
    def _applies(model) -> bool:
        config = getattr(model, "config", None)
        return config is not None and hasattr(config, "halting_enabled") and hasattr(config, "ponder_cost")

    def _apply(self, model, state) -> None:
        enabled, scale = self.schedule(state.global_step, state.max_steps)
        config = model.config
        config.halting_enabled = enabled and self._saved["halting_enabled"]
        config.ponder_cost = self._saved["ponder_cost"] * scale
        config.kl_weight = self._saved["kl_weight"] * scale

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None or not self._applies(model):
            if model is not None:
                logger.warning("HaltingCurriculumCallback: the model has no halting config; nothing to schedule.")
            return
        config = model.config
        self._saved = {
            "halting_enabled": config.halting_enabled,
            "ponder_cost": config.ponder_cost,
            "kl_weight": config.kl_weight,
        }
        self._apply(model, state)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and self._saved is not None:
            self._apply(model, state)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if model is not None and self._saved is not None:
            for name, value in self._saved.items():
                setattr(model.config, name, value)
            self._saved = None
