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
    assert "| setting |" in out and report_statement_in(out, report_path)
    report = json.loads(report_path.read_text())
    assert report["criterion"] == "max_accuracy_drop=0.05" and report["num_samples"] == 40
    assert report["delta"] == 0.1 and report["rule"] == "learn_then_test"
    saved = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert saved.config.exit_policy == report["chosen"]["exit_policy"]
    assert saved.config.calibration["chosen"]["accuracy"] == report["chosen"]["accuracy"]
    assert saved.config.calibration["statement"] == report["statement"]
    assert (model_dir / "tokenizer.json").is_file()  # the tokenizer survives the re-save


def report_statement_in(out: str, report_path) -> bool:
    return json.loads(report_path.read_text())["statement"] in out


def test_calibrate_label_free_with_delta_and_point_estimate_rule(workspace, tmp_path, capsys):
    model_dir = _copy_model(workspace, tmp_path)
    report_path = tmp_path / "report.json"
    argv = [
        "calibrate", str(model_dir), "--dataset", str(workspace / "data.jsonl"), "--text-column", "sentence",
        "--max-disagreement", "0.3", "--delta", "0.2", "--json", str(report_path), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(report_path.read_text())
    assert report["risk"] == "disagreement" and report["delta"] == 0.2 and report["guaranteed"]
    assert main([*argv, "--rule", "point_estimate_no_guarantee"]) == 0
    report = json.loads(report_path.read_text())
    assert report["rule"] == "point_estimate_no_guarantee" and report["statement"].startswith("No guarantee")


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
    assert main([*argv, "--pool-rows", "3"]) == 0
    assert "| 4, pooled 3 |" in capsys.readouterr().out
    pooled = json.loads(out_json.read_text())["results"]
    assert [(r["batch_size"], r["pool_rows"]) for r in pooled] == [(1, None), (4, None), (4, 3)]
    # classify_stream makes the exits that model(**batch) makes.
    assert pooled[2]["average_exit_layer"] == pytest.approx(results[0]["average_exit_layer"])
    assert main([*argv, "--pool-rows", "0"]) == 2
    assert "--pool-rows" in capsys.readouterr().err


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


@pytest.mark.parametrize(("kind", "knob"), [("halting", "halting_threshold"), ("skim", "skim_threshold")])
def test_calibrate_halting_and_reader_models(workspace, other_models, tmp_path, capsys, kind, knob):
    import shutil

    model_dir = tmp_path / kind
    shutil.copytree(other_models[kind], model_dir)
    report_path = tmp_path / "report.json"
    argv = ["calibrate", str(model_dir), "--dataset", str(workspace / "data.jsonl"), "--text-column", "sentence"]
    argv += ["--max-disagreement", "0.9", "--delta", "0.5", "--json", str(report_path), "--save", "--no-progress"]
    assert main(argv) == 0
    report = json.loads(report_path.read_text())
    assert report["technique"] == ("halting" if kind == "halting" else "readers")
    assert knob in report["chosen"]["setting"], report["note"]
    saved = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert getattr(saved.config, knob) == report["chosen"]["setting"][knob]
    assert saved.config.calibration["statement"] == report["statement"]


# ------------------------------------------------------------------------------------------------------ images
TINY_TIMM_VIT = dict(img_size=28, patch_size=7, embed_dim=16, depth=3, num_heads=2, in_chans=1)
IMAGE_MEAN, IMAGE_STD = [0.13], [0.31]


@pytest.fixture(scope="module")
def image_models(tmp_path_factory):
    """Tiny saved image models: early exits on a 1-channel timm ViT, a timm ResNet (3 channels, 32 px) and an HF
    ViT (3 channels, 28 px), and token halting on a timm ViT. No tokenizer anywhere."""
    import torch
    import transformers

    import adaptive_hf
    from adaptive_hf import (
        EarlyExitTimmForImageClassification,
        EarlyExitViTForImageClassification,
        HaltingTimmConfig,
        HaltingTimmForImageClassification,
    )
    from adaptive_hf.early_exit.vision_config import EarlyExitViTConfig

    def hf_image(config):  # an HF image family through the Auto image class (the family builder's classes)
        return adaptive_hf.AutoEarlyExitModelForImageClassification.from_config(config, num_labels=10)

    root = tmp_path_factory.mktemp("cli_images")
    torch.manual_seed(0)
    models = {
        "timm_vit": EarlyExitTimmForImageClassification.from_timm(
            "vit_tiny_patch16_224", num_labels=10, model_args=dict(TINY_TIMM_VIT), image_mean=IMAGE_MEAN,
            image_std=IMAGE_STD,
        ),
        "timm_resnet": EarlyExitTimmForImageClassification.from_timm(
            "test_resnet", num_labels=10, image_size=[32, 32]
        ),
        "hf_vit": EarlyExitViTForImageClassification(
            EarlyExitViTConfig(
                hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=24, image_size=28,
                patch_size=7, num_labels=10,
            )
        ),
        "hf_dinov2": hf_image(
            transformers.Dinov2Config(
                hidden_size=16, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=2, image_size=28, patch_size=7
            )
        ),
        "hf_convnext": hf_image(
            transformers.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], image_size=32)
        ),
        "halting": HaltingTimmForImageClassification(
            HaltingTimmConfig(
                architecture="vit_tiny_patch16_224", model_args=dict(TINY_TIMM_VIT), num_labels=10,
                halting_granularity="token", halting_threshold=0.9, image_mean=IMAGE_MEAN, image_std=IMAGE_STD,
            )
        ),
    }  # fmt: skip
    for unit in models["halting"].halting_units:
        torch.nn.init.normal_(unit.proj.weight, std=0.6)
    folders = {}
    for name, model in models.items():
        folders[name] = root / name
        model.save_pretrained(folders[name])
    return folders


