"""ModernBERT specifics the shared tester does not cover: plain-checkpoint loading, the packed FFN slot, and the
per-token layer against the stock layer (sliding window and rotary positions included)."""

from __future__ import annotations

import pytest
import torch
from text_testers import padded_batch, tiny_backbone_config
from transformers import ModernBertForSequenceClassification

import adaptive_hf
from adaptive_hf.core.adapters.base import FfnSlot
from adaptive_hf.core.adapters.modernbert import ModernBertAdapter

NEW_PARTS = {"early_exit": "exit_heads.", "halting": "halting_units."}
AUTO_CLASSES = {
    "early_exit": adaptive_hf.AutoEarlyExitModelForSequenceClassification,
    "halting": adaptive_hf.AutoHaltingModelForSequenceClassification,
}


def plain_classifier(pooling: str = "mean", seed: int = 0) -> ModernBertForSequenceClassification:
    torch.manual_seed(seed)
    config = tiny_backbone_config("modernbert")
    config.num_labels = 3
    config.classifier_pooling = pooling
    return ModernBertForSequenceClassification(config).eval()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("technique", ["early_exit", "halting"])
def test_plain_checkpoint_loads_unchanged_and_full_compute_gives_its_logits(tmp_path, technique, pooling):
    plain = plain_classifier(pooling)
    plain.save_pretrained(tmp_path)
    model = AUTO_CLASSES[technique].from_pretrained(tmp_path).eval()
    loaded = model.state_dict()
    for name, tensor in plain.state_dict().items():  # backbone, head and classifier: every tensor as saved
        assert torch.equal(loaded[name], tensor), name
    new = sorted(set(loaded) - set(plain.state_dict()))
    assert new and all(name.startswith(NEW_PARTS[technique]) for name in new), new
    ids, mask = padded_batch(5, 12, seed=1)
    with adaptive_hf.full_compute(model), torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        expected = plain(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)


def test_final_exit_is_the_stock_head_and_only_earlier_exits_are_new():
    model = adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_config(
        tiny_backbone_config("modernbert"), num_labels=3, exit_layers=[2, 4]
    )
    assert model.exit_heads.layers == [2]
    assert {name for name, _ in model.named_children()} == {"model", "head", "drop", "classifier", "exit_heads"}
    final = {id(p) for p in model.final_exit_parameters()}
    assert final == {id(p) for p in [*model.head.parameters(), *model.classifier.parameters()]}
    costs, full = model.exit_flops(16)
    assert costs[-1] > full  # the last exit also paid for the earlier head


def test_plain_checkpoint_upcycles_to_switch_moe_with_the_same_logits(tmp_path):
    plain = plain_classifier()
    plain.save_pretrained(tmp_path)
    moe = adaptive_hf.SwitchMoEModernBertForSequenceClassification.from_pretrained(
        tmp_path, num_experts=4, moe_layers=[1, 3], capacity_factor=0.0
    ).eval()
    ids, mask = padded_batch(4, 10, seed=2)
    with torch.no_grad():
        out = moe(input_ids=ids, attention_mask=mask)
        expected = plain(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-6)
    assert out.expert_counts.sum(-1).tolist() == [int(mask.sum())] * 2


def test_packed_ffn_slot_splits_wi_into_gate_then_up():
    layer = plain_classifier().model.layers[1]
    inter = layer.mlp.Wo.in_features
    weights = ModernBertAdapter.dense_ffn_weights(layer)
    assert torch.equal(weights["gate"], layer.mlp.Wi.weight[:inter].t())
    assert torch.equal(weights["up"], layer.mlp.Wi.weight[inter:].t())
    assert torch.equal(weights["down"], layer.mlp.Wo.weight.t())
    x = torch.randn(3, layer.mlp.Wi.in_features)
    gated = layer.mlp.act(x @ weights["gate"]) * (x @ weights["up"]) @ weights["down"]
    torch.testing.assert_close(gated, layer.mlp(x))


def test_packed_ffn_slot_rejects_a_bad_layout():
    with pytest.raises(ValueError, match="packed"):
        FfnSlot("mlp", up="mlp.Wi", gate="mlp.Wg", down="mlp.Wo", packed=("gate", "up"))
    with pytest.raises(ValueError, match="packed"):
        FfnSlot("mlp", up="mlp.Wi", gate="mlp.Wi", down="mlp.Wo", packed=("up",))


