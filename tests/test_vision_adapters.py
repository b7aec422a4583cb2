"""One timm ViT adapter for early exits, halting and switch MoE; one ``from_timm`` rule; FLOPs from real widths."""

from __future__ import annotations

import pytest
import timm
import torch

from adaptive_hf import (
    EarlyExitTimmForImageClassification,
    HaltingTimmConfig,
    HaltingTimmForImageClassification,
    SwitchMoETimmForImageClassification,
)
from adaptive_hf.core.adapters.timm import TimmViTAdapter
from adaptive_hf.core.flops import linear_flops

ARCH = "vit_tiny_patch16_224"
ARGS = {"img_size": 16, "patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 4}


def dense_vit(**extra):
    torch.manual_seed(0)
    return timm.create_model(ARCH, pretrained=False, num_classes=3, **ARGS, **extra).eval()


def images(batch=3):
    return torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_every_timm_technique_uses_the_one_vit_adapter_and_names_the_backbone_alike():
    early = EarlyExitTimmForImageClassification.from_timm(ARCH, num_labels=3, **ARGS)
    halting = HaltingTimmForImageClassification.from_timm(ARCH, num_labels=3, **ARGS)
    moe = SwitchMoETimmForImageClassification.from_timm(ARCH, num_labels=3, num_experts=2, **ARGS)
    assert type(early.adapter) is TimmViTAdapter
    assert type(halting.adapter) is TimmViTAdapter
    assert halting.config.backbone_adapter is TimmViTAdapter
    assert moe.adapter_class is TimmViTAdapter and moe.config.backbone_adapter is TimmViTAdapter
    for model in (early, halting, moe):
        assert model.backbone is model.timm_model
        assert model.config.model_args == ARGS  # timm keywords went to model_args, settings to the config


def test_from_timm_loads_timm_weights_for_halting_and_upcycles_them_for_moe():
    dense = dense_vit()
    weights = dense.state_dict()
    x = images()
    with torch.no_grad():
        expected = dense(x)
        halting = HaltingTimmForImageClassification.from_timm(
            ARCH, pretrained_weights=weights, halting_enabled=False, **ARGS
        ).eval()
        assert halting.config.num_labels == 3  # read from the weights' classifier
        torch.testing.assert_close(halting(pixel_values=x).logits, expected, rtol=1e-5, atol=1e-5)
        moe = SwitchMoETimmForImageClassification.from_timm(
            ARCH, pretrained_weights=weights, num_experts=4, capacity_factor=0.0, **ARGS
        ).eval()
        assert moe.config.num_experts == 4
        torch.testing.assert_close(moe(pixel_values=x).logits, expected, rtol=1e-5, atol=1e-5)
    experts = moe.moe_modules()[0].experts
    torch.testing.assert_close(experts.up_proj[3], dense.blocks[0].mlp.fc1.weight.t())
    with pytest.raises(ValueError, match="num_labels"):
        HaltingTimmForImageClassification.from_timm(ARCH, num_classes=3, **ARGS)


@pytest.mark.parametrize("mlp_ratio", [2.0, 4.0])
def test_halting_flops_follow_the_real_mlp_width(mlp_ratio):
    config = HaltingTimmConfig(
        architecture=ARCH, model_args={**ARGS, "mlp_ratio": mlp_ratio}, num_labels=3, halting_granularity="token"
    )
    model = HaltingTimmForImageClassification(config)
    description = config.describe_blocks()
    tokens = description.spatial[0]
    # The adapter's count from the block's widths equals timm's block measured by the FLOP counter.
    assert model.adapter.layer_flops(tokens) == description.unit_flops[0]
    assert TimmViTAdapter.intermediate_size_of(config) == int(32 * mlp_ratio)
    # Every token through every block: the token count spends exactly the full depth plus the halting units.
    full, spent = model.halting_flops(torch.full((2, tokens), 2))
    assert spent - full == 2 * 2 * tokens * linear_flops(1, 32, 1)


def test_halting_timm_head_type_is_checked():
    with pytest.raises(ValueError, match="head_type"):
        HaltingTimmConfig(architecture=ARCH, model_args=ARGS, num_labels=3, head_type="mlp")


def test_video_frames_run_through_the_timm_adapter_and_from_timm_follows_the_rule():
    from adaptive_hf import FrameSamplingVideoClassifier
    from adaptive_hf.core.adapters.timm import TimmResNetAdapter

    torch.manual_seed(0)
    model = FrameSamplingVideoClassifier.from_timm("test_resnet", num_labels=3, in_chans=1, num_frames=4).eval()
    assert model.config.model_args == {"in_chans": 1} and model.config.num_frames == 4
    assert type(model.frame_adapter) is TimmResNetAdapter and model.frame_adapter.model is model.backbone
    frames = torch.randn(5, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.backbone.forward_head(model.backbone.forward_features(frames), pre_logits=True)
        torch.testing.assert_close(model.frame_features(frames), expected)