def _expected_full_depth_accuracy(model_dir, count, mean, std, size, channels):
    """What full depth scores on the first ``count`` test digits, prepared by hand."""
    import torch
    from transformers import AutoModelForImageClassification

    from adaptive_hf.data import load_image_arrays, to_pixel_values

    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    images, labels = load_image_arrays("mnist_subset", validation=True)["test"]
    pixels = to_pixel_values(images[:count], size, channels, mean, std)
    with torch.no_grad():
        if hasattr(model.config, "exit_policy"):
            model.config.exit_policy = "none"
        else:
            model.config.halting_enabled = False
        predictions = model(pixels).logits.argmax(-1)
    return float((predictions == torch.as_tensor(labels[:count])).double().mean())


@pytest.mark.parametrize(
    ("kind", "size", "channels", "mean"),
    [
        ("timm_vit", 28, 1, IMAGE_MEAN),
        ("timm_resnet", 32, 3, [0.5, 0.5, 0.5]),
        ("hf_vit", 28, 3, [0.5, 0.5, 0.5]),
        ("hf_dinov2", 28, 3, [0.5, 0.5, 0.5]),
        ("hf_convnext", 32, 3, [0.5, 0.5, 0.5]),
    ],
)
def test_image_early_exit_calibrate_evaluate_bench(image_models, tmp_path, capsys, kind, size, channels, mean):
    import shutil

    from transformers import AutoModelForImageClassification

    model_dir = tmp_path / kind
    shutil.copytree(image_models[kind], model_dir)
    data = ["--dataset", "mnist_subset", "--max-samples", "40", "--no-progress"]
    report_path = tmp_path / "calibration.json"
    argv = ["calibrate", str(model_dir), *data, "--max-accuracy-drop", "0.05", "--json", str(report_path), "--save"]
    assert main(argv) == 0
    report = json.loads(report_path.read_text())
    assert report["num_samples"] == 40 and report["criterion"] == "max_accuracy_drop=0.05"
    saved = AutoModelForImageClassification.from_pretrained(model_dir)
    assert saved.config.exit_policy == report["chosen"]["exit_policy"]
    capsys.readouterr()

    out_json, out_png = tmp_path / "eval.json", tmp_path / "tradeoff.png"
    argv = [
        "evaluate", str(model_dir), *data, "--json", str(out_json), "--plot", str(out_png), "--policies",
        "confidence", "patience", "--realized-points", "1", "--realized-samples", "8", "--repeats", "1",
        "--batch-size", "16", "--threads", "1",
    ]  # fmt: skip
    assert main(argv) == 0
    payload = json.loads(out_json.read_text())
    std = IMAGE_STD if kind == "timm_vit" else [0.5] * channels
    assert payload["preprocessing"] == {"image_size": [size, size], "num_channels": channels, "mean": mean, "std": std}
    # The CLI prepares the digits the way the model records (size, channels, normalization): same accuracy by hand.
    expected = _expected_full_depth_accuracy(model_dir, 40, mean, std, size, channels)
    assert payload["num_samples"] == 40 and payload["full_depth_accuracy"] == pytest.approx(expected)
    assert {r["exit_policy"] for r in payload["rows"]} == {"none", "confidence", "patience"}
    assert payload["realized"] and all(
        r["realized_speedup"] > 0 and r["timed_samples"] == 8 for r in payload["realized"]
    )
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    bench_json = tmp_path / "bench.json"
    argv = [
        "bench", str(model_dir), "--dataset", "mnist_subset", "--max-samples", "8", "--batch-sizes", "1", "4",
        "--threads", "1", "--repeats", "1", "--policy", "confidence", "--threshold", "0.15", "--json",
        str(bench_json), "--no-progress",
        *(["--channels-last", "--fold-batch-norms"] if kind == "timm_resnet" else []),
    ]  # fmt: skip
    assert main(argv) == 0
    assert "| batch size |" in capsys.readouterr().out
    results = json.loads(bench_json.read_text())["results"]
    assert [r["batch_size"] for r in results] == [1, 4] and all(r["num_samples"] == 8 for r in results)
    assert results[0]["average_exit_layer"] == pytest.approx(results[1]["average_exit_layer"])
    assert main([*argv, "--pool-rows", "6"]) == 0
    assert "| 4, pooled 6 |" in capsys.readouterr().out
    pooled = json.loads(bench_json.read_text())["results"]
    assert [(r["batch_size"], r["pool_rows"]) for r in pooled] == [(1, None), (4, None), (4, 6)]
    assert pooled[2]["average_exit_layer"] == pytest.approx(results[0]["average_exit_layer"])
    assert all(r["theoretical_speedup"] > 0 and r["realized_speedup"] > 0 for r in results)


