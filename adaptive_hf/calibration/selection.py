"""Selection rules over measured candidates: Learn-then-Test (the guarantee), the point estimate, a speed target.

Learn-then-Test (Angelopoulos et al., 2021), as CALM (Schuster et al., 2022) uses it for early exits: each chain of
candidates is ordered from most to least compute and tested in that fixed order; a candidate is certified when the
exact test rejects "its risk exceeds epsilon" at level ``delta / number of chains`` (Bonferroni over chains): a
binomial test on the disagreement count, or the paired net-drop test on the broken and fixed counts for the accuracy
drop (``bounds.net_drop_p_value``). A chain stops at its first candidate that is not certified. Every certified
candidate then has risk at most epsilon, simultaneously, with probability at least ``1 - delta``; the cheapest one
is chosen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core.candidates import CandidateOutcomes
from .bounds import binomial_p_value, binomial_upper_bound, net_drop_p_value, net_drop_upper_bound

RULES = ("learn_then_test", "point_estimate_no_guarantee")
RISKS = ("accuracy_drop", "disagreement")


def candidate_losses(outcomes: CandidateOutcomes, predictions: torch.Tensor, risk: str) -> torch.Tensor:
    """Per-sample 0/1 losses of one candidate's predictions.

    Args:
        outcomes: The measured table (full-compute predictions and labels).
        predictions: ``(num_samples,)`` the candidate's predictions.
        risk: ``"accuracy_drop"``: +1 where full compute is right and the candidate wrong (broken), -1 where full
            compute is wrong and the candidate right (fixed), else 0; its mean is the accuracy drop.
            ``"disagreement"``: 1 where the candidate's prediction differs from full compute's (needs no labels).
    """
    differs = predictions != outcomes.full_predictions
    if risk == "disagreement":
        return differs.long()
    if outcomes.labels is None:
        raise ValueError("`max_accuracy_drop` needs labels; pass labelled data or use `max_disagreement`.")
    full_right = outcomes.full_predictions == outcomes.labels
    return (differs & full_right).long() - (differs & (predictions == outcomes.labels)).long()


def score_candidates(
    outcomes: CandidateOutcomes, risk: str, epsilon: float | None, delta: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One row per candidate (and one for full compute) with its accuracy, risk, bound and speedup.

    Args:
        outcomes: The measured table.
        risk: ``"accuracy_drop"`` or ``"disagreement"``.
        epsilon: The risk budget (``None``: no test, e.g. for a speed target).
        delta: The overall error probability; each chain is tested at ``delta / number of chains``.

    Returns:
        ``(full_row, rows)``. Each row holds the setting's fields at the top level and under ``setting``, plus
        ``chain``, ``accuracy`` (``None`` without labels), ``accuracy_drop``, ``disagreement``, ``risk`` (the mean
        loss), ``losses`` (rows with loss +1), ``fixed`` (rows with loss -1, accuracy drop only), ``upper_bound`` (at
        the chain's level: Clopper-Pearson for the disagreement; for the accuracy drop, the net-drop bound, computed
        for tested candidates only and ``None`` for the others, as inverting that test is costly), ``p_value``
        (accuracy drop: tested candidates only),
        ``theoretical_speedup`` (full FLOPs / spent FLOPs over the rows), ``flops_per_sample``; ``tested`` and
        ``certified`` are filled in by :func:`learn_then_test`.
    """
    n = outcomes.num_samples
    labels = outcomes.labels
    full_total = float(outcomes.full_costs.sum())
    full_accuracy = None if labels is None else float((outcomes.full_predictions == labels).double().mean())
    chain_delta = delta / max(1, len(outcomes.chains))
    full_row = {
        "setting": {},
        "chain": None,
        "accuracy": full_accuracy,
        "accuracy_drop": 0.0 if labels is not None else None,
        "disagreement": 0.0,
        "risk": 0.0,
        "losses": 0,
        "fixed": 0 if risk == "accuracy_drop" else None,
        "upper_bound": 0.0,
        "p_value": 0.0,
        "theoretical_speedup": 1.0,
        "flops_per_sample": full_total / n,
        "tested": False,
        "certified": True,
    }
    rows = []
    for index, chain in enumerate(outcomes.chains):
        if not chain:
            continue
        predictions = outcomes.predictions[index]
        differs = predictions != outcomes.full_predictions
        fixed = None
        if risk == "disagreement":
            losses = differs.sum(1).tolist()
            bounds = binomial_upper_bound(losses, n, chain_delta)
            p_values = None if epsilon is None else binomial_p_value(losses, n, epsilon)
        else:  # labels are present: select_setting checks
            losses = (differs & (outcomes.full_predictions == labels)).sum(1).tolist()
            fixed = (differs & (predictions == labels)).sum(1).tolist()
            bounds = p_values = None  # learn_then_test computes them for the candidates it tests
        accuracies = None if labels is None else (predictions == labels).double().mean(1).tolist()
        disagreements = differs.double().mean(1).tolist()
        spent = outcomes.costs[index].sum(1).tolist()
        for position, setting in enumerate(chain):
            accuracy = None if accuracies is None else accuracies[position]
            row = {
                **setting,
                "setting": dict(setting),
                "chain": index,
                "accuracy": accuracy,
                "accuracy_drop": None if accuracy is None else full_accuracy - accuracy,
                "disagreement": disagreements[position],
                "risk": (losses[position] - (fixed[position] if fixed else 0)) / n,
                "losses": losses[position],
                "fixed": None if fixed is None else fixed[position],
                "upper_bound": None if bounds is None else bounds[position],
                "p_value": None if p_values is None else p_values[position],
                "theoretical_speedup": full_total / spent[position] if spent[position] > 0 else float("inf"),
                "flops_per_sample": spent[position] / n,
                "tested": False,
                "certified": False,
            }
            if outcomes.details is not None:
                row.update(outcomes.details[index][position])
            rows.append(row)
    return full_row, rows


