"""``ModelOutput`` dataclasses shared by the techniques (``loss`` first, as the Trainer expects)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class EarlyExitSequenceClassifierOutput(ModelOutput):
    """Output of the early-exit sequence classifiers.

    Args:
        loss: Training objective (exit losses included) when ``labels`` are given. In eval mode, the cross-entropy
            of the returned logits.
        logits: ``(batch, num_labels)`` logits of the exit each sample took.
        exit_layer: ``(batch,)`` 1-based layer at which each sample exited.
        exit_logits: When requested, one ``(batch, num_labels)`` tensor per exit head, in ``exit_layers`` order.
            Rows that exited before a head hold NaN there, since that head never ran for them.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    exit_layer: torch.Tensor | None = None
    exit_logits: tuple[torch.Tensor, ...] | None = None


@dataclass
class HaltingSequenceClassifierOutput(ModelOutput):
    """Output of the halting (ACT / PonderNet) sequence classifiers.

    Args:
        loss: Task loss plus the ponder cost (ACT) or the KL to the geometric prior (PonderNet) when ``labels``
            are given.
        logits: ``(batch, num_labels)``.
        halting_steps: Layers used: ``(batch,)`` for sample granularity, ``(batch, seq)`` for token granularity
            (0 for padding).
        ponder_cost: ``(batch,)`` ACT's N + R (averaged over tokens for token granularity); for PonderNet the steps
            taken (eval) or the expected steps under the halting distribution (training).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    halting_steps: torch.Tensor | None = None
    ponder_cost: torch.Tensor | None = None
