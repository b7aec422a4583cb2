"""Skim-RNN / LSTM-Jump: accuracy, skim/jump rates, theoretical and realized speedup against full reading.

Measures saved readers (``recipes/readers_text.py`` writes them to ``<output_dir>/<dataset>/<reader>/model``) on the
test split of their dataset, following ../shared/benchmarks.md: accuracy of adaptive reading next to the same
weights with skipping disabled (``reading_policy="full"``: torch's fused LSTM over every token); theoretical
speedup from the per-sample token counts and the FLOP model; realized speedup as the ratio of median wall-clock
times, adaptive and full interleaved on the same batches after a warm-up, at a fixed thread count. For Skim-RNN a
sweep over ``skim_threshold`` (LSTM-Jump: ``stop_threshold``) gives the accuracy / speedup trade-off.

The plain reader the user would have written is timed in the same rounds (A B C A B C ...): the same embedding,
LSTM weights and classifier as a stock ``nn.LSTM`` over every real token (packed sequences, torch's fused kernel;
:class:`~adaptive_hf.readers.evaluation.PlainLSTMClassifier`). ``vs plain`` is its time over the adaptive time;
``full/plain`` is what our full-reading path costs against it (1.00: no overhead)::

    python benchmarks/readers.py --models outputs/readers_text --json outputs/readers_bench.json
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding  # noqa: E402

import adaptive_hf  # noqa: E402, F401  (registers the readers)
from adaptive_hf.core.io import write_json  # noqa: E402
from adaptive_hf.data import load_text_classification, packaged_minilm_path  # noqa: E402
from adaptive_hf.readers.evaluation import (  # noqa: E402
    RUNTIME_KNOBS,
    PlainLSTMClassifier,
    evaluate_reader,
    iterate_batches,
    time_reader,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="outputs/readers_text", help="The recipe's output_dir.")
    parser.add_argument("--tokenizer", default=None, help="Default: the packaged MiniLM tokenizer.")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--eval_samples", type=int, default=1000)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 32, 64])
    parser.add_argument("--timing_samples", type=int, default=128, help="Rows timed per batch size (batch 1: 40).")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sweep", type=float, nargs="*", default=[0.5, 0.3, 0.1, 0.05, 0.02])
    parser.add_argument("--stop_sweep", type=float, nargs="*", default=[0.0, 0.5, 0.8, 0.9, 0.95, 0.97, 0.99])
    parser.add_argument(
        "--stop_threshold", type=float, default=None, help="LSTM-Jump: time at this stop_threshold, not the saved one."
    )
    parser.add_argument(
        "--skim_threshold", type=float, default=None, help="Skim-RNN: time at this skim_threshold, not the saved one."
    )
    parser.add_argument(
        "--pool_rows",
        type=int,
        default=None,
        help="LSTM-Jump: also time each batch size above 1 with continuous batching (classify_stream) over this many "
        "rows at a time, against per-batch full reading.",
    )
    parser.add_argument("--datasets", nargs="*", default=None, help="Only these dataset folders (default: all).")
    parser.add_argument("--json", default=None, help="Write the results here.")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or packaged_minilm_path())
    tokenizer.padding_side = "right"
    collator = DataCollatorWithPadding(tokenizer)
    folders = sorted(Path(args.models).glob("*/*/model/config.json"))
    if args.datasets:
        folders = [f for f in folders if f.parent.parent.parent.name in args.datasets]
    if not folders:
        raise SystemExit(f"No saved readers under {args.models}; run recipes/readers_text.py first.")
    results = []
    for config_file in folders:
        folder = config_file.parent
        dataset_name, reader = folder.parent.parent.name, folder.parent.name
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        knob = RUNTIME_KNOBS[reader][0]
        if getattr(args, knob) is not None:
            setattr(model.config, knob, getattr(args, knob))
        test = load_text_classification(dataset_name, split="test")
        if len(test) > args.eval_samples:
            test = test.shuffle(seed=0).select(range(args.eval_samples))

        def tokenize(rows):
            return tokenizer(rows["text"], truncation=True, max_length=args.max_length, add_special_tokens=False)

        test = test.map(
            tokenize,
            batched=True,
            remove_columns=["text"],
        )
        batches = iterate_batches(test, collator, 64)
        full = evaluate_reader(model, batches, reading_policy="full")
        adaptive = evaluate_reader(model, batches)
        sweep = []
        values = args.sweep if reader == "skim_rnn" else args.stop_sweep
        for value in values:
            point = evaluate_reader(model, batches, **{knob: value})
            sweep.append({"knob": knob, "value": value, **point})
        timing = {}
        plain = PlainLSTMClassifier.from_reader(model)
        for batch_size in args.batch_sizes:
            samples = 40 if batch_size == 1 else max(args.timing_samples, 2 * batch_size)
            timed = iterate_batches(test, collator, batch_size, limit=samples)
            timing[f"batch{batch_size}"] = time_reader(model, timed, repetitions=args.repetitions, plain=plain)
            if args.pool_rows and batch_size > 1 and reader == "jump_lstm":
                timing[f"batch{batch_size}, stream {args.pool_rows}"] = time_reader(
                    model, timed, repetitions=args.repetitions, pool_rows=args.pool_rows, plain=plain
                )
        result = {
            "dataset": dataset_name,
            "reader": reader,
            "folder": str(folder),
            "full": full,
            "adaptive": adaptive,
            "timing": timing,
            "sweep": sweep,
            "settings": {
                k: getattr(model.config, k)
                for k in (
                    "hidden_size",
                    "small_hidden_size",
                    "skim_threshold",
                    "read_tokens",
                    "max_jump",
                    "max_jumps",
                    "stop_threshold",
                )
                if hasattr(model.config, k)
            },
        }
        results.append(result)
        print_result(result)
    if args.json:
        payload = {
            "results": results,
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
            "torch": torch.__version__,
            "threads": args.threads,
            "date": time.strftime("%Y-%m-%d"),
        }
        write_json(args.json, payload)


def print_result(r: dict) -> None:
    a, f = r["adaptive"], r["full"]
    theo = a["theoretical_speedup"]
    print(f"\n## {r['dataset']} / {r['reader']}  {r['settings']}")
    print(
        f"accuracy full {f['accuracy']:.4f}  adaptive {a['accuracy']:.4f}  read {a['read_rate']:.2f} "
        f"skim {a['skim_rate']:.2f} jump {a['jump_rate']:.2f}  theoretical {theo:.2f}x"
    )
    print(
        "| batch | full ms/pass | adaptive ms/pass | plain ms/pass | realized | theoretical (timed) | "
        "realized/theoretical | realized vs plain | real/theo vs plain | full/plain | spread |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, t in r["timing"].items():
        noisy = "  (noisy)" if t["spread"] > 1.3 else ""
        print(
            f"| {name[5:]} | {t['full_s'] * 1e3:.1f} | {t['adaptive_s'] * 1e3:.1f} | {t['plain_s'] * 1e3:.1f} | "
            f"{t['realized_speedup']:.2f}x | {t['theoretical_speedup']:.2f}x | {t['efficiency']:.2f} | "
            f"{t['realized_speedup_vs_plain']:.2f}x | {t['efficiency_vs_plain']:.2f} | {t['full_over_plain']:.3f} | "
            f"{t['spread']:.2f}{noisy} |"
        )
    if r["sweep"]:
        print(f"| {r['sweep'][0]['knob']} | accuracy | read rate | theoretical |")
        print("|---|---|---|---|")
        for s in r["sweep"]:
            print(f"| {s['value']} | {s['accuracy']:.4f} | {s['read_rate']:.2f} | {s['theoretical_speedup']:.2f}x |")


if __name__ == "__main__":
    main()
