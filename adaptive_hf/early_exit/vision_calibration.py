"""Calibration and speed measurement for the early-exit image classifiers.

``adaptive_hf.calibrate`` replays exit decisions on an :class:`~adaptive_hf.early_exit.calibration.ExitLogits`
table. For text it builds that table from token ids; :func:`collect_image_exit_logits` builds it from images
(``pixel_values``), with per-image costs from ``model.exit_flops()``, so image models calibrate with
``adaptive_hf.calibrate(model, None, max_accuracy_drop=..., exit_logits=collect_image_exit_logits(...))``.
:func:`measure_image_speedup` is the image counterpart of the text benchmark's measurement (same protocol:
same inputs, interleaved A B A B after warm-up, medians, fixed threads).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from .calibration import ExitLogits

SETTING_FIELDS = ("exit_policy", "exit_threshold", "patience")


def _batches(pixel_values: torch.Tensor | Iterable, batch_size: int):
    if isinstance(pixel_values, torch.Tensor):
        for start in range(0, pixel_values.size(0), batch_size):
            yield pixel_values[start : start + batch_size]
    else:
        yield from pixel_values


def collect_image_exit_logits(
    model,
    pixel_values: torch.Tensor | Iterable[torch.Tensor],
    labels: torch.Tensor | None = None,
    batch_size: int = 64,
) -> ExitLogits:
    """Runs the model once with policy ``none`` and every exit head, and returns the calibration table.

    Args:
        model: An early-exit image classifier.
        pixel_values: ``(num_images, C, H, W)`` images, or an iterable of such batches.
        labels: ``(num_images,)`` class ids (needed for calibration, optional for speed estimates).
        batch_size: Images per forward when ``pixel_values`` is one tensor.
    """
    config = model.config
    saved, was_training = config.exit_policy, model.training
    device = next(model.parameters()).device
    chunks = []
    try:
        config.exit_policy = "none"
        model.eval()
        with torch.inference_mode():
            for batch in _batches(pixel_values, batch_size):
                out = model(batch.to(device), output_exit_logits=True)
                chunks.append(torch.stack([x.float().cpu() for x in out.exit_logits]))
    finally:
        config.exit_policy = saved
        model.train(was_training)
    logits = torch.cat(chunks, dim=1)
    num_images = logits.size(1)
    if labels is not None:
        labels = torch.as_tensor(labels).long().cpu()
        if labels.shape != (num_images,):
            raise ValueError(f"`labels` must have shape ({num_images},); got {tuple(labels.shape)}.")
    costs, full = model.exit_flops()
    return ExitLogits(
        logits=logits,
        labels=labels,
        token_counts=torch.ones(num_images, dtype=torch.long),
        exit_layers=list(config.exit_layers),
        costs=torch.tensor(costs, dtype=torch.float64).expand(num_images, -1).clone(),
        full_costs=torch.full((num_images,), float(full), dtype=torch.float64),
    )


def _apply(config, setting: Mapping[str, Any]) -> None:
    # Threshold first: a threshold next to policy 'patience' is rejected at the next forward.
    if "exit_threshold" in setting:
        config.exit_threshold = setting["exit_threshold"]
    if "patience" in setting:
        config.patience = setting["patience"]
    if "exit_policy" in setting:
        config.exit_policy = setting["exit_policy"]


def measure_image_speedup(
    model,
    batches: Sequence[torch.Tensor],
    setting: Mapping[str, Any] | None = None,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Times the adaptive setting against full depth (policy ``none``) on the same image batches.

    Each round runs every batch with the adaptive setting (A) and then with policy ``none`` (B); rounds alternate
    A B A B after ``warmup`` untimed rounds. The theoretical speedup counts the FLOPs of the exits the images took.

    Args:
        model: An early-exit image classifier.
        batches: ``(batch, C, H, W)`` image tensors, already on the model's device.
        setting: ``exit_policy`` / ``exit_threshold`` / ``patience`` (default: the model's current config).
        repeats: Timed rounds (benchmarks.md asks for at least 5).
        warmup: Untimed rounds first.
        threads: ``torch.set_num_threads`` during the measurement; ``None`` keeps the current count.

    Returns:
        ``batch_size``, ``num_images``, ``threads``, ``adaptive_seconds``/``full_seconds`` (medians),
        ``realized_speedup``, ``theoretical_speedup``, ``efficiency``, ``average_exit_layer``, the spreads
        ((max - min) / median) and ``noisy`` (a spread above 20%).
    """
    batches = list(batches)
    if not batches:
        raise ValueError("`batches` is empty; pass at least one batch of images.")
    config = model.config
    saved = {name: getattr(config, name) for name in SETTING_FIELDS}
    adaptive = dict(saved if setting is None else {**saved, **setting})
    if adaptive["exit_policy"] == "patience":
        adaptive["exit_threshold"] = None
    old_threads, was_training = torch.get_num_threads(), model.training
    adaptive_times, full_times = [], []
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        model.eval()
        with torch.inference_mode():
            for round_index in range(warmup + repeats):
                _apply(config, adaptive)
                start = time.perf_counter()
                exit_layers = [model(batch).exit_layer for batch in batches]
                seconds_a = time.perf_counter() - start
                _apply(config, {"exit_policy": "none"})
                start = time.perf_counter()
                for batch in batches:
                    model(batch)
                seconds_b = time.perf_counter() - start
                if round_index >= warmup:
                    adaptive_times.append(seconds_a)
                    full_times.append(seconds_b)
    finally:
        _apply(config, saved)
        model.train(was_training)
        torch.set_num_threads(old_threads)
    exit_layer = torch.cat([x.cpu() for x in exit_layers]).long()
    costs, full = model.exit_flops()
    if adaptive["exit_policy"] == "none":
        spent = full * exit_layer.numel()
    else:
        cost_of_layer = dict(zip(config.exit_layers, costs, strict=True))
        spent = sum(cost_of_layer[int(layer)] for layer in exit_layer.tolist())
    theoretical = full * exit_layer.numel() / spent
    realized = statistics.median(full_times) / statistics.median(adaptive_times)

    def spread(times):
        return (max(times) - min(times)) / statistics.median(times)

    result = {
        "setting": {k: adaptive[k] for k in SETTING_FIELDS},
        "batch_size": max(int(b.size(0)) for b in batches),
        "num_images": int(exit_layer.numel()),
        "threads": torch.get_num_threads() if threads is None else threads,
        "repeats": repeats,
        "adaptive_seconds": statistics.median(adaptive_times),
        "full_seconds": statistics.median(full_times),
        "realized_speedup": realized,
        "theoretical_speedup": theoretical,
        "efficiency": realized / theoretical,
        "average_exit_layer": float(exit_layer.double().mean()),
        "adaptive_spread": spread(adaptive_times),
        "full_spread": spread(full_times),
    }
    result["noisy"] = bool(max(result["adaptive_spread"], result["full_spread"]) > 0.2)
    return result