def test_image_halting_evaluate_bench_and_calibrate(image_models, tmp_path, capsys):
    model_dir = image_models["halting"]
    data = ["--dataset", "mnist_subset", "--max-samples", "24", "--no-progress"]
    out_json, out_png = tmp_path / "eval.json", tmp_path / "sweep.png"
    assert main(["evaluate", str(model_dir), *data, "--json", str(out_json), "--plot", str(out_png)]) == 0
    rows = json.loads(out_json.read_text())["rows"]
    assert rows[0]["setting"] == "full depth" and rows[0]["theoretical_speedup"] == pytest.approx(1)
    expected = _expected_full_depth_accuracy(model_dir, 24, IMAGE_MEAN, IMAGE_STD, 28, 1)
    assert rows[0]["accuracy"] == pytest.approx(expected)
    assert max(r["theoretical_speedup"] for r in rows) > 1.0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bench_json = tmp_path / "bench.json"
    argv = ["bench", str(model_dir), *data, "--batch-sizes", "1", "4", "--threads", "1", "--repeats", "1"]
    assert main([*argv, "--json", str(bench_json)]) == 0
    results = json.loads(bench_json.read_text())["results"]
    assert [r["batch_size"] for r in results] == [1, 4] and all(r["num_samples"] == 24 for r in results)
    capsys.readouterr()
    assert main(["calibrate", str(model_dir), *data, "--max-accuracy-drop", "0.01"]) == 0  # every technique
    assert "Runs at full compute" in capsys.readouterr().out  # 24 rows cannot certify 1 point


