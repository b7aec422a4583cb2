"""The three training schemes through the stock ``transformers.Trainer``."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from text_testers import NUM_LAYERS, padded_batch, tiny_backbone_config
from trainer_testers import cpu_training_args
from transformers import Trainer

from adaptive_hf import AutoEarlyExitModelForSequenceClassification


def tiny_dataset(n=32, seed=0):
    ids, mask = padded_batch(n, 8, seed=seed)
    labels = (ids[:, 1] % 2).tolist()  # learnable from the first real token
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels})


def train(model, tmp_path, steps=6):
    args = cpu_training_args(tmp_path, per_device_train_batch_size=8, max_steps=steps, learning_rate=1e-3)
    trainer = Trainer(model=model, args=args, train_dataset=tiny_dataset())
    trainer.train()
    return trainer


def snapshot(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before, module):
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p.detach())}


@pytest.mark.parametrize("scheme", ["joint", "distill"])
def test_joint_and_distill_train_every_head_and_backbone(scheme, tmp_path):
    torch.manual_seed(0)
    model = AutoEarlyExitModelForSequenceClassification.from_config(
        tiny_backbone_config("bert"), num_labels=2, exit_training=scheme
    )
    before = snapshot(model)
    trainer = train(model, tmp_path)
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert all(torch.isfinite(torch.tensor(losses)))
    moved = changed(before, model)
    for layer in range(1, NUM_LAYERS + 1):
        assert f"exit_heads.layer_{layer}.classifier.weight" in moved
    assert "bert.encoder.layer.0.attention.self.query.weight" in moved


def test_joint_loss_is_the_weighted_mean_of_exit_losses():
    torch.manual_seed(0)
    model = AutoEarlyExitModelForSequenceClassification.from_config(
        tiny_backbone_config("bert"),
        num_labels=2,
        exit_loss_weights=[1, 0, 0, 3],
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model.train()
    ids, mask = padded_batch(4, 6)
    labels = torch.tensor([0, 1, 1, 0])
    out = model(input_ids=ids, attention_mask=mask, labels=labels, output_exit_logits=True)
    ce = torch.nn.functional.cross_entropy
    expected = (ce(out.exit_logits[0], labels) + 3 * ce(out.exit_logits[3], labels)) / 4
    torch.testing.assert_close(out.loss, expected)


def test_two_stage_trains_backbone_then_heads_only(tmp_path):
    torch.manual_seed(0)
    model = AutoEarlyExitModelForSequenceClassification.from_config(
        tiny_backbone_config("bert"), num_labels=2, exit_training="two_stage"
    )
    before = snapshot(model)
    train(model, tmp_path / "stage1", steps=3)
    moved = changed(before, model)
    assert "bert.encoder.layer.3.output.dense.weight" in moved
    assert f"exit_heads.layer_{NUM_LAYERS}.classifier.weight" in moved
    assert not any(name.startswith("exit_heads.layer_1.") for name in moved)  # stage 1: final head only

    model.set_exit_training_stage(2)
    before = snapshot(model)
    train(model, tmp_path / "stage2", steps=3)
    moved = changed(before, model)
    assert moved, "stage 2 must train the intermediate heads"
    assert all(
        name.startswith("exit_heads.") and not name.startswith(f"exit_heads.layer_{NUM_LAYERS}.") for name in moved
    )
    assert "exit_heads.layer_1.classifier.weight" in moved


def test_eval_loss_and_predictions_through_trainer(tmp_path):
    torch.manual_seed(0)
    model = AutoEarlyExitModelForSequenceClassification.from_config(
        tiny_backbone_config("bert"), num_labels=2, exit_policy="confidence", exit_threshold=0.5
    )
    trainer = train(model, tmp_path, steps=2)
    prediction = trainer.predict(tiny_dataset(n=12, seed=5))
    logits, exit_layer = prediction.predictions
    assert logits.shape == (12, 2) and exit_layer.shape == (12,)
    assert set(exit_layer.tolist()) <= set(range(1, NUM_LAYERS + 1))
    assert "test_loss" in prediction.metrics
