"""A new text family is one adapter: ``register_family`` gives it early exits, halting and switch-MoE upcycling.

CamemBERT is a real transformers family that the package does not ship an adapter for; the adapter below is all
it takes.
"""

from __future__ import annotations

import pytest
import torch
from text_testers import COMMON, NUM_LAYERS, padded_batch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    CamembertConfig,
    CamembertForMaskedLM,
    CamembertForSequenceClassification,
    CamembertModel,
    CamembertPreTrainedModel,
)

import adaptive_hf
from adaptive_hf import (
    AutoEarlyExitModelForSequenceClassification,
    AutoHaltingModelForSequenceClassification,
    BackboneAdapter,
    TextEncoderAdapter,
    register_family,
    upcycle,
)


class CamembertAdapter(TextEncoderAdapter):
    """CamemBERT: the RoBERTa layout (and its FFN slot) under its own classes."""

    family = "camembert"
    model_type = "camembert"
    class_prefix = "Camembert"
    config_class = CamembertConfig
    base_model_class = CamembertModel
    pretrained_model_class = CamembertPreTrainedModel
    task_classes = (CamembertModel, CamembertForSequenceClassification, CamembertForMaskedLM)


@pytest.fixture(scope="module")
def built():
    return register_family(CamembertAdapter)


def tiny_config():
    return CamembertConfig(**COMMON, pad_token_id=1)


def batch(batch_size=6, max_len=10, seed=0):
    input_ids, mask = padded_batch(batch_size, max_len, seed=seed, pad_token_id=1)
    return {"input_ids": input_ids, "attention_mask": mask}


def mean_pool(hidden, mask):
    weights = mask.unsqueeze(-1).float()
    return (hidden * weights).sum(1) / weights.sum(1)


def test_one_adapter_gives_every_technique(built):
    assert sorted(built) == ["early_exit", "halting", "switch_moe"]
    names = {cls.__name__ for pairs in built.values() for pair in pairs for cls in pair}
    assert {
        "EarlyExitCamembertForSequenceClassification",
        "HaltingCamembertForSequenceClassification",
        "SwitchMoECamembertForSequenceClassification",
        "SwitchMoECamembertForMaskedLM",
    } <= names
    for model_type in ("early_exit_camembert", "halting_camembert", "switch_moe_camembert"):
        assert AutoConfig.for_model(model_type).model_type == model_type
    # Registering again is idempotent: the same classes come back.
    assert register_family(CamembertAdapter) == built


def test_early_exits_full_compute_equals_backbone_and_batched_equals_single(built, tmp_path):
    torch.manual_seed(0)
    model = AutoEarlyExitModelForSequenceClassification.from_config(tiny_config(), num_labels=3).eval()
    assert type(model).__name__ == "EarlyExitCamembertForSequenceClassification"
    inputs = batch()
    with torch.no_grad():
        out = model(**inputs)
        hidden = model.roberta(**inputs).last_hidden_state
        expected = model.exit_heads[-1](mean_pool(hidden, inputs["attention_mask"]))
        torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
        assert out.exit_layer.tolist() == [NUM_LAYERS] * 6
        model.config.exit_policy, model.config.patience = "patience", 1
        batched = model(**inputs)
        for row in range(6):
            length = int(inputs["attention_mask"][row].sum())
            single = model(**{key: value[row : row + 1, :length] for key, value in inputs.items()})
            assert single.exit_layer.item() == batched.exit_layer[row].item()
            torch.testing.assert_close(single.logits[0], batched.logits[row], rtol=1e-4, atol=1e-5)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, batched.logits)


@pytest.mark.parametrize("granularity", ["sample", "token"])
def test_halting_full_depth_equals_backbone_and_tokens_halt(built, granularity):
    torch.manual_seed(0)
    model = AutoHaltingModelForSequenceClassification.from_config(
        tiny_config(), num_labels=3, halting_granularity=granularity, halting_enabled=False
    ).eval()
    assert type(model).__name__ == "HaltingCamembertForSequenceClassification"
    inputs = batch()
    with torch.no_grad():
        hidden = model.roberta(**inputs).last_hidden_state
        expected = model.classifier(mean_pool(hidden, inputs["attention_mask"]))
        torch.testing.assert_close(model(**inputs).logits, expected, rtol=1e-5, atol=1e-5)
        model.config.halting_enabled, model.config.halting_threshold = True, 0.9
        for unit in model.halting_units:
            torch.nn.init.normal_(unit.proj.weight, std=0.6)
        batched = model(**inputs)
        for row in range(6):
            length = int(inputs["attention_mask"][row].sum())
            single = model(**{key: value[row : row + 1, :length] for key, value in inputs.items()})
            torch.testing.assert_close(single.logits[0], batched.logits[row], rtol=1e-4, atol=1e-5)
    real = inputs["attention_mask"].bool()
    steps = batched.halting_steps[real] if granularity == "token" else batched.halting_steps
    assert steps.min() < NUM_LAYERS


