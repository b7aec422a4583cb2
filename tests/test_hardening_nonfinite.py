"""NaN/inf rows: never exit early, and are reported by a warning or an error (config.nonfinite_logits)."""

from __future__ import annotations

import warnings

import pytest
import torch
from text_testers import padded_batch, tiny_backbone_config
from transformers import ViTConfig

import adaptive_hf
from adaptive_hf import AutoEarlyExitModelForSequenceClassification
from adaptive_hf.early_exit.policies import decide_exit, initial_state

POLICIES = [("patience", None), ("confidence", 0.0), ("entropy", 1.0), ("margin", 0.0)]


def text_model(**settings):
    torch.manual_seed(0)
    return AutoEarlyExitModelForSequenceClassification.from_config(
        tiny_backbone_config("bert"), num_labels=3, **settings
    ).eval()


def embeds_with_a_nan_row(model, nan_row=1):
    ids, mask = padded_batch(4, 6)
    embeds = model.get_input_embeddings()(ids).detach()
    embeds[nan_row, 2] = float("nan")
    return embeds, mask


@pytest.mark.parametrize("policy, threshold", POLICIES)
def test_nan_row_runs_to_the_last_exit_with_a_warning(policy, threshold):
    # Thresholds that let every finite row exit at the first head it may leave from.
    model = text_model(exit_policy=policy, exit_threshold=threshold, patience=1)
    embeds, mask = embeds_with_a_nan_row(model)
    with pytest.warns(RuntimeWarning, match=r"1 of 4 rows have NaN/inf logits \(rows 1\).*nonfinite_logits"):
        out = model(inputs_embeds=embeds, attention_mask=mask)
    assert out.exit_layer[1] == 4 and torch.isnan(out.logits[1]).all()
    finite = [0, 2, 3]
    assert torch.isfinite(out.logits[finite]).all()
    if policy != "patience":  # thresholds every finite row passes at the first head
        assert (out.exit_layer[finite] == 1).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # finite rows alone: no warning
        alone = model(inputs_embeds=embeds[finite], attention_mask=mask[finite])
    torch.testing.assert_close(alone.logits, out.logits[finite])
    assert torch.equal(alone.exit_layer, out.exit_layer[finite])


def test_nonfinite_logits_error_mode_raises():
    model = text_model(exit_policy="patience", nonfinite_logits="error")
    embeds, mask = embeds_with_a_nan_row(model, nan_row=3)
    with pytest.raises(ValueError, match=r"rows 3.*nonfinite_logits='warn'"):
        model(inputs_embeds=embeds, attention_mask=mask)
    model.config.nonfinite_logits = "ignore"
    with pytest.raises(ValueError, match="`nonfinite_logits` must be one of 'warn', 'error'"):
        model(inputs_embeds=embeds, attention_mask=mask)


def test_nan_in_training_is_reported_too():
    model = text_model().train()
    embeds, mask = embeds_with_a_nan_row(model)
    with pytest.warns(RuntimeWarning, match="NaN/inf logits"):
        model(inputs_embeds=embeds, attention_mask=mask, labels=torch.tensor([0, 1, 2, 0]))


@pytest.mark.parametrize("policy, threshold", POLICIES)
def test_decide_exit_never_lets_a_nonfinite_row_out(policy, threshold):
    logits = torch.tensor([[5.0, 0.0], [float("nan")] * 2, [float("-inf"), 0.0], [float("inf"), 0.0]])
    state = initial_state(policy, 4, logits.device)
    for _ in range(3):  # patience=1: the second agreeing head would let a row out
        done, state = decide_exit(policy, logits, threshold, 1, state)
    assert done.tolist() == [True, False, False, False]


def _tiny_vit_early_exit(**exit_settings):
    # Seeded, so both tests see the same weights: 3 layers, 16x16 images of 4 patches.
    config = ViTConfig(
        hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, image_size=16, patch_size=8,
        num_labels=3,
    )  # fmt: skip
    torch.manual_seed(0)
    return adaptive_hf.EarlyExitViTForImageClassification(
        adaptive_hf.EarlyExitViTConfig(**config.to_dict(), **exit_settings)
    ).eval()


def test_vision_nan_image_runs_to_the_last_exit():
    model = _tiny_vit_early_exit(exit_policy="confidence", exit_threshold=0.0)
    pixels = torch.randn(3, 3, 16, 16)
    pixels[0, 0, 0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match=r"rows 0\)"):
        out = model(pixel_values=pixels)
    assert out.exit_layer[0] == 3 and (out.exit_layer[1:] == 1).all()


def test_classify_stream_reports_a_nan_image_that_reached_the_last_exit():
    model = _tiny_vit_early_exit(exit_policy="patience", patience=1)
    first, second = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    second[1, 0, 0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match=r"rows 1\)"):
        outputs = list(model.classify_stream([first, second], pool_rows=2))
    assert outputs[1].exit_layer[1] == 3
