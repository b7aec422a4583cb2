"""Invariants of the early-exit text classifiers, over every supported encoder family."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from text_testers import FAMILIES, NUM_LAYERS, padded_batch, split_threshold, tiny_backbone_config
from transformers import AutoModelForSequenceClassification

import adaptive_hf
from adaptive_hf import AutoEarlyExitModelForSequenceClassification
from adaptive_hf.early_exit.policies import exit_score


def build(family: str, **settings):
    torch.manual_seed(0)
    settings.setdefault("num_labels", 3)
    model = AutoEarlyExitModelForSequenceClassification.from_config(tiny_backbone_config(family), **settings)
    return model.eval()


def batch_for(model, batch_size=6, max_len=12, seed=0):
    input_ids, mask = padded_batch(batch_size, max_len, seed=seed, pad_token_id=model.config.pad_token_id or 0)
    return {"input_ids": input_ids, "attention_mask": mask}


def reference_logits(model, batch) -> torch.Tensor:
    """Full-depth logits from the stock base model's own forward plus the final exit head."""
    base = getattr(model, model.base_model_prefix)
    output = base(**batch)
    hidden = output.last_hidden_state
    pooling = model.config.exit_pooling
    if pooling == "mean":
        weights = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * weights).sum(1) / weights.sum(1)
    elif pooling == "cls":
        pooled = hidden[:, 0]
    else:
        pooled = output.pooler_output
    return model.exit_heads[-1](pooled)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_policy_none_reproduces_backbone(family, pooling):
    adapter = adaptive_hf.core.backbones.TEXT_ENCODER_ADAPTERS[family]
    if pooling == "pooler" and not adapter.has_pooler:
        with pytest.raises(ValueError, match="exit_pooling"):
            build(family, exit_pooling=pooling)
        return
    model = build(family, exit_pooling=pooling, exit_policy="none")
    batch = batch_for(model)
    with torch.no_grad():
        out = model(**batch)
        expected = reference_logits(model, batch)
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
    assert out.exit_layer.tolist() == [NUM_LAYERS] * 6


def _exit_settings(model, batch, policy):
    """Settings for ``policy`` that make roughly half the rows exit at the first head."""
    model.config.exit_policy = "none"
    with torch.no_grad():
        first = model(**batch, output_exit_logits=True).exit_logits[0]
    if policy == "patience":
        return {"exit_policy": "patience", "patience": 1, "exit_threshold": None}
    return {"exit_policy": policy, "exit_threshold": split_threshold(exit_score(policy, first))}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("policy", ["confidence", "entropy", "margin", "patience"])
def test_batched_equals_one_at_a_time(family, policy):
    model = build(family, exit_head="linear")
    batch = batch_for(model, batch_size=8, max_len=10, seed=1)
    for key, value in _exit_settings(model, batch, policy).items():
        setattr(model.config, key, value)
    with torch.no_grad():
        batched = model(**batch)
        for row in range(8):
            length = int(batch["attention_mask"][row].sum())
            single = model(**{key: value[row : row + 1, :length] for key, value in batch.items()})
            assert single.exit_layer.item() == batched.exit_layer[row].item()
            torch.testing.assert_close(single.logits[0], batched.logits[row], rtol=1e-4, atol=1e-5)
    if policy != "patience":
        # The split threshold makes both early and late exits happen, so compaction is really exercised.
        assert len(set(batched.exit_layer.tolist())) > 1


def test_exited_rows_are_not_computed():
    model = build("bert", exit_policy="confidence", exit_threshold=0.0)
    rows_seen = []
    handles = [
        layer.register_forward_hook(lambda module, args, output: rows_seen.append(args[0].size(0)))
        for layer in model.bert.encoder.layer
    ]
    with torch.no_grad():
        out = model(**batch_for(model))
    for handle in handles:
        handle.remove()
    assert out.exit_layer.tolist() == [1] * 6
    assert rows_seen == [6]  # every row exited after layer 1: layers 2..4 never ran


def test_partial_exit_shrinks_later_layers():
    model = build("bert", exit_head="linear")
    batch = batch_for(model, batch_size=8, seed=3)
    for key, value in _exit_settings(model, batch, "confidence").items():
        setattr(model.config, key, value)
    rows_seen = []
    handles = [
        layer.register_forward_hook(lambda module, args, output: rows_seen.append(args[0].size(0)))
        for layer in model.bert.encoder.layer
    ]
    with torch.no_grad():
        out = model(**batch)
    for handle in handles:
        handle.remove()
    still_running = [int((out.exit_layer > layer).sum()) for layer in range(1, NUM_LAYERS)]
    assert rows_seen[0] == 8
    assert rows_seen[1 : len(still_running) + 1] == [n for n in still_running if n > 0][: len(rows_seen) - 1]


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_reload_is_exact(family, tmp_path):
    model = build(family, exit_policy="margin", exit_threshold=0.01, exit_layers=[1, 3])
    batch = batch_for(model)
    model.save_pretrained(tmp_path)
    files = sorted(path.name for path in tmp_path.iterdir())
    assert "model.safetensors" in files and not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    assert reloaded.config.exit_layers == [1, 3, NUM_LAYERS]
    with torch.no_grad():
        a, b = model(**batch), reloaded(**batch)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.exit_layer, b.exit_layer)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name


def test_trust_remote_code_in_fresh_process(tmp_path):
    expected = {}
    for family in FAMILIES:
        model = build(family, exit_policy="confidence", exit_threshold=0.34)
        batch = batch_for(model)
        model.save_pretrained(tmp_path / family)
        with torch.no_grad():
            out = model(**batch)
        torch.save(batch, tmp_path / family / "batch.pt")
        expected[family] = {"logits": out.logits.tolist(), "exit_layer": out.exit_layer.tolist()}
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["adaptive_hf"] = None  # the package cannot be imported in this process
        import torch
        from transformers import AutoModelForSequenceClassification
        result = {{}}
        for family in {FAMILIES!r}:
            folder = {str(tmp_path)!r} + "/" + family
            model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
            assert not type(model).__module__.startswith("adaptive_hf"), type(model).__module__
            batch = torch.load(folder + "/batch.pt")
            with torch.no_grad():
                out = model(**batch)
            result[family] = {{"logits": out.logits.tolist(), "exit_layer": out.exit_layer.tolist()}}
        print("RESULT" + json.dumps(result))
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT"))
    result = json.loads(line[len("RESULT") :])
    for family in FAMILIES:
        assert result[family]["exit_layer"] == expected[family]["exit_layer"], family
        torch.testing.assert_close(torch.tensor(result[family]["logits"]), torch.tensor(expected[family]["logits"]))


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
