"""Training fields changed after construction are validated where the loss uses them."""

from __future__ import annotations

import pytest
import torch
from text_testers import padded_batch, tiny_backbone_config

import adaptive_hf  # noqa: F401  (registers the Auto classes)
from adaptive_hf import AutoEarlyExitModelForSequenceClassification, AutoHaltingModelForSequenceClassification


def text_batch(batch_size=4):
    ids, mask = padded_batch(batch_size, 6)
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.arange(batch_size) % 2}


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("exit_training", "magic", "`exit_training` must be one of 'joint', 'two_stage', 'distill'"),
        ("distill_temperature", 0, r"`distill_temperature` must be a number in \(0"),
        ("exit_loss_weights", [1.0], "one weight per exit .4 exits"),
        ("exit_loss_weights", [1.0, -1.0, 1.0, 1.0], r"`exit_loss_weights` must be a number in \[0"),
        ("exit_loss_weights", [0.0, 0.0, 0.0, 0.0], "positive sum"),
        ("exit_training_stage", 3, "`exit_training_stage` must be one of 1, 2"),
    ],
)
def test_early_exit_training_fields_are_checked_at_the_loss(field, value, message):
    torch.manual_seed(0)
    model = AutoEarlyExitModelForSequenceClassification.from_config(
        tiny_backbone_config("bert"), num_labels=2, exit_training="distill"
    ).train()
    model(**text_batch()).loss.backward()
    setattr(model.config, field, value)
    with pytest.raises((ValueError, TypeError), match=message):
        model(**text_batch())


@pytest.mark.parametrize(
    "field, value", [("ponder_cost", -0.5), ("kl_weight", -1.0), ("prior_lambda", 0.0), ("prior_lambda", 1.5)]
)
@pytest.mark.parametrize("method", ["act", "pondernet"])
def test_halting_training_fields_are_checked_at_the_loss(field, value, method):
    model = AutoHaltingModelForSequenceClassification.from_config(
        tiny_backbone_config("bert"), num_labels=2, halting=method
    ).train()
    setattr(model.config, field, value)
    with pytest.raises(ValueError, match=f"`{field}`"):
        model(**text_batch())


def test_reader_training_fields_are_checked_at_the_loss():
    from adaptive_hf.readers.config import JumpLstmConfig, SkimRnnConfig
    from adaptive_hf.readers.jump_lstm import JumpLstmForSequenceClassification
    from adaptive_hf.readers.skim_rnn import SkimRnnForSequenceClassification

    common = dict(vocab_size=99, embedding_size=8, hidden_size=12, num_labels=2)
    skim = SkimRnnForSequenceClassification(SkimRnnConfig(small_hidden_size=3, **common)).train()
    skim.config.skim_penalty = -1.0
    with pytest.raises(ValueError, match="`skim_penalty`"):
        skim(**text_batch())
    skim.eval()(**text_batch())  # inference does not read training fields
    jump = JumpLstmForSequenceClassification(JumpLstmConfig(read_tokens=2, max_jump=2, **common)).train()
    jump.config.reward = "f1"
    with pytest.raises(ValueError, match="`reward`"):
        jump(**text_batch())


def test_video_training_fields_are_checked_at_the_loss():
    from adaptive_hf.video.modeling import FrameSamplingVideoClassifier

    video = FrameSamplingVideoClassifier.from_timm(
        "test_resnet", model_args={"in_chans": 1}, num_labels=2, num_frames=3, glance_resolution=16, glance_width=4
    ).train()
    video.config.topk_temperature = 0.0
    with pytest.raises(ValueError, match="`topk_temperature`"):
        video(pixel_values=torch.randn(2, 3, 1, 32, 32), labels=torch.tensor([0, 1]))
