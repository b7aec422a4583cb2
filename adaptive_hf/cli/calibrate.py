"""``adaptive-hf calibrate``: pick any adaptive model's runtime setting on held-out data with a stated guarantee.

One command for every technique with runtime knobs (early exits, halting, Skim-RNN / LSTM-Jump, video samplers):
it loads the model and its data (text, images or video clips) and calls :func:`adaptive_hf.calibrate`, which reads
the knobs from the technique's spec. The criterion options are gathered into ``args.calibration_criteria``
(``CRITERIA``) and passed to ``calibrate`` as keyword arguments.
"""

from __future__ import annotations

import argparse

from ..calibration import calibrate
from ..calibration.selection import RULES
from ..core.reports import save_json_report
from .arguments import add_data_arguments
from .errors import CliError
from .loading import load_config, load_model, prepare_data, technique_for

# `calibrate` keyword arguments that come straight from options of the same name.
CRITERIA = ("max_accuracy_drop", "max_disagreement", "target_speedup")


def add_parser(commands) -> argparse.ArgumentParser:
    """Adds the ``calibrate`` command to the subcommand parsers.

    Args:
        commands: The result of ``ArgumentParser.add_subparsers``.
    """
    parser = commands.add_parser(
        "calibrate",
        help="Pick the runtime setting (exit threshold, halting threshold, skim/stop threshold, frame budget) on "
        "held-out data, with a bound that holds with confidence 1 - delta.",
    )
    add_data_arguments(parser, "validation")
    criterion = parser.add_mutually_exclusive_group(required=True)
    criterion.add_argument(
        "--max-accuracy-drop",
        type=float,
        help="Accuracy the model may lose against full compute, as a fraction (0.005 = 0.5 points); needs labels.",
    )
    criterion.add_argument(
        "--max-disagreement",
        type=float,
        help="Share of predictions that may differ from full compute (label-free; e.g. 0.01).",
    )
    criterion.add_argument("--target-speedup", type=float, help="Theoretical speedup to reach (no guarantee).")
    parser.add_argument(
        "--delta", type=float, default=0.1, help="Probability that the bound fails (default 0.1: 90%% confidence)."
    )
    parser.add_argument(
        "--rule",
        choices=RULES,
        default=RULES[0],
        help="learn_then_test (the guarantee, default) or point_estimate_no_guarantee (the old rule).",
    )
    parser.add_argument(
        "--policies",
        nargs="+",
        default=None,
        help="Candidate chains to try, named by a value, e.g. early-exit policies (confidence entropy margin "
        "patience) or video samplers (early_stop saliency); default: all of the model's.",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", default=None, help="Write the full report as JSON here.")
    parser.add_argument("--save", action="store_true", help="Write the chosen setting back into MODEL_DIR.")
    parser.set_defaults(func=run)
    return parser


def _model_and_data(args, require_labels: bool):
    spec = technique_for(args.model_dir)
    if not any(spec.candidate_chains(load_config(args.model_dir))):
        raise CliError(
            f"calibrate needs a runtime knob; {args.model_dir!r} holds a {spec.name} model, which has none "
            "(nothing to calibrate)."
        )
    model = load_model(args.model_dir)
    if spec.name == "video":
        # Clips come from the video loader (generated Moving Fashion-MNIST or a saved folder of frames).
        from ..video.evaluation import load_video_clips

        pixels, labels = load_video_clips(args, model)
        data = {"pixel_values": pixels} if labels is None else {"pixel_values": pixels, "labels": labels}
        return model, data, {}
    prepared = prepare_data(args, model, require_labels)
    if prepared.is_image:
        import torch

        batches = prepared.batches(args.batch_size)
        data = {"pixel_values": torch.cat([b["pixel_values"] for b in batches])}
        if prepared.labels is not None:
            data["labels"] = torch.as_tensor(prepared.labels)
        return model, data, {}
    return model, prepared.dataset, {"tokenizer": prepared.tokenizer}


def run(args: argparse.Namespace) -> int:
    """Calibrates the saved model on the given data, prints the report and optionally saves the setting.

    Args:
        args: The parsed arguments.
    """
    args.calibration_criteria = {name: getattr(args, name) for name in CRITERIA if getattr(args, name) is not None}
    model, data, options = _model_and_data(args, require_labels="max_accuracy_drop" in args.calibration_criteria)
    report = calibrate(
        model,
        data,
        delta=args.delta,
        rule=args.rule,
        policies=args.policies,
        batch_size=args.batch_size,
        show_progress=not args.no_progress,
        **args.calibration_criteria,
        **options,
    )
    print(report.to_markdown())
    save_json_report(args.json, report.to_dict())
    if args.save:
        model.save_pretrained(args.model_dir)
        print(f"Saved the calibrated setting to {args.model_dir}")
    return 0
