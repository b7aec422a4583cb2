"""Train, calibrate and evaluate an early-exit text classifier with the stock ``Trainer``.

Offline defaults: the packaged all-MiniLM-L6-v2 (6-layer BERT) on the Amazon fine-food reviews (great vs other):
3,000 training reviews, 1 epoch (188 steps of 16 at 64 tokens), sized for under 10 minutes on 2 quiet CPU cores::

    python recipes/early_exit_text.py --output_dir outputs/early_exit_text

Any Hub model or dataset works where the Hub is reachable::

    python recipes/early_exit_text.py --model_name_or_path bert-base-uncased --dataset_name glue \\
        --dataset_config_name sst2 --text_column sentence --output_dir outputs/sst2

It also runs data-parallel (training and the full-depth evaluation; calibration, the test report and timing run
on the main process). On a CPU-only machine, accelerate 1.15's ``--cpu`` flag starts a single process, so start
the processes with torchrun through ``--multi_gpu``; without GPUs the recipe then trains with DDP over gloo on
the CPU::

    accelerate launch --multi_gpu --num_processes 2 recipes/early_exit_text.py --output_dir outputs/early_exit_text

Steps: tokenize; build ``AutoEarlyExitModelForSequenceClassification`` (exit settings from the command line);
train with ``Trainer`` (the loss includes every exit head); evaluate at full depth with the packaged offline
``evaluate`` metric; calibrate each exit policy on the validation split (1,000 rows carved from train by default;
``adaptive_hf.calibrate``, default ``max_accuracy_drop=0.005, delta=0.1``: with 90% confidence at most 0.5 points
below full depth); report each policy's calibrated setting on the test split next to its certified bound
(accuracy, drop against full depth, average exit layer, theoretical speedup, realized speedup at batch 1 and 64);
save the model with the overall best setting, the report JSON and a trade-off plot.

Any ``TrainingArguments`` flag overrides the recipe's defaults (``--learning_rate``, ``--num_train_epochs``, ...).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)

import adaptive_hf  # noqa: E402
from adaptive_hf.core.batching import iterate_batches
from adaptive_hf.core.io import write_json  # noqa: E402
from adaptive_hf.data import load_text_classification, packaged_minilm_path  # noqa: E402
from adaptive_hf.early_exit.benchmarking import measure_speedup  # noqa: E402
from adaptive_hf.early_exit.calibration import (  # noqa: E402
    SWEEP_POLICIES,
    THRESHOLD_GRID,
    collect_exit_logits,
    evaluate_setting,
)
from adaptive_hf.plotting import speedup_figure  # noqa: E402
from adaptive_hf.training import TwoStageExitTrainingCallback, exit_compute_metrics  # noqa: E402

logger = logging.getLogger("early_exit_text")

# Defaults for TrainingArguments that the user did not pass (argparse keeps the last value of a repeated flag,
# so these go first and anything on the command line wins). Sized for the 10-minute budget on 2 CPU cores.
TRAINING_DEFAULTS = {
    "learning_rate": "1e-4",
    "num_train_epochs": "1",
    "per_device_train_batch_size": "16",
    "per_device_eval_batch_size": "64",
    "weight_decay": "0.01",
    "warmup_steps": "0.06",
    "lr_scheduler_type": "linear",
    "logging_steps": "25",
    "eval_strategy": "no",
    "save_strategy": "no",
    "report_to": "none",
    "seed": "42",
    "disable_tqdm": "false",
}


@dataclass
class ModelArguments:
    """Which checkpoint to start from.

    Args:
        model_name_or_path: A Hub name or local folder of a supported encoder (BERT, RoBERTa, XLM-R, DistilBERT,
            ALBERT, ELECTRA, MPNet); default: the packaged all-MiniLM-L6-v2.
        tokenizer_name: Tokenizer to use if not the model's.
    """

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub name or local folder; default: the packaged all-MiniLM-L6-v2."}
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's."})


@dataclass
class DataArguments:
    """Which data, how much of it and how it is tokenized.

    Args:
        dataset_name: An offline name (``amazon_fine_food``, ``trump_tweets``), a Hub dataset or a local file.
        dataset_config_name: The Hub dataset's configuration.
        text_column: Text column of a Hub dataset or file.
        label_column: Label column of a Hub dataset or file.
        max_length: Tokens kept per text.
        max_train_samples: Training rows used (a seeded subset).
        max_eval_samples: Validation rows used for evaluation and calibration.
        validation_size: Rows carved from train as the validation (calibration) split when the dataset has none
            (the offline datasets); at least 1,000 so that the calibration can certify a 0.5-point bound.
        max_test_samples: Test rows used for the final report.
        split_seed: Seed of the dataset split.
    """

    dataset_name: str = field(default="amazon_fine_food", metadata={"help": "Offline name, Hub dataset or file."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    text_column: str = field(default="text", metadata={"help": "Text column (Hub datasets and files)."})
    label_column: str = field(default="label", metadata={"help": "Label column (Hub datasets and files)."})
    max_length: int = field(default=64, metadata={"help": "Tokens kept per text."})
    max_train_samples: int | None = field(default=3000, metadata={"help": "Training rows (seeded subset)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Validation rows (calibration)."})
    validation_size: int | None = field(
        default=1000, metadata={"help": "Validation rows carved from train when the dataset has no validation."}
    )
    max_test_samples: int | None = field(default=None, metadata={"help": "Test rows (final report)."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the dataset split."})


@dataclass
class ExitArguments:
    """Exit heads, training scheme, calibration and timing.

    Args:
        exit_layers: 1-based layers with an exit head (default: every layer).
        head_pooling: ``mean``, ``cls`` or ``pooler`` (formerly ``--exit_pooling``, still accepted).
        head_type: ``linear`` or ``mlp`` (formerly ``--exit_head``, still accepted).
        exit_training: ``joint``, ``two_stage`` or ``distill``.
        exit_loss_weights: One weight per exit (``joint``/``distill``); default: ``exit_loss_weighting``.
        exit_loss_weighting: Without explicit weights: ``uniform`` (every exit 1) or ``pabee`` (layer index, the
            config's default, which gives the first heads little gradient).
        exit_head_learning_rate: Learning rate of the exit heads (new, randomly initialised); ``None`` = the
            backbone's ``--learning_rate``.
        two_stage_switch: Fraction of the steps in stage 1 for ``two_stage``.
        max_accuracy_drop: Calibration bound on validation (0.005 = 0.5 points), certified with confidence 1 - delta.
        delta: Probability that the calibrated bound fails (0.1: 90% confidence).
        target_speedup: Calibrate for this theoretical speedup instead of an accuracy bound.
        policies: Comma-separated policies to calibrate and report.
        bench_batch_sizes: Comma-separated batch sizes for the realized speedup.
        bench_samples: Test rows timed at batch sizes above 1 (rounded to whole batches).
        bench_single_samples: Test rows timed one at a time at batch size 1.
        bench_repeats: Timed repetitions (median reported).
        bench_threads: ``torch.set_num_threads`` while timing (default: the current count).
        skip_benchmark: Skip the realized-speedup timing.
        lora_r: Train with LoRA of this rank (peft; the exit heads train in full) instead of every weight; the
            adapter is saved under ``OUTPUT_DIR/adapter`` and merged before calibration. ``None``: full fine-tuning.
    """

    exit_layers: list[int] | None = field(default=None, metadata={"help": "Exit layers, e.g. 1 2 3 4 5 6."})
    head_pooling: str = field(default="mean", metadata={"help": "mean, cls or pooler.", "aliases": ["--exit_pooling"]})
    head_type: str = field(default="mlp", metadata={"help": "linear or mlp.", "aliases": ["--exit_head"]})
    exit_training: str = field(default="joint", metadata={"help": "joint, two_stage or distill."})
    exit_loss_weights: list[float] | None = field(default=None, metadata={"help": "One weight per exit."})
    exit_loss_weighting: str = field(default="uniform", metadata={"help": "uniform or pabee (no explicit weights)."})
    exit_head_learning_rate: float | None = field(default=1e-3, metadata={"help": "Learning rate of the heads."})
    two_stage_switch: float = field(default=0.5, metadata={"help": "two_stage: fraction of steps in stage 1."})
    max_accuracy_drop: float | None = field(default=0.005, metadata={"help": "Calibration accuracy bound."})
    delta: float = field(default=0.1, metadata={"help": "1 - confidence of the calibrated bound."})
    target_speedup: float | None = field(default=None, metadata={"help": "Calibrate for this speedup instead."})
    policies: str = field(default="confidence,entropy,margin,patience", metadata={"help": "Policies to report."})
    bench_batch_sizes: str = field(default="1,64", metadata={"help": "Batch sizes for realized speedup."})
    bench_samples: int = field(default=64, metadata={"help": "Test rows timed at batch sizes above 1."})
    bench_single_samples: int = field(default=32, metadata={"help": "Test rows timed at batch size 1."})
    bench_repeats: int = field(default=5, metadata={"help": "Timed repetitions (median)."})
    bench_threads: int | None = field(default=None, metadata={"help": "Threads while timing."})
    skip_benchmark: bool = field(default=False, metadata={"help": "Skip the realized-speedup timing."})
    lora_r: int | None = field(default=None, metadata={"help": "LoRA rank (needs peft); default: full fine-tuning."})


def parse_args(argv: list[str] | None = None):
    """Parses the four argument groups, with the recipe's ``TrainingArguments`` defaults under the user's flags."""
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = [item for key, value in TRAINING_DEFAULTS.items() for item in (f"--{key}", value)]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # Launched as several processes (torchrun, `accelerate launch --multi_gpu`) on a machine without GPUs:
        # accelerate sets up CPU data parallelism (gloo) only when the Trainer asks for the CPU.
        defaults += ["--use_cpu", "true"]
    parser = HfArgumentParser((ModelArguments, DataArguments, ExitArguments, TrainingArguments))
    model_args, data_args, exit_args, training_args = parser.parse_args_into_dataclasses(args=defaults + argv)
    if exit_args.max_accuracy_drop is not None and exit_args.target_speedup is not None:
        if "--max_accuracy_drop" in argv:
            raise ValueError("Pass only one of --max_accuracy_drop and --target_speedup.")
        exit_args.max_accuracy_drop = None
    policies = [p.strip() for p in exit_args.policies.split(",") if p.strip()]
    for policy in policies:
        if policy not in SWEEP_POLICIES:
            raise ValueError(f"--policies must be a comma-separated subset of {SWEEP_POLICIES}; got {policy!r}.")
    exit_args.policies = policies
    return model_args, data_args, exit_args, training_args


def build_optimizer(model, training_args: TrainingArguments, head_learning_rate: float | None):
    """AdamW with the Trainer's settings, and a separate learning rate for the newly initialised exit heads.

    The heads start from random weights while the backbone is pretrained; with one small learning rate and a few
    hundred steps the early heads stay near the prior and predict the majority class.
    """
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:  # frozen under LoRA
            continue
        is_head = name.startswith("exit_heads.") or ".exit_heads." in name  # the latter under peft
        decay = not any(name.endswith(suffix) for suffix in no_decay)
        groups.setdefault((is_head, decay), []).append(parameter)
    param_groups = [
        {
            "params": params,
            "lr": (head_learning_rate or training_args.learning_rate) if is_head else training_args.learning_rate,
            "weight_decay": training_args.weight_decay if decay else 0.0,
        }
        for (is_head, decay), params in groups.items()
    ]
    return torch.optim.AdamW(
        param_groups,
        betas=(training_args.adam_beta1, training_args.adam_beta2),
        eps=training_args.adam_epsilon,
    )


def tokenize_splits(data, tokenizer, max_length: int):
    """Tokenizes every split (truncated, unpadded: batches are padded to their longest row)."""

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    return data.map(tokenize, batched=True, remove_columns=["text"], desc="Tokenizing")


def per_exit_accuracy(exit_logits) -> list[dict]:
    """Accuracy of each exit head on every row, and the share of rows it assigns to its most predicted class."""
    rows = []
    for k, layer in enumerate(exit_logits.exit_layers):
        predictions = exit_logits.logits[k].argmax(-1)
        share = torch.bincount(predictions, minlength=exit_logits.logits.size(-1)).max().item() / len(predictions)
        rows.append(
            {
                "exit_layer": layer,
                "accuracy": float((predictions == exit_logits.labels).double().mean()),
                "majority_prediction_share": share,
            }
        )
    return rows


def _setting_of(row: dict) -> dict:
    setting = {"exit_policy": row["exit_policy"]}
    if row["exit_policy"] == "patience":
        setting.update(patience=row["patience"], exit_threshold=None)
    else:
        setting["exit_threshold"] = row.get("exit_threshold")
    return setting


def _bench_batches(test_dataset, batch_size: int, num_samples: int, tokenizer, device):
    rows = min(len(test_dataset), max(batch_size, num_samples - num_samples % batch_size))
    batches = iterate_batches(test_dataset.select(range(rows)), batch_size, tokenizer=tokenizer)
    return [{k: v.to(device) for k, v in batch.items()} for batch in batches]


def plot_tradeoff(path: str, sweeps: dict, results: list[dict], full_accuracy: float, title: str) -> bool:
    """Accuracy against theoretical speedup over each policy's sweep on test, with the realized points.

    Returns ``False`` (and draws nothing) when matplotlib is missing (``pip install adaptive-hf[plot]``).
    """
    markers = {1: "o", 64: "s"}
    try:
        with speedup_figure(
            path, "speedup over full depth (x)", title, title_fontsize=9, ylabel="test accuracy (%)"
        ) as axis:
            colors = {}
            for policy, rows in sweeps.items():
                rows = sorted(rows, key=lambda r: r["theoretical_speedup"])
                (line,) = axis.plot(
                    [r["theoretical_speedup"] for r in rows],
                    [100 * r["accuracy"] for r in rows],
                    ".-",
                    markersize=3,
                    linewidth=1,
                    label=f"{policy} (theoretical, sweep)",
                )
                colors[policy] = line.get_color()
            for result in results:
                policy = result["exit_policy"]
                if policy == "none":
                    continue
                for bench in result.get("realized", {}).values():
                    axis.scatter(
                        bench["realized_speedup"],
                        100 * result["test_accuracy"],
                        marker=markers.get(bench["batch_size"], "^"),
                        s=50,
                        facecolors="none",
                        edgecolors=colors.get(policy, "k"),
                        label=f"{policy} calibrated, realized @ batch {bench['batch_size']}",
                    )
            axis.axhline(100 * full_accuracy, color="gray", linestyle="--", linewidth=1, label="full depth")
            axis.axhline(
                100 * (full_accuracy - 0.005), color="gray", linestyle=":", linewidth=1, label="full depth - 0.5 pt"
            )
    except ImportError:
        logger.warning("matplotlib is not installed (pip install adaptive-hf[plot]); no trade-off plot.")
        return False
    return True


def format_table(results: list[dict], batch_sizes: list[int]) -> str:
    """A markdown table: one row per policy with its calibrated setting's test numbers."""
    header = ["policy", "setting", "val acc", "drop bound (val)", "test acc", "test drop", "avg exit layer"]
    header += ["theoretical"]
    header += [f"realized b{b}" for b in batch_sizes] + [f"real/theo b{b}" for b in batch_sizes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results:
        policy = row["exit_policy"]
        if policy == "none":
            setting = "full depth" if row.get("calibrated_policy") is None else "none in bound: full depth"
        elif policy == "patience":
            setting = f"patience={row['patience']}"
        else:
            setting = "default" if row.get("exit_threshold") is None else f"{row['exit_threshold']:g}"
        cells = [
            row.get("calibrated_policy") or policy,
            setting,
            f"{100 * row['validation_accuracy']:.2f}",
            "-" if row.get("risk_upper_bound") is None else f"<= {100 * row['risk_upper_bound']:.2f}",
            f"{100 * row['test_accuracy']:.2f}",
            f"{100 * row.get('test_accuracy_drop', 0.0):.2f}",
            f"{row['average_exit_layer']:.2f}",
            f"{row['theoretical_speedup']:.2f}x",
        ]
        realized = row.get("realized", {})
        cells += [f"{realized[str(b)]['realized_speedup']:.2f}x" if str(b) in realized else "-" for b in batch_sizes]
        cells += [f"{realized[str(b)]['efficiency']:.2f}" if str(b) in realized else "-" for b in batch_sizes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict | None:
    """Runs the recipe; returns the report on the main process (``None`` on the others)."""
    model_args, data_args, exit_args, training_args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    start_time = time.perf_counter()
    set_seed(training_args.seed)
    model_path = model_args.model_name_or_path or packaged_minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_path)

    with training_args.main_process_first(desc="dataset loading and tokenization"):
        data = load_text_classification(
            data_args.dataset_name,
            seed=data_args.split_seed,
            text_column=data_args.text_column,
            label_column=data_args.label_column,
            config_name=data_args.dataset_config_name,
            validation_size=data_args.validation_size,
        )
        limits = {
            "train": data_args.max_train_samples,
            "validation": data_args.max_eval_samples,
            "test": data_args.max_test_samples,
        }
        for split, limit in limits.items():
            if limit is not None and limit < len(data[split]):
                data[split] = data[split].shuffle(seed=data_args.split_seed).select(range(limit))
        label_names = data["train"].features["label"].names
        tokenized = tokenize_splits(data, tokenizer, data_args.max_length)

    exit_settings = {
        "head_pooling": exit_args.head_pooling,
        "head_type": exit_args.head_type,
        "exit_training": exit_args.exit_training,
    }
    if exit_args.exit_layers is not None:
        exit_settings["exit_layers"] = exit_args.exit_layers
    if exit_args.exit_loss_weights is not None:
        exit_settings["exit_loss_weights"] = exit_args.exit_loss_weights
    model = adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_pretrained(
        model_path,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        **exit_settings,
    )
    if exit_args.exit_loss_weights is None:
        if exit_args.exit_loss_weighting not in ("uniform", "pabee"):
            raise ValueError(
                f"--exit_loss_weighting must be 'uniform' or 'pabee'; got {exit_args.exit_loss_weighting!r}."
            )
        if exit_args.exit_loss_weighting == "uniform":
            model.config.exit_loss_weights = [1.0] * len(model.config.exit_layers)
    if exit_args.lora_r is not None:
        import peft  # optional extra `peft`; adaptive_hf.lora_config names it when missing

        model = peft.get_peft_model(model, adaptive_hf.lora_config(model, r=exit_args.lora_r))
    callbacks = []
    if exit_args.exit_training == "two_stage":
        callbacks.append(TwoStageExitTrainingCallback(switch_fraction=exit_args.two_stage_switch))
        # Stage 1 leaves the intermediate heads without gradients; DDP must be told that parameters may go unused.
        training_args.ddp_find_unused_parameters = True
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=exit_compute_metrics,
        callbacks=callbacks,
        optimizers=(build_optimizer(model, training_args, exit_args.exit_head_learning_rate), None),
    )
    train_result = trainer.train()
    train_seconds = time.perf_counter() - start_time
    # Full-depth validation accuracy through the Trainer and the packaged (offline) evaluate metric.
    model.config.exit_policy = "none"
    eval_metrics = trainer.evaluate()
    if not trainer.is_world_process_zero():
        return None

    model = trainer.model
    if exit_args.lora_r is not None:
        model.save_pretrained(os.path.join(training_args.output_dir, "adapter"))
        model = model.merge_and_unload()  # a plain early-exit model again, for calibration, timing and saving
    model.eval()
    device = next(model.parameters()).device
    os.makedirs(training_args.output_dir, exist_ok=True)
    calibrate_kwargs = (
        {"max_accuracy_drop": exit_args.max_accuracy_drop, "delta": exit_args.delta}
        if exit_args.max_accuracy_drop is not None
        else {"target_speedup": exit_args.target_speedup}
    )
    batch_size = training_args.per_device_eval_batch_size
    validation_logits = collect_exit_logits(model, tokenized["validation"], batch_size, tokenizer=tokenizer)
    test_logits = collect_exit_logits(model, tokenized["test"], batch_size, tokenizer=tokenizer)
    full_row_val = evaluate_setting(validation_logits, "none")
    full_row_test = evaluate_setting(test_logits, "none")

    # Each policy gets its own calibrated setting on validation; the test split only scores it.
    results = [
        {
            "exit_policy": "none",
            "validation_accuracy": full_row_val["accuracy"],
            "test_accuracy": full_row_test["accuracy"],
            "average_exit_layer": full_row_test["average_exit_layer"],
            "theoretical_speedup": 1.0,
            "exit_fractions": full_row_test["exit_fractions"],
        }
    ]
    calibration = {}
    sweeps = {}
    for policy in exit_args.policies:
        report = adaptive_hf.calibrate(
            model, tokenized["validation"], policies=[policy], exit_logits=validation_logits, **calibrate_kwargs
        )
        calibration[policy] = report.to_dict()
        setting = _setting_of(report.chosen)
        test_row = evaluate_setting(
            test_logits, setting["exit_policy"], setting.get("exit_threshold"), setting.get("patience")
        )
        results.append(
            {
                **{k: v for k, v in setting.items() if v is not None or k == "exit_threshold"},
                "calibrated_policy": policy,
                "calibration_note": report.note,
                "calibration_statement": report.statement(),
                "risk_upper_bound": report.upper_bound if report.guaranteed else None,
                "validation_accuracy": report.chosen["accuracy"],
                "validation_theoretical_speedup": report.chosen["theoretical_speedup"],
                "test_accuracy": test_row["accuracy"],
                "average_exit_layer": test_row["average_exit_layer"],
                "theoretical_speedup": test_row["theoretical_speedup"],
                "exit_fractions": test_row["exit_fractions"],
            }
        )
        values = list(range(1, len(model.config.exit_layers))) if policy == "patience" else THRESHOLD_GRID
        sweeps[policy] = [
            evaluate_setting(
                test_logits, policy, **({"patience": v} if policy == "patience" else {"exit_threshold": v})
            )
            for v in values
        ]

    batch_sizes = [int(b) for b in exit_args.bench_batch_sizes.split(",") if b.strip()]
    threads = exit_args.bench_threads or torch.get_num_threads()
    if not exit_args.skip_benchmark:
        for size in batch_sizes:
            rows = exit_args.bench_single_samples if size == 1 else exit_args.bench_samples
            batches = _bench_batches(tokenized["test"], size, rows, tokenizer, device)
            for row in results:
                if row["exit_policy"] == "none":
                    continue
                bench = measure_speedup(
                    model, batches, _setting_of(row), repeats=exit_args.bench_repeats, threads=threads
                )
                row.setdefault("realized", {})[str(size)] = bench
                logger.info(
                    "%s @ batch %d: realized %.2fx, theoretical %.2fx on the timed rows",
                    row["exit_policy"],
                    size,
                    bench["realized_speedup"],
                    bench["theoretical_speedup"],
                )

    # The saved model carries the best setting over all policies (calibrated on validation).
    overall = adaptive_hf.calibrate(
        model, tokenized["validation"], policies=exit_args.policies, exit_logits=validation_logits, **calibrate_kwargs
    )
    model.save_pretrained(training_args.output_dir)
    tokenizer.save_pretrained(training_args.output_dir)

    for row in results:
        row["test_accuracy_drop"] = results[0]["test_accuracy"] - row["test_accuracy"]
    table = format_table(results, batch_sizes if not exit_args.skip_benchmark else [])
    report = {
        "model": model_path,
        "dataset": data_args.dataset_name,
        "sizes": {split: len(tokenized[split]) for split in ("train", "validation", "test")},
        "label_names": label_names,
        "model_args": asdict(model_args),
        "data_args": asdict(data_args),
        "exit_args": asdict(exit_args),
        "training": {
            "learning_rate": training_args.learning_rate,
            "num_train_epochs": training_args.num_train_epochs,
            "max_steps": training_args.max_steps,
            "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "world_size": training_args.world_size,
            "train_loss": train_result.training_loss,
            "train_runtime_seconds": train_result.metrics.get("train_runtime"),
            "seconds_to_end_of_training": train_seconds,
        },
        "validation_metrics_full_depth": eval_metrics,
        "per_exit_accuracy": {
            "validation": per_exit_accuracy(validation_logits),
            "test": per_exit_accuracy(test_logits),
        },
        "results": results,
        "chosen_for_saved_model": overall.chosen,
        "saved_model_statement": overall.statement(),
        "calibration": calibration,
        "test_sweeps": sweeps,
        "bench_threads": threads,
        "table": table,
    }
    title = (
        f"{model_args.model_name_or_path or 'all-MiniLM-L6-v2'} on {data_args.dataset_name}: "
        f"pooling={exit_args.head_pooling}, head={exit_args.head_type}, training={exit_args.exit_training}; "
        f"{threads} threads"
    )
    plot_path = os.path.join(training_args.output_dir, "tradeoff.png")
    if plot_tradeoff(plot_path, sweeps, results, full_row_test["accuracy"], title):
        report["plot"] = plot_path
    report["total_seconds"] = time.perf_counter() - start_time
    write_json(os.path.join(training_args.output_dir, "early_exit_report.json"), report, default=float)

    print("\nPer-exit test accuracy (share of the most predicted class):")
    for row in report["per_exit_accuracy"]["test"]:
        share = 100 * row["majority_prediction_share"]
        print(f"  layer {row['exit_layer']}: {100 * row['accuracy']:.2f}% ({share:.0f}%)")
    print(f"\nEach policy calibrated on validation ({calibrate_kwargs}), scored on test; {threads} threads:\n")
    print(table)
    print(f"\nSaved model (best setting {overall.chosen['exit_policy']}): {training_args.output_dir}")
    print(f"Its calibration: {overall.statement()}")
    print(f"Total time: {report['total_seconds']:.0f} s")
    return report


if __name__ == "__main__":
    main()
