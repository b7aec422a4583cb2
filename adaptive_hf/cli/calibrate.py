"""``adaptive-hf calibrate``: pick a model's runtime setting on held-out data with :func:`adaptive_hf.calibrate`.

The criterion options are gathered into ``args.calibration_criteria`` (``CRITERIA``) and passed to ``calibrate`` as
keyword arguments by the technique's hook; a new criterion of ``calibrate`` is one option here and one name there.
"""

from __future__ import annotations

import argparse

from ..early_exit.calibration import SWEEP_POLICIES
from .arguments import add_data_arguments
from .loading import run_hook

# `calibrate` keyword arguments that come straight from options of the same name.
CRITERIA = ("max_accuracy_drop", "target_speedup")

REFUSAL = (
    "calibrate picks the exit policy of early-exit classifiers; {model_dir!r} holds a {technique} model. Use "
    "`adaptive-hf evaluate` to sweep its runtime knob instead."
)


def add_parser(commands) -> argparse.ArgumentParser:
    """Adds the ``calibrate`` command to the subcommand parsers.

    Args:
        commands: The result of ``ArgumentParser.add_subparsers``.
    """
    parser = commands.add_parser("calibrate", help="Pick the exit policy and threshold on held-out data.")
    add_data_arguments(parser, "validation")
    criterion = parser.add_mutually_exclusive_group(required=True)
    criterion.add_argument(
        "--max-accuracy-drop", type=float, help="Accuracy the model may lose, as a fraction (0.005 = 0.5 points)."
    )
    criterion.add_argument("--target-speedup", type=float, help="Theoretical speedup to reach (e.g. 2.0).")
    parser.add_argument("--policies", nargs="+", choices=SWEEP_POLICIES, default=list(SWEEP_POLICIES))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", default=None, help="Write the full report as JSON here.")
    parser.add_argument("--save", action="store_true", help="Write the chosen setting back into MODEL_DIR.")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Runs ``calibrate`` through the model's technique.

    Args:
        args: The parsed arguments.
    """
    args.calibration_criteria = {name: getattr(args, name) for name in CRITERIA}
    return run_hook("calibrate", args, REFUSAL)
