"""Train and evaluate an ACT / PonderNet halting text classifier with the stock ``Trainer``.

Offline defaults: the packaged all-MiniLM-L6-v2 on the Amazon fine-food reviews, per-token ACT::

    python recipes/halting_text.py --output_dir outputs/halting_text
    python recipes/halting_text.py --output_dir outputs/halting_sample --halting_granularity sample --halting pondernet

Prints accuracy against average steps (and the token-layer fraction) over a sweep of halting thresholds on the
test split, and the realized speedup against the same weights at full depth; saves the model and a JSON report.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers import (  # noqa: E402
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)

from adaptive_hf import AutoHaltingModelForSequenceClassification  # noqa: E402
from adaptive_hf.core.batching import iterate_batches  # noqa: E402
from adaptive_hf.core.io import write_json  # noqa: E402
from adaptive_hf.data import load_text_classification, packaged_minilm_path  # noqa: E402
from adaptive_hf.halting.benchmarking import measure_halting_speedup  # noqa: E402
from adaptive_hf.halting.evaluation import evaluate_halting, format_halting_report  # noqa: E402
from adaptive_hf.training import exit_compute_metrics  # noqa: E402

TRAINING_DEFAULTS = {
    "learning_rate": "1e-4",
    "num_train_epochs": "2",
    "per_device_train_batch_size": "16",
    "per_device_eval_batch_size": "64",
    "warmup_steps": "0.06",
    "logging_steps": "25",
    "eval_strategy": "no",
    "save_strategy": "no",
    "report_to": "none",
    "seed": "42",
}


@dataclass
class HaltingRecipeArguments:
    """Model, data, halting settings and timing.

    Args:
        model_name_or_path: Hub name or local folder of a supported encoder (default: the packaged MiniLM).
        dataset_name: Offline name (``amazon_fine_food``, ``trump_tweets``), Hub dataset or local file.
        max_length: Tokens kept per text.
        max_train_samples: Training rows (seeded subset).
        max_test_samples: Test rows for the report.
        halting: ``act`` or ``pondernet``.
        halting_granularity: ``sample`` or ``token``.
        halting_threshold: Halting threshold used for the saved model and the timing.
        ponder_cost: ACT's tau.
        prior_lambda: PonderNet's geometric prior.
        kl_weight: PonderNet's KL weight.
        sweep: Comma-separated thresholds evaluated on the test split.
        bench_batch_sizes: Batch sizes timed.
        bench_samples: Test rows timed per batch size.
        bench_threads: Fixed thread count while timing.
    """

    model_name_or_path: str | None = field(default=None, metadata={"help": "Default: the packaged MiniLM."})
    dataset_name: str = field(default="amazon_fine_food")
    max_length: int = field(default=64)
    max_train_samples: int | None = field(default=2000)
    max_test_samples: int | None = field(default=None)
    halting: str = field(default="act")
    halting_granularity: str = field(default="token")
    halting_threshold: float = field(default=0.9)
    ponder_cost: float = field(default=0.01)
    prior_lambda: float = field(default=0.2)
    kl_weight: float = field(default=0.01)
    sweep: str = field(default="0.5,0.7,0.8,0.9,0.95,0.99")
    bench_batch_sizes: str = field(default="1,32,64")
    bench_samples: int = field(default=64)
    bench_threads: int = field(default=2)


def main(argv: list[str] | None = None) -> dict:
    """Runs the recipe and returns the report."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = [item for key, value in TRAINING_DEFAULTS.items() for item in (f"--{key}", value)]
    parser = HfArgumentParser((HaltingRecipeArguments, TrainingArguments))
    args, training_args = parser.parse_args_into_dataclasses(args=defaults + argv)
    set_seed(training_args.seed)
    model_path = args.model_name_or_path or packaged_minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path)

    data = load_text_classification(args.dataset_name)
    if args.max_train_samples:
        data["train"] = data["train"].shuffle(seed=0).select(range(min(args.max_train_samples, len(data["train"]))))
    if args.max_test_samples:
        data["test"] = data["test"].select(range(min(args.max_test_samples, len(data["test"]))))
    data = data.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=args.max_length),
        batched=True,
        remove_columns=["text"],
    )
    num_labels = len(set(data["train"]["label"]))
    model = AutoHaltingModelForSequenceClassification.from_pretrained(
        model_path,
        num_labels=num_labels,
        halting=args.halting,
        halting_granularity=args.halting_granularity,
        halting_threshold=args.halting_threshold,
        ponder_cost=args.ponder_cost,
        prior_lambda=args.prior_lambda,
        kl_weight=args.kl_weight,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=exit_compute_metrics,
    )
    trainer.train()

    thresholds = [float(t) for t in args.sweep.split(",") if t.strip()]
    rows = evaluate_halting(model, data["test"], thresholds, tokenizer=tokenizer)
    timings = []
    for batch_size in [int(b) for b in args.bench_batch_sizes.split(",") if b.strip()]:
        rows_timed = min(len(data["test"]), max(batch_size, args.bench_samples - args.bench_samples % batch_size))
        batches = list(iterate_batches(data["test"].select(range(rows_timed)), batch_size, tokenizer=tokenizer))
        timing = measure_halting_speedup(model, batches, threads=args.bench_threads)
        timings.append(timing)

    print(
        format_halting_report(
            f"\n{args.halting} / {args.halting_granularity} on {args.dataset_name} (test, {len(data['test'])} rows)",
            rows,
            timings,
        )
    )
    os.makedirs(training_args.output_dir, exist_ok=True)
    model.save_pretrained(os.path.join(training_args.output_dir, "model"))
    tokenizer.save_pretrained(os.path.join(training_args.output_dir, "model"))
    report = {"arguments": asdict(args), "sweep": rows, "timings": timings}
    write_json(os.path.join(training_args.output_dir, "report.json"), report)
    return report


if __name__ == "__main__":
    main()
