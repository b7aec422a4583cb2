"""The ``adaptive-hf`` CLI on a tiny saved model and tiny data files."""

from __future__ import annotations

import json

import pytest
from early_exit_helpers import random_texts, tiny_model, tiny_tokenizer
from transformers import AutoModelForSequenceClassification

from adaptive_hf.cli import main


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A saved tiny early-exit model with its tokenizer, and a labelled JSON-lines data file."""
    root = tmp_path_factory.mktemp("cli")
    model = tiny_model("bert", num_labels=2)
    model.save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    texts, labels = random_texts(40, seed=0)
    data = root / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"sentence": t, "label": y}) + "\n" for t, y in zip(texts, labels, strict=True))
    )
    return root


def _copy_model(workspace, tmp_path):
    import shutil

    target = tmp_path / "model"
    shutil.copytree(workspace / "model", target)
    return target


def test_calibrate_prints_report_and_saves(workspace, tmp_path, capsys):
    model_dir = _copy_model(workspace, tmp_path)
    report_path = tmp_path / "report.json"
    argv = [
        "calibrate", str(model_dir), "--dataset", str(workspace / "data.jsonl"), "--text-column", "sentence",
        "--max-accuracy-drop", "0.05", "--json", str(report_path), "--save", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| policy |" in out and "Chosen:" in out
    report = json.loads(report_path.read_text())
    assert report["criterion"] == "max_accuracy_drop=0.05" and report["num_samples"] == 40
    saved = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert saved.config.exit_policy == report["chosen"]["exit_policy"]
    assert saved.config.calibration["chosen"]["accuracy"] == report["chosen"]["accuracy"]
    assert (model_dir / "tokenizer.json").is_file()  # the tokenizer survives the re-save


def test_calibrate_without_save_leaves_folder_alone(workspace, tmp_path, capsys):
    model_dir = _copy_model(workspace, tmp_path)
    before = (model_dir / "config.json").read_text()
    argv = [
        "calibrate", str(model_dir), "--dataset", str(workspace / "data.jsonl"), "--text-column", "sentence",
        "--target-speedup", "1.5", "--policies", "patience", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "target_speedup=1.5" in capsys.readouterr().out
    assert (model_dir / "config.json").read_text() == before


def test_evaluate_writes_json_and_png(workspace, tmp_path, capsys):
    out_json, out_png = tmp_path / "eval.json", tmp_path / "plots" / "tradeoff.png"
    argv = [
        "evaluate", str(workspace / "model"), "--dataset", str(workspace / "data.jsonl"), "--text-column", "sentence",
        "--json", str(out_json), "--plot", str(out_png), "--policies", "confidence", "patience",
        "--realized-points", "2", "--realized-samples", "8", "--repeats", "1", "--batch-size", "4", "--threads", "1",
        "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "realized speedup" in capsys.readouterr().out
    payload = json.loads(out_json.read_text())
    assert payload["num_samples"] == 40
    assert set(payload["pareto"]) == {"confidence", "patience"}
    assert {r["exit_policy"] for r in payload["rows"]} == {"none", "confidence", "patience"}
    assert payload["realized"] and all(r["realized_speedup"] > 0 and r["threads"] == 1 for r in payload["realized"])
    assert all(r["timed_samples"] == 8 and r["timed_theoretical_speedup"] > 0 for r in payload["realized"])
    assert payload["current_setting"]["exit_policy"] == "none"
    assert payload["current_setting"]["accuracy"] == payload["full_depth_accuracy"]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_reports_each_batch_size(workspace, tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    argv = [
        "bench", str(workspace / "model"), "--dataset", str(workspace / "data.jsonl"), "--text-column", "sentence",
        "--batch-sizes", "1", "4", "--threads", "1", "--repeats", "1", "--max-samples", "8",
        "--policy", "confidence", "--threshold", "0.6", "--json", str(out_json), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| batch size |" in out and "1 thread(s)" in out
    results = json.loads(out_json.read_text())["results"]
    assert [r["batch_size"] for r in results] == [1, 4]
    for result in results:
        assert result["num_samples"] == 8 and result["threads"] == 1
        assert result["setting"] == {"exit_policy": "confidence", "exit_threshold": 0.6, "patience": 2}
        assert result["theoretical_speedup"] > 0 and result["realized_speedup"] > 0
    # Same inputs and setting, so both batch sizes make the same exits.
    assert results[0]["average_exit_layer"] == pytest.approx(results[1]["average_exit_layer"])


def test_card_prints_and_writes(workspace, tmp_path, capsys):
    assert main(["card", str(workspace / "model")]) == 0
    out = capsys.readouterr().out
    assert "## Exit policy" in out and "early-exit" in out
    target = tmp_path / "card.md"
    assert main(["card", str(workspace / "model"), "--output", str(target), "--tags", "demo-tag"]) == 0
    assert "demo-tag" in target.read_text()


def test_string_labels_map_through_label2id(workspace, tmp_path):
    texts, labels = random_texts(12, seed=1)
    data = tmp_path / "data.csv"
    data.write_text("text,label\n" + "".join(f"{t},LABEL_{y}\n" for t, y in zip(texts, labels, strict=True)))
    argv = [
        "calibrate",
        str(workspace / "model"),
        "--dataset",
        str(data),
        "--max-accuracy-drop",
        "0.1",
        "--no-progress",
    ]
    assert main(argv) == 0
    data.write_text("text,label\n" + "".join(f"{t},positive\n" for t in texts))
    assert main(argv) == 2


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["card", "{tmp}/missing"], "does not exist"),
        (["card", "{tmp}"], "config.json"),
        (["calibrate", "{model}", "--dataset", "no_such_dataset_xyz", "--max-accuracy-drop", "0.01"],
         "Unknown dataset"),
        (["calibrate", "{model}", "--dataset", "{tmp}/missing.json", "--max-accuracy-drop", "0.01"],
         "No such data file"),
        (["calibrate", "{model}", "--dataset", "{data}", "--max-accuracy-drop", "0.01"], "text column"),
        (["bench", "{model}", "--dataset", "{data}", "--batch-sizes", "0"], "batch-sizes"),
        (["calibrate", "{model}", "--dataset", "{data}", "--target-speedup", "-1", "--text-column", "sentence"],
         "target_speedup"),
    ],
)  # fmt: skip
def test_errors_are_clear(workspace, tmp_path, capsys, argv, match):
    values = {"tmp": tmp_path, "model": workspace / "model", "data": workspace / "data.jsonl"}
    argv = [a.format(**values) for a in argv] + ["--no-progress"] * (argv[0] != "card")
    assert main(argv) == 2
    assert match in capsys.readouterr().err


def test_tokenizer_missing_is_reported(workspace, tmp_path, capsys):
    model_dir = tmp_path / "bare"
    AutoModelForSequenceClassification.from_pretrained(workspace / "model").save_pretrained(model_dir)
    argv = ["calibrate", str(model_dir), "--dataset", str(workspace / "data.jsonl"), "--max-accuracy-drop", "0.01"]
    assert main(argv) == 2
    assert "--tokenizer" in capsys.readouterr().err
    argv += ["--tokenizer", str(workspace / "model"), "--text-column", "sentence", "--no-progress"]
    assert main(argv) == 0


def test_criterion_is_required(workspace):
    with pytest.raises(SystemExit):
        main(["calibrate", str(workspace / "model"), "--dataset", "x"])
    with pytest.raises(SystemExit):
        main(["calibrate", str(workspace / "model"), "--dataset", "x", "--max-accuracy-drop", "0.1",
              "--target-speedup", "2"])  # fmt: skip


@pytest.fixture(scope="module")
def other_models(workspace):
    """A tiny token-halting classifier and a tiny Skim-RNN reader, saved with the tiny tokenizer."""
    import torch
    from text_testers import tiny_backbone_config

    from adaptive_hf import AutoHaltingModelForSequenceClassification, SkimRnnConfig, SkimRnnForSequenceClassification

    torch.manual_seed(0)
    halting = AutoHaltingModelForSequenceClassification.from_config(
        tiny_backbone_config("bert"), num_labels=2, halting_granularity="token", halting_threshold=0.9
    )
    for unit in halting.halting_units:
        torch.nn.init.normal_(unit.proj.weight, std=0.6)
    reader = SkimRnnForSequenceClassification(
        SkimRnnConfig(vocab_size=99, embedding_size=16, hidden_size=24, small_hidden_size=6, num_labels=2)
    )
    folders = {}
    for name, model in (("halting", halting), ("skim", reader)):
        folders[name] = workspace / name
        model.save_pretrained(folders[name])
        tiny_tokenizer().save_pretrained(folders[name])
    return folders


@pytest.mark.parametrize("kind", ["halting", "skim"])
def test_evaluate_and_bench_on_halting_and_reader_models(workspace, other_models, tmp_path, capsys, kind):
    data = ["--dataset", str(workspace / "data.jsonl"), "--text-column", "sentence", "--no-progress"]
    out_json, out_png = tmp_path / "eval.json", tmp_path / "sweep.png"
    argv = ["evaluate", str(other_models[kind]), *data, "--json", str(out_json), "--plot", str(out_png)]
    assert main(argv) == 0
    rows = json.loads(out_json.read_text())["rows"]
    assert rows[0]["setting"] in ("full depth", "full reading") and rows[0]["theoretical_speedup"] == pytest.approx(1)
    assert len(rows) > 2 and all(0 <= r["accuracy"] <= 1 for r in rows)
    assert max(r["theoretical_speedup"] for r in rows) > 1.0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bench_json = tmp_path / "bench.json"
    argv = ["bench", str(other_models[kind]), *data, "--batch-sizes", "1", "4", "--threads", "1", "--repeats", "1"]
    assert main([*argv, "--max-samples", "8", "--json", str(bench_json)]) == 0
    assert "realized / theoretical" in capsys.readouterr().out
    results = json.loads(bench_json.read_text())["results"]
    assert [r["batch_size"] for r in results] == [1, 4]
    assert all(r["realized_speedup"] > 0 and r["threads"] == 1 for r in results)


def test_calibrate_rejects_non_early_exit_models(workspace, other_models, capsys):
    argv = ["calibrate", str(other_models["halting"]), "--dataset", str(workspace / "data.jsonl")]
    assert main([*argv, "--text-column", "sentence", "--max-accuracy-drop", "0.01", "--no-progress"]) == 2
    assert "calibrate picks the exit policy of early-exit classifiers" in capsys.readouterr().err
