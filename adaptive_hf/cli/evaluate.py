"""``adaptive-hf evaluate``: accuracy against speedup over the model's runtime knob (JSON, PNG), by its technique."""

from __future__ import annotations

import argparse

from ..early_exit.calibration import SWEEP_POLICIES
from .arguments import add_data_arguments, add_timing_arguments
from .loading import run_hook


def add_parser(commands) -> argparse.ArgumentParser:
    """Adds the ``evaluate`` command to the subcommand parsers.

    Args:
        commands: The result of ``ArgumentParser.add_subparsers``.
    """
    parser = commands.add_parser("evaluate", help="Accuracy against speedup over a threshold sweep (JSON, PNG).")
    add_data_arguments(parser, "test")
    parser.add_argument("--policies", nargs="+", choices=SWEEP_POLICIES, default=list(SWEEP_POLICIES))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", default=None, help="Write the sweep as JSON here.")
    parser.add_argument("--plot", default=None, help="Draw the trade-off curve to this PNG.")
    parser.add_argument(
        "--realized-points",
        type=int,
        default=3,
        help="Time this many settings per policy along its Pareto front (0: theoretical only; default 3).",
    )
    parser.add_argument("--realized-samples", type=int, default=128, help="Rows timed per setting (default 128).")
    parser.add_argument("--repeats", type=int, default=5, help="Timed repetitions per setting (default 5).")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads while timing.")
    add_timing_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Runs ``evaluate`` through the model's technique.

    Args:
        args: The parsed arguments.
    """
    return run_hook("evaluate", args)
