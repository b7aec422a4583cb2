"""What a model does under each candidate setting of its runtime knobs: the table calibration selects from.

A technique's fast ``replay`` (early exits replay stored exit logits) and the generic collector (one eval pass per
setting) both produce a :class:`CandidateOutcomes`, so the selection rule in ``adaptive_hf.calibration`` is written
once for every technique. It lives in ``core`` because techniques build it and ``core`` imports no technique.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class CandidateOutcomes:
    """Per-sample predictions and costs of the full-compute setting and of every candidate setting.

    Args:
        chains: Candidate settings (config overrides), one list per knob, each ordered from most to least compute.
        predictions: Per chain, a ``(len(chain), num_samples)`` long tensor of predicted classes.
        costs: Per chain, a ``(len(chain), num_samples)`` float64 tensor of FLOPs spent per sample.
        full_predictions: ``(num_samples,)`` predictions at full compute.
        full_costs: ``(num_samples,)`` FLOPs per sample at full compute.
        labels: ``(num_samples,)`` class ids, or ``None`` for unlabelled data.
        details: Optional per chain, per candidate, extra JSON-serializable figures for the report (e.g. the
            average exit layer), computed on all samples.
    """

    chains: list[list[dict[str, Any]]]
    predictions: list[torch.Tensor]
    costs: list[torch.Tensor]
    full_predictions: torch.Tensor
    full_costs: torch.Tensor
    labels: torch.Tensor | None = None
    details: list[list[dict[str, Any]]] | None = field(default=None)

    def __post_init__(self) -> None:
        n = self.full_predictions.numel()
        if len(self.predictions) != len(self.chains) or len(self.costs) != len(self.chains):
            raise ValueError("`predictions` and `costs` need one tensor per chain.")
        for chain, predictions, costs in zip(self.chains, self.predictions, self.costs, strict=True):
            if predictions.shape != (len(chain), n) or costs.shape != (len(chain), n):
                raise ValueError(
                    f"Each chain's predictions and costs must have shape (candidates, samples) = ({len(chain)}, {n}); "
                    f"got {tuple(predictions.shape)} and {tuple(costs.shape)}."
                )
        if self.labels is not None and self.labels.shape != (n,):
            raise ValueError(f"`labels` must have shape ({n},); got {tuple(self.labels.shape)}.")

    @property
    def num_samples(self) -> int:
        """Rows the outcomes were measured on."""
        return self.full_predictions.numel()

    def subset(self, rows: Sequence[int] | torch.Tensor) -> CandidateOutcomes:
        """The same table restricted to some rows (e.g. one side of a calibration/test split).

        Args:
            rows: Row indices to keep.
        """
        rows = torch.as_tensor(rows, dtype=torch.long)
        return CandidateOutcomes(
            chains=self.chains,
            predictions=[p[:, rows] for p in self.predictions],
            costs=[c[:, rows] for c in self.costs],
            full_predictions=self.full_predictions[rows],
            full_costs=self.full_costs[rows],
            labels=None if self.labels is None else self.labels[rows],
            details=None,  # the extra figures were computed on all rows
        )

    def without_labels(self) -> CandidateOutcomes:
        """The same table with the labels dropped (for label-free calibration)."""
        return CandidateOutcomes(
            self.chains, self.predictions, self.costs, self.full_predictions, self.full_costs, None, self.details
        )
