"""Halting units and the per-step arithmetic of ACT and PonderNet, shared by sample and token granularity."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class HaltingUnit(nn.Module):
    """Maps a state to a halting probability ``lambda`` in (0, 1).

    Args:
        hidden_size: Width of the state.
        bias_init: Initial bias; negative values start with low halting probabilities.
    """

    def __init__(self, hidden_size: int, bias_init: float):
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1)
        self.bias_init = bias_init

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(states).squeeze(-1).float())


@dataclass
class HaltingTracker:
    """Running halting state for a set of units (samples or tokens), one entry per unit.

    Attributes:
        cumulative: ACT: sum of halting probabilities so far. PonderNet: probability of having halted so far.
        survival: PonderNet: probability of not having halted yet.
        steps: Steps taken so far.
    """

    cumulative: torch.Tensor
    survival: torch.Tensor
    steps: torch.Tensor

    @classmethod
    def start(cls, count: int, device: torch.device) -> HaltingTracker:
        return cls(
            torch.zeros(count, device=device),
            torch.ones(count, device=device),
            torch.zeros(count, dtype=torch.long, device=device),
        )

    def select(self, index: torch.Tensor) -> HaltingTracker:
        return HaltingTracker(self.cumulative[index], self.survival[index], self.steps[index])


def halting_step(
    method: str, lam: torch.Tensor, tracker: HaltingTracker, threshold: float, is_last: bool, sample: bool = False
) -> tuple[torch.Tensor, torch.Tensor, HaltingTracker]:
    """One step of halting for the units in ``tracker``.

    Args:
        method: ``"act"`` or ``"pondernet"``.
        lam: ``(units,)`` halting probabilities at this step.
        tracker: State before this step.
        threshold: ACT: cumulative halting threshold (1 - epsilon). PonderNet: threshold on the probability of
            having halted.
        is_last: Whether this is the last allowed step (every unit halts).
        sample: PonderNet only: halt by sampling ``Bernoulli(lambda)`` instead of by threshold.

    Returns:
        ``(weight, halted, tracker)``: ``weight`` is this step's probability mass (ACT: lambda, or the remainder R
        at the halting step; PonderNet: p_n = lambda_n * prod(1 - lambda_j)), ``halted`` marks units that stop here.
    """
    steps = tracker.steps + 1
    if method == "act":
        total = tracker.cumulative + lam
        halted = total >= threshold if not is_last else torch.ones_like(total, dtype=torch.bool)
        weight = torch.where(halted, 1.0 - tracker.cumulative, lam)
        return weight, halted, HaltingTracker(total, tracker.survival, steps)
    if is_last:
        lam = torch.ones_like(lam)
    weight = lam * tracker.survival
    cumulative = tracker.cumulative + weight
    if is_last:
        halted = torch.ones_like(cumulative, dtype=torch.bool)
    elif sample:
        halted = torch.bernoulli(lam.detach()).bool()
    else:
        halted = cumulative >= threshold
    return weight, halted, HaltingTracker(cumulative, tracker.survival * (1.0 - lam), steps)


def geometric_prior(prior_lambda: float, steps: int, device: torch.device) -> torch.Tensor:
    """PonderNet's geometric prior over ``steps`` steps, truncated and renormalized."""
    n = torch.arange(steps, device=device, dtype=torch.float32)
    prior = prior_lambda * (1.0 - prior_lambda) ** n
    return prior / prior.sum()


def pondernet_kl(step_probabilities: torch.Tensor, prior_lambda: float) -> torch.Tensor:
    """KL(p || geometric prior) per unit.

    Args:
        step_probabilities: ``(units, steps)`` halting distribution p_n (rows sum to 1).
        prior_lambda: Parameter of the geometric prior.
    """
    prior = geometric_prior(prior_lambda, step_probabilities.size(-1), step_probabilities.device)
    p = step_probabilities.clamp_min(1e-10)
    return (p * (p.log() - prior.log())).sum(-1)


def act_ponder_cost(steps: torch.Tensor, remainder: torch.Tensor) -> torch.Tensor:
    """ACT's ponder cost N + R per unit."""
    return steps.float() + remainder
