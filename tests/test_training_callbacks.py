"""Trainer callbacks: DeeBERT two-stage switching and exit statistics at evaluation."""

from __future__ import annotations

import pytest
import torch
from early_exit_helpers import PAD, run_in_eval, tiny_model, token_dataset
from text_testers import split_threshold
from transformers import Trainer, TrainerCallback, TrainingArguments

from adaptive_hf import ExitStatisticsCallback, TwoStageExitTrainingCallback
from adaptive_hf.early_exit.calibration import collect_exit_logits
from adaptive_hf.early_exit.policies import exit_score
from adaptive_hf.training import exit_compute_metrics


def _args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        learning_rate=1e-2,
        max_steps=4,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
    )
    values.update(overrides)
    return TrainingArguments(**values)


class Snapshots(TrainerCallback):
    """Copies of the parameters before training and after each optimizer step."""

    def __init__(self):
        self.steps: dict[int, dict[str, torch.Tensor]] = {}

    def _take(self, state, model):
        self.steps[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._take(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._take(state, model)


def _groups(model):
    prefix = model.base_model_prefix + "."
    last = f"exit_heads.layer_{model.exit_heads.layers[-1]}."
    backbone = [n for n, _ in model.named_parameters() if n.startswith(prefix)]
    final = [n for n, _ in model.named_parameters() if n.startswith(last)]
    early = [n for n, _ in model.named_parameters() if n.startswith("exit_heads.") and not n.startswith(last)]
    assert backbone and final and early
    return backbone, final, early


def _changed(before, after, names):
    return [n for n in names if not torch.equal(before[n], after[n])]


def test_two_stage_trains_backbone_then_only_the_early_heads(tmp_path):
    model = tiny_model("bert", exit_training="two_stage").train()
    snapshots = Snapshots()
    trainer = Trainer(
        model=model,
        args=_args(tmp_path),
        train_dataset=token_dataset(32, seed=1),
        data_collator=PAD_WITH_LABELS,
        # The switch must happen before the snapshot of the same step, so it goes first.
        callbacks=[TwoStageExitTrainingCallback(switch_fraction=0.5), snapshots],
    )
    trainer.train()
    backbone, final, early = _groups(model)
    start, middle, end = snapshots.steps[0], snapshots.steps[2], snapshots.steps[4]
    # Stage 1 (steps 1-2): backbone and final head learn; the early heads are untouched.
    assert _changed(start, middle, backbone) and _changed(start, middle, final)
    assert _changed(start, middle, early) == []
    # Stage 2 (steps 3-4): only the early heads learn; backbone and final head stay bit-identical.
    assert _changed(middle, end, backbone) == [] and _changed(middle, end, final) == []
    assert len(_changed(middle, end, early)) == len(early)
    assert model.config.exit_training_stage == 2


def test_two_stage_switch_point_follows_fraction(tmp_path):
    model = tiny_model("bert", exit_training="two_stage").train()
    stages = {}

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            stages[state.global_step] = model.config.exit_training_stage

    trainer = Trainer(
        model=model,
        args=_args(tmp_path),
        train_dataset=token_dataset(32, seed=2),
        data_collator=PAD_WITH_LABELS,
        callbacks=[TwoStageExitTrainingCallback(switch_fraction=0.75), Record()],
    )
    trainer.train()
    assert stages == {1: 1, 2: 1, 3: 2, 4: 2}


def test_two_stage_callback_leaves_other_schemes_alone(tmp_path):
    model = tiny_model("bert", exit_training="joint").train()
    trainer = Trainer(
        model=model,
        args=_args(tmp_path, max_steps=2),
        train_dataset=token_dataset(16, seed=3),
        data_collator=PAD_WITH_LABELS,
        callbacks=[TwoStageExitTrainingCallback(0.1)],
    )
    trainer.train()
    assert model.config.exit_training_stage == 1
    assert all(p.requires_grad for p in model.parameters())


def test_two_stage_callback_rejects_a_model_already_in_stage_two(tmp_path):
    model = tiny_model("bert", exit_training="two_stage").train()
    model.set_exit_training_stage(2)
    trainer = Trainer(
        model=model,
        args=_args(tmp_path, max_steps=2),
        train_dataset=token_dataset(16, seed=4),
        data_collator=PAD_WITH_LABELS,
        callbacks=[TwoStageExitTrainingCallback()],
    )
    with pytest.raises(ValueError, match="set_exit_training_stage"):
        trainer.train()


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1])
def test_switch_fraction_validated(value):
    with pytest.raises(ValueError, match="switch_fraction"):
        TwoStageExitTrainingCallback(value)
    with pytest.raises(TypeError, match="switch_fraction"):
        TwoStageExitTrainingCallback("half")


def test_exit_statistics_at_evaluation(tmp_path):
    model = tiny_model("bert", num_labels=2)
    data = token_dataset(24, seed=5)
    # A threshold between two well-separated first-head scores: about half the rows leave at the first exit.
    table = collect_exit_logits(model, data, data_collator=PAD, show_progress=False)
    model.config.exit_policy = "entropy"
    model.config.exit_threshold = split_threshold(exit_score("entropy", table.logits[0]))
    trainer = Trainer(
        model=model,
        args=_args(tmp_path),
        eval_dataset=data,
        data_collator=PAD_WITH_LABELS,
        compute_metrics=exit_compute_metrics,
        callbacks=[ExitStatisticsCallback()],
    )
    metrics = trainer.evaluate()
    accuracy, average_layer, layers = run_in_eval(model, data, batch_size=8)
    assert average_layer < model.config.exit_layers[-1]  # the setting does exit early
    assert metrics["eval_average_exit_layer"] == pytest.approx(average_layer)
    assert metrics["eval_accuracy"] == pytest.approx(accuracy)
    assert "eval_f1" in metrics
    for layer in model.config.exit_layers:
        assert metrics[f"eval_exit_fraction_layer_{layer}"] == pytest.approx(float((layers == layer).double().mean()))
    assert metrics["eval_theoretical_speedup"] > 1.0
    assert trainer.state.log_history[-1]["eval_average_exit_layer"] == metrics["eval_average_exit_layer"]
    # Full depth: every sample at the last layer, no speedup.
    model.config.exit_policy = "none"
    metrics = trainer.evaluate(metric_key_prefix="dev")
    assert metrics["dev_average_exit_layer"] == model.config.exit_layers[-1]
    assert metrics["dev_theoretical_speedup"] == pytest.approx(1.0)


def test_exit_statistics_callback_added_later_with_model(tmp_path):
    model = tiny_model("bert", exit_policy="confidence", exit_threshold=0.0)
    trainer = Trainer(
        model=model, args=_args(tmp_path), eval_dataset=token_dataset(8, seed=6), data_collator=PAD_WITH_LABELS
    )
    trainer.add_callback(ExitStatisticsCallback(model))
    metrics = trainer.evaluate()
    assert metrics["eval_average_exit_layer"] == model.config.exit_layers[0]  # threshold 0: all leave at once
    assert metrics["eval_exit_fraction_layer_1"] == 1.0


class _PadWithLabels:
    def __call__(self, features):
        batch = PAD(features)
        batch["labels"] = torch.tensor([f["label"] for f in features])
        return batch


PAD_WITH_LABELS = _PadWithLabels()
