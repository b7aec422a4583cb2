"""Evaluation and timing helpers for the frame-sampling video classifier (recipes and benchmarks)."""

from __future__ import annotations

import time
from typing import Any

import torch

from ..core.timing import time_interleaved


def evaluate_video_classifier(model, pixel_values: torch.Tensor, labels: torch.Tensor, batch_size: int = 16) -> dict:
    """Accuracy, frames used, theoretical speedup and videos/second of ``model`` (eval mode) on a clip tensor.

    Args:
        model: A :class:`~adaptive_hf.video.modeling.FrameSamplingVideoClassifier`.
        pixel_values: ``(n, T, C, H, W)`` normalized clips.
        labels: ``(n,)`` class ids.
        batch_size: Clips per forward.

    Returns:
        ``accuracy``, ``frames_used`` (mean per video), ``frame_fraction`` (of ``num_frames``),
        ``theoretical_speedup`` (full compute / spent, glance and gate included), ``videos_per_second`` (this one
        pass, not interleaved: use :func:`time_video_samplers` for speedups) and ``mflops_per_video``.
    """
    model.eval()
    correct, frames, flops = 0, 0.0, 0.0
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, len(labels), batch_size):
            out = model(pixel_values=pixel_values[first : first + batch_size])
            correct += int((out.logits.argmax(-1) == labels[first : first + batch_size]).sum())
            frames += float(out.frames_used.sum())
            flops += float(out.flops.sum())
    seconds = time.perf_counter() - start
    count = len(labels)
    full = model.full_flops(tuple(pixel_values.shape[2:]))
    return {
        "accuracy": correct / count,
        "frames_used": frames / count,
        "frame_fraction": frames / count / model.config.num_frames,
        "theoretical_speedup": full / (flops / count),
        "mflops_per_video": flops / count / 1e6,
        "videos_per_second": count / seconds,
    }


def time_video_samplers(
    adaptive, full, pixel_values: torch.Tensor, batch_size: int, repeats: int = 5, threads: int | None = None
) -> dict[str, Any]:
    """Interleaved wall-clock comparison (A B A B, medians) of an adaptive model against the full-compute one.

    Args:
        adaptive: The model with its sampler settings.
        full: The reference (``sampler="uniform"`` with every frame), same backbone.
        pixel_values: Clips to run, in batches of ``batch_size``.
        batch_size: Clips per forward.
        repeats: Timed repetitions (>= 5 for reports).
        threads: ``torch.set_num_threads`` during timing.

    Returns:
        The :meth:`~adaptive_hf.core.timing.InterleavedTiming.summary` with the theoretical speedup from the
        outputs' FLOPs, plus ``videos_per_second`` for both models.
    """
    adaptive.eval()
    full.eval()
    batches = [pixel_values[i : i + batch_size] for i in range(0, len(pixel_values), batch_size)]
    batches = [b for b in batches if len(b) == batch_size] or batches[:1]

    def run(model):
        return [model(pixel_values=b) for b in batches]

    timing = time_interleaved(lambda: run(adaptive), lambda: run(full), repeats=repeats, warmup=1, threads=threads)
    spent = sum(float(out.flops.sum()) for out in timing.adaptive_output)
    videos = sum(len(b) for b in batches)
    theoretical = full.full_flops(tuple(pixel_values.shape[2:])) * videos / spent
    summary = timing.summary(theoretical)
    summary["batch_size"] = batch_size
    summary["videos"] = videos
    summary["adaptive_videos_per_second"] = videos / summary["adaptive_seconds"]
    summary["full_videos_per_second"] = videos / summary["full_seconds"]
    summary["frames_used"] = sum(float(out.frames_used.sum()) for out in timing.adaptive_output) / videos
    return summary
