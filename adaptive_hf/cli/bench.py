"""``adaptive-hf bench``: realized against theoretical speedup at several batch sizes, by the model's technique."""

from __future__ import annotations

import argparse

from ..early_exit.calibration import SWEEP_POLICIES
from .arguments import add_data_arguments, add_timing_arguments, add_video_file_arguments
from .loading import run_hook


def add_parser(commands) -> argparse.ArgumentParser:
    """Adds the ``bench`` command to the subcommand parsers.

    Args:
        commands: The result of ``ArgumentParser.add_subparsers``.
    """
    parser = commands.add_parser("bench", help="Realized against theoretical speedup at several batch sizes.")
    add_data_arguments(parser, "test")
    parser.set_defaults(max_samples=256)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: current count).")
    parser.add_argument("--repeats", type=int, default=5, help="Timed repetitions, median reported (default 5).")
    parser.add_argument("--policy", choices=("none",) + tuple(SWEEP_POLICIES), default=None)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--patience", type=int, default=None)
    add_timing_arguments(parser)
    add_video_file_arguments(parser)
    parser.add_argument(
        "--pool-rows",
        type=int,
        default=None,
        help="Early-exit models (text or images): also time each batch size above 1 through classify_stream, which "
        "pools the rows that continue past an exit across batches until this many wait.",
    )
    parser.add_argument("--json", default=None, help="Write the results as JSON here.")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Runs ``bench`` through the model's technique.

    Args:
        args: The parsed arguments.
    """
    return run_hook("bench", args)
