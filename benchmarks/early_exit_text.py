"""Benchmark of early-exit text classification, measured as ``shared/benchmarks.md`` asks.

Reports, on the held-out test split (never seen by calibration):

* quality: each exit policy's calibrated setting (chosen on the validation split, ``max_accuracy_drop``) next to
  the same model at full depth (policy ``none``);
* theoretical speedup from the outputs (exit layers x ``model.exit_flops`` per sample, heads included);
* realized speedup at batch 1 and 64: adaptive vs full depth on the same inputs, same process, interleaved
  A B A B after warm-up, median of ``--repeats`` (>= 5) repetitions, fixed ``torch.set_num_threads``;
  realized / theoretical; and the same against the plain backbone model (the stock
  ``<Arch>ForSequenceClassification`` with the same backbone weights, timed in the same rounds), with full compute
  over plain;
* training cost: time per optimizer step of the early-exit model (each training scheme) against plain
  fine-tuning (``BertForSequenceClassification`` on the same backbone, same batch), interleaved, median.

Use a trained model folder (e.g. the recipe's output) or let the script fine-tune one quickly::

    python benchmarks/early_exit_text.py --model outputs/early_exit_text --json bench.json
    python benchmarks/early_exit_text.py --train_samples 1000 --json bench.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

import adaptive_hf  # noqa: E402
import adaptive_hf.early_exit.heads  # noqa: E402
from adaptive_hf.core.batching import iterate_batches
from adaptive_hf.core.io import write_json  # noqa: E402
from adaptive_hf.data import load_text_classification, packaged_minilm_path  # noqa: E402
from adaptive_hf.early_exit.benchmarking import measure_speedup, plain_counterpart  # noqa: E402
from adaptive_hf.early_exit.calibration import (  # noqa: E402
    SWEEP_POLICIES,
    collect_exit_logits,
    evaluate_setting,
)

TRAINING_SCHEMES = ("joint", "distill", "two_stage")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Trained early-exit folder; default: fine-tune the backbone quickly here.")
    parser.add_argument("--backbone", help="Backbone for quick training and the training-cost comparison.")
    parser.add_argument("--dataset", default="amazon_fine_food")
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--train_samples", type=int, default=1000, help="Quick training: rows (1 epoch).")
    parser.add_argument("--epochs", type=float, default=1.0, help="Quick training: epochs.")
    parser.add_argument("--learning_rate", type=float, default=1e-4, help="Quick training: learning rate.")
    parser.add_argument("--head_pooling", "--exit_pooling", default="mean", help="mean, cls or pooler.")
    parser.add_argument("--head_type", "--exit_head", default="mlp", help="linear or mlp (--exit_head: old name).")
    parser.add_argument("--exit_training", default="joint")
    parser.add_argument("--max_eval_samples", type=int, help="Validation rows for calibration (default: all).")
    parser.add_argument("--max_test_samples", type=int, help="Test rows for quality (default: all).")
    parser.add_argument("--max_accuracy_drop", type=float, default=0.005)
    parser.add_argument("--policies", default=",".join(SWEEP_POLICIES))
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for every timing.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed repetitions (median).")
    parser.add_argument("--batch_sizes", default="1,64")
    parser.add_argument("--bench_samples", type=int, default=128, help="Test rows timed at batch sizes > 1.")
    parser.add_argument("--bench_single_samples", type=int, default=48, help="Test rows timed at batch 1.")
    parser.add_argument("--train_cost_batch", type=int, default=16, help="Training-cost batch size.")
    parser.add_argument("--train_cost_steps", type=int, default=2, help="Optimizer steps per timed repetition.")
    parser.add_argument("--train_schemes", default=",".join(TRAINING_SCHEMES), help="Schemes in the cost table.")
    parser.add_argument("--skip_train_cost", action="store_true")
    parser.add_argument(
        "--probe_heads",
        action="store_true",
        help="Only compare poolings and heads on frozen backbone features (--train_samples rows), then exit.",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="Write the results here.")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        print(f"warning: --repeats {args.repeats} < 5 (benchmarks.md asks for at least 5)", file=sys.stderr)
    return args


def tokenize(data, tokenizer, max_length: int):
    """Tokenized splits (unpadded; batches pad to their longest row)."""
    return data.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=["text"],
    )


def quick_train(args, backbone: str, tokenized, num_labels: int, output_dir: str):
    """Fine-tunes an early-exit model with the stock Trainer on a seeded subset (1 epoch by default)."""
    model = adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_pretrained(
        backbone,
        num_labels=num_labels,
        head_pooling=args.head_pooling,
        head_type=args.head_type,
        exit_training=args.exit_training,
    )
    train = tokenized["train"].shuffle(seed=args.seed).select(range(min(args.train_samples, len(tokenized["train"]))))
    callbacks = []
    if args.exit_training == "two_stage":
        from adaptive_hf.training import TwoStageExitTrainingCallback

        callbacks.append(TwoStageExitTrainingCallback())
    training_args = TrainingArguments(
        output_dir=output_dir,
        learning_rate=args.learning_rate,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=16,
        warmup_steps=0.06,
        weight_decay=0.01,
        logging_steps=25,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(AutoTokenizer.from_pretrained(backbone)),
        callbacks=callbacks,
    )
    start = time.perf_counter()
    trainer.train()
    return model, time.perf_counter() - start


def _setting_of(row: dict) -> dict:
    if row["exit_policy"] == "patience":
        return {"exit_policy": "patience", "patience": row["patience"], "exit_threshold": None}
    return {"exit_policy": row["exit_policy"], "exit_threshold": row.get("exit_threshold")}


def quality_and_speed(args, model, tokenizer, tokenized) -> dict:
    """Per-policy calibration on validation, test quality and theoretical speedup, realized speedup."""
    model.eval()
    policies = [p for p in args.policies.split(",") if p]
    validation_logits = collect_exit_logits(model, tokenized["validation"], 64, tokenizer=tokenizer)
    test_logits = collect_exit_logits(model, tokenized["test"], 64, tokenizer=tokenizer)
    full = evaluate_setting(test_logits, "none")
    rows = [{"policy": "none", "setting": _setting_of(full), **full}]
    per_exit = [
        {
            "exit_layer": layer,
            "accuracy": float((test_logits.logits[k].argmax(-1) == test_logits.labels).double().mean()),
            "majority_prediction_share": float(
                torch.bincount(test_logits.logits[k].argmax(-1)).max() / test_logits.num_samples
            ),
        }
        for k, layer in enumerate(test_logits.exit_layers)
    ]
    for policy in policies:
        report = adaptive_hf.calibrate(
            model,
            tokenized["validation"],
            max_accuracy_drop=args.max_accuracy_drop,
            policies=[policy],
            exit_logits=validation_logits,
            show_progress=False,
        )
        setting = _setting_of(report.chosen)
        test_row = evaluate_setting(
            test_logits, setting["exit_policy"], setting["exit_threshold"], setting.get("patience")
        )
        rows.append(
            {
                "policy": policy,
                "setting": setting,
                "validation_accuracy": report.chosen["accuracy"],
                "validation_full_depth_accuracy": report.full_depth_accuracy,
                **test_row,
                "accuracy_drop_points": 100 * (full["accuracy"] - test_row["accuracy"]),
            }
        )
    device = next(model.parameters()).device
    plain = plain_counterpart(model)  # the stock <Arch>ForSequenceClassification the user started from
    for size in [int(b) for b in args.batch_sizes.split(",") if b]:
        wanted = args.bench_single_samples if size == 1 else args.bench_samples
        count = min(len(tokenized["test"]), max(size, wanted - wanted % size))
        batches = [
            {k: v.to(device) for k, v in batch.items()}
            for batch in iterate_batches(tokenized["test"].select(range(count)), size, tokenizer=tokenizer)
        ]
        for row in rows[1:]:
            if row["setting"]["exit_policy"] == "none":
                continue
            result = measure_speedup(
                model, batches, row["setting"], repeats=args.repeats, threads=args.threads, plain_model=plain
            )
            row.setdefault("realized", {})[str(size)] = result
            print(
                f"  {row['policy']:<10} batch {size:>3}: realized {result['realized_speedup']:.2f}x, theoretical "
                f"{result['theoretical_speedup']:.2f}x on the timed rows; vs the plain model "
                f"{result['realized_speedup_vs_plain']:.2f}x (full / plain {result['full_over_plain']:.3f}; spread "
                f"{result['adaptive_spread']:.0%}/{result['full_spread']:.0%}/{result['plain_spread']:.0%})",
                flush=True,
            )
    return {"rows": rows, "per_exit_test": per_exit, "full_depth_test_accuracy": full["accuracy"]}


def _train_step(model, optimizer, batch) -> None:
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def training_cost(args, backbone: str, tokenizer, tokenized, num_labels: int) -> dict:
    """Seconds per optimizer step, early-exit schemes vs plain fine-tuning, interleaved, median of repeats.

    Every model starts from the same backbone weights and trains on the same batch with AdamW; dropout is on as
    in real training. Two-stage is timed in both stages (stage 2 runs the backbone without gradients).
    """
    rows = tokenized["train"].select(range(args.train_cost_batch))
    collator = DataCollatorWithPadding(tokenizer)
    batch = collator(
        [
            {k: rows[i][k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in rows[i]}
            | {"labels": rows[i]["label"]}
            for i in range(len(rows))
        ]
    )
    batch = dict(batch)
    settings = {"head_pooling": args.head_pooling, "head_type": args.head_type}
    candidates = {"plain": AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=num_labels)}
    for scheme in [s for s in args.train_schemes.split(",") if s]:
        model = adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_pretrained(
            backbone, num_labels=num_labels, exit_training=scheme, **settings
        )
        if scheme == "two_stage":
            candidates["two_stage (stage 1)"] = model
            stage2 = adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_pretrained(
                backbone, num_labels=num_labels, exit_training=scheme, **settings
            )
            stage2.set_exit_training_stage(2)
            candidates["two_stage (stage 2)"] = stage2
        else:
            candidates[scheme] = model
    optimizers = {}
    for name, model in candidates.items():
        model.train()
        optimizers[name] = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    try:
        for round_index in range(1 + args.repeats):
            for name, model in candidates.items():
                start = time.perf_counter()
                for _ in range(args.train_cost_steps):
                    _train_step(model, optimizers[name], batch)
                if round_index > 0:
                    times[name].append((time.perf_counter() - start) / args.train_cost_steps)
    finally:
        torch.set_num_threads(old_threads)
    plain = statistics.median(times["plain"])
    out = {
        "batch_size": args.train_cost_batch,
        "seq_len": int(batch["input_ids"].shape[1]),
        "steps_per_repeat": args.train_cost_steps,
        "repeats": args.repeats,
        "threads": args.threads,
        "rows": [],
    }
    for name, values in times.items():
        median = statistics.median(values)
        out["rows"].append(
            {
                "model": name,
                "seconds_per_step": median,
                "ratio_to_plain": median / plain,
                "spread": (max(values) - min(values)) / median,
            }
        )
    return out


def probe_heads(args, backbone: str, tokenizer, tokenized) -> dict:
    """Which pooling and head make early exits separable: heads trained on a frozen backbone's cached features.

    Runs the backbone once over ``--train_samples`` training rows and the test rows, caches every layer's
    pooled vectors (mean over tokens, first token, and the pretrained pooler on the first token), then fits a
    linear and an MLP head per layer and pooling with AdamW (full batch). This is the regime of DeeBERT's second
    stage, at a fraction of the cost of fine-tuning once per combination.
    """
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(backbone).eval()
    collator = DataCollatorWithPadding(tokenizer)

    def features(dataset):
        pooled = {"mean": [], "cls": [], "pooler": []}
        columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names]
        with torch.inference_mode():
            for start in range(0, len(dataset), 64):
                rows = dataset[start : start + 64]
                batch = collator([{c: rows[c][i] for c in columns} for i in range(len(rows["input_ids"]))])
                out = encoder(**batch, output_hidden_states=True)
                mask = batch["attention_mask"].unsqueeze(-1).float()
                layers = out.hidden_states[1:]
                pooled["mean"].append(torch.stack([(h * mask).sum(1) / mask.sum(1) for h in layers]))
                pooled["cls"].append(torch.stack([h[:, 0] for h in layers]))
                if getattr(encoder, "pooler", None) is not None:
                    pooled["pooler"].append(torch.stack([encoder.pooler(h) for h in layers]))
        return {k: torch.cat(v, 1) for k, v in pooled.items() if v}

    train = tokenized["train"].shuffle(seed=args.seed).select(range(min(args.train_samples, len(tokenized["train"]))))
    test = tokenized["test"]
    started = time.perf_counter()
    train_x, test_x = features(train), features(test)
    extract_seconds = time.perf_counter() - started
    train_y, test_y = torch.tensor(train["label"]), torch.tensor(test["label"])
    num_labels = int(max(train_y.max(), test_y.max())) + 1
    results = []
    for pooling, train_layers in train_x.items():
        for head_type in ("linear", "mlp"):
            for layer in range(train_layers.size(0)):
                torch.manual_seed(args.seed)
                head = adaptive_hf.early_exit.heads.ExitHead(train_layers.size(-1), num_labels, head_type, 0.1)
                optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
                head.train()
                for _ in range(300):
                    loss = torch.nn.functional.cross_entropy(head(train_layers[layer]), train_y)
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad()
                head.eval()
                with torch.no_grad():
                    predictions = head(test_x[pooling][layer]).argmax(-1)
                results.append(
                    {
                        "pooling": pooling,
                        "head": head_type,
                        "layer": layer + 1,
                        "test_accuracy": float((predictions == test_y).double().mean()),
                        "majority_prediction_share": float(torch.bincount(predictions).max() / len(predictions)),
                    }
                )
    return {"train_rows": len(train), "test_rows": len(test), "extract_seconds": extract_seconds, "rows": results}


def format_probe(probe: dict) -> str:
    """One row per pooling and head; columns are layers (test accuracy, majority share in brackets)."""
    layers = sorted({r["layer"] for r in probe["rows"]})
    lines = [
        "| pooling | head | " + " | ".join(f"L{layer}" for layer in layers) + " |",
        "|---|---|" + "---|" * len(layers),
    ]
    keys = dict.fromkeys((r["pooling"], r["head"]) for r in probe["rows"])
    for pooling, head in keys:
        cells = [
            f"{100 * r['test_accuracy']:.1f} ({100 * r['majority_prediction_share']:.0f})"
            for r in probe["rows"]
            if r["pooling"] == pooling and r["head"] == head
        ]
        lines.append(f"| {pooling} | {head} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_tables(result: dict) -> str:
    """Markdown tables of quality/speed and training cost."""
    sizes = result["batch_sizes"]
    header = ["policy", "setting", "test acc", "drop (pt)", "avg exit", "theoretical"]
    header += [f"realized b{b}" for b in sizes] + [f"real/theo b{b}" for b in sizes]
    header += [f"realized vs plain b{b}" for b in sizes] + [f"full / plain b{b}" for b in sizes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["quality"]["rows"]:
        setting = row["setting"]
        if setting["exit_policy"] == "none":
            label = "full depth" if row["policy"] == "none" else "no setting in bound: full depth"
        elif setting["exit_policy"] == "patience":
            label = f"patience={setting['patience']}"
        else:
            label = f"t={setting['exit_threshold']:g}"
        drop = row.get("accuracy_drop_points", 0.0)
        cells = [
            row["policy"],
            label,
            f"{100 * row['accuracy']:.2f}",
            f"{drop:+.2f}",
            f"{row['average_exit_layer']:.2f}",
            f"{row['theoretical_speedup']:.2f}x",
        ]
        realized = row.get("realized", {})
        for key in ("realized_speedup", "efficiency", "realized_speedup_vs_plain", "full_over_plain"):
            for size in sizes:
                bench = realized.get(str(size))
                digits = 3 if key == "full_over_plain" else 2
                cells.append("-" if bench is None else f"{bench[key]:.{digits}f}" + ("x" if "speedup" in key else ""))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    cost = result.get("training_cost")
    if cost:
        text += (
            f"\n\nTraining cost per optimizer step (batch {cost['batch_size']} x {cost['seq_len']} tokens, "
            f"{cost['threads']} threads, median of {cost['repeats']}):\n\n"
            "| model | s/step | ratio to plain | spread |\n|---|---|---|---|\n"
        )
        text += "\n".join(
            f"| {r['model']} | {r['seconds_per_step']:.3f} | {r['ratio_to_plain']:.3f} | {r['spread']:.0%} |"
            for r in cost["rows"]
        )
    return text


def main(argv=None) -> dict:
    """Runs the benchmark and prints its tables."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    backbone = args.backbone or packaged_minilm_path()
    started = time.perf_counter()
    data = load_text_classification(args.dataset, seed=args.seed)
    for split, limit in (("validation", args.max_eval_samples), ("test", args.max_test_samples)):
        if limit is not None and limit < len(data[split]):
            data[split] = data[split].select(range(limit))
    num_labels = data["train"].features["label"].num_classes
    tokenizer = AutoTokenizer.from_pretrained(args.model or backbone)
    tokenized = tokenize(data, tokenizer, args.max_length)
    if args.probe_heads:
        probe = probe_heads(args, backbone, tokenizer, tokenized)
        probe.update(command=" ".join([os.path.basename(sys.executable)] + sys.argv), date=time.strftime("%Y-%m-%d"))
        print(format_probe(probe))
        if args.json:
            write_json(args.json, probe)
        return probe
    train_seconds = None
    if args.model:
        model = AutoModelForSequenceClassification.from_pretrained(args.model)
        if not hasattr(model, "exit_flops"):
            raise TypeError(f"{args.model} is not an early-exit model ({type(model).__name__}).")
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            model, train_seconds = quick_train(args, backbone, tokenized, num_labels, scratch)
    config = model.config
    result = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpu": _cpu_model(),
            "logical_cores": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "torch": torch.__version__,
        },
        "threads": args.threads,
        "batch_sizes": [int(b) for b in args.batch_sizes.split(",") if b],
        "model": args.model or f"quick-trained from {backbone}",
        "exit_settings": {
            "exit_layers": config.exit_layers,
            "head_pooling": config.head_pooling,
            "head_type": config.head_type,
            "exit_training": config.exit_training,
        },
        "max_length": args.max_length,
        "sizes": {split: len(tokenized[split]) for split in ("validation", "test")},
        "quick_train_seconds": train_seconds,
    }
    print(f"Quality and speed ({args.threads} threads, {args.repeats} repeats):", flush=True)
    result["quality"] = quality_and_speed(args, model, tokenizer, tokenized)
    if not args.skip_train_cost:
        print("Training cost ...", flush=True)
        result["training_cost"] = training_cost(args, backbone, tokenizer, tokenized, num_labels)
    result["load_average_at_end"] = os.getloadavg()
    result["seconds"] = time.perf_counter() - started
    print(
        "\nPer-exit test accuracy: "
        + ", ".join(f"L{r['exit_layer']} {100 * r['accuracy']:.1f}%" for r in result["quality"]["per_exit_test"])
    )
    print()
    print(format_tables(result))
    print(f"\nload average start {result['machine']['load_average_at_start']}, end {result['load_average_at_end']}")
    if args.json:
        write_json(args.json, result, default=float)
    return result


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
