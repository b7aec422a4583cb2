"""Evaluation and end-to-end timing of the frame samplers on video files, decoding included.

:func:`evaluate_video_files` reports accuracy, frames the backbone saw, frames decoded (glance pass and backbone pass)
and the share of the time spent decoding. :func:`time_video_files` times a sampler against the decode-everything
reference (every frame decoded, uniform sampling of every frame), interleaved, with the decode inside the timing.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch

from ..core.timing import time_interleaved
from .decoding import VideoDecodingError
from .files import VideoFileCollator


def dataset_label_ids(model, dataset, label_column: str = "label") -> list[int]:
    """The model's class ids of ``dataset``'s labels.

    A ``ClassLabel`` column whose names are the model's labels (``config.label2id``) is mapped by name; names that
    are integers (``0``, ``1``, ... folders) are taken as class ids.

    Args:
        model: The classifier (its ``config.label2id`` and ``num_labels``).
        dataset: A :func:`~adaptive_hf.video.files.load_video_folder` dataset.
        label_column: Its label column.
    """
    feature = dataset.features[label_column]
    values = list(dataset[label_column])
    names = getattr(feature, "names", None)
    if names is None:
        return [int(v) for v in values]
    label2id = {str(k): int(v) for k, v in (model.config.label2id or {}).items()}
    if all(name in label2id for name in names):
        return [label2id[names[v]] for v in values]
    if all(name.isdigit() and int(name) < model.config.num_labels for name in names):
        return [int(names[v]) for v in values]
    unknown = sorted(name for name in names if name not in label2id)
    raise ValueError(
        f"The dataset's labels {unknown} are not the model's labels ({sorted(label2id)}) nor class ids "
        f"0..{model.config.num_labels - 1}; name the class folders (or CSV labels) after the model's labels."
    )


def run_video_files(model, rows: list[dict[str, Any]], collator: VideoFileCollator, batch_size: int) -> dict:
    """Runs ``model`` (eval mode) over video rows, collating lazily and decoding through the source.

    A file that fails while decoding is skipped and named (``collator.on_error="skip"``) or re-raised with its name.

    Args:
        model: A :class:`~adaptive_hf.video.modeling.FrameSamplingVideoClassifier`.
        rows: Dataset rows (path and, for accuracy, ``labels`` as model class ids under ``"labels"``).
        collator: The :class:`~adaptive_hf.video.files.VideoFileCollator`.
        batch_size: Videos per forward.

    Returns:
        Sums over the videos: ``videos``, ``correct``, ``frames_used``, ``frames_decoded``, ``glance_decoded``,
        ``flops``; ``decode_seconds`` (frame tables, decoding and frame conversion) and ``seconds`` in all.
    """
    totals = dict(videos=0, correct=0, frames_used=0.0, frames_decoded=0.0, glance_decoded=0.0, flops=0.0)
    totals["decode_seconds"] = 0.0
    start = time.perf_counter()
    for first in range(0, len(rows), batch_size):
        pending = list(rows[first : first + batch_size])
        while pending:
            probe_before = collator.probe_seconds
            batch = collator(pending)
            source = batch["frame_source"]
            totals["decode_seconds"] += collator.probe_seconds - probe_before
            if source.num_videos == 0:
                break
            try:
                with torch.inference_mode():
                    out = model(frame_source=source)
            except VideoDecodingError as error:
                if collator.on_error != "skip":
                    raise
                collator.skip(error.path, error)
                pending = [row for row in pending if str(row[collator.path_column]) != error.path]
                continue
            finally:
                source.close()
                totals["decode_seconds"] += source.decode_seconds
            kept = {index.path for index in (video.index for video in source.videos)}
            labels = [row["labels"] for row in pending if str(row[collator.path_column]) in kept and "labels" in row]
            if len(labels) == source.num_videos:
                totals["correct"] += int((out.logits.argmax(-1) == torch.as_tensor(labels)).sum())
            totals["videos"] += source.num_videos
            totals["frames_used"] += float(out.frames_used.sum())
            totals["frames_decoded"] += float(out.frames_decoded.sum())
            totals["glance_decoded"] += float(source.glance_decoded().sum())
            totals["flops"] += float(out.flops.sum())
            break
    totals["seconds"] = time.perf_counter() - start
    return totals


def with_model_labels(model, dataset, label_column: str = "label") -> list[dict[str, Any]]:
    """``dataset`` rows with ``labels`` set to the model's class ids (see :func:`dataset_label_ids`)."""
    ids = dataset_label_ids(model, dataset, label_column)
    return [{**row, "labels": label} for row, label in zip(dataset, ids)]


