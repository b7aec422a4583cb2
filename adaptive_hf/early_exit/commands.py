"""The ``adaptive-hf evaluate`` and ``bench`` commands on an early-exit classifier (text or images).

``adaptive-hf calibrate`` is generic over techniques (``adaptive_hf/cli/calibrate.py``).

Registered as the technique's command hooks in ``spec.py``; the CLI hands each one its parsed arguments and a
``prepare(require_labels)`` that loads the model and its data (see :data:`adaptive_hf.core.technique.CommandHook`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ..core.configuration import check_number
from ..core.reports import command_threads, save_json_report
from ..plotting import speedup_figure

SETTING_ARGUMENTS = {"policy": "exit_policy", "threshold": "exit_threshold", "patience": "patience"}


def _is_image_model(model) -> bool:
    return getattr(model, "main_input_name", None) == "pixel_values"


def collect_logits(data: Any, batch_size: int, show_progress: bool):
    """Every exit's logits on the prepared data (the calibration table), for text or image early-exit models.

    Args:
        data: The CLI's prepared data (``model``, ``labels``, ``dataset``, ``tokenizer``, ``make_batches``).
        batch_size: Rows per forward pass.
        show_progress: Show a progress bar (text models).
    """
    if data.is_image:
        from .vision_calibration import collect_image_exit_logits

        pixels = (batch["pixel_values"] for batch in data.make_batches(batch_size))
        return collect_image_exit_logits(data.model, pixels, data.labels)
    from .calibration import collect_exit_logits

    return collect_exit_logits(
        data.model, data.dataset, batch_size, tokenizer=data.tokenizer, show_progress=show_progress
    )


def measure(
    model, batches: list[dict], setting, repeats: int, threads: int | None, pool_rows: int | None = None
) -> dict[str, Any]:
    """Realized against theoretical speedup of an early-exit model on ready batches (text or images).

    Args:
        model: An early-exit classifier.
        batches: Model-input batches.
        setting: Exit setting to time (``None``: the model's own).
        repeats: Timed repetitions.
        threads: ``torch.set_num_threads`` while timing.
        pool_rows: Time the adaptive run through ``classify_stream`` with this pool.
    """
    if _is_image_model(model):
        from .vision_calibration import measure_image_speedup

        pixels = [batch["pixel_values"] for batch in batches]
        result = measure_image_speedup(
            model, pixels, setting, repeats=repeats, warmup=1, threads=threads, pool_rows=pool_rows
        )
        result["num_samples"] = result.pop("num_images")
        return result
    from .benchmarking import measure_speedup

    return measure_speedup(model, batches, setting, repeats=repeats, warmup=1, threads=threads, pool_rows=pool_rows)


def _current_setting(config) -> dict[str, Any]:
    setting: dict[str, Any] = {"exit_policy": config.exit_policy}
    if config.exit_policy == "patience":
        setting["patience"] = config.patience
    else:
        setting["exit_threshold"] = config.exit_threshold
    return setting


def _thin(rows: list[dict], count: int) -> list[dict]:
    if len(rows) <= count:
        return rows
    import numpy as np

    return [rows[i] for i in np.unique(np.linspace(0, len(rows) - 1, count).round().astype(int))]


def _timing_fields(result: dict[str, Any]) -> dict[str, Any]:
    # Timing runs on a subset, so the subset's own theoretical speedup is what the realized one compares with.
    renames = {"num_samples": "timed_samples", "theoretical_speedup": "timed_theoretical_speedup"}
    keys = ("realized_speedup", "theoretical_speedup", "efficiency", "batch_size", "threads", "repeats")
    return {renames.get(k, k): result[k] for k in (*keys, "num_samples", "noisy")}


def cli_evaluate(args: Any, prepare: Callable[[bool], Any]) -> int:
    """``adaptive-hf evaluate``: accuracy against theoretical speedup over every policy's threshold sweep, the
    Pareto fronts, and realized speedups timed at a few points of each front.

    Args:
        args: The command's arguments (``policies``, ``batch_size``, ``realized_points``, ``realized_samples``,
            ``repeats``, ``threads``, ``json``, ``plot``, ...).
        prepare: The CLI's loader of the model and its labelled data.
    """
    from tqdm.auto import tqdm

    from .calibration import _check_policies, default_candidates, evaluate_setting, pareto_front, sweep

    data = prepare(True)
    model = data.model
    policies = _check_policies(args.policies)
    exit_logits = collect_logits(data, args.batch_size, not args.no_progress)
    rows = sweep(exit_logits, default_candidates(len(model.config.exit_layers), policies))
    full_depth_accuracy = rows[0]["accuracy"]
    current_row = evaluate_setting(exit_logits, **_current_setting(model.config))
    fronts = {p: pareto_front([r for r in rows if r["exit_policy"] == p]) for p in policies}
    realized: list[dict[str, Any]] = []
    if args.realized_points > 0:
        batches = data.batches(args.batch_size, args.realized_samples)
        points = [row for p in policies for row in _thin(fronts[p], args.realized_points)]
        for row in tqdm(points, desc="Timing settings", disable=args.no_progress):
            setting = {k: row[k] for k in ("exit_policy", "exit_threshold", "patience") if k in row}
            result = measure(model, batches, setting, args.repeats, args.threads)
            realized.append({**{k: v for k, v in row.items() if k != "exit_fractions"}, **_timing_fields(result)})
    payload = {
        "model": str(args.model_dir),
        "dataset": args.dataset,
        "split": args.split,
        "num_samples": exit_logits.num_samples,
        "full_depth_accuracy": full_depth_accuracy,
        **({"preprocessing": data.preprocessing} if data.is_image else {}),
        "current_setting": current_row,
        "pareto": fronts,
        "realized": realized,
        "rows": rows,
    }
    print(_evaluate_table(full_depth_accuracy, current_row, fronts, realized))
    save_json_report(args.json, payload)
    if args.plot:
        plot_tradeoff(payload, args.plot)
        print(f"Wrote {args.plot}")
    return 0


def _fmt_setting(row: dict[str, Any]) -> str:
    value = row.get("exit_threshold", row.get("patience"))
    return "-" if value is None else f"{value:g}"


def _evaluate_table(full_depth_accuracy, current_row, fronts, realized) -> str:
    timed = {(r["exit_policy"], r.get("exit_threshold"), r.get("patience")): r for r in realized}
    lines = [
        f"Full-depth accuracy: {full_depth_accuracy:.4f}",
        f"Current setting ({current_row['exit_policy']}, {_fmt_setting(current_row)}): accuracy "
        f"{current_row['accuracy']:.4f}, average exit layer {current_row['average_exit_layer']:.2f}, theoretical "
        f"speedup {current_row['theoretical_speedup']:.2f}x",
        "",
        "| policy | threshold / patience | accuracy | average exit layer | theoretical speedup | realized speedup "
        "(on the timed rows) |",
        "|---|---|---|---|---|---|",
    ]
    for policy, front in fronts.items():
        for row in front:
            hit = timed.get((policy, row.get("exit_threshold"), row.get("patience")))
            realized_cell = "-"
            if hit:
                realized_cell = f"{hit['realized_speedup']:.2f}x (theoretical {hit['timed_theoretical_speedup']:.2f}x)"
            lines.append(
                f"| {policy} | {_fmt_setting(row)} | {row['accuracy']:.4f} | {row['average_exit_layer']:.2f} | "
                f"{row['theoretical_speedup']:.2f}x | {realized_cell} |"
            )
    return "\n".join(lines) + "\n"


def plot_tradeoff(payload: dict[str, Any], path: str) -> None:
    """Draws accuracy against speedup (theoretical lines, realized markers) per policy to a PNG.

    Args:
        payload: The ``evaluate`` JSON payload (``full_depth_accuracy``, ``pareto``, ``realized``).
        path: Output PNG path.
    """
    title = f"Accuracy vs speedup ({payload['num_samples']} samples)"
    with speedup_figure(path, "speedup over full depth (x)", title) as axes:
        import matplotlib

        colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        for index, (policy, front) in enumerate(payload["pareto"].items()):
            color = colors[index % len(colors)]
            if front:
                xs = [r["theoretical_speedup"] for r in front]
                axes.plot(xs, [r["accuracy"] for r in front], "-", color=color, label=f"{policy} (theoretical)")
            timed = sorted(
                (r for r in payload["realized"] if r["exit_policy"] == policy), key=lambda r: r["realized_speedup"]
            )
            if timed:
                axes.plot(
                    [r["realized_speedup"] for r in timed],
                    [r["accuracy"] for r in timed],
                    "o--",
                    color=color,
                    label=f"{policy} (realized, batch {timed[0]['batch_size']})",
                )
        axes.axhline(payload["full_depth_accuracy"], color="gray", linestyle=":", label="full depth")
        axes.axvline(1.0, color="gray", linewidth=0.5)
        current = payload.get("current_setting")
        if current and current["exit_policy"] != "none":
            axes.plot(
                [current["theoretical_speedup"]], [current["accuracy"]], "k*", markersize=12, label="current setting"
            )


def cli_bench(args: Any, prepare: Callable[[bool], Any]) -> int:
    """``adaptive-hf bench``: realized against theoretical speedup at each batch size, the model's setting (or the
    one given by ``--policy``/``--threshold``/``--patience``) against full depth, interleaved.

    Args:
        args: The command's arguments (``batch_sizes``, ``repeats``, ``threads``, ``pool_rows``, ``policy``, ...).
        prepare: The CLI's loader of the model and its data.
    """

    data = prepare(False)
    model = data.model
    if args.pool_rows is not None:
        check_number("--pool-rows", args.pool_rows, 1, integer=True)
    chosen = {field: getattr(args, name) for name, field in SETTING_ARGUMENTS.items()}
    setting = {field: value for field, value in chosen.items() if value is not None} or None
    effective = {**_current_setting(model.config), **(setting or {})}
    if effective["exit_policy"] == "none":
        print(
            "Note: the model's exit_policy is 'none' (not calibrated?), so both runs are full depth.", file=sys.stderr
        )
    threads = command_threads(args)
    results = []
    for batch_size in args.batch_sizes:
        batches = data.batches(batch_size)
        if not args.no_progress:
            print(
                f"Timing batch size {batch_size} ({len(batches)} batches, {args.repeats} repeats)...", file=sys.stderr
            )
        results.append(measure(model, batches, setting, args.repeats, threads))
        if args.pool_rows is not None and batch_size > 1:
            results.append(measure(model, batches, setting, args.repeats, threads, pool_rows=args.pool_rows))
    print(_bench_table(effective, data.num_samples, threads, results))
    save_json_report(args.json, {"model": str(args.model_dir), "dataset": args.dataset, "results": results})
    return 0


def _bench_table(effective: dict[str, Any], num_samples: int, threads: int, results: list[dict[str, Any]]) -> str:
    import torch

    lines = [
        f"Setting: {effective}; {num_samples} samples; torch {torch.__version__}, {threads} thread(s)",
        "",
        "| batch size | average exit layer | theoretical speedup | realized speedup | realized / theoretical "
        "| spread |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        spread = max(r["adaptive_spread"], r["full_spread"])
        pooled = f", pooled {r['pool_rows']}" if r.get("pool_rows") else ""
        lines.append(
            f"| {r['batch_size']}{pooled} | {r['average_exit_layer']:.2f} | {r['theoretical_speedup']:.2f}x | "
            f"{r['realized_speedup']:.2f}x | {r['efficiency']:.2f} | {spread:.0%}{' (noisy)' if r['noisy'] else ''} |"
        )
    return "\n".join(lines)
