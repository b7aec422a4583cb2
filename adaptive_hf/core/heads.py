"""Classifier heads on a pooled hidden state: the early exits' heads and the halting classifier (shared by both)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EXIT_HEADS = ("linear", "mlp")


class ExitHead(nn.Module):
    """Classifier placed after an intermediate layer.

    Args:
        hidden_size: Width of the pooled vector.
        num_labels: Number of classes.
        head_type: ``"linear"`` (dropout, linear) or ``"mlp"`` (dense, tanh, dropout, linear; the RoBERTa head).
        dropout: Dropout probability.
    """

    def __init__(self, hidden_size: int, num_labels: int, head_type: str, dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size) if head_type == "mlp" else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.dense is not None:
            pooled = torch.tanh(self.dense(self.dropout(pooled)))
        return self.classifier(self.dropout(pooled))

    def inference(self, pooled: torch.Tensor) -> torch.Tensor:
        """The eval-mode forward (dropout is the identity there) as bare ops.

        At batch 1 each module call costs about what its small matrix product costs, and an exit head runs after
        every layer, so adaptive inference calls this instead of ``forward``; the result is the same.

        Args:
            pooled: ``(rows, hidden_size)`` pooled states.
        """
        if self.dense is not None:
            pooled = torch.tanh(F.linear(pooled, self.dense.weight, self.dense.bias))
        return F.linear(pooled, self.classifier.weight, self.classifier.bias)
