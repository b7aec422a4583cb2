"""The ``adaptive-hf`` parser and entry point: one subcommand per module of this package."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import bench, calibrate, card, evaluate
from .arguments import check_counts
from .errors import CliError

COMMANDS = (calibrate, evaluate, bench, card)


def build_parser() -> argparse.ArgumentParser:
    """The ``adaptive-hf`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="adaptive-hf",
        description="Calibrate, evaluate, benchmark and describe saved adaptive text, image and video classifiers.",
    )
    parser.add_argument("--traceback", action="store_true", help="Show the full traceback on errors.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``adaptive-hf``; returns the exit status (0 on success, 2 on a user error).

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_counts(args)
        return args.func(args)
    except (CliError, ValueError, TypeError, FileNotFoundError, ImportError) as error:
        if args.traceback or os.environ.get("ADAPTIVE_HF_TRACEBACK"):
            raise
        print(f"adaptive-hf {args.command}: error: {error}", file=sys.stderr)
        return 2
