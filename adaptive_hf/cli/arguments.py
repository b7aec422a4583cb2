"""Arguments shared by the commands: the model folder and its data, and the checks on counts."""

from __future__ import annotations

import argparse

from .errors import CliError


def add_data_arguments(parser: argparse.ArgumentParser, split: str) -> None:
    """Adds the model folder and the data options (dataset, split, columns, image preprocessing) to a command.

    Args:
        parser: The command's parser.
        split: Its default split.
    """
    parser.add_argument(
        "model_dir", help="Folder written by save_pretrained (text models: with the tokenizer, or use --tokenizer)."
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help="Text: offline name (amazon_fine_food, trump_tweets), Hub name, local .json/.jsonl/.csv/.tsv/.parquet "
        "file (used whole) or a save_to_disk folder. Images: fashion_mnist, mnist_subset, a Hub name or a "
        "save_to_disk folder with an image column. Video: moving_fashion_mnist or a save_to_disk folder with a "
        "frames column.",
    )
    parser.add_argument("--split", default=split, help=f"Split of a named dataset (default: {split}).")
    parser.add_argument("--text-column", default="text", help="Text column (default: text).")
    parser.add_argument("--label-column", default="label", help="Label column (default: label).")
    parser.add_argument("--max-samples", type=int, default=None, help="Use at most this many rows.")
    parser.add_argument("--max-length", type=int, default=128, help="Truncation length in tokens (default: 128).")
    parser.add_argument("--tokenizer", default=None, help="Tokenizer folder or name (default: the model folder).")
    parser.add_argument("--image-column", default=None, help="Image column (default: the first Image column).")
    parser.add_argument(
        "--image-mean",
        type=float,
        nargs="+",
        default=None,
        help="Per-channel mean of the image normalization (default: what the model records).",
    )
    parser.add_argument(
        "--image-std", type=float, nargs="+", default=None, help="Per-channel std (default: what the model records)."
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="Split seed of the offline image sets (default 0, as the recipes use)."
    )
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of the image CNN layout, shared by the commands that time a model.

    Args:
        parser: The command's parser.
    """
    parser.add_argument("--channels-last", action="store_true", help="Image CNNs: run in channels_last.")
    parser.add_argument(
        "--fold-batch-norms", action="store_true", help="timm CNNs: fold batch norms into the convolutions."
    )


def check_counts(args: argparse.Namespace) -> None:
    """Rejects counts below 1 (and a negative ``--realized-points``) with an error naming the option.

    Args:
        args: The parsed arguments of any command.
    """
    for name in ("batch_size", "max_samples", "max_length", "repeats", "realized_samples", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise CliError(f"--{name.replace('_', '-')} must be >= 1; got {value}.")
    if getattr(args, "realized_points", 0) < 0:
        raise CliError(f"--realized-points must be >= 0; got {args.realized_points}.")
    for size in getattr(args, "batch_sizes", None) or []:
        if size < 1:
            raise CliError(f"--batch-sizes must be >= 1; got {size}.")
