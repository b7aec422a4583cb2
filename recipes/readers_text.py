"""Train and evaluate the Skim-RNN and LSTM-Jump readers with the stock ``Trainer``, offline.

Defaults: token embeddings copied (frozen) from the packaged all-MiniLM-L6-v2 and its tokenizer, trained on the
Amazon fine-food reviews (binary) and the Trump tweets (3-class source)::

    python recipes/readers_text.py --output_dir outputs/readers_text

Steps per dataset and reader: tokenize (right padding, no special tokens); build the reader with
``from_pretrained_embeddings``; train with ``Trainer`` (the loss holds the skim penalty or the REINFORCE terms);
calibrate the runtime knob on the validation split with ``adaptive_hf.calibrate`` (``skim_threshold`` for Skim-RNN,
``stop_threshold`` for LSTM-Jump: the cheapest value certified, with confidence ``1 - --delta``, to lose at most
``--max_accuracy_drop`` against full reading; full reading when none is); report on the test split accuracy,
skim/jump rates and theoretical speedup against the same reader with skipping disabled
(``reading_policy="full"``), and realized wall-clock at batch 1 and 32 (interleaved, medians, ``--threads``
fixed); save each model and ``results.json``.
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
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

import adaptive_hf  # noqa: E402
from adaptive_hf.core.io import write_json  # noqa: E402
from adaptive_hf.data import load_text_classification, packaged_minilm_path  # noqa: E402
from adaptive_hf.readers.evaluation import (  # noqa: E402
    RUNTIME_KNOBS,
    evaluate_reader,
    iterate_batches,
    time_reader,
)
from adaptive_hf.readers.training import FullReadingWarmupCallback  # noqa: E402

READER_CLASSES = {
    "skim_rnn": adaptive_hf.SkimRnnForSequenceClassification,
    "jump_lstm": adaptive_hf.JumpLstmForSequenceClassification,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/readers_text")
    parser.add_argument("--datasets", nargs="+", default=["amazon_fine_food", "trump_tweets"])
    parser.add_argument("--readers", nargs="+", default=["skim_rnn", "jump_lstm"], choices=sorted(READER_CLASSES))
    parser.add_argument("--model_name_or_path", default=None, help="Tokenizer and embeddings (default: MiniLM).")
    parser.add_argument("--max_train_samples", type=int, default=4000)
    parser.add_argument("--max_eval_samples", type=int, default=1000)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument(
        "--embedding_std",
        type=float,
        default=1.0,
        help="Rescale the copied embeddings to this standard deviation (MiniLM's is 0.056, too small for a fresh "
        "LSTM to pick up in a short run); 0 keeps them as they are.",
    )
    parser.add_argument("--hidden_size", type=int, default=512)
    parser.add_argument("--small_hidden_size", type=int, default=16)
    parser.add_argument("--skim_penalty", type=float, default=0.02)
    parser.add_argument("--gumbel_temperature", type=float, default=0.5)
    # LSTM-Jump defaults: the settings that skipped most at a similar validation accuracy in our short runs.
    parser.add_argument("--read_tokens", type=int, default=4)
    parser.add_argument("--max_jump", type=int, default=12)
    parser.add_argument("--max_jumps", type=int, default=8)
    parser.add_argument("--entropy_coef", type=float, default=0.01)
    parser.add_argument(
        "--read_penalty", type=float, default=0.25, help="LSTM-Jump reward shaping: minus this x fraction read."
    )
    parser.add_argument(
        "--reward",
        default="accuracy",
        choices=["accuracy", "probability"],
        help="LSTM-Jump REINFORCE reward: +-1 for a right/wrong prediction, or 2 p(label) - 1 (less variance).",
    )
    parser.add_argument(
        "--full_reading_loss_coef",
        type=float,
        default=0.0,
        help="LSTM-Jump: also train on the batch read in full, with this weight on its cross-entropy.",
    )
    parser.add_argument(
        "--policy_gradient_to_reader", type=int, default=1, help="0: REINFORCE trains only the jump policy."
    )
    parser.add_argument(
        "--full_reading_warmup",
        type=float,
        default=0.0,
        help="Fraction of the training steps that read every token before the reader learns to skip "
        "(FullReadingWarmupCallback); 0: adaptive reading from the first step.",
    )
    parser.add_argument("--num_train_epochs", type=float, default=2.0)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_accuracy_drop", type=float, default=0.005)
    parser.add_argument("--delta", type=float, default=0.1, help="1 - confidence of the calibrated bound.")
    parser.add_argument("--timing_samples_batch1", type=int, default=40)
    parser.add_argument("--timing_samples_batch32", type=int, default=128)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (training and timing).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--calibrate_saved",
        action="store_true",
        help="Do not train: load the readers saved under --output_dir, re-pick their runtime knob on validation, "
        "evaluate, time and save them again.",
    )
    parser.add_argument(
        "--train_full_reference",
        action="store_true",
        help="Also train each reader with reading_policy='full' (a plain LSTM of the same size): the accuracy "
        "reference that skipping should be compared with.",
    )
    return parser.parse_args(argv)


def reader_settings(kind: str, args) -> dict:
    if kind == "skim_rnn":
        return {
            "small_hidden_size": args.small_hidden_size,
            "skim_penalty": args.skim_penalty,
            "gumbel_temperature": args.gumbel_temperature,
        }
    return {
        "read_tokens": args.read_tokens,
        "max_jump": args.max_jump,
        "max_jumps": args.max_jumps,
        "entropy_coef": args.entropy_coef,
        "read_penalty": args.read_penalty,
        "reward": args.reward,
        "full_reading_loss_coef": args.full_reading_loss_coef,
        "policy_gradient_to_reader": bool(args.policy_gradient_to_reader),
    }


def run_one(kind: str, dataset_name: str, data, tokenizer, embeddings_path: str, num_labels: int, args) -> dict:
    set_seed(args.seed)
    model = READER_CLASSES[kind].from_pretrained_embeddings(
        embeddings_path,
        num_labels=num_labels,
        hidden_size=args.hidden_size,
        freeze_embeddings=True,
        **reader_settings(kind, args),
    )
    if args.embedding_std > 0:
        with torch.no_grad():
            model.embeddings.weight.mul_(args.embedding_std / model.embeddings.weight.std())
    collator = DataCollatorWithPadding(tokenizer)
    output_dir = Path(args.output_dir) / dataset_name / kind
    training_args = TrainingArguments(
        output_dir=str(output_dir / "trainer"),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.num_train_epochs,
        learning_rate=args.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=20,
        logging_steps=25,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=args.seed,
    )
    # One thread: on a shared, loaded machine several OpenMP threads spin and run many times slower.
    torch.set_num_threads(args.threads)
    callbacks = [FullReadingWarmupCallback(args.full_reading_warmup)] if args.full_reading_warmup > 0 else []
    trainer = Trainer(
        model=model, args=training_args, train_dataset=data["train"], data_collator=collator, callbacks=callbacks
    )
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started
    return calibrate_and_report(model, kind, dataset_name, data, collator, output_dir, train_seconds, args)


def calibrate_and_report(model, kind, dataset_name, data, collator, output_dir, train_seconds, args) -> dict:
    """Picks the runtime knob on validation, evaluates and times on test, saves the model; returns the result."""
    model.eval()
    validation = iterate_batches(data["validation"], collator, 64)
    test = iterate_batches(data["test"], collator, 64)
    knob = RUNTIME_KNOBS[kind][0]
    report = adaptive_hf.calibrate(
        model, validation, max_accuracy_drop=args.max_accuracy_drop, delta=args.delta, show_progress=False
    )
    value = getattr(model.config, knob)
    print(f"{kind} on {dataset_name}: {report.statement()}")
    full = evaluate_reader(model, test, reading_policy="full")
    adaptive = evaluate_reader(model, test)  # the calibrated setting (full reading when none was certified)
    torch.set_num_threads(args.threads)
    timing = {}
    for batch_size, samples in ((1, args.timing_samples_batch1), (32, args.timing_samples_batch32)):
        batches = iterate_batches(data["test"], collator, batch_size, limit=samples)
        timing[f"batch{batch_size}"] = time_reader(model, batches, repetitions=args.repetitions)
        if kind == "jump_lstm" and batch_size > 1:  # continuous batching over the same rows (classify_stream)
            timing[f"batch{batch_size}_stream"] = time_reader(
                model, batches, repetitions=args.repetitions, pool_rows=batch_size
            )
    model.save_pretrained(output_dir / "model")
    return {
        "dataset": dataset_name,
        "reader": kind,
        "config": {k: v for k, v in model.config.to_dict().items() if not k.startswith("_")},
        "train_seconds": train_seconds,
        "test_full": full,
        "test_adaptive": adaptive,
        "accuracy_drop": full["accuracy"] - adaptive["accuracy"],
        "timing": timing,
        "runtime_knob": {knob: value},
        "calibration": report.to_dict(),
    }


def train_full_reference(kind, dataset_name, data, tokenizer, embeddings_path, num_labels, args) -> dict:
    """Test accuracy of the same reader trained and evaluated with ``reading_policy="full"`` (a plain LSTM)."""
    set_seed(args.seed)
    model = READER_CLASSES[kind].from_pretrained_embeddings(
        embeddings_path,
        num_labels=num_labels,
        hidden_size=args.hidden_size,
        freeze_embeddings=True,
        reading_policy="full",
        **reader_settings(kind, args),
    )
    if args.embedding_std > 0:
        with torch.no_grad():
            model.embeddings.weight.mul_(args.embedding_std / model.embeddings.weight.std())
    collator = DataCollatorWithPadding(tokenizer)
    training_args = TrainingArguments(
        output_dir=str(Path(args.output_dir) / dataset_name / f"{kind}_full_reference"),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.num_train_epochs,
        learning_rate=args.learning_rate,
        warmup_steps=20,
        logging_steps=25,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=args.seed,
    )
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    Trainer(model=model, args=training_args, train_dataset=data["train"], data_collator=collator).train()
    seconds = time.perf_counter() - started
    test = iterate_batches(data["test"], collator, 64)
    return {"accuracy": evaluate_reader(model, test)["accuracy"], "train_seconds": seconds}


def table(results: list[dict]) -> str:
    lines = [
        "| dataset | reader | acc full | acc adaptive | read / skim / jump rate | theoretical | realized b1 | "
        "realized b32 | realized b32, streamed | realized/theoretical (b1, b32) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        a, t = r["test_adaptive"], r["timing"]
        theo = a["theoretical_speedup"]
        b1, b32 = t["batch1"]["realized_speedup"], t["batch32"]["realized_speedup"]
        stream = t.get("batch32_stream")
        streamed = f"{stream['realized_speedup']:.2f}x (spread {stream['spread']:.2f})" if stream else "-"
        lines.append(
            f"| {r['dataset']} | {r['reader']} | {r['test_full']['accuracy']:.4f} | {a['accuracy']:.4f} | "
            f"{a['read_rate']:.2f} / {a['skim_rate']:.2f} / {a['jump_rate']:.2f} | {theo:.2f}x | {b1:.2f}x "
            f"(spread {t['batch1']['spread']:.2f}) | {b32:.2f}x (spread {t['batch32']['spread']:.2f}) | {streamed} | "
            f"{b1 / theo:.2f}, {b32 / theo:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    embeddings_path = args.model_name_or_path or packaged_minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(embeddings_path)
    tokenizer.padding_side = "right"
    results = []
    for dataset_name in args.datasets:
        raw = load_text_classification(dataset_name, seed=args.seed)
        limits = {"train": args.max_train_samples, "validation": args.max_eval_samples, "test": args.max_eval_samples}
        data = {}
        for split, part in raw.items():
            if limits[split] and len(part) > limits[split]:
                part = part.shuffle(seed=args.seed).select(range(limits[split]))
            data[split] = part.map(
                lambda rows: tokenizer(
                    rows["text"], truncation=True, max_length=args.max_length, add_special_tokens=False
                ),
                batched=True,
                remove_columns=["text"],
            )
        num_labels = raw["train"].features["label"].num_classes
        for kind in args.readers:
            if args.calibrate_saved:
                folder = Path(args.output_dir) / dataset_name / kind
                model = AutoModelForSequenceClassification.from_pretrained(folder / "model")
                collator = DataCollatorWithPadding(tokenizer)
                result = calibrate_and_report(model, kind, dataset_name, data, collator, folder, None, args)
            else:
                result = run_one(kind, dataset_name, data, tokenizer, embeddings_path, num_labels, args)
            results.append(result)
            print(table([result]), flush=True)
            if args.train_full_reference:
                reference = train_full_reference(
                    kind, dataset_name, data, tokenizer, embeddings_path, num_labels, args
                )
                result["full_reference"] = reference
                print(f"full-reading reference ({kind} trained without skipping): {reference}", flush=True)
    summary = {
        "results": results,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "torch": torch.__version__,
        "threads_for_timing": args.threads,
        "date": time.strftime("%Y-%m-%d"),
        "command": "python recipes/readers_text.py " + " ".join(os.sys.argv[1:]),
    }
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(args.output_dir) / "results.json", summary)
    print(table(results))


if __name__ == "__main__":
    main()
