"""Exit policies: per-row decisions from one exit head's logits.

The same functions drive eval-mode inference (on the rows still active) and calibration (on every row, replaying
stored logits), so a calibrated setting behaves at inference exactly as it did in the sweep.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import torch

EXIT_POLICIES = ("none", "confidence", "entropy", "margin", "patience")
THRESHOLD_POLICIES = ("confidence", "entropy", "margin")
# What a forward does when a row's logits hold NaN/inf (the row never exits early either way): warn or raise.
NONFINITE_LOGITS = ("warn", "error")
_NO_PREDICTION = -2  # a non-finite row's "prediction": agrees with no head, so its patience streak restarts
DEFAULT_THRESHOLDS = {"confidence": 0.9, "entropy": 0.2, "margin": 0.5}


@dataclass
class PatienceState:
    """Per-row state of the patience policy: the previous head's prediction and how long it has held."""

    previous_prediction: torch.Tensor
    streak: torch.Tensor

    @classmethod
    def start(cls, batch_size: int, device: torch.device) -> PatienceState:
        return cls(
            torch.full((batch_size,), -1, dtype=torch.long, device=device),
            torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    def select(self, rows: torch.Tensor) -> PatienceState:
        return PatienceState(self.previous_prediction.index_select(0, rows), self.streak.index_select(0, rows))

    @classmethod
    def cat(cls, states: list[PatienceState]) -> PatienceState:
        """The rows of ``states``, one after another."""
        return cls(torch.cat([s.previous_prediction for s in states]), torch.cat([s.streak for s in states]))


def exit_score(policy: str, logits: torch.Tensor) -> torch.Tensor:
    """The per-row statistic a threshold policy compares against its threshold.

    Args:
        policy: ``"confidence"`` (max softmax), ``"entropy"`` (softmax entropy divided by log(num_labels), in
            [0, 1]) or ``"margin"`` (top-1 minus top-2 probability).
        logits: ``(rows, num_labels)``.
    """
    probs = logits.float().softmax(-1)
    if policy == "confidence":
        return probs.max(-1).values
    if policy == "entropy":
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        return entropy / math.log(logits.size(-1))
    if policy == "margin":
        top2 = probs.topk(2, dim=-1).values
        return top2[:, 0] - top2[:, 1]
    raise ValueError(f"`exit_policy` {policy!r} has no score; threshold policies are {THRESHOLD_POLICIES}.")


def decide_exit(
    policy: str,
    logits: torch.Tensor,
    threshold: float | None,
    patience: int,
    state: PatienceState | None,
) -> tuple[torch.Tensor, PatienceState | None]:
    """Which rows exit at this head.

    Args:
        policy: One of ``EXIT_POLICIES``.
        logits: ``(rows, num_labels)`` logits of this head.
        threshold: Threshold for ``confidence`` (exit when >=), ``entropy`` (exit when <=) and ``margin``
            (exit when >=); ``None`` uses ``DEFAULT_THRESHOLDS``.
        patience: For ``patience``: exit once this many consecutive heads after the first agree (PABEE).
        state: Patience state for these rows (``None`` for other policies).

    Returns:
        A boolean ``(rows,)`` mask of rows that exit, and the updated state. A row whose logits hold NaN or inf
        never exits here: the argmax of NaN is stable, so under ``patience`` it would otherwise "agree" with itself
        and leave early with NaN logits. It runs on to the last exit, where the model reports it.
    """
    if policy == "none":
        return torch.zeros(logits.size(0), dtype=torch.bool, device=logits.device), state
    finite = torch.isfinite(logits).all(-1)
    if policy == "patience":
        prediction = torch.where(finite, logits.argmax(-1), torch.full_like(finite, _NO_PREDICTION, dtype=torch.long))
        agrees = (prediction == state.previous_prediction) & finite
        streak = torch.where(agrees, state.streak + 1, torch.zeros_like(state.streak))
        return streak >= patience, PatienceState(prediction, streak)
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS[policy]
    score = exit_score(policy, logits)
    if policy == "entropy":
        return (score <= threshold) & finite, state
    return (score >= threshold) & finite, state


def initial_state(policy: str, batch_size: int, device: torch.device) -> PatienceState | None:
    """The starting policy state for a batch (only ``patience`` keeps one)."""
    return PatienceState.start(batch_size, device) if policy == "patience" else None


def _as_float32(value: float) -> float:
    """``value`` rounded to float32, as torch rounds a Python scalar compared with a float32 tensor."""
    return struct.unpack("f", struct.pack("f", value))[0]


def count_exits(
    policy: str,
    logits: torch.Tensor,
    threshold: float | None,
    patience: int,
    state: PatienceState | None,
) -> tuple[int, torch.Tensor | None, PatienceState | None]:
    """How many rows exit at this head, read on the host once, and which.

    The same decision as :func:`decide_exit`. For one row under ``confidence`` the comparison runs on the host
    after the softmax: the largest probability and the threshold compare in float32 as torch compares them, so
    the decision is the same, without the reduction and comparison kernels (after a layer each small kernel costs
    tens of microseconds of cold caches, a visible share of a short sequence's layer at batch 1).

    Args:
        policy: One of ``EXIT_POLICIES``.
        logits: ``(rows, num_labels)`` logits of this head.
        threshold: As for :func:`decide_exit`.
        patience: As for :func:`decide_exit`.
        state: Patience state for these rows (``None`` for other policies).

    Returns:
        ``(count, mask, state)``: the number of exiting rows, the boolean ``(rows,)`` mask (``None`` for one row,
        where the count says it all) and the updated policy state.
    """
    if logits.size(0) == 1 and policy == "confidence":
        if threshold is None:
            threshold = DEFAULT_THRESHOLDS[policy]
        probabilities = logits.float().softmax(-1).tolist()[0]  # the one host sync of this exit
        return int(max(probabilities) >= _as_float32(threshold)), None, state
    done, state = decide_exit(policy, logits, threshold, patience, state)
    count = int(done.sum()) if done.numel() > 1 else int(done)  # the one host sync of this exit
    return count, done, state
