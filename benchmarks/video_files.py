"""``benchmarks/video.py --files``: the frame samplers end to end on encoded video files, decoding included.

Moving Fashion-MNIST test clips (at the size the models were trained on) are upscaled to ``--file_size`` and encoded
with PyAV (``--codec mjpeg``: every frame a key frame; ``h264``: a key frame every ``--gop`` frames, no B-frames).
Each model then reads them through :class:`~adaptive_hf.video.files.VideoFileCollator`: the files are decoded at
``--file_size`` and resized to the model's frame size; the samplers decode only what they need (the glance pass as
set by ``--glance_stride``/``--glance_lowres``/``--glance_keyframes``, then the chosen frames).

The reference decodes every frame and classifies them all (uniform sampling of every frame). Each row reports
accuracy on ``--num_test`` clips against that reference, frames the backbone saw, frames decoded, the share of the
time spent decoding (frame tables, decoding and frame conversion), and end-to-end videos/s and realized speedup,
interleaved with the reference (A B A B, median of ``--repetitions``) on ``--timing_videos`` clips::

    python benchmarks/video.py --files --models outputs/video_sampler --json outputs/video_files_bench.json
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from adaptive_hf.video.data import FASHION_MNIST_CLASSES, VideoCollator, load_moving_fashion_mnist
from adaptive_hf.video.decoding import write_video
from adaptive_hf.video.file_evaluation import (
    decode_all_reference,
    evaluate_video_files,
    time_video_files,
    with_model_labels,
)
from adaptive_hf.video.files import VideoFileCollator, load_video_folder


def encoder_settings(args) -> tuple[str, dict]:
    """File ending and :func:`write_video` settings of ``--codec``."""
    if args.codec == "mjpeg":
        return ".avi", dict(codec="mjpeg", qmin=2, qmax=2)
    params = f"keyint={args.gop}:min-keyint={args.gop}:scenecut=0:bframes=0"
    return ".mp4", {"codec": "libx264", "gop": args.gop, "crf": 18, "x264-params": params}


def write_clips(args, image_size: int, num_frames: int, folder: Path) -> Path:
    """Encodes ``--num_test`` test clips into ``folder`` with a ``labels.csv``; returns the CSV."""
    clips = load_moving_fashion_mnist(
        "test", args.num_test, num_frames=num_frames, image_size=image_size, seed=args.seed
    ).with_format("numpy")[:]
    suffix, settings = encoder_settings(args)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["path,label"]
    for i, (frames, label) in enumerate(zip(clips["frames"], clips["label"])):
        pixels = torch.as_tensor(frames).float()[None]
        if args.file_size != image_size:
            size = (args.file_size, args.file_size)
            pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
        path = folder / f"clip{i:05d}{suffix}"
        write_video(path, pixels[0].round().clamp(0, 255).to(torch.uint8).numpy(), fps=8, **settings)
        lines.append(f"{path.name},{FASHION_MNIST_CLASSES[int(label)]}")
    table = folder / "labels.csv"
    table.write_text("\n".join(lines) + "\n")
    return table


def run_files(args, models: dict, transform: VideoCollator) -> dict:
    """Accuracy and interleaved timing of every case; returns the JSON payload."""
    torch.set_num_threads(args.threads)
    reference_model = decode_all_reference(models["uniform"])
    num_frames = reference_model.config.num_frames
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.video_dir or scratch)
        start = time.perf_counter()
        table = write_clips(args, transform.image_size, num_frames, folder)
        encode_seconds = time.perf_counter() - start
        dataset = load_video_folder(table)
        glance = dict(
            glance_stride=args.glance_stride, glance_lowres=args.glance_lowres, glance_keyframes=args.glance_keyframes
        )
        full_collator = VideoFileCollator(num_frames, transform)
        full = evaluate_video_files(reference_model, dataset, full_collator, args.batch_sizes[0])
        print(
            f"reference (decode all {num_frames} frames, uniform): accuracy {full['accuracy']:.3f}, "
            f"{full['videos_per_second']:.1f} videos/s, decode share {full['decode_share']:.0%}",
            flush=True,
        )
        cases = [("uniform", {"frame_budget": b}) for b in args.budgets]
        cases += [("saliency", {"frame_budget": b}) for b in args.budgets]
        cases += [
            ("early_stop", {"exit_threshold": t, "frames_per_step": args.frames_per_step[0]}) for t in args.thresholds
        ]
        timing_rows = with_model_labels(reference_model, dataset)[: args.timing_videos]
        rows = []
        for sampler, knobs in cases:
            model = models[sampler]
            model.config.sampler = sampler
            for key, value in knobs.items():
                setattr(model.config, key, value)
            collator = VideoFileCollator(num_frames, transform, **(glance if sampler != "uniform" else {}))
            quality = evaluate_video_files(model, dataset, collator, args.batch_sizes[0])
            row = {"sampler": sampler, **knobs, **quality}
            row["accuracy_drop_points"] = 100 * (full["accuracy"] - quality["accuracy"])
            for batch_size in args.batch_sizes:
                videos = timing_rows if batch_size > 1 else timing_rows[:16]
                row[f"batch{batch_size}"] = time_video_files(
                    model, reference_model, videos, collator, full_collator, batch_size, args.repetitions, args.threads
                )
            rows.append(row)
            print_row(row, args.batch_sizes)
    return {
        "command": "python benchmarks/video.py " + " ".join(args.argv),
        "codec": args.codec,
        "gop": args.gop if args.codec == "h264" else None,
        "file_size": args.file_size,
        "model_frame_size": transform.image_size,
        "glance_decoding": glance,
        "encode_seconds": encode_seconds,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "threads": args.threads,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "reference": full,
        "rows": rows,
    }


def print_row(row: dict, batch_sizes) -> None:
    knobs = {k: row[k] for k in ("frame_budget", "exit_threshold") if k in row}
    timings = "  ".join(
        f"b{b}: x{row[f'batch{b}']['realized_speedup']:.2f} "
        f"({row[f'batch{b}']['adaptive_videos_per_second']:.1f} vs {row[f'batch{b}']['full_videos_per_second']:.1f}"
        f" videos/s, decode {row[f'batch{b}']['adaptive_decode_share']:.0%} vs "
        f"{row[f'batch{b}']['full_decode_share']:.0%})" + (" NOISY" if row[f"batch{b}"]["noisy"] else "")
        for b in batch_sizes
    )
    drop = -row["accuracy_drop_points"]
    frames = f"frames {row['frames_used']:5.2f} decoded {row['frames_decoded']:5.2f}"
    print(
        f"{row['sampler']:<10} {json.dumps(knobs):<26} acc {row['accuracy']:.3f} ({drop:+.1f} pt) {frames} "
        f"(glance {row['glance_frames_decoded']:.2f})  {timings}",
        flush=True,
    )
