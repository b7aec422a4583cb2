"""Bad input gets a clear error naming the field and the allowed values; plus a config/shape fuzz test."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from text_testers import FAMILIES, NUM_LAYERS, padded_batch, tiny_backbone_config
from transformers import GPT2Config

from adaptive_hf import AutoEarlyExitModelForSequenceClassification, EarlyExitBertConfig


def build(family="bert", **settings):
    torch.manual_seed(0)
    settings.setdefault("num_labels", 3)
    return AutoEarlyExitModelForSequenceClassification.from_config(tiny_backbone_config(family), **settings).eval()


@pytest.mark.parametrize(
    ("settings", "error", "pattern"),
    [
        ({"exit_policy": "sometimes"}, ValueError, r"`exit_policy` must be one of 'none', 'confidence'"),
        ({"exit_policy": "confidence", "exit_threshold": 1.5}, ValueError, r"`exit_threshold` must be a number in"),
        ({"exit_policy": "entropy", "exit_threshold": -0.1}, ValueError, r"`exit_threshold`"),
        ({"exit_policy": "confidence", "exit_threshold": "high"}, TypeError, r"`exit_threshold` must be a number"),
        ({"exit_policy": "patience", "exit_threshold": 0.5}, ValueError, r"`exit_threshold` applies to"),
        ({"exit_policy": "patience", "patience": 0}, ValueError, r"`patience` must be an integer"),
        ({"exit_layers": [0, 2]}, ValueError, r"`exit_layers` entries must be 1-based layer indices in 1..4"),
        ({"exit_layers": [2, 9]}, ValueError, r"in 1..4; got 9"),
        ({"exit_layers": [2, 2, 4]}, ValueError, r"`exit_layers` must not repeat a layer"),
        ({"exit_layers": []}, ValueError, r"`exit_layers` must not be empty"),
        ({"exit_layers": "all"}, TypeError, r"`exit_layers` must be a list"),
        ({"head_pooling": "max"}, ValueError, r"`head_pooling` must be one of 'mean', 'cls', 'pooler'"),
        ({"head_type": "deep"}, ValueError, r"`head_type` must be one of 'linear', 'mlp'"),
        ({"exit_training": "magic"}, ValueError, r"`exit_training` must be one of 'joint', 'two_stage', 'distill'"),
        ({"exit_loss_weights": [1.0]}, ValueError, r"`exit_loss_weights` must be a list with one weight per exit"),
        ({"exit_loss_weights": [1, -1, 1, 1]}, ValueError, r"`exit_loss_weights`"),
        ({"num_labels": 1}, ValueError, r"`num_labels` must be >= 2"),
        ({"distill_temperature": 0}, ValueError, r"`distill_temperature`"),
    ],
)
def test_bad_config_values(settings, error, pattern):
    with pytest.raises(error, match=pattern):
        EarlyExitBertConfig(**tiny_backbone_config("bert").to_dict() | settings)


def test_pooler_needs_a_family_with_pooler():
    with pytest.raises(ValueError, match="head_pooling='pooler'"):
        build("distilbert", head_pooling="pooler")


def test_unsupported_architecture_names_supported_families():
    with pytest.raises(ValueError) as info:
        AutoEarlyExitModelForSequenceClassification.from_config(GPT2Config(n_layer=2, n_embd=32, n_head=4))
    message = str(info.value)
    assert "gpt2" in message
    for family in FAMILIES:
        assert family in message
    assert "register_family" in message


def test_bad_inputs():
    model = build()
    ids, mask = padded_batch(2, 6)
    with pytest.raises(ValueError, match="Empty batch"):
        model(input_ids=ids[:0], attention_mask=mask[:0])
    with pytest.raises(TypeError, match="`input_ids` must be an integer tensor"):
        model(input_ids=ids.float(), attention_mask=mask)
    with pytest.raises(ValueError, match=r"`input_ids` must have shape \(batch, seq_len\)"):
        model(input_ids=ids[0])
    with pytest.raises(ValueError, match="`attention_mask` must have shape"):
        model(input_ids=ids, attention_mask=mask[:, :3])
    with pytest.raises(ValueError, match="exactly one of `input_ids` and `inputs_embeds`"):
        model(attention_mask=mask)
    with pytest.raises(ValueError, match=r"`labels` must have shape \(batch,\)"):
        model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 1]))
    with pytest.raises(TypeError, match="`labels` must be an integer tensor"):
        model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="`token_type_ids` is not an input of distilbert"):
        build("distilbert")(input_ids=ids, token_type_ids=torch.zeros_like(ids))


def test_two_stage_needs_intermediate_heads():
    model = build(exit_layers=[NUM_LAYERS], exit_training="two_stage")
    with pytest.raises(ValueError, match="exit_training_stage=2"):
        model.set_exit_training_stage(2)
    with pytest.raises(ValueError, match="must be 1 or 2"):
        model.set_exit_training_stage(3)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=st.sampled_from(FAMILIES),
    exit_layers=st.lists(st.integers(1, NUM_LAYERS), min_size=1, max_size=NUM_LAYERS, unique=True),
    policy=st.sampled_from(["none", "confidence", "entropy", "margin", "patience"]),
    threshold=st.floats(0.0, 1.0),
    patience=st.integers(1, 3),
    batch_size=st.integers(1, 5),
    max_len=st.integers(1, 9),
    seed=st.integers(0, 1000),
)
def test_fuzz_configs_and_batch_shapes(family, exit_layers, policy, threshold, patience, batch_size, max_len, seed):
    settings_ = {"exit_layers": exit_layers, "exit_policy": policy, "patience": patience}
    if policy in ("confidence", "entropy", "margin"):
        settings_["exit_threshold"] = threshold
    model = build(family, **settings_)
    pad = model.config.pad_token_id or 0
    ids, mask = padded_batch(batch_size, max_len, seed=seed, pad_token_id=pad, min_len=1)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    assert out.logits.shape == (batch_size, 3)
    assert torch.isfinite(out.logits).all()
    assert set(out.exit_layer.tolist()) <= set(model.config.exit_layers)
    if policy == "none":
        assert out.exit_layer.tolist() == [NUM_LAYERS] * batch_size
    row = seed % batch_size
    length = int(mask[row].sum())
    with torch.no_grad():
        single = model(input_ids=ids[row : row + 1, :length], attention_mask=mask[row : row + 1, :length])
    assert single.logits.argmax(-1).item() == out.logits[row].argmax(-1).item() or torch.allclose(
        single.logits[0], out.logits[row], atol=1e-5
    )
