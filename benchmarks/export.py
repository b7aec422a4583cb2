"""Benchmark of the ONNX export that keeps the skipping, measured as ``shared/benchmarks.md`` asks.

On a trained early-exit text model and its test split it reports, at each batch size:

* onnxruntime adaptive (:class:`adaptive_hf.onnx.AdaptiveOnnxModel`, the exported segments with row compaction)
  against the same onnxruntime at full depth (``full.onnx``, the whole model in one graph): realized speedup,
  theoretical speedup (FLOPs of the exits the rows took, ``model.exit_flops`` with each row's token count, heads
  included) and their ratio;
* onnxruntime full depth against PyTorch full depth (policy ``none``) on the same batches;
* agreement: the share of rows whose onnxruntime exit equals PyTorch's, and the largest logit difference.

Each comparison is interleaved A B A B after warm-up, the median of ``--repeats`` rounds, with the same thread
count for torch and onnxruntime::

    python benchmarks/export.py --model outputs/early_exit_text --json export_bench.json
    # The packaged MiniLM with new, untrained exit heads and a forced setting: timing only.
    MINILM=$(python -c 'import adaptive_hf; print(adaptive_hf.packaged_minilm_path())')
    python benchmarks/export.py --model "$MINILM" --policy confidence --threshold 0.9
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

import adaptive_hf  # noqa: E402
from adaptive_hf.core.io import write_json  # noqa: E402
from adaptive_hf.core.timing import time_interleaved  # noqa: E402
from adaptive_hf.data import load_text_classification  # noqa: E402
from adaptive_hf.early_exit.calibration import sample_costs  # noqa: E402
from adaptive_hf.onnx import AdaptiveOnnxModel, export  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="outputs/early_exit_text", help="Saved early-exit text model folder.")
    parser.add_argument("--onnx_dir", help="Reuse this export folder (default: export into a temporary folder).")
    parser.add_argument("--exporter", default="dynamo", choices=("dynamo", "torchscript"))
    parser.add_argument("--dataset", default="amazon_fine_food")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--policy", help="Force this exit policy (default: the model's saved, calibrated one).")
    parser.add_argument("--threshold", type=float, help="Force this exit threshold.")
    parser.add_argument("--patience", type=int, help="Force this patience.")
    parser.add_argument("--threads", type=int, default=2, help="Threads for torch and onnxruntime alike.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed repetitions (median).")
    parser.add_argument("--batch_sizes", default="1,64")
    parser.add_argument("--bench_samples", type=int, default=256, help="Test rows timed at batch sizes > 1.")
    parser.add_argument("--bench_single_samples", type=int, default=64, help="Test rows timed at batch 1.")
    parser.add_argument("--seed", type=int, default=0, help="Seed for exit heads missing from the checkpoint.")
    parser.add_argument("--json", help="Write the results here.")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        print(f"warning: --repeats {args.repeats} < 5 (benchmarks.md asks for at least 5)", file=sys.stderr)
    return args


def load(args):
    """The PyTorch model with the benchmarked setting, its tokenizer, and the export folder."""
    # Seeded: exit heads that a plain checkpoint lacks are drawn the same in every run, so a reused export
    # (--onnx_dir) holds the heads of this model.
    torch.manual_seed(args.seed)
    model = adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    forced = {"exit_policy": args.policy, "exit_threshold": args.threshold, "patience": args.patience}
    if args.policy == "patience":
        forced["exit_threshold"] = None
    for name, value in forced.items():
        if value is not None or (name == "exit_threshold" and args.policy == "patience"):
            setattr(model.config, name, value)
    folder = args.onnx_dir
    if folder is None or not os.path.isfile(os.path.join(folder, "adaptive_onnx.json")):
        folder = folder or tempfile.mkdtemp(prefix="adaptive_onnx_")
        start = time.perf_counter()
        export(model, folder, exporter=args.exporter)
        print(f"exported to {folder} in {time.perf_counter() - start:.1f}s ({args.exporter})")
    return model, tokenizer, folder


def make_batches(args, tokenizer, batch_size: int) -> list[dict[str, np.ndarray]]:
    """Test rows in order, padded per batch to the longest row (numpy, for both runtimes)."""
    data = load_text_classification(args.dataset, split=args.split, seed=0)
    rows = args.bench_single_samples if batch_size == 1 else args.bench_samples
    texts = list(data["text"][: min(rows, len(data))])
    batches = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(
            texts[start : start + batch_size], truncation=True, max_length=args.max_length, padding=True
        )
        batches.append({key: np.asarray(value, dtype=np.int64) for key, value in encoded.items()})
    return batches


def theoretical_speedup(model, batches, exit_layers: np.ndarray) -> float:
    """Full-depth FLOPs over the FLOPs of the exits taken (each row's own token count, heads included)."""
    counts = torch.cat([torch.from_numpy(b["attention_mask"]).sum(-1) for b in batches]).long()
    costs, full_costs = sample_costs(model, counts)
    head_of_layer = {layer: k for k, layer in enumerate(model.config.exit_layers)}
    heads = torch.tensor([head_of_layer[int(layer)] for layer in exit_layers])
    return float(full_costs.sum() / costs.gather(1, heads.view(-1, 1)).sum())


def bench_batch_size(args, model, ort_model, batches) -> dict:
    """The three comparisons at one batch size."""
    inputs = [{k: v for k, v in b.items() if k in ort_model.input_names} for b in batches]
    torch_inputs = [{k: torch.from_numpy(v) for k, v in b.items()} for b in inputs]
    setting = {name: getattr(model.config, name) for name in ("exit_policy", "exit_threshold", "patience")}

    def ort_adaptive():
        return [ort_model(**b) for b in inputs]

    def ort_full():
        return [ort_model.run_full_depth(**b) for b in inputs]

    def torch_full():
        model.config.exit_policy, model.config.exit_threshold = "none", None
        try:
            return [model(**b) for b in torch_inputs]
        finally:
            model.config.exit_policy, model.config.exit_threshold = setting["exit_policy"], setting["exit_threshold"]

    adaptive_vs_full = time_interleaved(ort_adaptive, ort_full, args.repeats, 1, args.threads)
    exits = np.concatenate([out.exit_layer for out in adaptive_vs_full.adaptive_output])
    result = {"setting": setting, "num_samples": int(exits.size), "average_exit_layer": float(exits.mean())}
    result["ort_adaptive_vs_ort_full"] = adaptive_vs_full.summary(theoretical_speedup(model, batches, exits))
    ort_vs_torch = time_interleaved(ort_full, torch_full, args.repeats, 1, args.threads)
    # "realized_speedup" here is PyTorch full depth time over onnxruntime full depth time.
    result["ort_full_vs_torch_full"] = ort_vs_torch.summary(1.0)
    with torch.inference_mode():
        reference = [model(**b) for b in torch_inputs]
    torch_exits = torch.cat([r.exit_layer for r in reference]).numpy()
    difference = max(
        float(np.abs(o.logits - r.logits.numpy()).max()) for o, r in zip(adaptive_vs_full.adaptive_output, reference)
    )
    result["agreement"] = {"same_exit": float((torch_exits == exits).mean()), "max_logit_difference": difference}
    return result


def main(argv=None) -> dict:
    """Runs the benchmark; prints a table and returns (and optionally writes) the results."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tokenizer, folder = load(args)
    ort_model = AdaptiveOnnxModel(folder, threads=args.threads)
    results = {
        "model": args.model,
        "onnx_dir": folder,
        "exporter": args.exporter,
        "threads": args.threads,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "cpu_count": os.cpu_count(),
        "batch_sizes": {},
    }
    header = ("batch", "avg exit", "realized", "theory", "ratio", "ORT/PT full", "same exit")
    print(" ".join(f"{name:>{width}}" for name, width in zip(header, (5, 8, 8, 7, 6, 11, 9))))
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        result = bench_batch_size(args, model, ort_model, make_batches(args, tokenizer, batch_size))
        results["batch_sizes"][str(batch_size)] = result
        adaptive, versus = result["ort_adaptive_vs_ort_full"], result["ort_full_vs_torch_full"]
        print(
            f"{batch_size:>5} {result['average_exit_layer']:>8.2f} {adaptive['realized_speedup']:>8.2f} "
            f"{adaptive['theoretical_speedup']:>7.2f} {adaptive['efficiency']:>6.2f} "
            f"{versus['realized_speedup']:>11.2f} {result['agreement']['same_exit']:>9.3f}"
            + ("  (noisy)" if adaptive["noisy"] or versus["noisy"] else "")
        )
    if args.json:
        write_json(args.json, results, default=float)
    return results


if __name__ == "__main__":
    main()
