"""What calibration chose and what it guarantees: the report, its config summary and its one-sentence statement."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Rows of the Pareto table kept in ``config.calibration`` (the full table lives in the returned report).
MAX_CONFIG_ROWS = 24
_DROPPED_IN_CONFIG = ("exit_fractions", "losses", "p_value", "tested", "flops_per_sample")


def describe_setting(setting: dict[str, Any]) -> str:
    """``exit_policy='confidence', exit_threshold=0.9`` for a setting; ``full compute`` for none."""
    if not setting:
        return "full compute"
    return ", ".join(f"{name}={value!r}" for name, value in setting.items())


def _points(value: float) -> str:
    return f"{100 * value:.2f}".rstrip("0").rstrip(".")


def _quality(row: dict[str, Any]) -> float:
    return row["accuracy"] if row.get("accuracy") is not None else -row["disagreement"]


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows that no other row beats on both quality (accuracy, else agreement) and speedup, by rising speedup.

    Args:
        rows: Rows with ``theoretical_speedup`` and ``accuracy`` or ``disagreement``.
    """
    ordered = sorted(rows, key=lambda r: (-r["theoretical_speedup"], -_quality(r)))
    front, best = [], -math.inf
    for row in ordered:
        if _quality(row) > best:
            front.append(dict(row))
            best = _quality(row)
    return front[::-1]


