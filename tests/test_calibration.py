"""Early-exit calibration: exact offline replay of exit policies, the selection rules, config summary, errors.

The technique-generic parts (the statistical guarantee, label-free data, every technique's knob) are tested in
``test_calibration_techniques.py``.
"""

from __future__ import annotations

import json
import math

import datasets
import pytest
import torch
from early_exit_helpers import PAD, run_in_eval, tiny_model, tiny_tokenizer, token_dataset

import adaptive_hf
from adaptive_hf.calibration.report import pareto_front
from adaptive_hf.core.batching import iterate_batches
from adaptive_hf.early_exit.benchmarking import measure_speedup
from adaptive_hf.early_exit.calibration import (
    ExitLogits,
    collect_exit_logits,
    evaluate_setting,
)

POLICY_CASES = [
    ("confidence", "bert"),
    ("entropy", "distilbert"),
    ("margin", "albert"),
    ("patience", "roberta"),
]


@pytest.mark.parametrize(("policy", "family"), POLICY_CASES)
def test_chosen_setting_reproduces_report_in_eval_mode(policy, family):
    model = tiny_model(family, num_labels=3)
    data = token_dataset(64, num_labels=3, seed=1)
    report = adaptive_hf.calibrate(
        model, data, target_speedup=1.3, policies=[policy], data_collator=PAD, batch_size=16, show_progress=False
    )
    chosen = report.chosen
    assert chosen["exit_policy"] == policy, report.note
    assert model.config.exit_policy == policy
    if policy == "patience":
        assert model.config.exit_threshold is None and model.config.patience == chosen["patience"]
    else:
        assert model.config.exit_threshold == chosen["exit_threshold"]
    # The real model, run batched in eval mode with the stored setting, lands where the replay said.
    accuracy, average_layer, layers = run_in_eval(model, data, batch_size=16)
    assert accuracy == pytest.approx(chosen["accuracy"], abs=1e-12)
    assert average_layer == pytest.approx(chosen["average_exit_layer"], abs=1e-12)
    assert average_layer < model.config.exit_layers[-1]  # something exited early
    fractions = {str(layer): float((layers == layer).double().mean()) for layer in model.config.exit_layers}
    assert fractions == pytest.approx(chosen["exit_fractions"])


def test_point_estimate_rule_picks_fastest_within_bound():
    model = tiny_model("bert")
    data = token_dataset(64, seed=2)
    report = adaptive_hf.calibrate(
        model, data, max_accuracy_drop=0.05, rule="point_estimate_no_guarantee", data_collator=PAD, show_progress=False
    )
    full = report.full_depth_accuracy
    assert report.candidates[0]["exit_policy"] == "none" and report.candidates[0]["setting"] == {}
    assert report.candidates[0]["theoretical_speedup"] == pytest.approx(1.0)
    assert report.candidates[0]["accuracy"] == full
    allowed = [r for r in report.candidates[1:] if r["accuracy"] >= full - 0.05 - 1e-9]
    assert report.chosen["accuracy"] >= full - 0.05 - 1e-9
    assert report.chosen["theoretical_speedup"] == max(r["theoretical_speedup"] for r in allowed)
    assert not report.guaranteed and report.delta is None and report.statement().startswith("No guarantee")
    # Every policy was swept, patience over num_exits..1.
    assert {r["exit_policy"] for r in report.candidates} == {"none", "confidence", "entropy", "margin", "patience"}
    assert sorted(r["patience"] for r in report.candidates if r["exit_policy"] == "patience") == [1, 2, 3, 4]


def test_learn_then_test_chooses_cheapest_certified_and_stops_chains():
    model = tiny_model("bert")
    data = token_dataset(300, seed=2)
    report = adaptive_hf.calibrate(
        model, data, max_accuracy_drop=0.1, delta=0.1, data_collator=PAD, show_progress=False
    )
    assert report.guaranteed and report.num_chains == 4 and report.num_samples == 300
    rows = report.candidates[1:]
    for chain in range(4):
        tested = [r for r in rows if r["chain"] == chain and r["tested"]]
        # Fixed sequence: certified while the bound stays within the budget, then one failure ends the chain.
        assert all(r["certified"] and r["upper_bound"] <= 0.1 for r in tested[:-1])
        assert tested[-1]["certified"] or tested[-1]["upper_bound"] > 0.1
        untested = [r for r in rows if r["chain"] == chain and not r["tested"]]
        assert not any(r["certified"] for r in untested)
    certified = [r for r in rows if r["certified"]]
    assert report.chosen["flops_per_sample"] == min(r["flops_per_sample"] for r in certified)
    assert report.upper_bound <= 0.1
    assert report.chosen["exit_policy"] == model.config.exit_policy != "none"


