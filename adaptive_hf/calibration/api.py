"""``adaptive_hf.calibrate``: one risk-controlled calibration for every technique.

The technique's spec says which runtime knobs exist and in which order their values spend less compute
(``technique_of(model).candidate_chains(config)``), how to run at full compute and how to count per-sample cost.
Calibration measures every candidate (the technique's fast ``replay`` where it has one, else one eval pass per
setting), then picks with Learn-then-Test: with probability at least ``1 - delta`` over the calibration rows, the
chosen setting's risk against full compute is at most epsilon on data from the same distribution.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..core.candidates import CandidateOutcomes
from ..core.configuration import check_number
from ..core.technique import apply_settings, technique_of
from .bounds import net_drop_rows_needed, rows_needed
from .collect import collect_outcomes
from .report import CalibrationReport
from .selection import RULES, cheapest, learn_then_test, point_estimate, reaching_speedup, score_candidates


def _criterion(max_accuracy_drop, max_disagreement, target_speedup) -> tuple[str, str, float]:
    given = {
        name: value
        for name, value in (
            ("max_accuracy_drop", max_accuracy_drop),
            ("max_disagreement", max_disagreement),
            ("target_speedup", target_speedup),
        )
        if value is not None
    }
    if len(given) != 1:
        raise ValueError(
            "Pass exactly one criterion: `max_accuracy_drop` (labelled, e.g. 0.005 = 0.5 points), "
            "`max_disagreement` (label-free, e.g. 0.01) or `target_speedup` (e.g. 2.0); got "
            f"{sorted(given) or 'none'}."
        )
    ((name, value),) = given.items()
    if name == "target_speedup":
        check_number("target_speedup", value, 0.0, None, low_inclusive=False)
    else:
        check_number(name, value, 0.0, 1.0, high_inclusive=False)
    return name, f"{name}={value:g}", float(value)


def _filter_chains(chains: list[list[dict]], policies: Sequence[str] | str | None) -> list[list[dict]]:
    if policies is None:
        return chains
    if isinstance(policies, str):
        policies = [policies]
    names = [{v for v in chain[0].values() if isinstance(v, str)} if chain else set() for chain in chains]
    known = sorted(set().union(*names))
    unknown = [p for p in policies if p not in known]
    if unknown or not policies:
        raise ValueError(f"`policies` must name some of this model's candidate chains {known}; got {list(policies)}.")
    return [chain for chain, chain_names in zip(chains, names, strict=True) if chain_names & set(policies)]


def _check_chains(chains) -> list[list[dict[str, Any]]]:
    if isinstance(chains, Mapping) or not all(isinstance(chain, Sequence) for chain in chains):
        raise TypeError("`chains` must be a list of lists of settings (dicts of config values).")
    out = [[dict(setting) for setting in chain] for chain in chains]
    if not any(out):
        raise ValueError("`chains` holds no candidate setting.")
    return out


def select_setting(
    outcomes: CandidateOutcomes,
    *,
    max_accuracy_drop: float | None = None,
    max_disagreement: float | None = None,
    target_speedup: float | None = None,
    delta: float = 0.1,
    rule: str = "learn_then_test",
    technique: str = "",
    full_settings: Mapping[str, Any] | None = None,
) -> CalibrationReport:
    """Picks a setting from measured outcomes without touching a model (what :func:`calibrate` does after measuring).

    Args:
        outcomes: Per-candidate predictions and costs (e.g. a ``subset`` of a table, for repeated splits).
        max_accuracy_drop: Labelled risk budget (see :func:`calibrate`).
        max_disagreement: Label-free risk budget.
        target_speedup: Theoretical speedup to reach (no risk guarantee).
        delta: Error probability of the guarantee, in (0, 1).
        rule: ``"learn_then_test"`` or ``"point_estimate_no_guarantee"``.
        technique: Name recorded in the report.
        full_settings: Full-compute config values, recorded in the full-compute row.
    """
    name, criterion, epsilon = _criterion(max_accuracy_drop, max_disagreement, target_speedup)
    check_number("delta", delta, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {RULES}; got {rule!r}.")
    if name == "max_accuracy_drop" and outcomes.labels is None:
        raise ValueError("`max_accuracy_drop` needs labels; the data has none. Use `max_disagreement` instead.")
    risk = (
        "accuracy_drop"
        if name == "max_accuracy_drop" or (name == "target_speedup" and outcomes.labels is not None)
        else "disagreement"
    )
    num_chains = len(outcomes.chains)
    full_row, rows = score_candidates(outcomes, risk, None if name == "target_speedup" else epsilon, delta)
    full_row.update(full_settings or {})
    needed = None
    note = None
    if name == "target_speedup":
        rule = "target_speedup"
        chosen = reaching_speedup(rows, epsilon)
        if chosen is None:
            chosen = dict(max(rows, key=lambda r: (r["theoretical_speedup"], -r["risk"])))
            note = f"No candidate reaches a theoretical speedup of {epsilon:g}; chose the fastest one."
    else:
        if rule == "learn_then_test":
            chosen = cheapest(learn_then_test(rows, num_chains, delta, outcomes.num_samples, epsilon))
            needs = net_drop_rows_needed if risk == "accuracy_drop" else rows_needed
            needed = needs(epsilon, delta / max(1, num_chains))
        else:
            chosen = point_estimate(rows, risk, epsilon)
        if chosen is None or chosen["theoretical_speedup"] <= 1.0:
            note = _full_compute_note(chosen, rule, epsilon, delta, outcomes.num_samples, needed, num_chains)
            chosen = dict(full_row)
    return CalibrationReport(
        technique=technique,
        criterion=criterion,
        rule=rule,
        risk=risk,
        epsilon=None if name == "target_speedup" else epsilon,
        delta=delta if rule == "learn_then_test" else None,
        num_samples=outcomes.num_samples,
        num_chains=num_chains,
        chosen=chosen,
        full_compute=full_row,
        candidates=[full_row, *rows],
        note=note,
        rows_needed=needed,
    )


def _full_compute_note(chosen, rule, epsilon, delta, n, needed, num_chains) -> str:
    if chosen is not None:
        return "No setting within the budget is cheaper than full compute (the adaptive machinery costs FLOPs too)."
    if rule != "learn_then_test":
        return f"No candidate's observed risk is within {epsilon:g}; kept full compute."
    if needed is None:
        return "A zero risk budget cannot be certified from a finite sample; kept full compute."
    if n < needed:
        return (
            f"Too few rows: {n} calibration rows cannot certify a risk of at most {epsilon:g} at delta={delta:g} "
            f"(split over {num_chains} candidate chain(s)); at least {needed} rows are needed (with no losses). "
            "Kept full compute."
        )
    return f"No candidate was certified at risk <= {epsilon:g} with confidence {1 - delta:g}; kept full compute."


def calibrate(
    model,
    data=None,
    max_accuracy_drop: float | None = None,
    max_disagreement: float | None = None,
    delta: float = 0.1,
    *,
    target_speedup: float | None = None,
    rule: str = "learn_then_test",
    policies: Sequence[str] | str | None = None,
    chains: Sequence[Sequence[Mapping[str, Any]]] | None = None,
    batch_size: int = 64,
    data_collator: Callable | None = None,
    tokenizer=None,
    show_progress: bool = True,
    exit_logits=None,
    outcomes: CandidateOutcomes | None = None,
) -> CalibrationReport:
    """Picks the cheapest runtime setting whose risk against full compute is certified, and stores it in the config.

    Works for every technique with runtime knobs (early exits, halting, Skim-RNN / LSTM-Jump, video samplers): the
    candidates come from the technique's spec, each chain ordered from most to least compute. With the default
    ``rule="learn_then_test"``, each chain is tested in that order with an exact test (binomial for the
    disagreement, the paired net-drop test for the accuracy drop) at level ``delta / number of chains`` and stops
    at its first candidate whose upper confidence bound exceeds the budget; the cheapest certified candidate is
    chosen. Then, with probability at least ``1 - delta`` over the
    calibration rows, its risk on data like them is at most the budget.

    Args:
        model: An adaptive model.
        data: Calibration rows: a tokenized ``datasets.Dataset`` (or dict of columns), a dict of tensors such as
            ``{"pixel_values": ..., "labels": ...}``, or an iterable of batch dicts. Labels (``label``/``labels``)
            are needed for ``max_accuracy_drop`` only.
        max_accuracy_drop: Budget for the accuracy lost against the same model at full compute, as a fraction in
            [0, 1) (0.005 = 0.5 points). It is tested as the net paired drop: rows the setting breaks (full
            compute right, the setting wrong) count +1, rows it fixes count -1 (``bounds.net_drop_p_value``).
        max_disagreement: Label-free budget: the share of rows whose prediction differs from full compute, in
            [0, 1). It also bounds the accuracy drop.
        delta: Probability, in (0, 1), that the guarantee fails (0.1: 90% confidence).
        target_speedup: Instead of a risk budget: the most accurate setting reaching this theoretical speedup (no
            guarantee).
        rule: ``"learn_then_test"`` (the guarantee) or ``"point_estimate_no_guarantee"`` (the old rule: cheapest
            setting whose observed risk is within the budget; it overfits the calibration rows).
        policies: Keep only the chains named by one of their values, e.g. early-exit policies ``["confidence"]``
            or video samplers ``["saliency"]``.
        chains: Candidate chains replacing the spec's, each a list of settings from most to least compute.
        batch_size: Rows per forward.
        data_collator: Pads a list of feature dicts.
        tokenizer: Pads unpadded text rows with ``DataCollatorWithPadding`` when no collator is given.
        show_progress: Show a progress bar.
        exit_logits: Early exits: a table from ``collect_exit_logits`` / ``collect_image_exit_logits`` instead of
            ``data`` (the model does not run again).
        outcomes: Already measured outcomes instead of ``data`` (nothing runs).

    Returns:
        A :class:`~adaptive_hf.calibration.report.CalibrationReport`. ``model.config`` gets the chosen setting (the
        full-compute values when nothing is certified) and ``calibration``, a summary with the statement the model
        card shows.

    Raises:
        ValueError: Budget or delta out of range, not exactly one criterion, empty data, labels missing for
            ``max_accuracy_drop``, or a model with no runtime knob.
        TypeError: Not an adaptive model, or data of no accepted form.
    """
    name, _, epsilon = _criterion(max_accuracy_drop, max_disagreement, target_speedup)
    check_number("delta", delta, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {RULES}; got {rule!r}.")
    spec = technique_of(model)
    config = model.config
    candidate_chains = _check_chains(chains) if chains is not None else spec.candidate_chains(config)
    if not any(candidate_chains):
        raise ValueError(
            f"The {spec.name!r} model ({type(model).__name__}) has no runtime knob to calibrate: its technique "
            "declares no candidate settings."
        )
    candidate_chains = [chain for chain in _filter_chains(candidate_chains, policies) if chain]
    full_settings = spec.full_compute_settings(config)
    if outcomes is None:
        outcomes = _measure(
            spec, model, exit_logits if exit_logits is not None else data, candidate_chains, full_settings,
            dict(batch_size=batch_size, data_collator=data_collator, tokenizer=tokenizer,
                 show_progress=show_progress, require_labels=name == "max_accuracy_drop"),
        )  # fmt: skip
    report = select_setting(
        outcomes,
        max_accuracy_drop=max_accuracy_drop,
        max_disagreement=max_disagreement,
        target_speedup=target_speedup,
        delta=delta,
        rule=rule,
        technique=spec.name,
        full_settings=full_settings,
    )
    if report.note and report.rows_needed and report.num_samples < report.rows_needed:
        warnings.warn(report.note, stacklevel=2)
    apply_settings(config, report.chosen["setting"] or full_settings)
    config.calibration = report.config_summary()
    return report


def collect_candidates(
    model,
    data,
    *,
    require_labels: bool = False,
    policies: Sequence[str] | str | None = None,
    chains: Sequence[Sequence[Mapping[str, Any]]] | None = None,
    batch_size: int = 64,
    data_collator: Callable | None = None,
    tokenizer=None,
    show_progress: bool = True,
) -> CandidateOutcomes:
    """Measures every candidate setting once, so that many selections (e.g. repeated splits) cost no forward.

    Args:
        model: An adaptive model with runtime knobs.
        data: Rows in any form :func:`calibrate` accepts (or an early-exit ``ExitLogits`` table).
        require_labels: Raise when the data has no labels.
        policies: Keep only the chains named by one of their values (see :func:`calibrate`).
        chains: Candidate chains replacing the spec's.
        batch_size: Rows per forward.
        data_collator: Pads a list of feature dicts.
        tokenizer: Pads unpadded text rows when no collator is given.
        show_progress: Show a progress bar.

    Returns:
        A :class:`~adaptive_hf.core.candidates.CandidateOutcomes`; pass ``outcomes.subset(rows)`` to
        :func:`select_setting` or ``outcomes=`` to :func:`calibrate`.
    """
    spec = technique_of(model)
    candidate_chains = _check_chains(chains) if chains is not None else spec.candidate_chains(model.config)
    if not any(candidate_chains):
        raise ValueError(f"The {spec.name!r} model ({type(model).__name__}) has no runtime knob to calibrate.")
    candidate_chains = [chain for chain in _filter_chains(candidate_chains, policies) if chain]
    options = dict(
        batch_size=batch_size,
        data_collator=data_collator,
        tokenizer=tokenizer,
        show_progress=show_progress,
        require_labels=require_labels,
    )
    return _measure(spec, model, data, candidate_chains, spec.full_compute_settings(model.config), options)


def _measure(spec, model, data, chains, full_settings, options) -> CandidateOutcomes:
    if data is None:
        raise ValueError("Pass calibration `data` (or `exit_logits` / `outcomes`); got None.")
    if spec.replay is not None:
        outcomes = spec.replay(model, data, chains, **options)
        if outcomes is not None:
            return outcomes
    return collect_outcomes(model, data, chains, full_settings, **options)
