"""DeBERTa-v2/v3 specifics: the relative-position terms on a token subset, row compaction of the shared position
tensors, and plain ``DebertaV2ForSequenceClassification`` checkpoints (the shared tester covers the rest)."""

from __future__ import annotations

import pytest
import torch
from text_testers import DEBERTA_VARIANTS, NUM_LAYERS, padded_batch, tiny_backbone_config
from transformers import DebertaV2ForSequenceClassification

from adaptive_hf import AutoEarlyExitModelForSequenceClassification, AutoHaltingModelForSequenceClassification
from adaptive_hf.core.adapters.text import TokenSubset


def _halting_model(variant: str):
    torch.manual_seed(0)
    model = AutoHaltingModelForSequenceClassification.from_config(
        tiny_backbone_config(variant), num_labels=3, halting="act", halting_granularity="token"
    )
    # Large relative embeddings, so a c2p/p2c term read at a wrong row or column changes the states.
    torch.nn.init.normal_(model.deberta.encoder.rel_embeddings.weight, std=2.0)
    return model.eval()


@pytest.mark.parametrize("variant", DEBERTA_VARIANTS)
def test_layer_on_a_token_subset_matches_the_full_layer(variant):
    """Active tokens' new states equal the stock layer's outputs at their positions: c2p/p2c rows follow the
    queries, columns cover every key, and layer 0's conv reads every neighbour."""
    model = _halting_model(variant)
    ids, mask = padded_batch(5, 10, seed=6)
    adapter = model.adapter
    with torch.no_grad():
        state = adapter.embed(ids, mask)
        real = mask.bool()
        active = real & (torch.rand(real.shape, generator=torch.Generator().manual_seed(0)) < 0.5)
        active[0] = False  # a row with no active token
        active[1, 0] = True
        for index in range(NUM_LAYERS):
            full = adapter.run_layer(index, state)
            got = adapter.run_layer_on_tokens(index, state.hidden_states, active, real, state.layer_kwargs)
            torch.testing.assert_close(got, full[active], rtol=1e-5, atol=1e-5)
            # Without the per-layer inputs the adapter rebuilds the relative positions itself.
            got = adapter.run_layer_on_tokens(index, state.hidden_states, active, real, None)
            torch.testing.assert_close(got, full[active], rtol=1e-5, atol=1e-5)
            single = active[1:2]
            got = adapter.run_layer_on_tokens(
                index, state.hidden_states[1:2], None, real[1:2], None, TokenSubset.from_mask(single)
            )
            torch.testing.assert_close(got, full[1:2][single], rtol=1e-5, atol=1e-5)
            state.hidden_states = full


def test_compaction_shares_relative_embeddings_when_rows_equal_their_count():
    """With as many rows as relative embeddings (2 x position_buckets), compaction must still not gather them."""
    torch.manual_seed(0)
    config = tiny_backbone_config("deberta-v2")
    rows = 2 * config.position_buckets
    model = AutoEarlyExitModelForSequenceClassification.from_config(config, num_labels=3, exit_policy="confidence")
    model.eval()
    ids, mask = padded_batch(rows, 10, seed=2)
    with torch.no_grad():
        model.config.exit_policy = "none"
        first = model(input_ids=ids, attention_mask=mask, output_exit_logits=True).exit_logits[0]
        model.config.exit_policy = "confidence"
        model.config.exit_threshold = float(first.softmax(-1).max(-1).values.median())
        out = model(input_ids=ids, attention_mask=mask)
        assert len(set(out.exit_layer.tolist())) > 1
        for row in range(rows):
            length = int(mask[row].sum())
            single = model(input_ids=ids[row : row + 1, :length], attention_mask=mask[row : row + 1, :length])
            torch.testing.assert_close(single.logits[0], out.logits[row], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", DEBERTA_VARIANTS)
def test_plain_checkpoint_loads_with_its_head_as_the_final_exit(variant, tmp_path):
    torch.manual_seed(0)
    config = tiny_backbone_config(variant)
    config.num_labels = 3
    plain = DebertaV2ForSequenceClassification(config).eval()
    plain.save_pretrained(tmp_path)
    ids, mask = padded_batch(4, 10, seed=1)
    with torch.no_grad():
        expected = plain(input_ids=ids, attention_mask=mask).logits
    plain_state = plain.state_dict()

    model = AutoEarlyExitModelForSequenceClassification.from_pretrained(tmp_path, head_pooling="pooler").eval()
    assert model.config.model_type == "early_exit_deberta-v2" and model.exit_heads.layers == [1, 2, 3]
    state = model.state_dict()
    new = {name for name in state if name not in plain_state}
    assert new and all(name.startswith("exit_heads.") for name in new)
    for name, tensor in plain_state.items():  # backbone, pooler and classifier: unchanged
        assert torch.equal(state[name], tensor), name
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, expected, rtol=1e-5, atol=1e-6)

    halting = AutoHaltingModelForSequenceClassification.from_pretrained(tmp_path, halting="act")
    backbone = halting.deberta.state_dict()
    for name, tensor in plain.deberta.state_dict().items():
        assert torch.equal(backbone[name], tensor), name


def test_final_exit_is_a_new_head_without_pooler_pooling():
    """Mean/cls pooling: the stock head (which pools the first token) is not the final exit; every exit is new."""
    torch.manual_seed(0)
    model = AutoEarlyExitModelForSequenceClassification.from_config(tiny_backbone_config("deberta-v2"), num_labels=3)
    assert model._stock_head_names == () and model.exit_heads.layers == [1, 2, 3, 4]
    assert not hasattr(model, "pooler")
    with pytest.raises(ValueError, match="head_pooling"):
        model.adapter.pool(torch.zeros(1, 3, 32), torch.ones(1, 3), "pooler")