def test_full_depth_accuracy_is_the_final_head():
    model = tiny_model("bert")
    data = token_dataset(40, seed=3)
    report = adaptive_hf.calibrate(model, data, max_accuracy_drop=0.0, data_collator=PAD, show_progress=False)
    model.config.exit_policy = "none"
    accuracy, average_layer, _ = run_in_eval(model, data)
    assert report.full_depth_accuracy == pytest.approx(accuracy, abs=1e-12)
    assert average_layer == model.config.exit_layers[-1]


def test_target_speedup_unreachable_falls_back_to_fastest_with_note():
    model = tiny_model("bert")
    data = token_dataset(32, seed=4)
    report = adaptive_hf.calibrate(model, data, target_speedup=100.0, data_collator=PAD, show_progress=False)
    assert report.note and "fastest" in report.note
    assert report.chosen["theoretical_speedup"] == max(r["theoretical_speedup"] for r in report.candidates)
    assert model.config.calibration["note"] == report.note


def _row(policy, setting, accuracy, speedup):
    key = "patience" if policy == "patience" else "exit_threshold"
    return {"exit_policy": policy, key: setting, "accuracy": accuracy, "average_exit_layer": 1.0,
            "theoretical_speedup": speedup}  # fmt: skip


def test_pareto_front():
    rows = [_row("none", None, 0.9, 1.0), _row("confidence", 0.5, 0.7, 3.0), _row("confidence", 0.8, 0.6, 2.0)]
    front = pareto_front(rows)
    assert [(r["accuracy"], r["theoretical_speedup"]) for r in front] == [(0.9, 1.0), (0.7, 3.0)]


def _synthetic_exit_logits():
    # 3 heads at layers 2, 4, 6; 4 samples, 2 classes. Costs: exit at head k costs k + 1 units; full depth 3.
    big, small = 4.0, 0.1
    logits = torch.tensor(
        [
            [[big, 0.0], [small, 0.0], [0.0, big], [0.0, small]],  # head 0: rows 0 and 2 confident
            [[big, 0.0], [0.0, big], [0.0, big], [small, 0.0]],  # head 1: row 1 confident
            [[big, 0.0], [0.0, big], [0.0, big], [big, 0.0]],  # head 2
        ]
    )
    labels = torch.tensor([0, 1, 1, 1])
    costs = torch.tensor([[1.0, 2.0, 3.0]] * 4, dtype=torch.float64)
    full = torch.full((4,), 3.0, dtype=torch.float64)
    return ExitLogits(logits, labels, torch.tensor([5, 5, 5, 5]), [2, 4, 6], costs, full)


def test_evaluate_setting_by_hand():
    table = _synthetic_exit_logits()
    row = evaluate_setting(table, "confidence", exit_threshold=0.9)
    # Exits: row0 head0, row1 head1, row2 head0, row3 head2 (final). Predictions 0, 1, 1, 0 vs labels 0, 1, 1, 1.
    assert table.exit_heads("confidence", 0.9).tolist() == [0, 1, 0, 2]
    assert row["accuracy"] == 0.75
    assert row["average_exit_layer"] == (2 + 4 + 2 + 6) / 4
    assert row["theoretical_speedup"] == pytest.approx(12.0 / (1 + 2 + 1 + 3))
    assert row["exit_fractions"] == {"2": 0.5, "4": 0.25, "6": 0.25}
    # Patience 1: exit at the first head that agrees with the previous one.
    assert table.exit_heads("patience", patience=1).tolist() == [1, 2, 1, 2]
    none = evaluate_setting(table, "none")
    assert none["theoretical_speedup"] == 1.0 and none["average_exit_layer"] == 6 and none["accuracy"] == 0.75
    assert evaluate_setting(table, "entropy", exit_threshold=1.0)["average_exit_layer"] == 2


