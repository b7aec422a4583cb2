"""Frame samplers: accuracy, frames used, theoretical and realized speedup against uniform sampling of every frame.

Measures the models that ``recipes/video_sampler.py`` saves (``<models>/{uniform,saliency,early_stop}``) on Moving
Fashion-MNIST test clips, following ../shared/benchmarks.md: accuracy next to the full-compute reference (the same
backbone, ``sampler="uniform"`` on every frame); theoretical speedup from the outputs' FLOPs (backbone frames, glance
network and stop gate all counted); realized speedup as the ratio of median wall-clock times, adaptive and full
interleaved on the same batches after a warm-up, at a fixed thread count. The plain model the user started from
runs in the same rounds (A B C A B C ...): the frame backbone on every frame, its logits averaged (for an HF video
clip classifier: that model on the clip; :func:`~adaptive_hf.video.evaluation.plain_video_counterpart`). ``vs plain``
is its time over the adaptive time; ``full/plain`` what the full-compute reference costs against it::

    python benchmarks/video.py --models outputs/video_sampler --json outputs/video_bench.json

With ``--files`` the same models read encoded video files instead, decoding included (see ``video_files.py``).

Early stop is timed at each ``--thresholds`` value for each ``--frames_per_step`` value (frames per backbone call).

Without ``--models`` (or when a model is missing) it times randomly initialised models of the same shapes
(speed only; accuracy is then meaningless and marked as such).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import adaptive_hf  # noqa: E402,F401
from adaptive_hf.core.io import write_json  # noqa: E402
from adaptive_hf.video.data import VideoCollator, load_moving_fashion_mnist  # noqa: E402
from adaptive_hf.video.evaluation import (  # noqa: E402
    evaluate_video_classifier,
    load_video_collator,
    plain_video_counterpart,
    time_video_samplers,
)
from adaptive_hf.video.modeling import FrameSamplingVideoClassifier  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="outputs/video_sampler", help="The recipe's output_dir.")
    parser.add_argument("--num_test", type=int, default=1024, help="Test clips for accuracy.")
    parser.add_argument("--timing_videos", type=int, default=128, help="Clips timed per batch size.")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[16, 1])
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budgets", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.9, 0.95])
    parser.add_argument("--frames_per_step", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="Write the results here.")
    files = parser.add_argument_group("video files (--files): end to end, decoding included; see video_files.py")
    files.add_argument("--files", action="store_true", help="Encode the test clips and read them as video files.")
    files.add_argument("--codec", default="mjpeg", choices=["mjpeg", "h264"])
    files.add_argument("--gop", type=int, default=4, help="h264: a key frame every this many frames")
    files.add_argument("--file_size", type=int, default=112, help="Side of the encoded frames.")
    files.add_argument("--video_dir", default=None, help="Keep the encoded clips here (default: a temporary folder).")
    files.add_argument("--glance_stride", type=int, default=1, help="The glance pass decodes every k-th frame.")
    files.add_argument("--glance_lowres", type=int, default=0, help="Glance frames at 1/2**k resolution (MJPEG).")
    files.add_argument("--glance_keyframes", action="store_true", help="The glance pass decodes key frames only.")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else os.sys.argv[1:])
    return args


def load(models: Path, name: str, fallback: FrameSamplingVideoClassifier | None):
    folder = models / name
    if (folder / "config.json").is_file():
        return FrameSamplingVideoClassifier.from_pretrained(folder).eval(), True
    if fallback is None:
        return FrameSamplingVideoClassifier.from_timm(
            "test_efficientnet", num_labels=10, model_args={"in_chans": 1}, glance_resolution=16, glance_width=8
        ).eval(), False
    return FrameSamplingVideoClassifier(fallback.config).eval(), False


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    models = Path(args.models)
    reference, trained = load(models, "uniform", None)
    saliency, _ = load(models, "saliency", reference)
    early, _ = load(models, "early_stop", reference)
    config = reference.config
    settings = (
        json.loads((models / "results.json").read_text())["settings"] if (models / "results.json").is_file() else {}
    )
    # The frame size and normalization the recipe trained with (saved next to each model), else its defaults.
    collator, clip_settings = load_video_collator(reference, models / "uniform")
    image_size = int(clip_settings.get("image_size", settings.get("image_size", 48)))
    if args.files:
        from video_files import run_files

        transform = VideoCollator(collator.num_channels, image_size, collator.mean.flatten(), collator.std.flatten())
        models = {"uniform": reference, "saliency": saliency, "early_stop": early}
        result = {"trained_models": trained, "architecture": config.architecture, **run_files(args, models, transform)}
        if args.json:
            write_json(args.json, result)
        return result
    test = load_moving_fashion_mnist(
        "test", args.num_test, num_frames=config.num_frames, image_size=image_size, seed=args.seed
    ).with_format("numpy")[:]
    pixels = collator.frames_to_pixel_values(test["frames"])
    labels = torch.as_tensor(test["label"])
    reference.config.sampler, reference.config.frame_budget = "uniform", None
    # The full-compute reference is its own copy: the uniform rows change the sampled model's frame budget.
    full = copy.deepcopy(reference)
    plain = plain_video_counterpart(full)

    cases = [("uniform", reference, {"frame_budget": b}) for b in args.budgets]
    cases += [("saliency", saliency, {"frame_budget": b}) for b in args.budgets]
    cases += [
        ("early_stop", early, {"exit_threshold": t, "frames_per_step": k, "frame_budget": early.config.frame_budget})
        for k in args.frames_per_step
        for t in args.thresholds
    ]
    full_quality = evaluate_video_classifier(full, pixels, labels)
    print(f"reference: uniform, all {config.num_frames} frames: accuracy {full_quality['accuracy']:.3f}")
    rows = []
    for sampler, model, knobs in cases:
        model.config.sampler = sampler
        for key, value in knobs.items():
            setattr(model.config, key, value)
        quality = evaluate_video_classifier(model, pixels, labels)
        row = {"sampler": sampler, **knobs, "accuracy": quality["accuracy"], "frames_used": quality["frames_used"]}
        row["accuracy_drop_points"] = 100 * (full_quality["accuracy"] - quality["accuracy"])
        for batch_size in args.batch_sizes:
            videos = args.timing_videos if batch_size > 1 else min(args.timing_videos, 16)
            timing = time_video_samplers(
                model, full, pixels[:videos], batch_size, repeats=args.repetitions, threads=args.threads, plain=plain
            )
            row[f"batch{batch_size}"] = timing
        rows.append(row)
        timing = row[f"batch{args.batch_sizes[0]}"]
        print(
            f"{sampler:<10} {json.dumps(knobs):<38} acc {row['accuracy']:.3f} "
            f"({-row['accuracy_drop_points']:+.1f} pt) "
            f"frames {row['frames_used']:5.2f}  theoretical x{timing['theoretical_speedup']:.2f}  "
            + "  ".join(
                f"b{b}: realized x{row[f'batch{b}']['realized_speedup']:.2f} "
                f"vs plain x{row[f'batch{b}']['realized_speedup_vs_plain']:.2f} "
                f"full/plain {row[f'batch{b}']['full_over_plain']:.3f} "
                f"({row[f'batch{b}']['adaptive_videos_per_second']:.1f} vs "
                f"{row[f'batch{b}']['full_videos_per_second']:.1f} vs "
                f"{row[f'batch{b}']['plain_videos_per_second']:.1f} videos/s)"
                + (" NOISY" if row[f"batch{b}"]["noisy"] else "")
                for b in args.batch_sizes
            ),
            flush=True,
        )
    result = {
        "command": "python benchmarks/video.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
        "trained_models": trained,
        "architecture": config.architecture,
        "num_frames": config.num_frames,
        "image_size": image_size,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "threads": args.threads,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "reference_accuracy": full_quality["accuracy"],
        "rows": rows,
    }
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