def evaluate_video_files(model, dataset, collator: VideoFileCollator, batch_size: int = 16) -> dict:
    """Accuracy, frames and decode counts of ``model`` on a video-file dataset (decode included in the time).

    Args:
        model: A :class:`~adaptive_hf.video.modeling.FrameSamplingVideoClassifier` (set to eval mode).
        dataset: A :func:`~adaptive_hf.video.files.load_video_folder` dataset.
        collator: A :class:`~adaptive_hf.video.files.VideoFileCollator` with the model's ``num_frames``.
        batch_size: Videos per forward.

    Returns:
        ``accuracy``, ``videos`` (evaluated), ``skipped`` (``(path, reason)`` of files left out),
        ``frames_used`` (backbone frames per video), ``frames_decoded`` and ``glance_frames_decoded`` (per video),
        ``theoretical_speedup`` (model FLOPs against every frame), ``videos_per_second`` (end to end, decode
        included), ``decode_share`` (of that time).
    """
    model.eval()
    rows = with_model_labels(model, dataset, collator.label_column)
    skipped_before = len(collator.skipped)
    totals = run_video_files(model, rows, collator, batch_size)
    count = max(totals["videos"], 1)
    shape = collator.transform.num_channels, *_frame_size(collator, rows)
    return {
        "accuracy": totals["correct"] / count,
        "videos": totals["videos"],
        "skipped": collator.skipped[skipped_before:],
        "frames_used": totals["frames_used"] / count,
        "frames_decoded": totals["frames_decoded"] / count,
        "glance_frames_decoded": totals["glance_decoded"] / count,
        "theoretical_speedup": model.full_flops(shape) / max(totals["flops"] / count, 1e-9),
        "videos_per_second": totals["videos"] / totals["seconds"],
        "decode_share": totals["decode_seconds"] / totals["seconds"],
    }


def _frame_size(collator: VideoFileCollator, rows) -> tuple[int, int]:
    if collator.transform.image_size is not None:
        return collator.transform.image_size, collator.transform.image_size
    from .decoding import probe_video

    for row in rows:
        try:
            index = probe_video(row[collator.path_column])
        except (VideoDecodingError, FileNotFoundError):
            continue
        return index.height, index.width
    raise ValueError("No readable video to take the frame size from.")


def decode_all_reference(model):
    """The decode-everything reference of ``model``: uniform sampling of every frame, so every frame is decoded."""
    reference = copy.deepcopy(model).eval()
    reference.config.sampler = "uniform"
    if reference.config.clip_classifier != "hf_video":
        reference.config.frame_budget = None
    return reference


def time_video_files(
    model,
    reference,
    rows: list[dict[str, Any]],
    collator: VideoFileCollator,
    reference_collator: VideoFileCollator,
    batch_size: int,
    repeats: int = 5,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Interleaved end-to-end timing (A B A B, medians) on files: frame tables, decoding and model, per batch.

    Args:
        model: The sampler to time.
        reference: The decode-everything reference (:func:`decode_all_reference`).
        rows: Rows to run (paths).
        collator: ``model``'s collator (its glance decoding settings).
        reference_collator: The reference's collator.
        batch_size: Videos per forward.
        repeats: Timed repetitions (>= 5 for reports).
        threads: ``torch.set_num_threads`` during timing.

    Returns:
        The interleaved summary (``realized_speedup``, medians, spreads, ``noisy``) with ``videos_per_second`` of
        both, their ``decode_share`` (last timed run) and ``frames_decoded``/``frames_used`` per video.
    """
    last: dict[str, dict] = {}

    def run(name, chosen, chosen_collator):
        def go():
            last[name] = run_video_files(chosen, rows, chosen_collator, batch_size)
            return last[name]

        return go

    timing = time_interleaved(
        run("adaptive", model, collator),
        run("reference", reference, reference_collator),
        repeats=repeats,
        warmup=1,
        threads=threads,
    )
    adaptive, full = last["adaptive"], last["reference"]
    summary = timing.summary(full["flops"] / max(adaptive["flops"], 1e-9))
    videos = adaptive["videos"]
    summary.update(
        batch_size=batch_size,
        videos=videos,
        adaptive_videos_per_second=videos / summary["adaptive_seconds"],
        full_videos_per_second=full["videos"] / summary["full_seconds"],
        adaptive_decode_share=adaptive["decode_seconds"] / adaptive["seconds"],
        full_decode_share=full["decode_seconds"] / full["seconds"],
        frames_decoded=adaptive["frames_decoded"] / max(videos, 1),
        full_frames_decoded=full["frames_decoded"] / max(full["videos"], 1),
        frames_used=adaptive["frames_used"] / max(videos, 1),
    )
    return summary