def test_collected_costs_match_model_cost_model():
    model = tiny_model("bert")
    data = token_dataset(20, seed=5)
    table = collect_exit_logits(model, data, batch_size=8, data_collator=PAD, show_progress=False)
    lengths = [len(ids) for ids in data["input_ids"]]
    assert table.token_counts.tolist() == lengths
    costs, full = model.exit_flops(lengths[3])
    assert table.costs[3].tolist() == costs and table.full_costs[3].item() == full
    assert table.logits.shape == (len(model.config.exit_layers), 20, 2)
    assert not torch.isnan(table.logits).any()


def test_padded_unpadded_and_tokenizer_collation_agree():
    model = tiny_model("bert")
    unpadded = token_dataset(24, seed=6)
    padded = token_dataset(24, seed=6, padded=True)
    a = collect_exit_logits(model, unpadded, batch_size=8, tokenizer=tiny_tokenizer(), show_progress=False)
    b = collect_exit_logits(model, padded, batch_size=8, show_progress=False)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-5, atol=1e-5)
    assert a.token_counts.tolist() == b.token_counts.tolist()


def test_labels_column_and_dict_input():
    model = tiny_model("bert")
    data = token_dataset(16, seed=7, label_column="labels")
    report = adaptive_hf.calibrate(model, data, max_accuracy_drop=0.01, data_collator=PAD, show_progress=False)
    as_dict = {name: data[name] for name in data.column_names}
    again = adaptive_hf.calibrate(model, as_dict, max_accuracy_drop=0.01, data_collator=PAD, show_progress=False)
    assert again.to_dict() == report.to_dict()


def test_config_summary_round_trip_and_card(tmp_path):
    model = tiny_model("bert")
    data = token_dataset(48, seed=8)
    report = adaptive_hf.calibrate(model, data, max_accuracy_drop=0.2, data_collator=PAD, show_progress=False)
    summary = model.config.calibration
    assert summary["criterion"] == "max_accuracy_drop=0.2"
    assert summary["epsilon"] == 0.2 and summary["delta"] == 0.1 and summary["num_samples"] == 48
    assert summary["statement"] == report.statement()
    assert summary["chosen"]["setting"] == report.chosen["setting"]
    assert summary["full_depth_accuracy"] == report.full_depth_accuracy
    assert 1 <= len(summary["candidates"]) <= 26
    for row in summary["candidates"]:
        assert {"setting", "accuracy", "disagreement", "upper_bound", "certified", "theoretical_speedup"} <= set(row)
    json.dumps(report.to_dict())
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["calibration"] == json.loads(json.dumps(summary))
    assert config["exit_policy"] == model.config.exit_policy
    card = (tmp_path / "README.md").read_text()
    assert "## Calibration" in card and report.statement() in card
    markdown = report.to_markdown()
    assert "| setting |" in markdown and "**" in markdown and report.statement() in markdown
    assert len(report.to_markdown("all").splitlines()) > len(markdown.splitlines())


