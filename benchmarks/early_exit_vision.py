"""Realized against theoretical speedup of an early-exit image classifier at batch 1 and batch 64.

Measured as ``shared/benchmarks.md`` asks: the same test images for the adaptive setting and for full depth
(policy ``none``, same weights), in one process, interleaved A B A B after a warm-up round, the median of
``--repeats`` (>= 5) rounds, with a fixed ``torch.set_num_threads``. The theoretical speedup counts the FLOPs of the
exits the images actually took (``model.exit_flops()``: stem, units, and every head evaluated on the way).

It measures the model that ``recipes/early_exit_vision.py`` saved, for each policy's calibrated setting listed in
that run's ``report.json``::

    python recipes/early_exit_vision.py --output_dir outputs/early_exit_vision
    python benchmarks/early_exit_vision.py --model_dir outputs/early_exit_vision --json bench_vision.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

import adaptive_hf  # noqa: F401
from adaptive_hf.cli import image_batches, image_preprocessing
from adaptive_hf.data import load_image_arrays
from adaptive_hf.early_exit.vision_calibration import measure_image_speedup
from adaptive_hf.early_exit.vision_modeling import EarlyExitTimmForImageClassification

TASK_DATASETS = {"fashion_mnist": "fashion_mnist", "mnist_vit": "mnist_subset"}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", default="outputs/early_exit_vision", help="Folder saved by the recipe.")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads while timing.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed rounds per measurement (median).")
    parser.add_argument("--images_batch_1", type=int, default=64, help="Test images timed one at a time.")
    parser.add_argument("--images_batch_64", type=int, default=256, help="Test images timed in batches of 64.")
    parser.add_argument(
        "--channels_last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Run CNNs in channels_last, both the adaptive setting and full depth (default: on; ViTs are unaffected).",
    )
    parser.add_argument("--json", default=None, help="Also write the results here.")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    report_path = Path(args.model_dir, "report.json")
    if not report_path.is_file():
        sys.exit(f"{report_path} is missing: run recipes/early_exit_vision.py --output_dir {args.model_dir} first.")
    report = json.loads(report_path.read_text())
    model = EarlyExitTimmForImageClassification.from_pretrained(args.model_dir).eval()
    channels_last = args.channels_last and model.config.describe().family != "vit"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    # The front of the test split: images the recipe never trained or calibrated on, prepared as the model records
    # (the same path as `adaptive-hf bench`).
    dataset = report.get("dataset", TASK_DATASETS.get(report["task"]))
    x_test = load_image_arrays(dataset, seed=0)["test"][0]
    preprocessing = image_preprocessing(model, args.model_dir)
    batches = {
        size: [b["pixel_values"] for b in image_batches(x_test, preprocessing, size, limit=count)]
        for size, count in ((1, args.images_batch_1), (64, args.images_batch_64))
    }
    results = []
    for row in report["calibrated"]:
        setting = row["setting"]
        if setting["exit_policy"] == "none":
            continue
        for batch_size, data in batches.items():
            timing = measure_image_speedup(model, data, setting, repeats=args.repeats, threads=args.threads)
            timing.update(test_accuracy=row["test_accuracy"], batch=batch_size)
            results.append(timing)
            print(
                f"{setting['exit_policy']:>10} {str(setting.get('exit_threshold', setting.get('patience'))):>7} "
                f"batch {batch_size:>2}: theoretical {timing['theoretical_speedup']:.2f}x realized "
                f"{timing['realized_speedup']:.2f}x efficiency {timing['efficiency']:.2f} "
                f"(avg exit {timing['average_exit_layer']:.2f}, spread {timing['adaptive_spread']:.0%}/"
                f"{timing['full_spread']:.0%}{', NOISY' if timing['noisy'] else ''})",
                flush=True,
            )
    full_accuracy = report["full_depth"]["test_accuracy"]
    print(
        f"\n{report['architecture']} on {report['task']} at {report['image_size']}px, exits {report['exit_layers']}; "
        f"full-depth test accuracy {100 * full_accuracy:.2f}; torch {torch.__version__}, {args.threads} threads, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), median of {args.repeats}"
        f"{', channels_last' if channels_last else ''}.\n"
    )
    print("| policy | setting | test acc (vs full depth) | batch | theoretical | realized | realized/theoretical |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        s = r["setting"]
        drop = 100 * (r["test_accuracy"] - full_accuracy)
        print(
            f"| {s['exit_policy']} | {s.get('exit_threshold') if s['exit_policy'] != 'patience' else s['patience']} | "
            f"{100 * r['test_accuracy']:.2f} ({drop:+.2f}) | {r['batch']} | {r['theoretical_speedup']:.2f}x | "
            f"{r['realized_speedup']:.2f}x | {r['efficiency']:.2f}{' (noisy)' if r['noisy'] else ''} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"report": report_path.as_posix(), "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
