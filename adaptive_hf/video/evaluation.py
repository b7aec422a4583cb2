"""Evaluation and timing helpers for the frame-sampling video classifier (recipes, benchmarks and the CLI).

``adaptive-hf evaluate`` and ``adaptive-hf bench`` hand a folder whose config is a frame-sampling video classifier to
:func:`cli_evaluate` / :func:`cli_bench` here. The clips come from ``--dataset moving_fashion_mnist`` (generated
offline, with the frame size and normalization the model was trained with, read from ``video_collator.json`` next
to the model when the recipe saved one), from a ``save_to_disk`` folder with a uint8 ``frames`` column
``(T, H, W)`` and a ``label`` column, or from a folder of video files (class subfolders or a CSV of ``path,label``),
decoded lazily by :mod:`adaptive_hf.video.file_commands`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..core.io import write_json
from ..core.reports import command_threads, save_json_report
from ..core.timing import synchronized_clock, time_interleaved
from ..plotting import speedup_figure
from .file_commands import bench_files, bench_heading, evaluate_files, is_video_files_dataset
from .samplers import uniform_indices


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
    clock = synchronized_clock()
    start = clock()
    with torch.inference_mode():
        for first in range(0, len(labels), batch_size):
            out = model(pixel_values=pixel_values[first : first + batch_size])
            correct += int((out.logits.argmax(-1) == labels[first : first + batch_size]).sum())
            frames += float(out.frames_used.sum())
            flops += float(out.flops.sum())
    seconds = clock() - start
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
    adaptive,
    full,
    pixel_values: torch.Tensor,
    batch_size: int,
    repeats: int = 5,
    threads: int | None = None,
    plain: Callable[[torch.Tensor], Any] | None = None,
) -> dict[str, Any]:
    """Interleaved wall-clock comparison (A B A B, medians) of an adaptive model against the full-compute one.

    With ``plain`` (see :func:`plain_video_counterpart`), the plain model is timed in the same rounds (A B C ...).

    Args:
        adaptive: The model with its sampler settings.
        full: The reference (``sampler="uniform"`` with every frame), same backbone.
        pixel_values: Clips to run, in batches of ``batch_size``.
        batch_size: Clips per forward.
        repeats: Timed repetitions (>= 5 for reports).
        threads: ``torch.set_num_threads`` during timing.
        plain: Optionally the plain model, called on each ``(batch, T, C, H, W)`` batch of clips.

    Returns:
        The :meth:`~adaptive_hf.core.timing.InterleavedTiming.summary` with the theoretical speedup from the
        outputs' FLOPs (with ``plain``, also ``realized_speedup_vs_plain``, ``full_over_plain``, ...), plus
        ``videos_per_second`` for each model timed.
    """
    adaptive.eval()
    full.eval()
    batches = [pixel_values[i : i + batch_size] for i in range(0, len(pixel_values), batch_size)]
    batches = [b for b in batches if len(b) == batch_size] or batches[:1]

    def run(model):
        return [model(pixel_values=b) for b in batches]

    run_plain = None if plain is None else (lambda: [plain(b) for b in batches])
    timing = time_interleaved(
        lambda: run(adaptive), lambda: run(full), repeats=repeats, warmup=1, threads=threads, run_plain=run_plain
    )
    spent = sum(float(out.flops.sum()) for out in timing.adaptive_output)
    videos = sum(len(b) for b in batches)
    with torch.inference_mode():
        # The reference's own FLOPs (every frame for a per-frame backbone; its frame count for an HF clip model).
        reference = sum(float(full(pixel_values=b).flops.sum()) for b in batches)
    theoretical = reference / spent
    summary = timing.summary(theoretical)
    summary["batch_size"] = batch_size
    summary["videos"] = videos
    summary["adaptive_videos_per_second"] = videos / summary["adaptive_seconds"]
    summary["full_videos_per_second"] = videos / summary["full_seconds"]
    if "plain_seconds" in summary:
        summary["plain_videos_per_second"] = videos / summary["plain_seconds"]
    summary["frames_used"] = sum(float(out.frames_used.sum()) for out in timing.adaptive_output) / videos
    return summary


def plain_video_counterpart(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """The plain model a user starts from, as a function of ``(batch, T, C, H, W)`` clips returning logits.

    For a timm frame backbone: a copy of it run on every frame, its logits averaged over the frames (no glance
    network, no sampler, no stop gate). For an HF video clip classifier: a copy of that model on the clip (its own
    frame count, evenly spaced, when the clip is longer).
    The copies hold the same weights in their own memory, as a separately loaded model would.

    Args:
        model: A :class:`~adaptive_hf.video.modeling.FrameSamplingVideoClassifier`.
    """
    backbone = copy.deepcopy(model.backbone).eval()
    if model.config.clip_classifier == "hf_video":
        clip_frames = int(backbone.config.num_frames)

        def whole_clip(clips: torch.Tensor) -> torch.Tensor:
            # The clip model takes its own frame count: evenly spaced frames, as uniform sampling picks them.
            if clips.size(1) != clip_frames:
                clips = clips.index_select(1, uniform_indices(clips.size(1), clip_frames, clips.device))
            return backbone(pixel_values=clips).logits

        return whole_clip

    def every_frame(clips: torch.Tensor) -> torch.Tensor:
        logits = backbone(clips.flatten(0, 1))
        return logits.view(clips.size(0), clips.size(1), -1).mean(1)

    return every_frame


# --------------------------------------------------------------------------------------------------------- CLI
VIDEO_MODEL_TYPE = "frame_sampling_video"
COLLATOR_FILE = "video_collator.json"
MOVING_FASHION_MNIST_NAMES = ("moving_fashion_mnist", "moving-fashion-mnist")
BUDGET_SWEEP = (1, 2, 4, 8)
THRESHOLD_SWEEP = (0.5, 0.7, 0.8, 0.9, 0.95)


def is_video_model_dir(model_dir: str) -> bool:
    """Whether ``model_dir`` holds a saved frame-sampling video classifier (read from its ``config.json``).

    Args:
        model_dir: A folder written by ``save_pretrained``.
    """
    path = Path(model_dir) / "config.json"
    try:
        return json.loads(path.read_text()).get("model_type") == VIDEO_MODEL_TYPE
    except (OSError, ValueError):
        return False


def save_video_collator(collator, model_dir: str | Path, **clip_settings: Any) -> None:
    """Writes the collator settings (and the Moving Fashion-MNIST clip settings) next to a saved model, so the CLI
    feeds it frames as it was trained.

    Args:
        collator: A :class:`~adaptive_hf.video.data.VideoCollator`.
        model_dir: The model folder.
        **clip_settings: ``load_moving_fashion_mnist`` arguments the model was trained on (``image_size``, ...).
    """
    payload = {
        "num_channels": collator.num_channels,
        "image_size": collator.image_size,
        "mean": collator.mean.flatten().tolist(),
        "std": collator.std.flatten().tolist(),
        "moving_fashion_mnist": clip_settings,
    }
    write_json(Path(model_dir, COLLATOR_FILE), payload)


def load_video_collator(model, model_dir: str | Path):
    """``(collator, clip settings)`` saved next to the model, or defaults for its channel count."""
    from .data import VideoCollator

    path = Path(model_dir, COLLATOR_FILE)
    if path.is_file():
        payload = json.loads(path.read_text())
        collator = VideoCollator(payload["num_channels"], payload.get("image_size"), payload["mean"], payload["std"])
        return collator, dict(payload.get("moving_fashion_mnist") or {})
    return VideoCollator(num_channels=model.in_chans), {}


def file_transform(model, model_dir: str | Path):
    """The frame conversion for video files: the saved collator's channels and normalization, resizing decoded
    frames to the size the model was trained on (the collator's, else the saved clip settings' ``image_size``)."""
    from .data import VideoCollator

    collator, clip_settings = load_video_collator(model, model_dir)
    size = collator.image_size or clip_settings.get("image_size")
    return VideoCollator(collator.num_channels, size, collator.mean.flatten(), collator.std.flatten())


def load_video_clips(args, model, default_samples: int = 512) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The clips of ``--dataset`` as ``(pixel_values, labels)`` for a loaded video model.

    Args:
        args: The CLI arguments (``model_dir``, ``dataset``, ``split``, ``max_samples``, ``label_column``).
        model: The loaded :class:`~adaptive_hf.video.modeling.FrameSamplingVideoClassifier`.
        default_samples: Clips generated when ``--max-samples`` is not given.
    """
    import datasets
    import numpy as np

    from .data import VIDEO_SPLITS, load_moving_fashion_mnist

    collator, clip_settings = load_video_collator(model, args.model_dir)
    count = getattr(args, "max_samples", None) or default_samples
    label_column = getattr(args, "label_column", "label")
    if args.dataset in MOVING_FASHION_MNIST_NAMES:
        if args.split not in VIDEO_SPLITS:
            raise ValueError(
                f"`--split` must be one of {', '.join(VIDEO_SPLITS)} for {args.dataset}; got {args.split!r}."
            )
        clip_settings["num_frames"] = model.config.num_frames
        rows = load_moving_fashion_mnist(args.split, count, **clip_settings).with_format("numpy")[:]
        label_column = "label"
    elif Path(args.dataset).is_dir():
        dataset = datasets.load_from_disk(args.dataset)
        if isinstance(dataset, datasets.DatasetDict):
            if args.split not in dataset:
                raise ValueError(f"{args.dataset!r} has no split {args.split!r}; its splits are {list(dataset)}.")
            dataset = dataset[args.split]
        if "frames" not in dataset.column_names:
            raise ValueError(
                f"{args.dataset!r} has no `frames` column (uint8 clips of shape (T, H, W)); its columns are "
                f"{dataset.column_names}."
            )
        rows = dataset.select(range(min(count, len(dataset)))).with_format("numpy")[:]
    else:
        raise ValueError(
            f"Unknown video dataset {args.dataset!r}: use 'moving_fashion_mnist' (generated offline) or a folder "
            "written by Dataset.save_to_disk with `frames` (uint8, (T, H, W)) and `label` columns."
        )
    pixels = collator.frames_to_pixel_values(rows["frames"])
    labels = torch.as_tensor(np.asarray(rows[label_column]), dtype=torch.long) if label_column in rows else None
    return pixels, labels