@pytest.mark.parametrize("batch_size", [1, 4])
def test_layer_on_every_real_token_equals_the_stock_layer(batch_size):
    """With every real token active, the packed per-token layer is the stock layer (sliding and global layers, a
    sequence longer than the window, rotary at each token's own position)."""
    model = plain_classifier().model
    adapter = ModernBertAdapter(model)
    ids, mask = padded_batch(batch_size, 11, seed=3)
    with torch.no_grad():
        state = adapter.embed(ids, mask)
        real = mask.bool()
        for index, layer in enumerate(adapter.layer_modules()):
            dense = adapter.run_layer(index, state)
            packed = adapter.run_layer_on_tokens(index, state.hidden_states, real, real, state.layer_kwargs)
            torch.testing.assert_close(packed, dense[real], rtol=1e-5, atol=1e-5, msg=layer.attention_type)
            state.hidden_states = dense
    assert {layer.attention_type for layer in adapter.layer_modules()} == {"sliding_attention", "full_attention"}


def test_layer_on_some_tokens_keeps_the_others_as_keys():
    """A token subset's new states do not depend on which other tokens are active: halted tokens still serve as
    keys and values at their frozen states."""
    model = plain_classifier().model
    adapter = ModernBertAdapter(model)
    ids, mask = padded_batch(3, 11, seed=4)
    real = mask.bool()
    some = real.clone()
    some[:, 1::2] = False
    with torch.no_grad():
        state = adapter.embed(ids, mask)
        everyone = adapter.run_layer_on_tokens(1, state.hidden_states, real, real, state.layer_kwargs)
        subset = adapter.run_layer_on_tokens(1, state.hidden_states, some, real, state.layer_kwargs)
    torch.testing.assert_close(subset, everyone[some[real]], rtol=1e-5, atol=1e-5)


def test_per_token_halting_refuses_row_dependent_positions():
    model = adaptive_hf.AutoHaltingModelForSequenceClassification.from_config(
        tiny_backbone_config("modernbert"), num_labels=3, halting_granularity="token", halting_threshold=0.5
    ).eval()
    for unit in model.halting_units:
        torch.nn.init.normal_(unit.proj.weight, std=0.6)
    ids, mask = padded_batch(2, 8, seed=5)
    positions = torch.stack([torch.arange(8), torch.arange(8) + 1])
    with pytest.raises(ValueError, match="position_ids"), torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=positions)
    with torch.no_grad():  # the same positions in every row are one shared table: accepted
        model(input_ids=ids, attention_mask=mask, position_ids=positions[:1].expand(2, -1))


def test_token_type_ids_are_refused_by_name():
    model = adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_config(
        tiny_backbone_config("modernbert"), num_labels=3
    ).eval()
    ids, mask = padded_batch(2, 6)
    with pytest.raises(ValueError, match="token_type_ids.*modernbert"):
        model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))


def test_token_halting_cost_model_counts_the_gated_ffn():
    """At full depth the per-token cost model spends what the layers cost plus the halting units: both count
    ModernBERT's three FFN products."""
    model = adaptive_hf.AutoHaltingModelForSequenceClassification.from_config(
        tiny_backbone_config("modernbert"), num_labels=3, halting_granularity="token"
    )
    _, mask = padded_batch(3, 9, seed=6)
    layers = len(model.halting_units)
    full, spent = model.halting_flops(mask * layers, mask)
    hidden = model.config.hidden_size
    assert spent - full == int(mask.sum()) * layers * 2 * hidden  # one (hidden -> 1) unit per token and layer


@pytest.mark.parametrize("technique", ["early_exit", "halting"])
def test_lora_trains_and_saves_the_whole_stock_head(technique):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = AUTO_CLASSES[technique].from_config(tiny_backbone_config("modernbert"), num_labels=2)
    saved = adaptive_hf.peft_modules_to_save(model)
    assert {"head.dense", "head.norm", "classifier"} <= set(saved), saved
    wrapped = peft.get_peft_model(model, adaptive_hf.lora_config(model, r=2)).train()
    ids, mask = padded_batch(4, 9, seed=7)
    wrapped(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    grads = {name: p.grad for name, p in wrapped.named_parameters() if p.requires_grad}
    assert any("lora_B" in name for name in grads)
    for part in ("head.dense", "head.norm", "classifier"):
        assert any(part in name and grad is not None for name, grad in grads.items()), part
