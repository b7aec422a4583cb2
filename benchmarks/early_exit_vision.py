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
import statistics
import sys
import time
from pathlib import Path

import torch

import adaptive_hf  # noqa: F401
from adaptive_hf.cli import image_batches, image_preprocessing
from adaptive_hf.core.io import write_json
from adaptive_hf.data import IMAGE_TASK_DATASETS, load_image_arrays
from adaptive_hf.early_exit.vision_calibration import measure_image_speedup
from adaptive_hf.early_exit.vision_modeling import EarlyExitTimmForImageClassification


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", default="outputs/early_exit_vision", help="Folder saved by the recipe.")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads while timing.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed rounds per measurement (median).")
    parser.add_argument("--images_batch_1", type=int, default=64, help="Test images timed one at a time.")
    parser.add_argument("--images_batch_64", type=int, default=1024, help="Test images timed in batches of 64.")
    parser.add_argument(
        "--pool_rows",
        type=int,
        default=64,
        help="Also time batch 64 through classify_stream, pooling the images that continue past an exit across "
        "batches until this many wait (0: skip).",
    )
    parser.add_argument(
        "--channels_last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Run CNNs in channels_last, both the adaptive setting and full depth (default: on; ViTs are unaffected).",
    )
    parser.add_argument(
        "--fold_batch_norms",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Fold CNN batch norms into their convolutions, for both runs (default: on).",
    )
    parser.add_argument(
        "--eval_chunk_elements",
        type=int,
        default=None,
        help="Override the model's eval_chunk_elements (0: never split batches; default: the saved value).",
    )
    parser.add_argument("--json", default=None, help="Also write the results here.")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    report_path = Path(args.model_dir, "report.json")
    if not report_path.is_file():
        sys.exit(f"{report_path} is missing: run recipes/early_exit_vision.py --output_dir {args.model_dir} first.")
    report = json.loads(report_path.read_text())
    model = EarlyExitTimmForImageClassification.from_pretrained(args.model_dir).eval()
    if args.eval_chunk_elements is not None:
        model.config.eval_chunk_elements = args.eval_chunk_elements or None
    channels_last = args.channels_last and model.config.describe().family != "vit"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    folded = model.fold_batch_norms() if args.fold_batch_norms else 0
    # The front of the test split: images the recipe never trained or calibrated on, prepared as the model records
    # (the same path as `adaptive-hf bench`).
    dataset = report.get("dataset", IMAGE_TASK_DATASETS.get(report["task"]))
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
        runs = [(size, data, None) for size, data in batches.items()]
        if args.pool_rows:
            runs.append((64, batches[64], args.pool_rows))
        for batch_size, data, pool_rows in runs:
            timing = measure_image_speedup(
                model, data, setting, repeats=args.repeats, threads=args.threads, pool_rows=pool_rows
            )
            timing.update(test_accuracy=row["test_accuracy"], batch=batch_size)
            results.append(timing)
            print(
                f"{setting['exit_policy']:>10} {str(setting.get('exit_threshold', setting.get('patience'))):>7} "
                f"batch {batch_size:>2}{f' pooled {pool_rows}' if pool_rows else ''}: "
                f"theoretical {timing['theoretical_speedup']:.2f}x realized "
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
        f"{', channels_last' if channels_last else ''}, eval_chunk_elements={model.config.eval_chunk_elements}, "
        f"{folded} batch norms folded.\n"
    )
    print("| policy | setting | test acc (vs full depth) | batch | theoretical | realized | realized/theoretical |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        s = r["setting"]
        drop = 100 * (r["test_accuracy"] - full_accuracy)
        print(
            f"| {s['exit_policy']} | {s.get('exit_threshold') if s['exit_policy'] != 'patience' else s['patience']} | "
            f"{100 * r['test_accuracy']:.2f} ({drop:+.2f}) | {r['batch']}"
            f"{f', pooled {pool}' if (pool := r.get('pool_rows')) else ''} | {r['theoretical_speedup']:.2f}x | "
            f"{r['realized_speedup']:.2f}x | {r['efficiency']:.2f}{' (noisy)' if r['noisy'] else ''} |"
        )
    shares = unit_time_shares(model, batches, args.repeats, args.threads)
    print(
        "\nWhere full depth spends its time (share of the forward spent up to each exit; realized / theoretical "
        "falls below 1 where the time share up to the exits the images take exceeds their FLOP share):\n"
    )
    print("| exit | FLOP share | time share, batch 1 | time share, batch 64 |")
    print("|---|---|---|---|")
    for k, layer in enumerate(model.config.exit_layers):
        print(f"| {layer} | {shares['flops'][k]:.2f} | {shares[1][k]:.2f} | {shares[64][k]:.2f} |")
    if args.json:
        payload = {"report": report_path.as_posix(), "results": results, "time_shares": shares}
        write_json(args.json, payload)
    return results


def unit_time_shares(model, batches: dict, repeats: int, threads: int) -> dict:
    """Cumulative share of the full-depth forward (stem, units, final head) reached at each exit: by FLOPs and by
    median wall time per unit at each batch size (every timed image through every unit, no heads)."""
    adapter, exits = model.adapter, model.config.exit_layers
    _, full = model.exit_flops()
    description = model.config.describe()
    flops = [description.stem_flops + sum(description.unit_flops[:layer]) for layer in exits[:-1]] + [full]
    shares = {"flops": [f / full for f in flops]}
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for batch_size, data in batches.items():
                seconds = []  # per repeat: stem, units..., final head, each summed over every batch
                for _ in range(repeats):
                    row = [0.0] * (adapter.num_layers + 2)
                    for pixels in data:
                        start = time.perf_counter()
                        state = model._embed(pixels)
                        row[0] += time.perf_counter() - start
                        for index in range(adapter.num_layers):
                            start = time.perf_counter()
                            state.hidden_states = adapter.run_layer(index, state)
                            row[index + 1] += time.perf_counter() - start
                        start = time.perf_counter()
                        model._final_logits(state.hidden_states)
                        row[-1] += time.perf_counter() - start
                    seconds.append(row)
                medians = [statistics.median(column) for column in zip(*seconds)]
                total = sum(medians)
                shares[batch_size] = [sum(medians[: layer + 1]) / total for layer in exits[:-1]] + [1.0]
    finally:
        torch.set_num_threads(old_threads)
    return shares


if __name__ == "__main__":
    main()
