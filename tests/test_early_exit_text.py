"""Invariants of the early-exit text classifiers, over every supported encoder family."""

from __future__ import annotations

import json

import pytest
import torch
from text_testers import NUM_LAYERS, padded_batch, tiny_backbone_config

from adaptive_hf import AutoEarlyExitModelForSequenceClassification


def build(family: str, **settings):
    torch.manual_seed(0)
    settings.setdefault("num_labels", 3)
    model = AutoEarlyExitModelForSequenceClassification.from_config(tiny_backbone_config(family), **settings)
    return model.eval()


def batch_for(model, batch_size=6, max_len=12, seed=0):
    input_ids, mask = padded_batch(batch_size, max_len, seed=seed, pad_token_id=model.config.pad_token_id or 0)
    return {"input_ids": input_ids, "attention_mask": mask}


def test_runtime_knobs_read_from_config():
    model = build("bert")
    batch = batch_for(model)
    with torch.no_grad():
        assert model(**batch).exit_layer.tolist() == [NUM_LAYERS] * 6
        model.config.exit_policy = "confidence"
        model.config.exit_threshold = 0.0
        assert model(**batch).exit_layer.tolist() == [1] * 6
        model.config.exit_threshold = 1.0
        assert model(**batch).exit_layer.tolist() == [NUM_LAYERS] * 6
        model.config.exit_threshold = 1.5
        with pytest.raises(ValueError, match="exit_threshold"):
            model(**batch)


def test_output_exit_logits_and_tuple_return():
    model = build("bert", exit_layers=[2, 4])
    batch = batch_for(model)
    with torch.no_grad():
        out = model(**batch, output_exit_logits=True)
        assert len(out.exit_logits) == 2
        assert torch.equal(out.exit_logits[-1], out.logits)
        as_tuple = model(**batch, return_dict=False)
    assert torch.equal(as_tuple[0], out.logits)


@pytest.mark.parametrize("family", ["bert", "distilbert", "albert"])
def test_plain_checkpoint_loads_backbone_and_new_heads(family, tmp_path):
    from transformers import AutoModel

    torch.manual_seed(0)
    plain = AutoModel.from_config(tiny_backbone_config(family))
    plain.save_pretrained(tmp_path)
    model = AutoEarlyExitModelForSequenceClassification.from_pretrained(tmp_path, num_labels=4, exit_policy="entropy")
    assert model.config.model_type == f"early_exit_{family}"
    assert model.config.num_labels == 4 and model.exit_heads[0].classifier.out_features == 4
    base = getattr(model, model.base_model_prefix)
    plain_state = plain.state_dict()
    for name, tensor in base.state_dict().items():
        if name in plain_state:
            assert torch.equal(tensor, plain_state[name]), name


def test_num_labels_must_agree_with_checkpoint_head(tmp_path):
    from transformers import BertForSequenceClassification

    classifier = BertForSequenceClassification(tiny_backbone_config("bert"))  # 2 labels
    classifier.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="num_labels"):
        AutoEarlyExitModelForSequenceClassification.from_pretrained(tmp_path / "plain", num_labels=5)
    build("bert").save_pretrained(tmp_path / "ours")  # 3 labels
    with pytest.raises(ValueError, match="num_labels"):
        AutoEarlyExitModelForSequenceClassification.from_pretrained(tmp_path / "ours", num_labels=2)
    reloaded = AutoEarlyExitModelForSequenceClassification.from_pretrained(tmp_path / "ours", exit_policy="patience")
    assert reloaded.config.exit_policy == "patience" and reloaded.config.num_labels == 3


def test_model_card_and_push_to_hub_offline(tmp_path, monkeypatch):
    import huggingface_hub

    model = build("roberta", exit_policy="patience", patience=2)
    model.config.calibration = {
        "criterion": "max_accuracy_drop=0.005",
        "statement": "With 90% confidence, at most 0.5 points below full compute on data like the calibration set.",
        "chosen": {"exit_policy": "patience", "patience": 2, "setting": {"exit_policy": "patience", "patience": 2}},
        "candidates": [
            {
                "setting": {"exit_policy": "patience", "patience": 2},
                "accuracy": 0.9,
                "disagreement": 0.01,
                "upper_bound": 0.004,
                "certified": True,
                "theoretical_speedup": 1.5,
            }
        ],
    }
    uploaded = {}

    class FakeRepo:
        repo_id = "me/tiny-early-exit"

    def fake_create_repo(self, repo_id, **kwargs):
        return FakeRepo()

    def fake_upload_folder(self, *, repo_id, folder_path, **kwargs):
        from pathlib import Path

        uploaded["repo_id"] = repo_id
        uploaded["files"] = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        return "ok"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", fake_upload_folder)
    assert model.push_to_hub("me/tiny-early-exit", tags=["sentiment"]) == "ok"
    files = uploaded["files"]
    assert {"config.json", "model.safetensors", "README.md", "ahf_early_exit_modeling.py"} <= set(files)
    card = files["README.md"].decode()
    for expected in ("early-exit", "sentiment", "roberta", "exit_policy", "`patience`", "at most 0.5 points", "1.50x"):
        assert expected in card, expected
    config = json.loads(files["config.json"])
    assert config["auto_map"]["AutoModelForSequenceClassification"].startswith("ahf_early_exit_modeling.")
    assert config["exit_policy"] == "patience"


def test_save_failure_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    model = build("bert")
    target = tmp_path / "ckpt"

    def broken_card(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(model), "model_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        model.save_pretrained(target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_safetensors_only(tmp_path):
    with pytest.raises(ValueError, match="safetensors"):
        build("bert").save_pretrained(tmp_path, safe_serialization=False)
