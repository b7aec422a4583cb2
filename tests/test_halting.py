"""Invariants of the ACT / PonderNet halting classifiers, per sample and per token."""

from __future__ import annotations

import sys

import pytest
import torch
from text_testers import COMMON, FAMILIES, NUM_LAYERS, padded_batch, tiny_backbone_config

from adaptive_hf import AutoHaltingModelForSequenceClassification, HaltingBertConfig

METHODS = ["act", "pondernet"]


def build(family="bert", randomize_units=True, **settings):
    torch.manual_seed(0)
    settings.setdefault("num_labels", 3)
    model = AutoHaltingModelForSequenceClassification.from_config(tiny_backbone_config(family), **settings)
    if randomize_units:  # trained-looking halting units, so samples/tokens halt at different layers
        for unit in model.halting_units:
            torch.nn.init.normal_(unit.proj.weight, std=0.6)
            torch.nn.init.zeros_(unit.proj.bias)
    if family == "mpnet":  # a bias as large as trained ones, so a misplaced bias row or column changes the logits
        torch.nn.init.normal_(model.mpnet.encoder.relative_attention_bias.weight, std=2.0)
    return model.eval()


def batch_for(model, batch_size=6, max_len=10, seed=0):
    ids, mask = padded_batch(batch_size, max_len, seed=seed, pad_token_id=model.config.pad_token_id or 0)
    return {"input_ids": ids, "attention_mask": mask}


# The module whose input is the (packed) tokens a layer's feed-forward block computes, per family.
FFN_INPUT_MODULE = {"distilbert": "ffn", "albert": "ffn", "mpnet": "intermediate"}


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_on_a_token_subset_matches_the_full_layer(family):
    """The active tokens' new states equal the backbone layer's outputs at their positions (keys and values from
    every token, MPNet's position bias rows following the queries)."""
    from adaptive_hf.core.adapters.text import TokenSubset

    model = build(family, halting="act", halting_granularity="token")
    batch = batch_for(model, batch_size=5, seed=6)
    adapter = model.adapter
    with torch.no_grad():
        state = adapter.embed(batch["input_ids"], batch["attention_mask"])
        real = batch["attention_mask"].bool()
        active = real & (torch.rand(real.shape, generator=torch.Generator().manual_seed(0)) < 0.5)
        active[0] = False  # a row with no active token
        active[1, 0] = True
        for index in range(NUM_LAYERS):
            expected = adapter.run_layer(index, state)[active]
            got = adapter.run_layer_on_tokens(index, state.hidden_states, active, real, state.layer_kwargs)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
            single = active[1:2]
            subset = TokenSubset.from_mask(single)
            got = adapter.run_layer_on_tokens(index, state.hidden_states[1:2], None, real[1:2], None, subset)
            torch.testing.assert_close(got, adapter.run_layer(index, state.select(torch.tensor([1])))[single])


def backbone_logits(model, batch):
    hidden = getattr(model, model.base_model_prefix)(**batch).last_hidden_state
    weights = batch["attention_mask"].unsqueeze(-1).float()
    return model.classifier((hidden * weights).sum(1) / weights.sum(1))


@pytest.mark.parametrize("granularity", ["sample", "token"])
@pytest.mark.parametrize("method", METHODS)
def test_gradient_reaches_halting_units(granularity, method):
    model = build("bert", halting=method, halting_granularity=granularity, halting_threshold=0.9)
    model.train()
    batch = batch_for(model)
    out = model(**batch, labels=torch.tensor([0, 1, 2, 0, 1, 2]))
    out.loss.backward()
    # A unit influences the loss at the steps before some unit halted; the last step's unit never does.
    used = int(out.halting_steps.max()) - 1 if method == "act" else NUM_LAYERS - 1
    assert used >= 1
    grads = [unit.proj.weight.grad for unit in model.halting_units[:used]]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize(
    ("settings", "pattern"),
    [
        ({"halting": "sometimes"}, r"`halting` must be one of 'act', 'pondernet'"),
        ({"halting_granularity": "word"}, r"`halting_granularity` must be one of 'sample', 'token'"),
        ({"halting_threshold": 0.0}, r"`halting_threshold` must be a number in \(0.0, 1.0\]"),
        ({"halting_threshold": 1.2}, r"`halting_threshold`"),
        ({"max_ponder_steps": 9}, r"`max_ponder_steps` must be an integer in \[1, 4\]"),
        ({"prior_lambda": 1.0}, r"`prior_lambda`"),
        ({"pondernet_inference": "mode"}, r"`pondernet_inference` must be one of 'threshold', 'sample'"),
    ],
)
def test_bad_config_values(settings, pattern):
    with pytest.raises(ValueError, match=pattern):
        HaltingBertConfig(**tiny_backbone_config("bert").to_dict() | settings)


