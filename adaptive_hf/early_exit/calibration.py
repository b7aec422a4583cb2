"""Early-exit replay for calibration: every exit setting scored from one pass over the data.

The model runs once over the data with policy ``none`` and ``output_exit_logits=True``, which evaluates every
exit head on every row. Candidate settings are then replayed offline with the same decision function the model
uses at inference (:func:`adaptive_hf.early_exit.policies.decide_exit`). A row's decisions depend only on its own
head logits, so the replay gives exactly the exit layer and prediction that eval-mode inference gives.

Public pieces, reused by the recipe, the CLI and the benchmark:

* :func:`collect_exit_logits` runs the model once and returns an :class:`ExitLogits` table.
* :func:`evaluate_setting` scores one setting (accuracy, average exit layer, theoretical speedup) on that table.
* :func:`adaptive_hf.early_exit.replay.replay_candidates` is the technique's ``replay``: it turns that table into
  the per-candidate outcomes from which ``adaptive_hf.calibrate`` (the generic, risk-controlled selection) picks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.batching import as_dataset, iterate_batches, labels_of
from ..core.configuration import check_number
from .policies import THRESHOLD_POLICIES, decide_exit, initial_state

SWEEP_POLICIES = THRESHOLD_POLICIES + ("patience",)
# Coarse steps over [0, 1] plus fine steps near both ends, where trained heads put most of their scores
# (confidence and margin close to 1, normalised entropy close to 0).
_FINE_HIGH = [0.991, 0.992, 0.993, 0.994, 0.995, 0.996, 0.997, 0.998, 0.999, 0.9995, 0.9999, 0.99999]
THRESHOLD_GRID: tuple[float, ...] = tuple(
    sorted(
        {round(x, 4) for x in np.linspace(0.0, 1.0, 101)}
        | set(_FINE_HIGH)
        | {round(1.0 - x, 5) for x in _FINE_HIGH}
        | {0.005, 0.015, 0.025, 0.985, 0.975}
    )
)
# Rows of the Pareto front kept in ``config.calibration`` (the full table lives in the returned report).
MAX_CONFIG_ROWS = 24


@dataclass
class ExitLogits:
    """Every exit head's logits on a dataset, with what is needed to score exit settings offline.

    Args:
        logits: ``(num_exits, num_samples, num_labels)`` float logits, heads in ``exit_layers`` order.
        labels: ``(num_samples,)`` class ids, or ``None`` for unlabelled data.
        token_counts: ``(num_samples,)`` tokens per sample (attention-mask sum).
        exit_layers: 1-based layer of each exit head.
        costs: ``(num_samples, num_exits)`` theoretical FLOPs a sample spends when it exits at each head (every
            layer up to it and every head evaluated on the way), from ``model.exit_flops``.
        full_costs: ``(num_samples,)`` FLOPs of the full-depth model (policy ``none``) on each sample.
    """

    logits: torch.Tensor
    labels: torch.Tensor | None
    token_counts: torch.Tensor
    exit_layers: list[int]
    costs: torch.Tensor
    full_costs: torch.Tensor

    @property
    def num_samples(self) -> int:
        return self.logits.size(1)

    @property
    def num_exits(self) -> int:
        return self.logits.size(0)

    def exit_heads(self, exit_policy: str, exit_threshold: float | None = None, patience: int | None = None):
        """The 0-based exit head each sample takes under a setting (the final head when no earlier one fires).

        Args:
            exit_policy: ``"none"``, ``"confidence"``, ``"entropy"``, ``"margin"`` or ``"patience"``.
            exit_threshold: Threshold for the threshold policies (``None`` = the policy's default).
            patience: Consecutive agreeing heads for ``"patience"``.

        Returns:
            A ``(num_samples,)`` long tensor.
        """
        _check_setting(exit_policy, exit_threshold, patience)
        last = self.num_exits - 1
        heads = torch.full((self.num_samples,), last, dtype=torch.long)
        if exit_policy == "none":
            return heads
        undecided = torch.ones(self.num_samples, dtype=torch.bool)
        state = initial_state(exit_policy, self.num_samples, torch.device("cpu"))
        for k in range(last):
            # Deciding for rows that already left is harmless: each row's decision depends only on its own
            # logits and state, and only its first exit counts.
            done, state = decide_exit(exit_policy, self.logits[k], exit_threshold, patience or 1, state)
            heads[done & undecided] = k
            undecided &= ~done
            if not bool(undecided.any()):
                break
        return heads

    def predictions(self, heads: torch.Tensor) -> torch.Tensor:
        """Predicted class per sample when each exits at ``heads``."""
        chosen = self.logits.gather(0, heads.view(1, -1, 1).expand(1, -1, self.logits.size(-1))).squeeze(0)
        return chosen.argmax(-1)


def _check_setting(exit_policy: str, exit_threshold: float | None, patience: int | None) -> None:
    if exit_policy not in ("none",) + SWEEP_POLICIES:
        raise ValueError(f"`exit_policy` must be one of {('none',) + SWEEP_POLICIES}; got {exit_policy!r}.")
    if exit_policy in THRESHOLD_POLICIES and exit_threshold is not None:
        check_number("exit_threshold", exit_threshold, 0.0, 1.0)
    if exit_policy == "patience":
        if patience is None:
            raise ValueError("`patience` is required for exit_policy='patience' (an integer >= 1).")
        check_number("patience", patience, 1, None, integer=True)


def evaluate_setting(
    exit_logits: ExitLogits,
    exit_policy: str,
    exit_threshold: float | None = None,
    patience: int | None = None,
) -> dict[str, Any]:
    """Scores one exit setting on collected head logits, exactly as eval-mode inference would behave.

    Args:
        exit_logits: The table from :func:`collect_exit_logits`.
        exit_policy: ``"none"``, ``"confidence"``, ``"entropy"``, ``"margin"`` or ``"patience"``.
        exit_threshold: Threshold for the threshold policies (``None`` = the policy's default).
        patience: Consecutive agreeing heads for ``"patience"``.

    Returns:
        A JSON-serializable row: ``exit_policy``, ``exit_threshold`` (threshold policies and ``none``) or
        ``patience``, ``accuracy`` (``None`` without labels), ``average_exit_layer`` (1-based),
        ``theoretical_speedup`` (full-depth FLOPs / spent FLOPs, summed over samples) and ``exit_fractions``
        (share of samples per exit layer).
    """
    heads = exit_logits.exit_heads(exit_policy, exit_threshold, patience)
    layers = torch.tensor(exit_logits.exit_layers, dtype=torch.float64)[heads]
    if exit_policy == "none":
        # The full-depth model evaluates only the final head.
        spent = exit_logits.full_costs.sum()
    else:
        spent = exit_logits.costs.gather(1, heads.view(-1, 1)).sum()
    accuracy = None
    if exit_logits.labels is not None:
        accuracy = float((exit_logits.predictions(heads) == exit_logits.labels).double().mean())
    row: dict[str, Any] = {"exit_policy": exit_policy}
    if exit_policy == "patience":
        row["patience"] = int(patience)
    else:
        row["exit_threshold"] = None if exit_threshold is None else float(exit_threshold)
    counts = torch.bincount(heads, minlength=exit_logits.num_exits).tolist()
    row.update(
        accuracy=accuracy,
        average_exit_layer=float(layers.mean()),
        theoretical_speedup=float(exit_logits.full_costs.sum() / spent),
        exit_fractions={
            str(layer): count / exit_logits.num_samples
            for layer, count in zip(exit_logits.exit_layers, counts, strict=True)
        },
    )
    return row


# ------------------------------------------------------------------------------------------------ data handling
def _check_model(model) -> None:
    if not hasattr(model, "exit_flops") or not hasattr(getattr(model, "config", None), "exit_layers"):
        raise TypeError(
            "Expected an early-exit classifier (EarlyExit<Arch>ForSequenceClassification, e.g. from "
            f"AutoEarlyExitModelForSequenceClassification); got {type(model).__name__}."
        )


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def sample_costs(model, token_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample theoretical costs from ``model.exit_flops``, using each sample's own token count.

    Args:
        model: An early-exit classifier.
        token_counts: ``(num_samples,)`` tokens per sample.

    Returns:
        ``(costs, full_costs)``: ``(num_samples, num_exits)`` cost of exiting at each head and ``(num_samples,)``
        cost of the full-depth model, as float64.
    """
    table: dict[int, tuple[list[int], int]] = {}
    for n in torch.unique(token_counts).tolist():
        table[n] = model.exit_flops(int(n))
    counts = token_counts.tolist()
    costs = torch.tensor([table[n][0] for n in counts], dtype=torch.float64)
    full = torch.tensor([table[n][1] for n in counts], dtype=torch.float64)
    return costs.view(len(counts), -1), full


def collect_exit_logits(
    model,
    dataset,
    batch_size: int = 64,
    data_collator: Callable | None = None,
    tokenizer=None,
    show_progress: bool = True,
    require_labels: bool = True,
) -> ExitLogits:
    """Runs the model once (eval mode, policy ``none``) and collects every exit head's logits on every row.

    The model's policy and training mode are restored afterwards, also when an error interrupts the run.

    Args:
        model: An early-exit classifier.
        dataset: A tokenized ``datasets.Dataset`` with ``input_ids`` (+ ``attention_mask``, ``token_type_ids``)
            and ``label`` or ``labels``; unpadded rows need ``tokenizer`` or ``data_collator``.
        batch_size: Rows per forward.
        data_collator: Pads a list of feature dicts.
        tokenizer: Pads with ``DataCollatorWithPadding`` when no collator is given.
        show_progress: Show a progress bar.
        require_labels: Raise when the dataset has no label column.
    """
    from tqdm.auto import tqdm

    _check_model(model)
    dataset = as_dataset(dataset)
    config = model.config
    labels = labels_of(dataset, config.num_labels, require_labels)
    device = _model_device(model)
    was_training, old_policy = model.training, config.exit_policy
    head_logits: list[list[torch.Tensor]] = [[] for _ in config.exit_layers]
    counts: list[torch.Tensor] = []
    try:
        model.eval()
        config.exit_policy = "none"
        total = math.ceil(len(dataset) / batch_size)
        batches = iterate_batches(dataset, batch_size, data_collator, tokenizer)
        with torch.no_grad():
            for batch in tqdm(batches, total=total, desc="Collecting exit logits", disable=not show_progress):
                batch = {k: v.to(device) for k, v in batch.items()}
                output = model(**batch, output_exit_logits=True)
                for k, logits in enumerate(output.exit_logits):
                    head_logits[k].append(logits.float().cpu())
                mask = batch.get("attention_mask")
                ids = batch["input_ids"]
                counts.append(mask.sum(1).cpu() if mask is not None else torch.full((ids.size(0),), ids.size(1)))
    finally:
        config.exit_policy = old_policy
        model.train(was_training)
    logits = torch.stack([torch.cat(chunks) for chunks in head_logits])
    token_counts = torch.cat(counts).long()
    costs, full_costs = sample_costs(model, token_counts)
    return ExitLogits(logits, labels, token_counts, list(config.exit_layers), costs, full_costs)


# ------------------------------------------------------------------------------------------------- calibration
def default_candidates(num_exits: int, policies: Sequence[str] = SWEEP_POLICIES) -> dict[str, list]:
    """The default sweep: :data:`THRESHOLD_GRID` for each threshold policy and patience 1..num_exits-1.

    Args:
        num_exits: Number of exit heads.
        policies: Which of ``confidence``, ``entropy``, ``margin``, ``patience`` to sweep.
    """
    out: dict[str, list] = {}
    for policy in policies:
        out[policy] = list(range(1, num_exits)) if policy == "patience" else list(THRESHOLD_GRID)
    return out


def _check_policies(policies: Iterable[str]) -> list[str]:
    if isinstance(policies, str):
        policies = [policies]
    policies = list(policies)
    for policy in policies:
        if policy not in SWEEP_POLICIES:
            raise ValueError(f"`policies` must contain only {SWEEP_POLICIES}; got {policy!r}.")
    if not policies:
        raise ValueError(f"`policies` must name at least one of {SWEEP_POLICIES}.")
    return list(dict.fromkeys(policies))


def sweep(exit_logits: ExitLogits, candidates: Mapping[str, Sequence]) -> list[dict[str, Any]]:
    """Scores every candidate setting, plus the full-depth row (policy ``none``) first.

    Args:
        exit_logits: The table from :func:`collect_exit_logits`.
        candidates: ``{policy: [thresholds]}`` for threshold policies, ``{"patience": [k, ...]}`` for patience.
    """
    rows = [evaluate_setting(exit_logits, "none")]
    for policy, values in candidates.items():
        for value in values:
            if policy == "patience":
                rows.append(evaluate_setting(exit_logits, policy, patience=value))
            else:
                rows.append(evaluate_setting(exit_logits, policy, exit_threshold=value))
    return rows


def pareto_front(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows that no other row beats on both accuracy and theoretical speedup, by increasing speedup.

    Args:
        rows: Rows from :func:`evaluate_setting` with an accuracy.
    """
    ordered = sorted(rows, key=lambda r: (-r["theoretical_speedup"], -r["accuracy"]))
    front, best_accuracy = [], -math.inf
    for row in ordered:
        if row["accuracy"] > best_accuracy:
            front.append(dict(row))
            best_accuracy = row["accuracy"]
    return front[::-1]