def full_reference(model):
    """The full-compute reference of ``model``: the same weights with ``sampler="uniform"`` on every frame (an HF
    clip classifier, whose frame count is fixed, is compared with uniform sampling at that count)."""
    reference = copy.deepcopy(model).eval()
    reference.config.sampler = "uniform"
    if reference.config.clip_classifier != "hf_video":
        reference.config.frame_budget = None
    return reference


def _settings_to_sweep(model) -> list[tuple[str, dict[str, Any]]]:
    config = model.config
    frames = config.num_frames
    cases: list[tuple[str, dict[str, Any]]] = []
    if config.clip_classifier == "hf_video":
        budget = config.budget
        return [("uniform", {"frame_budget": budget}), ("saliency", {"frame_budget": budget})]
    budgets = sorted({b for b in BUDGET_SWEEP if b < frames} | {frames})
    cases += [("uniform", {"frame_budget": b}) for b in budgets]
    if config.sampler == "saliency":
        cases += [("saliency", {"frame_budget": b}) for b in budgets if b < frames]
    if config.sampler == "early_stop":
        thresholds = sorted({*THRESHOLD_SWEEP, config.exit_threshold})
        cases += [("early_stop", {"exit_threshold": t, "frame_budget": config.frame_budget}) for t in thresholds]
    return cases


