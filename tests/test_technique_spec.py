"""The technique registry: every technique declares its spec once, and generic code finds it from a model."""

import pytest
import torch
from transformers import BertConfig

import adaptive_hf
from adaptive_hf import EarlyExitBertConfig, EarlyExitBertForSequenceClassification, full_compute, technique_of


def _tiny_early_exit(**settings):
    config = EarlyExitBertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, **settings
    )
    return EarlyExitBertForSequenceClassification(config).eval()


def test_every_technique_is_registered_once():
    assert set(adaptive_hf.TECHNIQUES) == {"early_exit", "halting", "switch_moe", "readers", "video"}


def test_technique_of_finds_the_spec_and_rejects_plain_models():
    assert technique_of(_tiny_early_exit()).name == "early_exit"
    with pytest.raises(TypeError, match="not an adaptive_hf model"):
        technique_of(BertConfig())


def test_knob_chains_run_from_most_to_least_compute():
    config = _tiny_early_exit(exit_policy="confidence").config
    chains = technique_of(config).candidate_chains(config)
    confidence = next(c for c in chains if c[0]["exit_policy"] == "confidence")
    thresholds = [setting["exit_threshold"] for setting in confidence]
    assert thresholds == sorted(thresholds, reverse=True) and thresholds[0] == 1.0
    patience = next(c for c in chains if c[0]["exit_policy"] == "patience")
    assert [s["patience"] for s in patience] == [3, 2, 1]


def test_full_compute_runs_full_depth_and_restores_the_knobs():
    torch.manual_seed(0)
    model = _tiny_early_exit(exit_policy="confidence", exit_threshold=0.0)
    ids = torch.randint(1, 50, (4, 6))
    assert model(input_ids=ids).exit_layer.max() == 1
    with full_compute(model):
        assert (model(input_ids=ids).exit_layer == 3).all()
    assert model.config.exit_policy == "confidence" and model.config.exit_threshold == 0.0
