"""Calibration and speed measurement for the early-exit image classifiers.

``adaptive_hf.calibrate`` replays exit decisions on an :class:`~adaptive_hf.early_exit.calibration.ExitLogits`
table. For text it builds that table from token ids; :func:`collect_image_exit_logits` builds it from images
(``pixel_values``), with per-image costs from ``model.exit_flops()``, so image models calibrate with
``adaptive_hf.calibrate(model, None, max_accuracy_drop=..., exit_logits=collect_image_exit_logits(...))``.
:func:`measure_image_speedup` is the image counterpart of the text benchmark's measurement, on the shared timer
(:func:`adaptive_hf.core.timing.time_interleaved`: same inputs, interleaved A B A B after warm-up, medians, fixed
threads).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from .benchmarking import SETTING_FIELDS, time_setting
from .calibration import ExitLogits


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


def measure_image_speedup(
    model,
    batches: Sequence[torch.Tensor],
    setting: Mapping[str, Any] | None = None,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    pool_rows: int | None = None,
    plain_model=None,
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
        pool_rows: Run the adaptive setting through ``model.classify_stream(batches, pool_rows)``, which pools the
            images that continue past an exit across batches; full depth still runs ``model(batch)`` per batch.
        plain_model: The plain backbone the user started from (e.g. the stock timm model, before
            ``fold_batch_norms`` or ``channels_last``), timed on the same batches in the same rounds; adds
            ``realized_speedup_vs_plain`` and ``full_over_plain``.

    Returns:
        ``batch_size``, ``num_images``, ``threads``, ``adaptive_seconds``/``full_seconds`` (medians),
        ``realized_speedup``, ``theoretical_speedup``, ``efficiency``, ``average_exit_layer``, the spreads
        ((max - min) / median) and ``noisy`` (a spread above 20%).
    """
    batches = list(batches)
    if not batches:
        raise ValueError("`batches` is empty; pass at least one batch of images.")
    config = model.config

    def run():
        return [model(batch).exit_layer for batch in batches]

    def run_pooled():
        return [output.exit_layer for output in model.classify_stream(batches, pool_rows)]

    plain_pass = None
    if plain_model is not None:
        plain_model.eval()

        def plain_pass():
            return [plain_model(batch) for batch in batches]

    adaptive_pass = run if pool_rows is None else run_pooled
    adaptive, timing, exit_layer = time_setting(
        model, setting, adaptive_pass, run, repeats, warmup, threads, plain_pass
    )
    costs, full = model.exit_flops()
    if adaptive["exit_policy"] == "none":
        spent = full * exit_layer.numel()
    else:
        cost_of_layer = dict(zip(config.exit_layers, costs, strict=True))
        spent = sum(cost_of_layer[int(layer)] for layer in exit_layer.tolist())
    result = {
        "setting": {k: adaptive[k] for k in SETTING_FIELDS},
        "batch_size": max(int(b.size(0)) for b in batches),
        "num_images": int(exit_layer.numel()),
        "pool_rows": pool_rows,
        "average_exit_layer": float(exit_layer.double().mean()),
    }
    result.update(timing.summary(full * exit_layer.numel() / spent))
    return result