def cli_evaluate(args, prepare=None) -> int:
    """``adaptive-hf evaluate`` on a video model: accuracy, frames per video and theoretical speedup for uniform
    sampling at several frame counts, the model's saved setting and a sweep of its sampler's knob.

    Args:
        args: The command's arguments (``model_dir``, ``dataset``, ``split``, ``max_samples``, ``json``, ``plot``).
        prepare: The CLI's text/image loader, unused: video clips are loaded here (:func:`load_video_clips`).
    """
    from .modeling import FrameSamplingVideoClassifier

    model = FrameSamplingVideoClassifier.from_pretrained(args.model_dir).eval()
    saved = {k: getattr(model.config, k) for k in ("sampler", "frame_budget", "exit_threshold")}
    cases = [(saved["sampler"], {"frame_budget": saved["frame_budget"], "exit_threshold": saved["exit_threshold"]})]
    cases += _settings_to_sweep(model)
    if is_video_files_dataset(args.dataset):
        payload = evaluate_files(args, model, file_transform(model, args.model_dir), cases)
        if getattr(args, "plot", None):
            _plot(payload["rows"], args.plot, f"{model.config.sampler} sampler on {args.dataset} (video files)")
            print(f"Wrote {args.plot}")
        return 0
    pixels, labels = load_video_clips(args, model)
    if labels is None:
        raise ValueError(f"evaluate needs labels: {args.dataset!r} has no `label` column.")
    batch_size = getattr(args, "batch_size", None) or 16
    rows = []
    for index, (sampler, knobs) in enumerate(cases):
        model.config.sampler = sampler
        for key, value in knobs.items():
            setattr(model.config, key, value)
        result = evaluate_video_classifier(model, pixels, labels, batch_size=batch_size)
        shown = {k: v for k, v in knobs.items() if not (sampler != "early_stop" and k == "exit_threshold")}
        setting = ("saved: " if index == 0 else "") + sampler + "".join(f", {k}={v}" for k, v in shown.items())
        rows.append({"setting": setting, "sampler": sampler, **knobs, **result})
    for key, value in saved.items():
        setattr(model.config, key, value)
    lines = ["| setting | accuracy | frames / video | theoretical speedup |", "|---|---|---|---|"]
    lines += [
        f"| {r['setting']} | {r['accuracy']:.4f} | {r['frames_used']:.2f} | {r['theoretical_speedup']:.2f}x |"
        for r in rows
    ]
    print("\n".join(lines))
    payload = {
        "model": str(args.model_dir),
        "dataset": args.dataset,
        "split": args.split,
        "technique": "video",
        "num_samples": len(labels),
        "rows": rows,
    }
    save_json_report(getattr(args, "json", None), payload)
    if getattr(args, "plot", None):
        _plot(rows, args.plot, f"{model.config.sampler} sampler on {args.dataset}")
        print(f"Wrote {args.plot}")
    return 0


