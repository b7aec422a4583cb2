"""Continuous batching of a text early-exit model: ``classify_stream`` against per-batch calls and full depth.

Measured as ``shared/benchmarks.md`` asks for streams: a trained early-exit model at its calibrated setting (the one
saved in its config), the test split's own mix of lengths (dynamic padding per batch), and for each batch size three
runs over the same batches, interleaved in rounds (streamed, per-batch ``model(**batch)``, full depth through
``adaptive_hf.full_compute``) after a warm-up round, medians of ``--repeats`` rounds, a fixed thread count. The
theoretical speedup counts each sample's exit FLOPs at its own token count (``model.exit_flops``, heads included).
The streamed exits are checked against the per-batch ones before timing.

    python recipes/early_exit_text.py --output_dir outputs/early_exit_text
    python benchmarks/early_exit_stream.py --model outputs/early_exit_text --json stream.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

import adaptive_hf  # noqa: E402
from adaptive_hf import AutoEarlyExitModelForSequenceClassification  # noqa: E402
from adaptive_hf.core.batching import iterate_batches  # noqa: E402
from adaptive_hf.core.io import write_json  # noqa: E402
from adaptive_hf.core.timing import time_rounds  # noqa: E402
from adaptive_hf.data import load_text_classification  # noqa: E402
from adaptive_hf.early_exit.benchmarking import theoretical_speedup  # noqa: E402

RUNS = ("streamed", "per_batch", "full_depth")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="outputs/early_exit_text", help="Trained early-exit folder (the recipe's).")
    parser.add_argument("--dataset", default="amazon_fine_food", help="Its dataset; the test split is timed.")
    parser.add_argument("--max_length", type=int, default=64, help="Tokens kept per text (the recipe's default).")
    parser.add_argument("--samples", type=int, default=256, help="Test rows timed (in split order).")
    parser.add_argument("--batch_sizes", default="16,64")
    parser.add_argument("--pool_rows", type=int, default=64, help="classify_stream pool (rows per segment run).")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every timing.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed rounds (median).")
    parser.add_argument("--json", help="Write the results here.")
    return parser.parse_args(argv)


def test_batches(args, tokenizer, batch_size: int) -> list[dict]:
    """The first ``--samples`` test rows, tokenized and padded per batch (the split's own length mix)."""
    data = load_text_classification(args.dataset, split="test")
    data = data.select(range(min(args.samples, len(data))))
    texts = [str(text) for text in data["text"]]
    encoded = tokenizer(texts, truncation=True, max_length=args.max_length)
    columns = {name: encoded[name] for name in ("input_ids", "attention_mask", "token_type_ids") if name in encoded}
    return list(iterate_batches(columns, batch_size, tokenizer=tokenizer))


def measure(model, batches: list[dict], pool_rows: int, repeats: int, threads: int) -> dict:
    """Times the three runs in interleaved rounds and relates them to the theoretical speedup."""

    def streamed():
        return torch.cat([out.exit_layer for out in model.classify_stream(batches, pool_rows)])

    def per_batch():
        return torch.cat([model(**batch).exit_layer for batch in batches])

    def full_depth():
        with adaptive_hf.full_compute(model):
            return [model(**batch).logits for batch in batches]

    with torch.inference_mode():
        exits = streamed()
        if not torch.equal(exits, per_batch()):
            raise RuntimeError("classify_stream made other exits than model(**batch); not timing a wrong result.")
    times, _, used_threads = time_rounds([streamed, per_batch, full_depth], repeats, warmup=1, threads=threads)
    seconds = {name: statistics.median(t) for name, t in zip(RUNS, times)}
    theoretical = theoretical_speedup(model, batches, exits, model.config.exit_policy)
    realized = {name: seconds["full_depth"] / seconds[name] for name in RUNS[:2]}
    return {
        "batch_size": max(int(b["input_ids"].size(0)) for b in batches),
        "pool_rows": pool_rows,
        "num_samples": int(exits.numel()),
        "mean_tokens": float(torch.cat([b["attention_mask"].sum(-1) for b in batches]).double().mean()),
        "mean_padded_tokens": float(sum(b["input_ids"].numel() for b in batches) / exits.numel()),
        "average_exit_layer": float(exits.double().mean()),
        "threads": used_threads,
        "repeats": repeats,
        "seconds": seconds,
        "spread": {name: (max(t) - min(t)) / statistics.median(t) for name, t in zip(RUNS, times)},
        "theoretical_speedup": theoretical,
        "realized_speedup": realized,
        "realized_over_theoretical": {name: value / theoretical for name, value in realized.items()},
    }


def format_table(setting: dict, results: list[dict]) -> str:
    """A markdown table: one row per batch size."""
    lines = [
        f"Setting {setting}; torch {torch.__version__}",
        "",
        "| batch | pool | samples | mean tokens (padded) | avg exit layer | theoretical | streamed | per batch "
        "| streamed / theoretical | per batch / theoretical | spread (max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        realized, ratio = r["realized_speedup"], r["realized_over_theoretical"]
        lines.append(
            f"| {r['batch_size']} | {r['pool_rows']} | {r['num_samples']} | {r['mean_tokens']:.1f} "
            f"({r['mean_padded_tokens']:.1f}) | {r['average_exit_layer']:.2f} | {r['theoretical_speedup']:.2f}x | "
            f"{realized['streamed']:.2f}x | {realized['per_batch']:.2f}x | {ratio['streamed']:.2f} | "
            f"{ratio['per_batch']:.2f} | {max(r['spread'].values()):.0%} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Runs the benchmark; prints the table and returns the payload."""
    args = parse_args(argv)
    model = AutoEarlyExitModelForSequenceClassification.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    config = model.config
    setting = {"exit_policy": config.exit_policy}
    setting.update({"patience": config.patience} if config.exit_policy == "patience" else {})
    setting.update({"exit_threshold": config.exit_threshold} if config.exit_policy != "patience" else {})
    results = []
    for batch_size in [int(size) for size in args.batch_sizes.split(",")]:
        batches = test_batches(args, tokenizer, batch_size)
        print(f"Timing batch {batch_size} ({len(batches)} batches, {args.repeats} rounds)...", file=sys.stderr)
        results.append(measure(model, batches, args.pool_rows, args.repeats, args.threads))
    print(format_table(setting, results))
    payload = {"model": args.model, "dataset": args.dataset, "split": "test", "setting": setting, "results": results}
    if args.json:
        write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
