"""Realized against theoretical speedup of an early-exit classifier, measured as ``shared/benchmarks.md`` asks.

Same inputs for both models (the adaptive setting and policy ``none`` on the same weights), in the same process,
interleaved A B A B after warm-up, the median of several repetitions, with a fixed thread count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..core.timing import InterleavedTiming, time_interleaved
from .calibration import sample_costs

SETTING_FIELDS = ("exit_policy", "exit_threshold", "patience")


def _apply(config, setting: Mapping[str, Any]) -> None:
    # Threshold first: the config rejects a threshold next to policy 'patience' at the next forward.
    if "exit_threshold" in setting:
        config.exit_threshold = setting["exit_threshold"]
    if "patience" in setting:
        config.patience = setting["patience"]
    if "exit_policy" in setting:
        config.exit_policy = setting["exit_policy"]


def time_setting(
    model,
    setting: Mapping[str, Any] | None,
    adaptive_pass: Callable[[], list[torch.Tensor]],
    full_pass: Callable[[], list[torch.Tensor]],
    repeats: int,
    warmup: int,
    threads: int | None,
    plain_pass: Callable[[], Any] | None = None,
) -> tuple[dict[str, Any], InterleavedTiming, torch.Tensor]:
    """Times ``adaptive_pass`` under the adaptive setting against ``full_pass`` under policy ``none``, interleaved.

    The config's exit fields and the model's training mode are restored afterwards, even on error.

    Args:
        model: An early-exit classifier (put in eval mode for the measurement).
        setting: ``exit_policy`` / ``exit_threshold`` / ``patience`` for the adaptive run; ``None`` = the current
            config.
        adaptive_pass: Runs every batch once and returns each batch's ``exit_layer``.
        full_pass: The same at full depth.
        repeats: Timed rounds.
        warmup: Untimed rounds first.
        threads: ``torch.set_num_threads`` during the measurement; ``None`` keeps the current count.
        plain_pass: Optionally the same inputs through the plain backbone model the user started from, timed in
            the same rounds (``timing.plain_times``).

    Returns:
        ``(adaptive setting, timing, exit_layer of every sample in the adaptive run)``.
    """
    config = model.config
    saved = {name: getattr(config, name) for name in SETTING_FIELDS}
    adaptive = dict(saved if setting is None else {**saved, **setting})
    if adaptive["exit_policy"] == "patience":
        adaptive["exit_threshold"] = None
    was_training = model.training

    def run(setting_to_apply, model_pass):
        _apply(config, setting_to_apply)
        return model_pass()

    try:
        model.eval()
        timing = time_interleaved(
            lambda: run(adaptive, adaptive_pass),
            lambda: run({"exit_policy": "none"}, full_pass),
            repeats,
            warmup,
            threads,
            run_plain=plain_pass,
            device=next(model.parameters()).device,
        )
    finally:
        _apply(config, saved)
        model.train(was_training)
    return adaptive, timing, torch.cat([x.cpu() for x in timing.adaptive_output]).long()


def measure_speedup(
    model,
    batches: Sequence[Mapping[str, torch.Tensor]],
    setting: Mapping[str, Any] | None = None,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    plain_model=None,
    pool_rows: int | None = None,
) -> dict[str, Any]:
    """Times the adaptive model against full depth on the same batches and compares with the theoretical speedup.

    Each repetition runs every batch with the adaptive setting (A), then every batch with policy ``none`` (B);
    repetitions alternate A B A B after ``warmup`` untimed rounds. The theoretical speedup counts the FLOPs of the
    exits the samples actually took (``model.exit_flops`` with each sample's own token count). The model's
    config and training mode are restored afterwards.

    Args:
        model: An early-exit classifier.
        batches: Model-input batches (``input_ids``, ``attention_mask``, ...), already on the model's device.
        setting: ``exit_policy`` / ``exit_threshold`` / ``patience`` for the adaptive run (default: the model's
            current config, e.g. the calibrated one).
        repeats: Timed repetitions of each model (at least 1; benchmarks.md asks for >= 5).
        warmup: Untimed rounds of each model first.
        threads: ``torch.set_num_threads`` during the measurement (restored afterwards); ``None`` keeps the
            current count.
        plain_model: The plain backbone classifier the user started from (e.g. the stock
            ``BertForSequenceClassification``, see :func:`plain_counterpart`), timed on the same batches in the
            same rounds; adds ``realized_speedup_vs_plain`` and ``full_over_plain``.
        pool_rows: Run the adaptive setting through ``model.classify_stream(batches, pool_rows)``, which pools the
            rows that continue past an exit across batches; full depth still runs ``model(**batch)`` per batch.

    Returns:
        ``batch_size`` (largest batch), ``num_samples``, ``num_batches``, ``pool_rows``, ``threads``, ``repeats``,
        ``adaptive_seconds`` / ``full_seconds`` (medians of one pass over all batches), ``realized_speedup``
        (full / adaptive), ``theoretical_speedup``, ``efficiency`` (realized / theoretical),
        ``average_exit_layer``, ``adaptive_spread`` / ``full_spread`` ((max - min) / median of the repetitions)
        and ``noisy`` (a spread above 20%), plus the adaptive ``setting``.
    """
    if not hasattr(model, "exit_flops"):
        raise TypeError(f"Expected an early-exit classifier with `exit_flops`; got {type(model).__name__}.")
    batches = list(batches)
    if not batches:
        raise ValueError("`batches` is empty; pass at least one batch of model inputs.")

    def run():
        return [model(**batch).exit_layer for batch in batches]

    def run_pooled():
        return [output.exit_layer for output in model.classify_stream(batches, pool_rows)]

    plain_pass = None
    if plain_model is not None:
        plain_model.eval()

        def plain_pass():
            return [plain_model(**batch).logits for batch in batches]

    adaptive_pass = run if pool_rows is None else run_pooled
    adaptive, timing, exit_layer = time_setting(
        model, setting, adaptive_pass, run, repeats, warmup, threads, plain_pass
    )
    result = {
        "setting": {k: adaptive[k] for k in SETTING_FIELDS},
        "batch_size": max(int(b["input_ids"].size(0)) for b in batches),
        "num_samples": int(exit_layer.numel()),
        "num_batches": len(batches),
        "pool_rows": pool_rows,
        "average_exit_layer": float(exit_layer.double().mean()),
    }
    result.update(timing.summary(theoretical_speedup(model, batches, exit_layer, adaptive["exit_policy"])))
    return result


def theoretical_speedup(
    model, batches: Sequence[Mapping[str, torch.Tensor]], exit_layer: torch.Tensor, policy: str
) -> float:
    """Full-depth FLOPs over the FLOPs of the exits taken, each sample counted at its own token count.

    Args:
        model: An early-exit text classifier.
        batches: The model-input batches that were run (``input_ids``, optional ``attention_mask``).
        exit_layer: ``(num_samples,)`` exit layer of every sample of ``batches``, in order.
        policy: The exit policy that ran (``"none"``: full depth, every head on the way unpaid).
    """
    if policy == "none":
        return 1.0
    counts = []
    for batch in batches:
        mask = batch.get("attention_mask")
        ids = batch["input_ids"]
        counts.append(mask.sum(-1).cpu() if mask is not None else torch.full((ids.size(0),), ids.size(-1)))
    costs, full_costs = sample_costs(model, torch.cat(counts).long())
    head_of_layer = {layer: k for k, layer in enumerate(model.config.exit_layers)}
    heads = torch.tensor([head_of_layer[int(layer)] for layer in exit_layer.tolist()])
    return float(full_costs.sum() / costs.gather(1, heads.view(-1, 1)).sum())


def plain_counterpart(model):
    """The stock ``<Arch>ForSequenceClassification`` with this early-exit model's backbone weights, in eval mode.

    This is the model a user starts from, so benchmarks report speedups against it next to those against our own
    full-compute path. Its classifier is the family's own (new weights: timing does not depend on them).

    Args:
        model: An early-exit text classifier.
    """
    from transformers import AutoModelForSequenceClassification

    adapter = model.adapter_class
    values = model.config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version"):
        values.pop(key, None)
    plain_config = adapter.config_class(**values)
    plain = AutoModelForSequenceClassification.from_config(plain_config)
    prefix = model.base_model_prefix
    getattr(plain, prefix).load_state_dict(getattr(model, prefix).state_dict(), strict=False)
    device = next(model.parameters()).device
    return plain.to(device=device, dtype=next(model.parameters()).dtype).eval()