def token_training_run(tmp_path, **training_args):
    """16 padded rows with binary labels, and Trainer arguments for a few CPU steps (``training_args`` override)."""
    from datasets import Dataset
    from transformers import TrainingArguments

    ids, mask = padded_batch(16, 8)
    data = Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": (ids[:, 1] % 2).tolist()}
    )
    settings = dict(report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True) | training_args
    return data, TrainingArguments(output_dir=str(tmp_path), **settings)


def test_trainer_steps_reduce_nothing_silently(tmp_path):
    from transformers import Trainer

    model = build("bert", randomize_units=False, halting="act", halting_granularity="token", num_labels=2)
    data, args = token_training_run(tmp_path, max_steps=3, per_device_train_batch_size=8, logging_steps=1)
    before = model.halting_units[0].proj.weight.detach().clone()
    Trainer(model=model, args=args, train_dataset=data).train()
    assert not torch.equal(before, model.halting_units[0].proj.weight.detach())


@pytest.mark.parametrize("granularity", ["sample", "token"])
def test_measure_halting_speedup_reports_both_sides(granularity):
    from adaptive_hf.halting.benchmarking import measure_halting_speedup

    model = build("bert", halting="act", halting_granularity=granularity, halting_threshold=0.9)
    batches = [batch_for(model, batch_size=4, seed=s) for s in range(2)]
    result = measure_halting_speedup(model, batches, repeats=2, warmup=0, threads=1)
    assert result["threads"] == 1 and result["repeats"] == 2 and result["num_samples"] == 8
    assert result["theoretical_speedup"] > 1.0 and result["realized_speedup"] > 0
    assert 1.0 <= result["average_steps"] < NUM_LAYERS
    assert model.config.halting_enabled is True  # restored
    if granularity == "token":
        assert 0 < result["token_layer_fraction"] < 1
    assert "realized_speedup_vs_plain" not in result  # only when a plain model is timed


def test_measure_halting_speedup_times_the_plain_backbone_in_the_same_rounds():
    from adaptive_hf.early_exit.benchmarking import plain_counterpart
    from adaptive_hf.halting.benchmarking import measure_halting_speedup

    model = build("bert", halting="act", halting_granularity="sample", halting_threshold=0.9)
    batches = [batch_for(model, batch_size=4, seed=s) for s in range(2)]
    calls = []
    plain = plain_counterpart(model)

    def counted(**batch):
        calls.append(batch["input_ids"].shape)
        return plain(**batch)

    result = measure_halting_speedup(model, batches, repeats=2, warmup=1, threads=1, plain=counted)
    assert len(calls) == 3 * len(batches)  # warm-up + 2 timed rounds, every batch
    assert result["plain_seconds"] > 0 and result["full_over_plain"] > 0
    assert result["realized_speedup_vs_plain"] == pytest.approx(result["plain_seconds"] / result["adaptive_seconds"])


# ------------------------------------------------------------------------------------------ timm vision transformers
VIT_ARGS = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": NUM_LAYERS, "num_heads": 2}


def build_vit(randomize_units=True, **settings):
    from adaptive_hf import HaltingTimmConfig, HaltingTimmForImageClassification

    torch.manual_seed(0)
    config = HaltingTimmConfig(architecture="vit_tiny_patch16_224", model_args=VIT_ARGS, num_labels=3, **settings)
    model = HaltingTimmForImageClassification(config)
    if randomize_units:
        for unit in model.halting_units:
            torch.nn.init.normal_(unit.proj.weight, std=0.6)
            torch.nn.init.zeros_(unit.proj.bias)
    return model.eval()


def test_vit_rejects_cnn_and_bad_images():
    from adaptive_hf import HaltingTimmConfig

    with pytest.raises(ValueError, match="supports timm vision transformers"):
        HaltingTimmConfig(architecture="resnet18", num_labels=3)
    model = build_vit()
    with pytest.raises(ValueError, match="pixel_values"):
        model(pixel_values=torch.randn(3, 32, 32))


def test_albert_token_halting_with_grouped_sublayers():
    """ALBERT with two groups of two layers: every sublayer runs on the active tokens only, in order."""
    from transformers import AlbertConfig

    torch.manual_seed(0)
    backbone = AlbertConfig(**COMMON, embedding_size=16, num_hidden_groups=2, inner_group_num=2)
    settings = {"num_labels": 3, "halting": "act", "halting_granularity": "token"}
    model = AutoHaltingModelForSequenceClassification.from_config(backbone, halting_enabled=False, **settings).eval()
    batch = batch_for(model, batch_size=5, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, backbone_logits(model, batch), rtol=1e-5, atol=1e-5)
    model.config.halting_enabled = True
    model.config.halting_threshold = 0.9
    for unit in model.halting_units:
        torch.nn.init.normal_(unit.proj.weight, std=0.6)
    with torch.no_grad():
        batched = model(**batch)
        for row in range(5):
            length = int(batch["attention_mask"][row].sum())
            single = model(**{key: value[row : row + 1, :length] for key, value in batch.items()})
            torch.testing.assert_close(single.logits[0], batched.logits[row], rtol=1e-4, atol=1e-5)
            assert single.halting_steps[0].tolist() == batched.halting_steps[row, :length].tolist()
    assert batched.halting_steps[batch["attention_mask"].bool()].min() < NUM_LAYERS


