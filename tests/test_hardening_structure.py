"""Structural fields are frozen once a model is built; runtime knobs stay changeable and are checked at forward."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from text_testers import padded_batch, tiny_backbone_config

import adaptive_hf  # noqa: F401  (registers the Auto classes)
from adaptive_hf import AutoEarlyExitModelForSequenceClassification, AutoHaltingModelForSequenceClassification
from adaptive_hf.core.technique import technique_of
from adaptive_hf.moe.upcycle import upcycle

REBUILD = "structural field.*Rebuild the model"


def early_exit(**settings):
    torch.manual_seed(0)
    return AutoEarlyExitModelForSequenceClassification.from_config(tiny_backbone_config("bert"), **settings).eval()


def batch():
    ids, mask = padded_batch(3, 6)
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("exit_layers", [[1, 2, 3, 4, 5], [4, 1, 2, 3], [2, 4]])
def test_changing_exit_layers_after_construction_says_rebuild(exit_layers):
    model = early_exit(exit_policy="patience")
    with pytest.raises(ValueError, match="exit_layers.*" + REBUILD):
        model.config.exit_layers = exit_layers
    assert model.config.exit_layers == [1, 2, 3, 4]
    model(**batch())  # the model is untouched and still runs


def test_in_place_edit_of_a_structural_list_is_caught_at_forward():
    model = early_exit()
    model.config.exit_layers.append(5)
    with pytest.raises(ValueError, match="exit_layers.*" + REBUILD):
        model(**batch())


@pytest.mark.parametrize("field, value", [("head_pooling", "cls"), ("head_type", "linear")])
def test_other_early_exit_structure_is_frozen(field, value):
    model = early_exit()
    with pytest.raises(ValueError, match=f"{field}.*" + REBUILD):
        setattr(model.config, field, value)


def test_runtime_knobs_stay_changeable_and_are_checked_at_forward():
    model = early_exit()
    model.config.exit_policy = "confidence"
    model.config.exit_threshold = 0.5
    model.config.exit_layers = [1, 2, 3, 4]  # the same value is not a change
    assert model(**batch()).logits.shape == (3, 2)
    model.config.__dict__["exit_threshold"] = 2.0  # bypasses nothing at forward
    with pytest.raises(ValueError, match="exit_threshold"):
        model(**batch())


def test_a_copy_of_the_config_builds_another_model_and_nothing_is_serialized(tmp_path):
    model = early_exit(exit_layers=[2, 4])
    config = copy.deepcopy(model.config)
    config.exit_layers = [1, 2, 3, 4]
    other = type(model)(config)
    assert other.exit_heads.layers == [1, 2, 3, 4] and model.exit_heads.layers == [2, 4]
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert not any("frozen" in key.lower() for key in saved)


def test_moe_layers_change_says_rebuild_not_attribute_error():
    from transformers import BertForSequenceClassification

    moe = upcycle(BertForSequenceClassification(tiny_backbone_config("bert")), num_experts=4, moe_layers=[2, 4])
    with pytest.raises(ValueError, match="moe_layers.*" + REBUILD):
        moe.config.moe_layers = [1, 3]
    with pytest.raises(ValueError, match="num_experts.*" + REBUILD):
        moe.config.num_experts = 8
    moe.config.capacity_factor = 2.0  # a runtime knob


def test_halting_head_pooling_change_says_rebuild():
    model = AutoHaltingModelForSequenceClassification.from_config(tiny_backbone_config("bert"))
    with pytest.raises(ValueError, match="`head_pooling`.*" + REBUILD):
        model.config.head_pooling = "max"
    with pytest.warns(FutureWarning, match="use `head_pooling`"), pytest.raises(ValueError, match="`head_pooling`"):
        model.config.halting_pooling = "max"  # the deprecated name reaches the same frozen field
    with pytest.raises(ValueError, match="max_ponder_steps.*" + REBUILD):
        model.config.max_ponder_steps = 2
    model.config.halting_threshold = 0.5  # a runtime knob


def test_reader_and_video_structure_is_frozen():
    from adaptive_hf.readers.config import SkimRnnConfig
    from adaptive_hf.readers.skim_rnn import SkimRnnForSequenceClassification
    from adaptive_hf.video.modeling import FrameSamplingVideoClassifier

    reader = SkimRnnForSequenceClassification(
        SkimRnnConfig(vocab_size=30, embedding_size=8, hidden_size=12, small_hidden_size=3, num_labels=2)
    )
    with pytest.raises(ValueError, match="small_hidden_size.*" + REBUILD):
        reader.config.small_hidden_size = 4
    reader.config.skim_threshold = 0.3
    video = FrameSamplingVideoClassifier.from_timm(
        "test_resnet", model_args={"in_chans": 1}, num_labels=3, num_frames=4, glance_resolution=16, glance_width=4
    )
    with pytest.raises(ValueError, match="num_frames.*" + REBUILD):
        video.config.num_frames = 1
    assert "num_frames" in technique_of(video).structural_fields


def test_halting_head_pooling_checked_at_forward_without_the_frozen_registry():
    from adaptive_hf.core import configuration

    model = AutoHaltingModelForSequenceClassification.from_config(tiny_backbone_config("bert")).eval()
    configuration._FROZEN.pop(id(model.config))  # as in a remote-code copy, where no technique spec is registered
    model.config.head_pooling = "max"
    with pytest.raises(ValueError, match="`head_pooling` must be one of 'mean', 'cls'"):
        model(**batch())


def test_an_in_place_structural_edit_is_refused_at_save(tmp_path):
    model = early_exit(exit_layers=[2, 4])
    model.config.exit_layers.insert(0, 1)
    with pytest.raises(ValueError, match="exit_layers.*" + REBUILD):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()