@dataclass
class CalibrationReport:
    """What :func:`adaptive_hf.calibrate` measured, chose and guarantees.

    Args:
        technique: The technique's registry name (e.g. ``"early_exit"``).
        criterion: ``"max_accuracy_drop=0.005"``, ``"max_disagreement=0.01"`` or ``"target_speedup=2"``.
        rule: ``"learn_then_test"`` (the guarantee), ``"point_estimate_no_guarantee"`` or ``"target_speedup"``.
        risk: ``"accuracy_drop"`` or ``"disagreement"``.
        epsilon: The risk budget (``None`` for a speed target).
        delta: The error probability of the guarantee (``None`` when the rule gives none).
        num_samples: Calibration rows.
        num_chains: Candidate chains tested (each at ``delta / num_chains``).
        chosen: The chosen row (its setting under ``setting``; full compute has an empty setting).
        full_compute: The full-compute row.
        candidates: Every candidate row, the full-compute row first.
        note: Why full compute or a fallback was chosen, when it was.
        rows_needed: Fewest rows that could certify the budget at all (zero losses), for the learn-then-test rule.
    """

    technique: str
    criterion: str
    rule: str
    risk: str
    epsilon: float | None
    delta: float | None
    num_samples: int
    num_chains: int
    chosen: dict[str, Any]
    full_compute: dict[str, Any]
    candidates: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None
    rows_needed: int | None = None

    @property
    def guaranteed(self) -> bool:
        """Whether the chosen setting comes with the Learn-then-Test guarantee."""
        return self.rule == "learn_then_test"

    @property
    def full_depth_accuracy(self) -> float | None:
        """Accuracy at full compute on the calibration rows (``None`` without labels)."""
        return self.full_compute["accuracy"]

    @property
    def upper_bound(self) -> float:
        """The chosen setting's upper confidence bound on its risk (0 for full compute)."""
        return self.chosen["upper_bound"]

    def statement(self) -> str:
        """One sentence a user can read: what the chosen setting promises, with which confidence, on what data."""
        setting = describe_setting(self.chosen["setting"])
        n = self.num_samples
        if self.rule == "target_speedup":
            return (
                f"No risk guarantee: {setting} was chosen as the most accurate setting reaching the speedup target "
                f"({self.criterion}) on {n} calibration rows."
            )
        budget = (
            f"{_points(self.epsilon)} points below full compute"
            if self.risk == "accuracy_drop"
            else f"{_points(self.epsilon)}% of predictions different from full compute"
        )
        if self.rule == "point_estimate_no_guarantee":
            observed = self.chosen[self.risk] or 0.0
            unit = " points" if self.risk == "accuracy_drop" else "%"
            return (
                f"No guarantee: {setting} was chosen by its point estimate on {n} calibration rows (observed "
                f"{self.risk.replace('_', ' ')} {_points(observed)}{unit}; budget: {budget}); unseen data can lose "
                "more."
            )
        confidence = f"{100 * (1 - self.delta):g}%"
        if not self.chosen["setting"]:
            needed = f"; certifying any needs at least {self.rows_needed} rows" if self.rows_needed else ""
            return (
                f"Runs at full compute: no cheaper setting was certified at {budget} with {confidence} confidence on "
                f"{n} calibration rows{needed if self.rows_needed and n < self.rows_needed else ''}."
            )
        unit = " points" if self.risk == "accuracy_drop" else "%"
        return (
            f"With {confidence} confidence, at most {budget} on data like the calibration set ({setting}; {n} "
            f"calibration rows; upper confidence bound {_points(self.upper_bound)}{unit}; Learn-then-Test with "
            f"{'an exact paired net-drop test' if self.risk == 'accuracy_drop' else 'exact binomial bounds'})."
        )

    def pareto_front(self) -> list[dict[str, Any]]:
        """Candidates (and full compute) that no other beats on both quality and theoretical speedup."""
        return pareto_front(self.candidates)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict with every candidate."""
        return {**self._header(), "candidates": [dict(row) for row in self.candidates]}

    def _header(self) -> dict[str, Any]:
        return {
            "technique": self.technique,
            "criterion": self.criterion,
            "rule": self.rule,
            "risk": self.risk,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "num_samples": self.num_samples,
            "num_chains": self.num_chains,
            "guaranteed": self.guaranteed,
            "upper_bound": self.upper_bound,
            "rows_needed": self.rows_needed,
            "statement": self.statement(),
            "chosen": dict(self.chosen),
            "full_compute": dict(self.full_compute),
            "full_depth_accuracy": self.full_depth_accuracy,
            "note": self.note,
        }

    def config_summary(self, max_rows: int = MAX_CONFIG_ROWS) -> dict[str, Any]:
        """The compact summary stored in ``config.calibration``: the header and the thinned Pareto table.

        Args:
            max_rows: Most candidate rows kept (evenly thinned along the front when it is longer).
        """

        def compact(row):
            return {k: v for k, v in row.items() if k not in _DROPPED_IN_CONFIG}

        front = self.pareto_front()
        if len(front) > max_rows:
            step = (len(front) - 1) / (max_rows - 1)
            front = [front[round(i * step)] for i in range(max_rows)]
        rows = {_key(r): compact(r) for r in front}
        for row in (self.full_compute, self.chosen):
            rows.setdefault(_key(row), compact(row))
        ordered = sorted(rows.values(), key=lambda r: (r["theoretical_speedup"], _quality(r)))
        header = self._header()
        header["chosen"] = compact(self.chosen)
        header["full_compute"] = compact(self.full_compute)
        return {**header, "candidates": ordered}

    def to_markdown(self, rows: str = "pareto") -> str:
        """The statement and a markdown table of candidates, the chosen one in bold.

        Args:
            rows: ``"pareto"`` (the Pareto front plus the full-compute and chosen rows) or ``"all"``.
        """
        if rows not in ("pareto", "all"):
            raise ValueError(f"`rows` must be 'pareto' or 'all'; got {rows!r}.")
        table = self.candidates if rows == "all" else self.config_summary(max_rows=10**9)["candidates"]
        lines = [self.statement(), "", *pareto_table(table, _key(self.chosen))]
        if self.note:
            lines += ["", f"Note: {self.note}"]
        return "\n".join(lines) + "\n"


def _key(row: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in row["setting"].items()))


def pareto_table(rows: list[dict[str, Any]], chosen_key: tuple | None = None) -> list[str]:
    """Markdown lines of a candidate table (setting, accuracy, disagreement, bound, certified, speedup).

    Args:
        rows: Report rows.
        chosen_key: The chosen row's key, printed in bold.
    """
    lines = [
        "| setting | accuracy | disagreement | risk upper bound | certified | theoretical speedup |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        accuracy = "-" if row.get("accuracy") is None else f"{row['accuracy']:.4f}"
        cells = [
            describe_setting(row["setting"]),
            accuracy,
            f"{row['disagreement']:.4f}",
            "-" if row.get("upper_bound") is None else f"{row['upper_bound']:.4f}",
            "yes" if row.get("certified") else "no",
            f"{row['theoretical_speedup']:.2f}x",
        ]
        if chosen_key is not None and _key(row) == chosen_key:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