def cli_bench(args, prepare=None) -> int:
    """``adaptive-hf bench`` on a video model: its saved setting against the full-compute reference, interleaved,
    at each ``--batch-sizes`` value (``--threshold`` overrides an early stop's ``exit_threshold``).

    Args:
        args: The command's arguments (``model_dir``, ``dataset``, ``batch_sizes``, ``repeats``, ``threads``, ...).
        prepare: The CLI's text/image loader, unused: video clips are loaded here (:func:`load_video_clips`).
    """
    from .modeling import FrameSamplingVideoClassifier

    model = FrameSamplingVideoClassifier.from_pretrained(args.model_dir).eval()
    if getattr(args, "threshold", None) is not None:
        model.config.exit_threshold = args.threshold
    if is_video_files_dataset(args.dataset):
        bench_files(args, model, file_transform(model, args.model_dir))
        return 0
    pixels, _ = load_video_clips(args, model, default_samples=64)
    reference = full_reference(model)
    threads = command_threads(args)
    results = []
    for batch_size in args.batch_sizes:
        result = time_video_samplers(model, reference, pixels, batch_size, repeats=args.repeats, threads=threads)
        results.append(result)
    config = model.config
    lines = [
        bench_heading(config, f"; {len(pixels)} clips", threads),
        "",
        "| batch size | frames / video | theoretical speedup | realized speedup | realized / theoretical | videos/s "
        "| noisy |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['batch_size']} | {r['frames_used']:.2f} | {r['theoretical_speedup']:.2f}x | "
            f"{r['realized_speedup']:.2f}x | {r['efficiency']:.2f} | {r['adaptive_videos_per_second']:.1f} vs "
            f"{r['full_videos_per_second']:.1f} | {'yes' if r['noisy'] else 'no'} |"
        )
    print("\n".join(lines))
    save_json_report(
        getattr(args, "json", None),
        {"model": str(args.model_dir), "dataset": args.dataset, "technique": "video", "results": results},
    )
    return 0


def _plot(rows: list[dict[str, Any]], path: str, title: str) -> None:
    with speedup_figure(path, "theoretical speedup over every frame (x)", title, title_fontsize=9) as axes:
        for sampler in dict.fromkeys(r["sampler"] for r in rows[1:]):
            points = sorted((r for r in rows[1:] if r["sampler"] == sampler), key=lambda r: r["theoretical_speedup"])
            axes.plot([r["theoretical_speedup"] for r in points], [r["accuracy"] for r in points], "o-", label=sampler)
