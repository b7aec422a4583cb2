"""``adaptive-hf evaluate`` / ``bench`` on a folder of video files (or a CSV of ``path,label``), decoding included.

The command line hands a frame-sampling video model and ``--dataset FOLDER`` here when the folder holds videos
(class subfolders or one CSV) rather than a ``save_to_disk`` dataset. Frames are decoded lazily: each setting
decodes only what its sampler needs, and the tables report frames decoded and the share of the time spent decoding.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.reports import command_threads, save_json_report
from .data import VideoCollator
from .decoding import VIDEO_EXTENSIONS
from .file_evaluation import decode_all_reference, evaluate_video_files, time_video_files, with_model_labels
from .files import VideoFileCollator, load_video_folder

_SAVED_DATASET_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")


def is_video_files_dataset(dataset: str) -> bool:
    """Whether ``--dataset`` names video files: a CSV, or a folder of class subfolders with videos or with one CSV
    (not a ``save_to_disk`` folder).

    Args:
        dataset: The ``--dataset`` value.
    """
    path = Path(dataset)
    if path.is_file():
        return path.suffix.lower() == ".csv"
    if not path.is_dir() or any((path / name).is_file() for name in _SAVED_DATASET_FILES):
        return False
    if len(list(path.glob("*.csv"))) == 1:
        return True
    suffixes = set(VIDEO_EXTENSIONS)
    return any(p.suffix.lower() in suffixes for d in path.iterdir() if d.is_dir() for p in d.rglob("*"))


def file_collator(args, model, transform: VideoCollator, lazy_glance: bool = True) -> VideoFileCollator:
    """The collator of the command's decoding flags (``--glance-stride``, ``--glance-lowres``,
    ``--glance-keyframes``, ``--pad``, ``--on-error``; defaults when a flag is absent).

    Args:
        args: The command-line arguments.
        model: The loaded video classifier (its ``num_frames``).
        transform: Frame size, channels and normalization the model was trained with.
        lazy_glance: Apply the glance decoding flags (False for the decode-everything reference).
    """
    glance = {}
    if lazy_glance:
        glance = dict(
            glance_stride=getattr(args, "glance_stride", None) or 1,
            glance_lowres=getattr(args, "glance_lowres", None) or 0,
            glance_keyframes=bool(getattr(args, "glance_keyframes", False)),
        )
    return VideoFileCollator(
        model.config.num_frames,
        transform,
        pad=getattr(args, "pad", None) or "error",
        on_error=getattr(args, "on_error", None) or "raise",
        **glance,
    )


def _dataset(args):
    dataset = load_video_folder(args.dataset)
    count = getattr(args, "max_samples", None)
    return dataset.select(range(min(count, len(dataset)))) if count else dataset


def evaluate_files(args, model, transform: VideoCollator, cases: list[tuple[str, dict]]) -> dict:
    """``evaluate`` on video files: one row per ``(sampler, knobs)`` case, the model's saved setting first.

    Args:
        args: The command-line arguments (``dataset``, ``max_samples``, ``batch_size``, decoding flags, ``json``).
        model: The loaded video classifier.
        transform: Frame size, channels and normalization the model was trained with.
        cases: ``(sampler, knobs)`` settings to evaluate, in order.

    Returns:
        The JSON payload (also written to ``--json``); the rows hold accuracy, frames used, frames decoded,
        decode share, theoretical speedup and end-to-end videos/s.
    """
    dataset = _dataset(args)
    batch_size = getattr(args, "batch_size", None) or 16
    saved = {k: getattr(model.config, k) for k in ("sampler", "frame_budget", "exit_threshold")}
    rows = []
    for index, (sampler, knobs) in enumerate(cases):
        model.config.sampler = sampler
        for key, value in knobs.items():
            setattr(model.config, key, value)
        collator = file_collator(args, model, transform, lazy_glance=sampler != "uniform")
        result = evaluate_video_files(model, dataset, collator, batch_size)
        shown = {k: v for k, v in knobs.items() if not (sampler != "early_stop" and k == "exit_threshold")}
        setting = ("saved: " if index == 0 else "") + sampler + "".join(f", {k}={v}" for k, v in shown.items())
        rows.append({"setting": setting, "sampler": sampler, **knobs, **result})
    for key, value in saved.items():
        setattr(model.config, key, value)
    lines = [
        "| setting | accuracy | frames / video | frames decoded / video | decode share | theoretical speedup |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['setting']} | {r['accuracy']:.4f} | {r['frames_used']:.2f} | {r['frames_decoded']:.2f} | "
        f"{r['decode_share']:.0%} | {r['theoretical_speedup']:.2f}x |"
        for r in rows
    ]
    skipped = sorted({path for r in rows for path, _ in r["skipped"]})
    print("\n".join(lines) + (f"\nSkipped {len(skipped)} file(s): {', '.join(skipped)}" if skipped else ""))
    payload = {
        "model": str(args.model_dir),
        "dataset": args.dataset,
        "technique": "video",
        "video_files": True,
        "num_samples": len(dataset),
        "rows": rows,
    }
    save_json_report(getattr(args, "json", None), payload)
    return payload


def bench_heading(config, data: str, threads: int) -> str:
    """The first line of a video ``bench`` table: the sampler's setting, the data timed, torch and threads.

    Args:
        config: The video model's config.
        data: What was timed, as it follows the setting (e.g. ``"; 64 clips"``).
        threads: The thread count of the timings.
    """
    setting = f"frame budget {config.budget}"
    if config.sampler == "early_stop":
        setting += f", exit threshold {config.exit_threshold}"
    return f"{config.sampler} sampler ({setting}){data}; torch {torch.__version__}, {threads} thread(s)"


def bench_files(args, model, transform: VideoCollator) -> dict:
    """``bench`` on video files: the saved setting against decoding every frame + uniform sampling of every
    frame, interleaved, end to end (decoding included), at each ``--batch-sizes`` value.

    Args:
        args: The command-line arguments (``dataset``, ``max_samples``, ``batch_sizes``, ``repeats``, ``threads``,
            decoding flags, ``json``).
        model: The loaded video classifier (its saved sampler settings).
        transform: Frame size, channels and normalization the model was trained with.
    """
    dataset = _dataset(args)
    rows = with_model_labels(model, dataset)
    reference = decode_all_reference(model)
    threads = command_threads(args)
    collator = file_collator(args, model, transform, lazy_glance=model.config.sampler != "uniform")
    reference_collator = file_collator(args, reference, transform, lazy_glance=False)
    results = [
        time_video_files(model, reference, rows, collator, reference_collator, b, args.repeats, threads)
        for b in args.batch_sizes
    ]
    config = model.config
    lines = [
        bench_heading(config, f" on {len(rows)} video files, decoding included", threads),
        "",
        "| batch size | frames / video | frames decoded / video | decode share | realized speedup | videos/s "
        "| noisy |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        decoded = f"{r['frames_decoded']:.2f} vs {r['full_frames_decoded']:.2f}"
        share = f"{r['adaptive_decode_share']:.0%} vs {r['full_decode_share']:.0%}"
        speed = f"{r['adaptive_videos_per_second']:.1f} vs {r['full_videos_per_second']:.1f}"
        lines.append(
            f"| {r['batch_size']} | {r['frames_used']:.2f} | {decoded} | {share} | {r['realized_speedup']:.2f}x | "
            f"{speed} | {'yes' if r['noisy'] else 'no'} |"
        )
    print("\n".join(lines))
    payload = {
        "model": str(args.model_dir),
        "dataset": args.dataset,
        "technique": "video",
        "video_files": True,
        "results": results,
    }
    save_json_report(getattr(args, "json", None), payload)
    return payload
