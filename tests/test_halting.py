"""Invariants of the ACT / PonderNet halting classifiers, per sample and per token."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from text_testers import COMMON, FAMILIES, NUM_LAYERS, padded_batch, tiny_backbone_config
from transformers import AutoModelForSequenceClassification

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


def backbone_logits(model, batch):
    hidden = getattr(model, model.base_model_prefix)(**batch).last_hidden_state
    weights = batch["attention_mask"].unsqueeze(-1).float()
    return model.classifier((hidden * weights).sum(1) / weights.sum(1))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("granularity", ["sample", "token"])
@pytest.mark.parametrize("method", METHODS)
def test_disabled_halting_reproduces_backbone(family, granularity, method):
    model = build(family, halting=method, halting_granularity=granularity, halting_enabled=False)
    batch = batch_for(model)
    never_halting = build(family, halting=method, halting_granularity=granularity)
    for unit in never_halting.halting_units:  # lambda ~ 0: the halting path runs, but nothing halts before the end
        torch.nn.init.constant_(unit.proj.bias, -30.0)
    with torch.no_grad():
        expected = backbone_logits(model, batch)
        outputs = [model(**batch), never_halting(**batch)]  # the full-depth shortcut, and the halting path
    for out in outputs:
        torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
        if granularity == "sample":
            assert out.halting_steps.tolist() == [NUM_LAYERS] * 6
        else:
            assert torch.equal(out.halting_steps, batch["attention_mask"] * NUM_LAYERS)
    torch.testing.assert_close(outputs[0].ponder_cost, outputs[1].ponder_cost)


@pytest.mark.parametrize("family", ["bert", "distilbert", "albert", "mpnet"])
@pytest.mark.parametrize("granularity", ["sample", "token"])
@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_one_at_a_time(family, granularity, method):
    model = build(family, halting=method, halting_granularity=granularity, halting_threshold=0.9)
    batch = batch_for(model, batch_size=7, seed=2)
    with torch.no_grad():
        batched = model(**batch)
        for row in range(7):
            length = int(batch["attention_mask"][row].sum())
            single = model(**{key: value[row : row + 1, :length] for key, value in batch.items()})
            torch.testing.assert_close(single.logits[0], batched.logits[row], rtol=1e-4, atol=1e-5)
            if granularity == "sample":
                assert single.halting_steps.item() == batched.halting_steps[row].item()
            else:
                assert single.halting_steps[0].tolist() == batched.halting_steps[row, :length].tolist()
    steps = batched.halting_steps[batch["attention_mask"].bool()] if granularity == "token" else batched.halting_steps
    assert steps.min() < NUM_LAYERS, "nothing halted early: the test would not exercise halting"


# The module whose input is the (packed) tokens a layer's feed-forward block computes, per family.
FFN_INPUT_MODULE = {"distilbert": "ffn", "albert": "ffn", "mpnet": "intermediate"}


@pytest.mark.parametrize("family", FAMILIES)
def test_halted_tokens_are_not_computed(family):
    model = build(family, halting="act", halting_granularity="token", halting_threshold=0.9)
    batch = batch_for(model, seed=4)
    rows_seen = []
    suffix = FFN_INPUT_MODULE.get(family, "intermediate")
    ffn_modules = [m for name, m in model.named_modules() if name.split(".")[-1] == suffix]
    # ALBERT shares one layer across depth, so its hook fires once per layer application.
    assert len(ffn_modules) == (1 if family == "albert" else NUM_LAYERS)
    handles = [
        module.register_forward_hook(lambda module, args, output: rows_seen.append(args[0].shape[:-1].numel()))
        for module in ffn_modules
    ]
    with torch.no_grad():
        out = model(**batch)
    for handle in handles:
        handle.remove()
    steps, mask = out.halting_steps, batch["attention_mask"]
    real = int(mask.sum())
    expected = [int((steps >= n).sum()) for n in range(1, NUM_LAYERS + 1)]
    # Until a token halts, the backbone's own layer runs on the padded batch; afterwards exactly the active tokens.
    assert rows_seen == [mask.numel() if count == real else count for count in expected if count > 0]
    assert expected[1] < real, "no token halted after the first layer: the test would not exercise packing"
    assert model.theoretical_speedup(steps, mask) > 1.0


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


def test_halted_samples_leave_the_batch():
    model = build("bert", halting="pondernet", halting_threshold=0.5)
    batch = batch_for(model, seed=5)
    rows_seen = []
    handles = [
        layer.register_forward_hook(lambda module, args, output: rows_seen.append(args[0].size(0)))
        for layer in model.bert.encoder.layer
    ]
    with torch.no_grad():
        out = model(**batch)
    for handle in handles:
        handle.remove()
    expected = [int((out.halting_steps >= n).sum()) for n in range(1, NUM_LAYERS + 1)]
    assert rows_seen == [count for count in expected if count > 0]


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


@pytest.mark.parametrize("granularity", ["sample", "token"])
def test_save_and_reload_is_exact(granularity, tmp_path):
    model = build("roberta", halting="act", halting_granularity=granularity, halting_threshold=0.8)
    batch = batch_for(model)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    with torch.no_grad():
        a, b = model(**batch), reloaded(**batch)
    assert torch.equal(a.halting_steps, b.halting_steps)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name
    # Same weights and decisions; the logits may differ in the last bits when the loaded tensors' memory alignment
    # makes the BLAS pick another kernel.
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-6)


def test_trust_remote_code_in_fresh_process(tmp_path):
    model = build("distilbert", halting="pondernet", halting_granularity="token", halting_threshold=0.6)
    batch = batch_for(model)
    model.save_pretrained(tmp_path)
    torch.save(batch, tmp_path / "batch.pt")
    with torch.no_grad():
        expected = model(**batch)
    vit = build_vit(halting="act", halting_granularity="token", halting_threshold=0.9)
    images = torch.randn(3, 3, 32, 32)
    vit.save_pretrained(tmp_path / "vit")
    torch.save(images, tmp_path / "images.pt")
    with torch.no_grad():
        expected_vit = vit(pixel_values=images)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["adaptive_hf"] = None
        import torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
        with torch.no_grad():
            out = model(**torch.load({str(tmp_path / "batch.pt")!r}))
        torch.save({{"logits": out.logits, "steps": out.halting_steps}}, {str(tmp_path / "out.pt")!r})
        from transformers import AutoModelForImageClassification
        vit = AutoModelForImageClassification.from_pretrained({str(tmp_path / "vit")!r}, trust_remote_code=True)
        assert not type(vit).__module__.startswith("adaptive_hf")
        with torch.no_grad():
            out = vit.eval()(pixel_values=torch.load({str(tmp_path / "images.pt")!r}))
        torch.save({{"logits": out.logits, "steps": out.halting_steps}}, {str(tmp_path / "vit_out.pt")!r})
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(result["logits"], expected.logits)
    assert torch.equal(result["steps"], expected.halting_steps)
    result = torch.load(tmp_path / "vit_out.pt")
    torch.testing.assert_close(result["logits"], expected_vit.logits)
    assert torch.equal(result["steps"], expected_vit.halting_steps)


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


@pytest.mark.parametrize("granularity", ["sample", "token"])
@pytest.mark.parametrize("method", METHODS)
def test_vit_disabled_halting_reproduces_timm(granularity, method):
    model = build_vit(halting=method, halting_granularity=granularity, halting_enabled=False)
    never_halting = build_vit(halting=method, halting_granularity=granularity)
    for unit in never_halting.halting_units:  # the halting path, with nothing halting before the last block
        torch.nn.init.constant_(unit.proj.bias, -30.0)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model.timm_model(images)
        torch.testing.assert_close(model(pixel_values=images).logits, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(never_halting(pixel_values=images).logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("granularity", ["sample", "token"])
@pytest.mark.parametrize("method", METHODS)
def test_vit_batched_equals_one_at_a_time_and_gradients(granularity, method):
    threshold = 0.9 if method == "act" else 0.5  # PonderNet's threshold is on the probability of having halted
    model = build_vit(halting=method, halting_granularity=granularity, halting_threshold=threshold)
    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        batched = model(pixel_values=images)
        for row in range(5):
            single = model(pixel_values=images[row : row + 1])
            torch.testing.assert_close(single.logits[0], batched.logits[row], rtol=1e-4, atol=1e-5)
            assert torch.equal(single.halting_steps[0], batched.halting_steps[row])
    assert batched.halting_steps.min() < NUM_LAYERS
    assert model.theoretical_speedup(batched.halting_steps) > 1.0
    model.train()
    model(pixel_values=images, labels=torch.tensor([0, 1, 2, 0, 1])).loss.backward()
    assert model.halting_units[0].proj.weight.grad.abs().sum() > 0


def test_vit_round_trip_and_auto_class(tmp_path):
    from transformers import AutoModelForImageClassification

    model = build_vit(halting="act", halting_granularity="token", halting_threshold=0.9)
    images = torch.randn(3, 3, 32, 32)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    with torch.no_grad():
        a, b = model(pixel_values=images), reloaded(pixel_values=images)
    assert torch.equal(a.halting_steps, b.halting_steps)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-6)


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