def test_curriculum_schedule_and_validation():
    from adaptive_hf.halting.training import HaltingCurriculumCallback

    callback = HaltingCurriculumCallback(full_depth_fraction=0.5, ramp_fraction=0.25, full_depth_every=3)
    schedule = [callback.schedule(step, 8) for step in range(8)]
    assert schedule == [
        (False, 0.0),
        (False, 0.0),
        (False, 0.0),
        (False, 0.0),
        (True, 0.0),
        (True, 0.5),
        (False, 1.0),  # every 3rd step of the halting phase trains at full depth
        (True, 1.0),
    ]
    with pytest.raises(ValueError, match="`full_depth_fraction` must be in"):
        HaltingCurriculumCallback(full_depth_fraction=1.0)
    with pytest.raises(ValueError, match="`full_depth_every`"):
        HaltingCurriculumCallback(full_depth_every=-1)


def test_curriculum_trains_at_full_depth_first_and_restores_config(tmp_path):
    from transformers import Trainer

    from adaptive_hf.halting.training import HaltingCurriculumCallback

    model = build("bert", randomize_units=False, halting="act", halting_granularity="token", num_labels=2)
    model.config.ponder_cost = 0.05
    seen = []
    model.register_forward_pre_hook(
        lambda module, args: seen.append((module.config.halting_enabled, module.config.ponder_cost))
    )
    data, args = token_training_run(tmp_path, max_steps=4, per_device_train_batch_size=4)
    units = [unit.proj.weight.detach().clone() for unit in model.halting_units]
    callback = HaltingCurriculumCallback(full_depth_fraction=0.5, ramp_fraction=0.0)
    Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
    assert seen == [(False, 0.0), (False, 0.0), (True, 0.05), (True, 0.05)]
    assert model.config.halting_enabled is True and model.config.ponder_cost == 0.05
    # The units were idle in the warm-up and trained afterwards.
    assert any(not torch.equal(before, unit.proj.weight) for before, unit in zip(units, model.halting_units))


def test_vision_recipe_smoke(tmp_path):
    """The vision recipe end to end on a few images: curriculum, sweep, timing, saved model with its own config."""
    import importlib.util
    from pathlib import Path

    from adaptive_hf import HaltingTimmForImageClassification

    path = Path(__file__).resolve().parents[1] / "recipes" / "halting_vision.py"
    spec = importlib.util.spec_from_file_location("halting_vision_recipe", path)
    recipe = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = recipe  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(recipe)
    finally:
        del sys.modules[spec.name]
    report = recipe.main(
        ["--output_dir", str(tmp_path), "--max_train_samples", "64", "--max_test_samples", "16"]
        + ["--num_train_epochs", "2", "--per_device_train_batch_size", "16", "--depth", "2", "--embed_dim", "16"]
        + ["--num_heads", "2", "--patch_size", "7", "--sweep", "0.9", "--bench_batch_sizes", "8", "--use_cpu", "true"]
        + ["--disable_tqdm", "true", "--ponder_cost", "0.003"]
    )
    assert [row["setting"] for row in report["sweep"]] == ["full depth", "threshold=0.99", "threshold=0.9"]
    assert report["timings"][0]["batch_size"] == 8
    saved = HaltingTimmForImageClassification.from_pretrained(tmp_path / "model")
    assert saved.config.halting_enabled is True and saved.config.ponder_cost == 0.003  # restored by the curriculum


@pytest.mark.parametrize(
    "name", ["halting/bert-token-act", "halting/bert-sample-pondernet", "halting/timm-vit-sample-act"]
)
def test_theoretical_speedup_counts_the_halted_work(name):
    from adaptive_cases import CASES_BY_NAME

    case = CASES_BY_NAME[name]
    model = case.build()
    batch = case.batch(6, seed=4)
    with torch.no_grad():
        out = model(**batch)
    mask = batch.get("attention_mask") if model.config.halting_granularity == "token" else None
    assert int(out.halting_steps.max()) <= NUM_LAYERS
    assert model.theoretical_speedup(out.halting_steps, mask) > 1.0