def test_image_dataset_folder_with_pil_images(image_models, tmp_path, capsys):
    """A save_to_disk folder (what a Hub image dataset looks like): RGB PIL images of mixed sizes, named labels."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in [(30, 30), (20, 24)] * 6]
    features = datasets.Features(
        {"img": datasets.Image(), "digit": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    folder = tmp_path / "pictures"
    datasets.Dataset.from_dict(
        {"img": pictures, "digit": [i % 10 for i in range(12)]}, features=features
    ).save_to_disk(str(folder))
    for kind in ("timm_vit", "timm_resnet"):  # RGB to gray for the 1-channel ViT; resized to 32 px for the ResNet
        out_json = tmp_path / f"{kind}.json"
        argv = [
            "evaluate", str(image_models[kind]), "--dataset", str(folder), "--label-column", "digit",
            "--realized-points", "0", "--json", str(out_json), "--no-progress",
        ]  # fmt: skip
        assert main(argv) == 0
        assert json.loads(out_json.read_text())["num_samples"] == 12
    capsys.readouterr()
    argv = ["evaluate", str(image_models["timm_vit"]), "--dataset", str(folder), "--image-column", "nope"]
    assert main([*argv, "--no-progress"]) == 2
    assert "--image-column" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--dataset", "mnist_subset", "--split", "dev"], "--split"),
        (["--dataset", "mnist_subset", "--image-mean", "0.1", "0.2"], "image_mean"),
        (["--dataset", "mnist_subset", "--image-std", "0"], "image_std"),
        (["--dataset", "no_such_image_set_xyz"], "Unknown dataset"),
    ],
)
def test_image_errors_are_clear(image_models, capsys, extra, match):
    argv = ["evaluate", str(image_models["timm_vit"]), *extra, "--max-samples", "8", "--no-progress"]
    assert main(argv) == 2
    assert match in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ registry dispatch
def test_commands_run_the_hook_the_technique_registered(workspace, monkeypatch, capsys):
    """The CLI finds the technique by the saved config and runs its spec's hook; a missing hook is refused."""
    import dataclasses

    from adaptive_hf.core.technique import TECHNIQUES

    seen = {}

    def fake_evaluate(args, prepare):
        data = prepare(True)
        seen.update(model_dir=args.model_dir, model=type(data.model).__name__, samples=data.num_samples)
        seen["labels"] = data.labels.tolist()
        return 0

    spec = TECHNIQUES["early_exit"]
    hooks = {name: hook for name, hook in spec.cli.items() if name != "bench"}
    monkeypatch.setitem(TECHNIQUES, "early_exit", dataclasses.replace(spec, cli={**hooks, "evaluate": fake_evaluate}))
    data = ["--dataset", str(workspace / "data.jsonl"), "--text-column", "sentence", "--no-progress"]
    assert main(["evaluate", str(workspace / "model"), *data]) == 0
    expected = [json.loads(line)["label"] for line in (workspace / "data.jsonl").read_text().splitlines()]
    assert seen == {
        "model_dir": str(workspace / "model"),
        "model": "EarlyExitBertForSequenceClassification",
        "samples": 40,
        "labels": expected,
    }
    assert main(["bench", str(workspace / "model"), *data]) == 2
    err = capsys.readouterr().err
    assert "bench is not available for early_exit models" in err and "'halting'" in err


def test_a_plain_model_is_refused_by_name(tmp_path, capsys):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=99, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    assert main(["card", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "model_type='bert'" in err and "not an adaptive classifier" in err and "early_exit" in err


def test_python_dash_m_runs_the_cli(workspace):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "adaptive_hf.cli", "card", str(workspace / "model")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "## Exit policy" in result.stdout


def test_nothing_in_the_package_imports_the_cli():
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "adaptive_hf"
    offenders = []
    for path in package.rglob("*.py"):
        if path.parent.name == "cli" and path.parent.parent == package:
            continue
        depth = len(path.relative_to(package).parts) - 1  # how many dots reach the package root
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                absolute = module
                if node.level:
                    absolute = ".".join(filter(None, ["adaptive_hf", module])) if node.level == depth + 1 else ""
                names = [alias.name for alias in node.names]
                if absolute.startswith("adaptive_hf.cli") or (absolute == "adaptive_hf" and "cli" in names):
                    offenders.append(str(path.relative_to(package)))
            elif isinstance(node, ast.Import) and any(a.name.startswith("adaptive_hf.cli") for a in node.names):
                offenders.append(str(path.relative_to(package)))
    assert offenders == []