def test_moe_upcycling_equals_the_dense_model_and_round_trips(built, tmp_path):
    torch.manual_seed(0)
    dense = CamembertForSequenceClassification(tiny_config()).eval()
    moe = upcycle(dense, num_experts=4, capacity_factor=0.0, seed=0).eval()
    assert type(moe).__name__ == "SwitchMoECamembertForSequenceClassification"
    assert len(moe.moe_modules()) == NUM_LAYERS
    inputs = batch()
    with torch.no_grad():
        expected = dense(**inputs).logits
        out = moe(**inputs)
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
    assert out.expert_counts.sum(1).tolist() == [int(inputs["attention_mask"].sum())] * NUM_LAYERS
    moe.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(moe)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, out.logits)


def test_deprecated_aliases_warn_and_return_the_same_classes(built):
    with pytest.warns(FutureWarning, match="register_family"):
        config_class, model_class = adaptive_hf.register_text_encoder(CamembertAdapter)
    assert (config_class, model_class) in built["early_exit"]
    with pytest.warns(FutureWarning, match="register_family"):
        moe_config, moe_models = adaptive_hf.register_moe_family(CamembertAdapter)
    assert moe_config.model_type == "switch_moe_camembert"
    assert {cls.__name__ for cls in moe_models} == {
        f"SwitchMoE{cls.__name__}" for cls in CamembertAdapter.task_classes
    }


def test_an_adapter_that_no_technique_can_use_is_rejected():
    class NothingAdapter(BackboneAdapter):
        family = "nothing"
        model_type = "nothing_at_all"
        class_prefix = "Nothing"
        config_class = CamembertConfig

    with pytest.raises(ValueError, match="No technique is compatible with NothingAdapter"):
        register_family(NothingAdapter)
    assert "nothing_at_all" not in adaptive_hf.core.adapters.base.FAMILY_ADAPTERS
    with pytest.raises(TypeError, match="BackboneAdapter subclass"):
        register_family(CamembertConfig)
    with pytest.raises(ValueError, match="class_prefix"):
        register_family(type("Bad", (TextEncoderAdapter,), {"class_prefix": "", "model_type": "bad_family"}))


def _imported_modules(path, root):
    import ast

    package = ["adaptive_hf", *path.relative_to(root).parent.parts]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            yield ".".join(base + ([node.module] if node.module else []))
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_core_imports_no_technique():
    from pathlib import Path

    root = Path(adaptive_hf.__file__).parent
    forbidden = ("early_exit", "halting", "moe", "readers", "video", "cli", "calibration", "onnx")
    offending = [
        f"{path.relative_to(root)} imports {module}"
        for path in sorted((root / "core").rglob("*.py"))
        for module in _imported_modules(path, root)
        if module.split(".")[:2] in [["adaptive_hf", name] for name in forbidden]
    ]
    assert offending == []
    # The check sees package imports at all: core's own modules import each other.
    assert "adaptive_hf.core.adapters.base" in set(_imported_modules(root / "core" / "registry.py", root))


def test_run_layer_on_rows_computes_only_those_rows(built):
    torch.manual_seed(0)
    model = AutoEarlyExitModelForSequenceClassification.from_config(tiny_config(), num_labels=3).eval()
    inputs = batch()
    state = model.adapter.embed(inputs["input_ids"], inputs["attention_mask"])
    rows = torch.tensor([1, 4])
    seen = []
    handle = model.adapter.layer_modules()[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].size(0)))
    with torch.no_grad():
        subset = model.adapter.run_layer_on_rows(0, state, rows)
        every = model.adapter.run_layer(0, state)
    handle.remove()
    assert seen == [2, 6]
    torch.testing.assert_close(subset, every[rows], rtol=1e-5, atol=1e-6)
