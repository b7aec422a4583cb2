"""``adaptive-hf card``: print or write the model card of any saved adaptive model."""

from __future__ import annotations

import argparse

from ..core.io import write_text
from .loading import load_model


def add_parser(commands) -> argparse.ArgumentParser:
    """Adds the ``card`` command to the subcommand parsers.

    Args:
        commands: The result of ``ArgumentParser.add_subparsers``.
    """
    parser = commands.add_parser("card", help="Print or write the model card.")
    parser.add_argument("model_dir", help="Folder written by save_pretrained.")
    parser.add_argument("--output", default=None, help="Write the card here instead of printing it.")
    parser.add_argument("--tags", nargs="*", default=None, help="Extra Hub tags.")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Prints the card, or writes it to ``--output``; every adaptive model writes its card the same way (its hub
    mixin), so the card needs no technique hook.

    Args:
        args: The parsed arguments.
    """
    card = load_model(args.model_dir).model_card(args.tags)
    if args.output:
        write_text(args.output, card)
        print(f"Wrote {args.output}")
    else:
        print(card)
    return 0