def test_explicit_chains_restrict_the_sweep():
    model = tiny_model("bert")
    data = token_dataset(16, seed=9)
    chains = [
        [{"exit_policy": "confidence", "exit_threshold": 0.7}, {"exit_policy": "confidence", "exit_threshold": 0.6}]
    ]
    report = adaptive_hf.calibrate(
        model, data, target_speedup=1.0, chains=chains, data_collator=PAD, show_progress=False
    )
    assert [(r["exit_policy"], r.get("exit_threshold")) for r in report.candidates] == [
        ("none", None),
        ("confidence", 0.7),
        ("confidence", 0.6),
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, "exactly one criterion.*max_accuracy_drop.*max_disagreement"),
        ({"max_accuracy_drop": 0.01, "max_disagreement": 0.01}, ValueError, "exactly one criterion"),
        ({"max_accuracy_drop": 0.01, "target_speedup": 2.0}, ValueError, "exactly one criterion"),
        ({"max_accuracy_drop": -0.1}, ValueError, "max_accuracy_drop"),
        ({"max_accuracy_drop": 1.0}, ValueError, r"max_accuracy_drop.*\[0.0, 1.0\)"),
        ({"max_disagreement": 1.5}, ValueError, "max_disagreement"),
        ({"max_accuracy_drop": 0.01, "delta": 0.0}, ValueError, r"delta.*\(0.0, 1.0\)"),
        ({"max_accuracy_drop": 0.01, "delta": 1.0}, ValueError, "delta"),
        ({"max_accuracy_drop": 0.01, "rule": "fastest"}, ValueError, "rule"),
        ({"target_speedup": 0.0}, ValueError, "target_speedup"),
        ({"max_accuracy_drop": 0.01, "policies": ["fast"]}, ValueError, "policies"),
        ({"max_accuracy_drop": 0.01, "chains": {"confidence": [0.5]}}, TypeError, "chains"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    model = tiny_model("bert")
    with pytest.raises(error, match=match):
        adaptive_hf.calibrate(model, token_dataset(8), data_collator=PAD, show_progress=False, **kwargs)


def test_bad_datasets():
    model = tiny_model("bert", num_labels=2)
    good = token_dataset(8)
    with pytest.raises(ValueError, match="empty"):
        adaptive_hf.calibrate(model, good.select([]), max_accuracy_drop=0.01, data_collator=PAD)
    with pytest.raises(ValueError, match="no label column"):
        adaptive_hf.calibrate(model, good.remove_columns("label"), max_accuracy_drop=0.01, data_collator=PAD)
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
        adaptive_hf.calibrate(model, token_dataset(8, num_labels=3, seed=1), max_accuracy_drop=0.01, data_collator=PAD)
    classes = good.cast_column("label", datasets.ClassLabel(names=["a", "b", "c"]))
    with pytest.raises(ValueError, match="3 classes.*num_labels=2"):
        adaptive_hf.calibrate(model, classes, max_accuracy_drop=0.01, data_collator=PAD)
    with pytest.raises(ValueError, match="input_ids"):
        adaptive_hf.calibrate(model, good.rename_column("input_ids", "ids"), max_accuracy_drop=0.01)
    with pytest.raises(ValueError, match="different lengths.*tokenizer"):
        adaptive_hf.calibrate(model, good, max_accuracy_drop=0.01, show_progress=False)
    with pytest.raises(TypeError, match="batch must be a dict"):
        adaptive_hf.calibrate(model, [1, 2, 3], max_accuracy_drop=0.01)
    with pytest.raises(TypeError, match="not an adaptive_hf model"):
        adaptive_hf.calibrate(torch.nn.Linear(2, 2), good, max_accuracy_drop=0.01)


def test_model_state_restored_after_an_error():
    model = tiny_model("bert", exit_policy="confidence", exit_threshold=0.8)
    model.train()
    bad = token_dataset(8, padded=True)
    bad = bad.map(lambda row: {"input_ids": [10_000] + row["input_ids"][1:]})  # out of the vocabulary
    with pytest.raises(Exception):  # noqa: B017  (the embedding's own IndexError)
        adaptive_hf.calibrate(model, bad, max_accuracy_drop=0.01, show_progress=False)
    assert model.config.exit_policy == "confidence" and model.config.exit_threshold == 0.8
    assert model.training
    adaptive_hf.calibrate(model, token_dataset(8, padded=True), max_accuracy_drop=0.01, show_progress=False)
    assert model.training  # training mode restored after a successful run too


def test_measure_speedup_theoretical_matches_replay():
    model = tiny_model("bert", num_labels=3)
    data = token_dataset(12, num_labels=3, seed=10)
    table = collect_exit_logits(model, data, data_collator=PAD, show_progress=False)
    threshold = 0.6
    expected = evaluate_setting(table, "confidence", exit_threshold=threshold)
    batches = list(iterate_batches(data, 1))
    result = measure_speedup(
        model, batches, {"exit_policy": "confidence", "exit_threshold": threshold}, repeats=2, warmup=0, threads=1
    )
    assert result["theoretical_speedup"] == pytest.approx(expected["theoretical_speedup"])
    assert result["average_exit_layer"] == pytest.approx(expected["average_exit_layer"])
    assert result["num_samples"] == 12 and result["batch_size"] == 1 and result["threads"] == 1
    assert math.isfinite(result["realized_speedup"]) and result["realized_speedup"] > 0
    assert model.config.exit_policy == "none" and model.config.exit_threshold is None  # restored
    with pytest.raises(ValueError, match="batches"):
        measure_speedup(model, [])
    with pytest.raises(ValueError, match="repeats"):
        measure_speedup(model, batches, repeats=0)
