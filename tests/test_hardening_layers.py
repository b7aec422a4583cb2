"""Per-layer weights are keyed by their layer: a config that disagrees with the weights fails to load, naming both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from text_testers import tiny_backbone_config
from transformers import AutoModel, AutoModelForImageClassification, AutoModelForSequenceClassification, ViTConfig

import adaptive_hf  # noqa: F401  (registers the Auto classes)
from adaptive_hf import AutoEarlyExitModelForSequenceClassification
from adaptive_hf.moe.upcycle import upcycle


def edit_config(folder: Path, **changes) -> None:
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    for name, value in changes.items():
        if value is None:
            config.pop(name, None)
        else:
            config[name] = value
    config_file.write_text(json.dumps(config))


def test_exit_heads_are_saved_under_their_layer(tmp_path):
    model = AutoEarlyExitModelForSequenceClassification.from_config(tiny_backbone_config("bert"), exit_layers=[2, 4])
    heads = {key.split(".")[1] for key in model.state_dict() if key.startswith("exit_heads.")}
    assert heads == {"layer_2", "layer_4"}
    assert model.exit_heads.for_layer(4) is model.exit_heads[-1] and len(model.exit_heads) == 2
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert torch.equal(loaded.exit_heads.for_layer(2).classifier.weight, model.exit_heads[0].classifier.weight)


@pytest.mark.parametrize("saved, edited", [([2, 4], None), ([2, 4], [1, 3, 4]), ([1, 2, 3, 4], [2, 4])])
def test_edited_exit_layers_fail_to_load_naming_both(tmp_path, saved, edited):
    model = AutoEarlyExitModelForSequenceClassification.from_config(tiny_backbone_config("bert"), exit_layers=saved)
    model.save_pretrained(tmp_path)
    edit_config(tmp_path, exit_layers=edited)
    config_layers = edited or [1, 2, 3, 4]
    with pytest.raises(ValueError, match="exit_layers") as error:
        AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert str(config_layers) in str(error.value) and str(saved) in str(error.value)


def test_plain_backbone_checkpoint_still_loads_with_fresh_heads(tmp_path):
    from transformers import BertModel

    BertModel(tiny_backbone_config("bert")).save_pretrained(tmp_path)
    model = AutoEarlyExitModelForSequenceClassification.from_pretrained(tmp_path, exit_layers=[2, 4])
    assert model.exit_heads.layers == [2, 4]


def test_positional_head_keys_of_an_older_save_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    model = AutoEarlyExitModelForSequenceClassification.from_config(tiny_backbone_config("bert"), exit_layers=[2, 4])
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    renamed = {
        k.replace("exit_heads.layer_2.", "exit_heads.0.").replace("exit_heads.layer_4.", "exit_heads.1."): v
        for k, v in tensors.items()
    }
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="by position"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


def test_halting_units_checked_against_max_ponder_steps(tmp_path):
    model = adaptive_hf.AutoHaltingModelForSequenceClassification.from_config(
        tiny_backbone_config("bert"), max_ponder_steps=2
    )
    assert {k.split(".")[1] for k in model.state_dict() if k.startswith("halting_units.")} == {"layer_1", "layer_2"}
    model.save_pretrained(tmp_path)
    AutoModelForSequenceClassification.from_pretrained(tmp_path)
    edit_config(tmp_path, max_ponder_steps=None)
    with pytest.raises(ValueError, match=r"max_ponder_steps.*\[1, 2, 3, 4\].*\[1, 2\]"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


def test_moe_routers_checked_against_moe_layers(tmp_path):
    from transformers import BertModel

    moe = upcycle(BertModel(tiny_backbone_config("bert")), num_experts=4, moe_layers=[2, 4])
    moe.save_pretrained(tmp_path)
    AutoModel.from_pretrained(tmp_path)
    edit_config(tmp_path, moe_layers=[1, 3])
    with pytest.raises(ValueError, match=r"moe_layers.*\[1, 3\].*\[2, 4\]"):
        AutoModel.from_pretrained(tmp_path)


def test_vision_exit_heads_checked_against_exit_layers(tmp_path):
    config = ViTConfig(
        hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32, image_size=16, patch_size=8
    )
    model = adaptive_hf.EarlyExitViTForImageClassification(
        adaptive_hf.EarlyExitViTConfig(**config.to_dict(), exit_layers=[1, 3], num_labels=3)
    )
    assert model.exit_heads.layers == [1, 3]
    model.save_pretrained(tmp_path)
    edit_config(tmp_path, exit_layers=[2, 4])
    with pytest.raises(ValueError, match=r"exit_layers.*\[2\].*\[1, 3\]"):
        AutoModelForImageClassification.from_pretrained(tmp_path)
