"""``adaptive-hf export``: write a saved model as ONNX segments that keep the skipping (:mod:`adaptive_hf.onnx`).

Whether a model can be exported is its technique's declaration in the registry (``TechniqueSpec.exportable``, and
``export_refusal`` saying why not); the export itself is generic, so this command needs no per-technique hook.
"""

from __future__ import annotations

import argparse

from ..onnx import MANIFEST, export
from ..onnx.export import copy_companion_files
from .errors import CliError
from .loading import load_model, technique_for


def add_parser(commands) -> argparse.ArgumentParser:
    """Adds the ``export`` command to the subcommand parsers.

    Args:
        commands: The result of ``ArgumentParser.add_subparsers``.
    """
    parser = commands.add_parser(
        "export",
        help="Write an early-exit model as one ONNX graph per segment between exits (onnxruntime keeps the skipping).",
    )
    parser.add_argument("model_dir", help="Folder written by save_pretrained.")
    parser.add_argument("out_dir", help="Folder to write the graphs and adaptive_onnx.json into.")
    parser.add_argument(
        "--exporter",
        choices=("dynamo", "torchscript"),
        default="dynamo",
        help="torch.onnx exporter: dynamo (default) or the legacy TorchScript tracer (faster to export).",
    )
    parser.add_argument(
        "--no-full-graph",
        dest="full_graph",
        action="store_false",
        help="Skip full.onnx, the whole model in one graph (the full-depth baseline).",
    )
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset version (default 18).")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Exports the model, or refuses a technique that is not exportable with its reason.

    Args:
        args: The parsed arguments.
    """
    spec = technique_for(args.model_dir)
    if not spec.exportable:
        raise CliError(
            f"{args.model_dir!r} holds a {spec.name} model, which is not exportable to ONNX segments: "
            f"{spec.export_refusal or 'its technique declares no ONNX export.'}"
        )
    out = export(
        load_model(args.model_dir),
        args.out_dir,
        exporter=args.exporter,
        full_graph=args.full_graph,
        opset_version=args.opset,
    )
    copy_companion_files(args.model_dir, out)
    print(f"Wrote {out} ({MANIFEST} and its graphs); run it with adaptive_hf.onnx.AdaptiveOnnxModel({str(out)!r}).")
    return 0