def learn_then_test(
    rows: Sequence[dict[str, Any]],
    num_chains: int,
    delta: float,
    num_samples: int | None = None,
    epsilon: float | None = None,
) -> list[dict[str, Any]]:
    """Fixed-sequence testing per chain, Bonferroni across chains; marks ``tested``/``certified`` in place.

    Args:
        rows: Rows from :func:`score_candidates`, each chain's rows in their most-to-least-compute order.
        num_chains: Number of chains (the Bonferroni divisor).
        delta: The overall error probability.
        num_samples: Calibration rows (needed for accuracy-drop rows, whose net-drop ``p_value`` and
            ``upper_bound`` are computed here, for the tested candidates only).
        epsilon: The budget (needed for accuracy-drop rows).

    Returns:
        The certified rows.
    """
    chain_delta = delta / max(1, num_chains)
    stopped: set[int] = set()
    certified = []
    for row in rows:
        if row["chain"] in stopped:
            continue
        row["tested"] = True
        if row["fixed"] is not None:  # the accuracy drop: its paired test is costly, so it runs only here
            if num_samples is None or epsilon is None:
                raise ValueError("learn_then_test needs `num_samples` and `epsilon` for accuracy-drop rows.")
            row["p_value"] = net_drop_p_value(row["losses"], row["fixed"], num_samples, epsilon, chain_delta)
            row["upper_bound"] = net_drop_upper_bound(row["losses"], row["fixed"], num_samples, chain_delta)
        if row["p_value"] <= chain_delta:
            row["certified"] = True
            certified.append(row)
        else:
            stopped.add(row["chain"])
    return certified


def cheapest(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The row with the fewest FLOPs per sample (ties: lower risk), or ``None`` for no rows."""
    if not rows:
        return None
    return dict(min(rows, key=lambda r: (r["flops_per_sample"], r["risk"])))


def point_estimate(rows: Sequence[Mapping[str, Any]], risk: str, epsilon: float) -> dict[str, Any] | None:
    """The old rule, which gives no guarantee: the cheapest candidate whose observed risk is within epsilon.

    The observed risk is the accuracy drop against full compute (labelled) or the disagreement rate. Picking the
    best of many noisy estimates overfits the calibration rows (the winner's curse), so the chosen setting tends to
    lose more on new data than it did here.

    Args:
        rows: Rows from :func:`score_candidates`.
        risk: ``"accuracy_drop"`` or ``"disagreement"``.
        epsilon: The budget.
    """
    within = [r for r in rows if r[risk] <= epsilon + 1e-12]
    return cheapest(within)


def reaching_speedup(rows: Sequence[Mapping[str, Any]], target_speedup: float) -> dict[str, Any] | None:
    """The most accurate candidate (without labels: the one closest to full compute) whose theoretical speedup
    reaches the target (ties: faster), or ``None``."""
    reaching = [r for r in rows if r["theoretical_speedup"] >= target_speedup - 1e-9]
    if not reaching:
        return None

    def quality(row):
        return -row["accuracy"] if row["accuracy"] is not None else row["disagreement"]

    return dict(min(reaching, key=lambda r: (quality(r), -r["theoretical_speedup"])))
