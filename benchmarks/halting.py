"""Halting benchmark: accuracy and realized vs theoretical speedup of trained halting classifiers.

Train the models with the recipe first, then time them here, side by side with the same weights at full depth::

    python recipes/halting_text.py --output_dir outputs/halting_token
    python recipes/halting_text.py --output_dir outputs/halting_sample --halting_granularity sample
    python benchmarks/halting.py outputs/halting_token/model outputs/halting_sample/model --json halting.json

Vision halting models (``HaltingTimmForImageClassification``, from ``recipes/halting_vision.py``) are timed on the
test split of ``--image_dataset``::

    python recipes/halting_vision.py --output_dir outputs/halting_vision
    python benchmarks/halting.py outputs/halting_vision/model --batch_sizes 1,32,64

Per shared/benchmarks.md: quality on the test split next to full depth, theoretical speedup from the outputs
(``halting_flops``), realized speedup interleaved after warm-up, median of ``--repeats``, fixed threads. Three
models run in the same rounds (A B C A B C ...): the halting model, the same weights at full depth, and the plain
model the user started from (text: the stock ``<Arch>ForSequenceClassification`` with these backbone weights;
vision: the timm model itself). ``vs plain`` is plain time over halting time; ``full/plain`` is what our
full-depth path costs against the plain model (1.00: no overhead).
"""

from __future__ import annotations

import argparse
import copy
import platform

import torch
from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification, AutoTokenizer

import adaptive_hf  # noqa: F401  (registers the halting classes)
from adaptive_hf.core.batching import iterate_batches
from adaptive_hf.core.io import write_json
from adaptive_hf.data import load_image_classification, load_text_classification
from adaptive_hf.early_exit.benchmarking import plain_counterpart
from adaptive_hf.halting.benchmarking import measure_halting_speedup
from adaptive_hf.halting.evaluation import evaluate_halting


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the benchmark; returns one result per model and batch size."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dirs", nargs="+", help="Saved halting models (with their tokenizer).")
    parser.add_argument("--dataset", default="amazon_fine_food")
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--image_dataset", default="mnist_subset", help="Test images for vision halting models.")
    parser.add_argument("--max_test_samples", type=int, default=None)
    parser.add_argument("--batch_sizes", default="1,32,64")
    parser.add_argument("--bench_samples", type=int, default=128, help="Test rows timed per batch size.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="Write the results here.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    text_test = None
    for model_dir in args.model_dirs:
        if AutoConfig.from_pretrained(model_dir).model_type == "halting_timm":
            results.extend(_vision_results(model_dir, args))
            continue
        if text_test is None:
            text_test = load_text_classification(args.dataset, split="test")
            if args.max_test_samples:
                text_test = text_test.select(range(min(args.max_test_samples, len(text_test))))
        test = text_test
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        data = test.map(
            lambda batch, tokenizer=tokenizer: tokenizer(batch["text"], truncation=True, max_length=args.max_length),
            batched=True,
            remove_columns=["text"],
        )
        quality = {row["setting"]: row for row in evaluate_halting(model, data, tokenizer=tokenizer)}
        full, adaptive = quality["full depth"], quality[f"threshold={model.config.halting_threshold}"]
        plain = plain_counterpart(model)
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            rows = min(len(data), max(batch_size, args.bench_samples - args.bench_samples % batch_size))
            batches = list(iterate_batches(data.select(range(rows)), batch_size, tokenizer=tokenizer))
            timing = measure_halting_speedup(model, batches, repeats=args.repeats, threads=args.threads, plain=plain)
            results.append(_result(model_dir, model, full, adaptive, timing))
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads")
    print(
        "| model | granularity | batch | acc full | acc halting | avg steps | theoretical | realized | real/theo | "
        "realized vs plain | real/theo vs plain | full/plain |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['model']} | {r['halting']}/{r['granularity']} | {r['batch_size']} | "
            f"{100 * r['full_depth_accuracy']:.2f} | {100 * r['accuracy']:.2f} | {r['average_steps']:.2f} | "
            f"{r['theoretical_speedup']:.2f}x | {r['realized_speedup']:.2f}x | {r['efficiency']:.2f} | "
            f"{r['realized_speedup_vs_plain']:.2f}x | {r['efficiency_vs_plain']:.2f} | {r['full_over_plain']:.3f}"
            f"{' (noisy)' if r['noisy'] else ''} |"
        )
    if args.json:
        write_json(args.json, results)
    return results


def _result(model_dir, model, full, adaptive, timing) -> dict:
    return {
        "model": model_dir,
        "halting": model.config.halting,
        "granularity": model.config.halting_granularity,
        "halting_threshold": model.config.halting_threshold,
        "full_depth_accuracy": full["accuracy"],
        "accuracy": adaptive["accuracy"],
        "test_theoretical_speedup": adaptive["theoretical_speedup"],
        **timing,
    }


def _vision_results(model_dir: str, args) -> list[dict]:
    """Quality on the whole image test split (or ``--max_test_samples``) and timing on its first images."""
    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    channels = model.timm_model.patch_embed.proj.in_channels
    pixels, labels = load_image_classification(args.image_dataset, channels=channels)["test"]
    if args.max_test_samples:
        pixels, labels = pixels[: args.max_test_samples], labels[: args.max_test_samples]
    batches = [{"pixel_values": pixels[i : i + 64]} for i in range(0, len(labels), 64)]
    quality = {row["setting"]: row for row in evaluate_halting(model, batches=batches, labels=labels)}
    full, adaptive = quality["full depth"], quality[f"threshold={model.config.halting_threshold}"]
    timm_model = copy.deepcopy(model.timm_model).eval()  # the stock timm model, in its own memory

    def plain(pixel_values):
        return timm_model(pixel_values)

    results = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        rows = min(len(labels), max(batch_size, args.bench_samples - args.bench_samples % batch_size))
        timed = [{"pixel_values": pixels[i : i + batch_size]} for i in range(0, rows, batch_size)]
        timing = measure_halting_speedup(model, timed, repeats=args.repeats, threads=args.threads, plain=plain)
        results.append(_result(model_dir, model, full, adaptive, timing))
    return results


if __name__ == "__main__":
    main()
