"""Does the calibrated bound hold on unseen rows? Violation rate and speedup kept over random splits.

For a trained model (default: the main job's, saved by ``recipes/early_exit_text.py``), the held-out rows
(validation and test together, never trained on) are measured once under every candidate setting
(``adaptive_hf.calibration.collect_candidates``: one pass with every exit head for early exits, one eval pass per
setting for other techniques). Then, for each of ``--splits`` random splits (``--calibration_rows`` to calibrate,
the rest to test), each rule picks a setting on the calibration side and the test side scores it:

* ``learn_then_test`` (the default of ``adaptive_hf.calibrate``) against ``point_estimate_no_guarantee`` (the old
  rule), each labelled (``max_accuracy_drop``) and label-free (``max_disagreement``);
* the violation rate: the share of splits whose test accuracy drop against full compute exceeds epsilon (and, for
  the label-free rows, whose test disagreement exceeds it);
* the mean theoretical speedup on the test side (full compute counts 1.0).

Usage::

    python benchmarks/calibration.py --model_dir outputs/early_exit_text --json outputs/calibration.json
    python benchmarks/calibration.py --model_dir outputs/readers/skim_rnn --dataset amazon_fine_food \\
        --max_length 128 --calibration_rows 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding  # noqa: E402

import adaptive_hf  # noqa: E402
from adaptive_hf.calibration import collect_candidates, select_setting  # noqa: E402
from adaptive_hf.data import load_text_classification, packaged_minilm_path  # noqa: E402

RULES = ("learn_then_test", "point_estimate_no_guarantee")
CRITERIA = ("max_accuracy_drop", "max_disagreement")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", default="outputs/early_exit_text")
    parser.add_argument("--dataset", default=None, help="Default: the one in the recipe's report, else amazon.")
    parser.add_argument("--split_seed", type=int, default=None)
    parser.add_argument("--validation_size", type=int, default=None)
    parser.add_argument("--max_length", type=int, default=None)
    parser.add_argument("--tokenizer", default=None, help="Default: the model folder's, else the packaged MiniLM.")
    parser.add_argument(
        "--no_special_tokens", action="store_true", help="Tokenize without [CLS]/[SEP] (the readers' recipe)."
    )
    parser.add_argument("--policies", nargs="+", default=None, help="Chains to try (default: all of the model's).")
    parser.add_argument("--splits", type=int, default=200)
    parser.add_argument("--calibration_rows", type=int, default=1000)
    parser.add_argument("--epsilon", type=float, default=0.005)
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    return parser.parse_args(argv)


def held_out_rows(args, model_dir: Path):
    """Validation and test rows of the dataset the model was trained on, tokenized as the recipe did."""
    recipe = {}
    report_path = model_dir / "early_exit_report.json"
    if report_path.is_file():
        recipe = json.loads(report_path.read_text()).get("data_args", {})
    name = args.dataset or recipe.get("dataset_name", "amazon_fine_food")
    seed = args.split_seed if args.split_seed is not None else recipe.get("split_seed", 0)
    validation_size = args.validation_size or recipe.get("validation_size")
    max_length = args.max_length or recipe.get("max_length", 64)
    data = load_text_classification(name, seed=seed, validation_size=validation_size)
    source = args.tokenizer or (model_dir if (model_dir / "tokenizer.json").is_file() else packaged_minilm_path())
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.padding_side = "right"
    held_out = datasets.concatenate_datasets([data["validation"], data["test"]])
    special = not args.no_special_tokens
    tokenized = held_out.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length, add_special_tokens=special),
        batched=True,
    ).remove_columns(["text"])
    return tokenized, tokenizer, {"dataset": name, "split_seed": seed, "max_length": max_length}


def score_on_test(outcomes, chosen_setting: dict, rows: torch.Tensor) -> dict:
    """Test-side accuracy drop, disagreement and theoretical speedup of a setting (full compute: ``{}``)."""
    full = outcomes.full_predictions[rows]
    labels = outcomes.labels[rows]
    full_cost = float(outcomes.full_costs[rows].sum())
    if not chosen_setting:
        return {"drop": 0.0, "disagreement": 0.0, "speedup": 1.0, "full_compute": True}
    for index, chain in enumerate(outcomes.chains):
        if chosen_setting in chain:
            position = chain.index(chosen_setting)
            predictions = outcomes.predictions[index][position][rows]
            spent = float(outcomes.costs[index][position][rows].sum())
            break
    else:
        raise KeyError(f"{chosen_setting} is not a candidate")
    drop = float((full == labels).double().mean() - (predictions == labels).double().mean())
    return {
        "drop": drop,
        "disagreement": float((predictions != full).double().mean()),
        "speedup": full_cost / spent,
        "full_compute": False,
    }


def run_splits(outcomes, args) -> list[dict]:
    n = outcomes.num_samples
    if not 0 < args.calibration_rows < n:
        raise ValueError(f"--calibration_rows must be in (0, {n}); got {args.calibration_rows}.")
    generator = torch.Generator().manual_seed(args.seed)
    results = {(rule, criterion): [] for rule in RULES for criterion in CRITERIA}
    for _ in range(args.splits):
        order = torch.randperm(n, generator=generator)
        calibration, test = order[: args.calibration_rows], order[args.calibration_rows :]
        side = outcomes.subset(calibration)
        for rule, criterion in results:
            sample = side if criterion == "max_accuracy_drop" else side.without_labels()
            report = select_setting(sample, delta=args.delta, rule=rule, **{criterion: args.epsilon})
            scored = score_on_test(outcomes, report.chosen["setting"], test)
            scored["bound"] = report.upper_bound
            results[(rule, criterion)].append(scored)
    rows = []
    for (rule, criterion), splits in results.items():
        count = len(splits)
        rows.append(
            {
                "rule": rule,
                "criterion": criterion,
                "violation_rate": sum(s["drop"] > args.epsilon + 1e-12 for s in splits) / count,
                "disagreement_violation_rate": sum(s["disagreement"] > args.epsilon + 1e-12 for s in splits) / count,
                "mean_test_drop": sum(s["drop"] for s in splits) / count,
                "mean_speedup": sum(s["speedup"] for s in splits) / count,
                "full_compute_share": sum(s["full_compute"] for s in splits) / count,
            }
        )
    for row in rows:
        point = next(r for r in rows if r["criterion"] == row["criterion"] and r["rule"] == RULES[1])
        row["speedup_ratio_vs_point_estimate"] = row["mean_speedup"] / point["mean_speedup"]
        row["speedup_kept_vs_point_estimate"] = (row["mean_speedup"] - 1) / max(point["mean_speedup"] - 1, 1e-12)
    return rows


def oracle(outcomes, epsilon: float) -> dict:
    """The fastest candidate whose accuracy drop on *all* held-out rows is within epsilon: what a rule that knew the
    true drops would pick, a ceiling for any rule that keeps its promise (the point estimate overshoots it)."""
    full_right = (outcomes.full_predictions == outcomes.labels).double().mean()
    full_cost = float(outcomes.full_costs.sum())
    best = {"setting": {}, "speedup": 1.0, "drop": 0.0}
    for chain, predictions, costs in zip(outcomes.chains, outcomes.predictions, outcomes.costs, strict=True):
        drops = (full_right - (predictions == outcomes.labels).double().mean(1)).tolist()
        speedups = (full_cost / costs.sum(1)).tolist()
        for setting, drop, speedup in zip(chain, drops, speedups, strict=True):
            if drop <= epsilon + 1e-12 and speedup > best["speedup"]:
                best = {"setting": setting, "speedup": speedup, "drop": drop}
    return best


def markdown(rows: list[dict], args) -> str:
    lines = [
        f"epsilon {args.epsilon:g} ({100 * args.epsilon:g} points), delta {args.delta:g}, {args.splits} splits of "
        f"{args.calibration_rows} calibration rows / the rest test",
        "",
        "| rule | criterion | violation rate (test drop > eps) | test disagreement > eps | mean test drop (pt) "
        "| mean theoretical speedup | speedup vs point estimate | gain (speedup - 1) kept | splits at full compute |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['rule']} | {row['criterion']} | {row['violation_rate']:.3f} | "
            f"{row['disagreement_violation_rate']:.3f} | {100 * row['mean_test_drop']:.2f} | "
            f"{row['mean_speedup']:.2f}x | {100 * row['speedup_ratio_vs_point_estimate']:.0f}% | "
            f"{100 * row['speedup_kept_vs_point_estimate']:.0f}% | "
            f"{row['full_compute_share']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model_dir = Path(args.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    technique = adaptive_hf.technique_of(model).name
    data, tokenizer, data_info = held_out_rows(args, model_dir)
    start = time.perf_counter()
    outcomes = collect_candidates(
        model,
        data,
        require_labels=True,
        policies=args.policies,
        batch_size=args.batch_size,
        data_collator=DataCollatorWithPadding(tokenizer),
        show_progress=False,
    )
    measure_seconds = time.perf_counter() - start
    start = time.perf_counter()
    rows = run_splits(outcomes, args)
    result = {
        "model_dir": str(model_dir),
        "technique": technique,
        "chains": [sorted({k for s in chain for k in s}) for chain in outcomes.chains],
        "candidates": sum(len(chain) for chain in outcomes.chains),
        "held_out_rows": outcomes.num_samples,
        "full_compute_accuracy": float((outcomes.full_predictions == outcomes.labels).double().mean()),
        **data_info,
        "args": vars(args),
        "rows": rows,
        "oracle": oracle(outcomes, args.epsilon),
        "measure_seconds": measure_seconds,
        "splits_seconds": time.perf_counter() - start,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
    }
    print(f"{technique} ({model_dir}), {outcomes.num_samples} held-out rows, {result['candidates']} candidates")
    print(markdown(rows, args))
    best = result["oracle"]
    print(
        f"oracle (fastest candidate with drop <= eps on all {outcomes.num_samples} rows): {best['setting']} "
        f"{best['speedup']:.2f}x, drop {100 * best['drop']:.2f} pt"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
