"""HF image families (DINOv2, ConvNeXt v1/v2) beyond the shared invariants: plain checkpoints load unchanged through
the Auto image class, and the families' own bad inputs get errors naming the family."""

from __future__ import annotations

import pytest
import torch
import transformers
from cases_exits_halting import HF_IMAGE_EXIT_FAMILIES

import adaptive_hf
from adaptive_hf.core.adapters.dinov2 import Dinov2Adapter

NUM_LABELS = 3


def _stock_classifier(family: str):
    config_class, stock_class, values = HF_IMAGE_EXIT_FAMILIES[family]
    torch.manual_seed(0)
    return stock_class(config_class(**values, num_labels=NUM_LABELS)).eval()


@pytest.mark.parametrize("family", sorted(HF_IMAGE_EXIT_FAMILIES))
def test_plain_checkpoint_loads_unchanged(family, tmp_path):
    stock = _stock_classifier(family)
    stock.save_pretrained(tmp_path)
    model = adaptive_hf.AutoEarlyExitModelForImageClassification.from_pretrained(tmp_path, exit_layers=[2, 4]).eval()
    assert type(model).__name__ == f"EarlyExit{model.adapter_class.class_prefix}ForImageClassification"
    ours = model.state_dict()
    for name, tensor in stock.state_dict().items():
        assert torch.equal(ours[name], tensor), name
    new = {name for name in ours if name not in stock.state_dict()}
    assert new and all(name.startswith("exit_heads.") for name in new)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(pixels).logits, stock(pixels).logits)


def test_dinov2_image_off_the_patch_grid_is_refused():
    model = adaptive_hf.AutoEarlyExitModelForImageClassification.from_config(_stock_classifier("dinov2").config).eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 40, 24))  # another size on the grid: the position embeddings are interpolated
        with pytest.raises(ValueError, match=r"dinov2: image size 30x32 .*patch size 8x8.*multiples.*interpolate"):
            model(torch.randn(1, 3, 30, 32))


def test_convnext_refuses_position_interpolation():
    model = adaptive_hf.AutoEarlyExitModelForImageClassification.from_config(
        _stock_classifier("convnext").config
    ).eval()
    with pytest.raises(ValueError, match="convnext: `interpolate_pos_encoding` does not apply"):
        model(torch.randn(1, 3, 32, 32), interpolate_pos_encoding=True)


def test_auto_classes_refuse_the_other_modality():
    with pytest.raises(ValueError, match="image family.*AutoEarlyExitModelForImageClassification"):
        adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_config(_stock_classifier("dinov2").config)
    with pytest.raises(ValueError, match="text family.*AutoEarlyExitModelForSequenceClassification"):
        adaptive_hf.AutoEarlyExitModelForImageClassification.from_config(transformers.BertConfig(num_hidden_layers=2))


def test_dinov2_swiglu_upcycles_to_gated_experts(tmp_path):
    torch.manual_seed(0)
    config = transformers.Dinov2Config(
        image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, use_swiglu_ffn=True
    )
    config.num_labels = NUM_LABELS
    dense = transformers.Dinov2ForImageClassification(config).eval()
    model = adaptive_hf.upcycle(dense, num_experts=4, moe_layers=[1, 3], capacity_factor=0.0, seed=1).eval()
    assert model.dinov2.encoder.layer[0].mlp.experts.gated
    pixels = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
        torch.testing.assert_close(logits, dense(pixel_values=pixels).logits, rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(pixel_values=pixels).logits, logits)


def test_convnext_units_are_stages():
    model = adaptive_hf.AutoEarlyExitModelForImageClassification.from_config(_stock_classifier("convnext").config)
    assert model.config.exit_layers == [1, 2, 3, 4]  # one exit per stage
    assert [head.norm.normalized_shape[0] for head in model.exit_heads] == [8, 16, 24]


def test_dinov2_plain_checkpoint_loads_into_halting(tmp_path):
    stock = _stock_classifier("dinov2")
    stock.save_pretrained(tmp_path)
    model = adaptive_hf.AutoHaltingModelForImageClassification.from_pretrained(
        tmp_path, halting_granularity="token", halting_enabled=False
    ).eval()
    ours = model.state_dict()
    for name, tensor in stock.state_dict().items():
        assert torch.equal(ours[name], tensor), name
    assert {name for name in ours if name not in stock.state_dict()} == {
        name for name in ours if name.startswith("halting_units.")
    }
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(pixels).logits, stock(pixels).logits)


def test_halting_refuses_families_without_token_subsets():
    expected = (
        r"Unsupported architecture for halting on images: model_type='convnext'\. Supported image families: dinov2\."
    )
    with pytest.raises(ValueError, match=expected):
        adaptive_hf.AutoHaltingModelForImageClassification.from_config(_stock_classifier("convnext").config)


class Dinov2WithRegistersAdapter(Dinov2Adapter):
    """DINOv2 with register tokens: the DINOv2 layout under its own classes (a family the package does not ship)."""

    family = "dinov2_with_registers"
    model_type = "dinov2_with_registers"
    class_prefix = "Dinov2WithRegisters"
    config_class = transformers.Dinov2WithRegistersConfig
    pretrained_model_class = transformers.Dinov2WithRegistersPreTrainedModel
    base_model_class = transformers.Dinov2WithRegistersModel
    task_classes = (transformers.Dinov2WithRegistersModel, transformers.Dinov2WithRegistersForImageClassification)


def test_a_new_hf_image_family_is_one_adapter(tmp_path):
    built = adaptive_hf.register_family(Dinov2WithRegistersAdapter)
    assert set(built) == {"early_exit", "halting", "switch_moe"}
    values = {k: v for k, v in HF_IMAGE_EXIT_FAMILIES["dinov2"][2].items() if k != "hidden_dropout_prob"}
    config = transformers.Dinov2WithRegistersConfig(**values, num_register_tokens=2, num_labels=NUM_LABELS)
    torch.manual_seed(0)
    stock = transformers.Dinov2WithRegistersForImageClassification(config).eval()
    stock.save_pretrained(tmp_path)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = stock(pixels).logits
        exits = adaptive_hf.AutoEarlyExitModelForImageClassification.from_pretrained(tmp_path).eval()
        assert type(exits).__name__ == "EarlyExitDinov2WithRegistersForImageClassification"
        assert torch.equal(exits(pixels).logits, expected)
        halting = adaptive_hf.AutoHaltingModelForImageClassification.from_pretrained(
            tmp_path, halting_granularity="token", halting_enabled=False
        ).eval()
        assert torch.equal(halting(pixels).logits, expected)
        moe = adaptive_hf.upcycle(stock, num_experts=2, moe_layers=[2], capacity_factor=0.0).eval()
        torch.testing.assert_close(moe(pixel_values=pixels).logits, expected, rtol=1e-5, atol=1e-5)
