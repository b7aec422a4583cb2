"""Switch-MoE fixes: 4-D attention masks keep padding out of capacity, experts run on kept rows only, and upcycling
leaves over only the dense weights it replaced."""

from __future__ import annotations

import pytest
import timm
import torch
from text_testers import padded_batch, tiny_backbone_config
from transformers import BertForSequenceClassification, LlamaConfig, LlamaForSequenceClassification
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

from adaptive_hf import upcycle
from adaptive_hf.moe.layer import token_mask_from_attention_mask


def padded(batch_size=4, max_len=9, seed=0):
    return padded_batch(batch_size, max_len, seed=seed)


def moe_bert(capacity_factor=1.0):
    torch.manual_seed(0)
    dense = BertForSequenceClassification(tiny_backbone_config("bert")).eval()
    return upcycle(dense, num_experts=4, capacity_factor=capacity_factor, seed=0, expert_noise=0.5).eval()


def bool_4d(mask: torch.Tensor) -> torch.Tensor:
    seq = mask.size(1)
    return mask.bool()[:, None, None, :].expand(-1, 1, seq, seq)


def test_token_mask_from_bidirectional_causal_and_additive_masks():
    input_ids, mask = padded()
    config = tiny_backbone_config("bert")
    embeds = torch.zeros(*input_ids.shape, 32)
    bidirectional = create_bidirectional_mask(config=config, inputs_embeds=embeds, attention_mask=mask)
    for four_d in (bool_4d(mask), bidirectional):
        if four_d is None:
            continue
        assert torch.equal(token_mask_from_attention_mask(four_d).long(), mask)
    additive = torch.zeros(mask.shape + (mask.size(1),)).masked_fill(~mask.bool()[:, None, :], -3e38)[:, None]
    assert torch.equal(token_mask_from_attention_mask(additive).long(), mask)
    left = mask.flip(1)  # a causal mask with left padding
    causal = torch.tril(torch.ones(9, 9, dtype=torch.bool))[None, None] & left.bool()[:, None, None, :]
    assert torch.equal(token_mask_from_attention_mask(causal).long(), left)
    assert token_mask_from_attention_mask(None) is None
    with pytest.raises(ValueError, match="attention_mask"):
        token_mask_from_attention_mask(torch.ones(2, 3, 4))


def test_four_d_mask_keeps_padding_out_of_capacity():
    model = moe_bert(capacity_factor=1.0)
    input_ids, mask = padded()
    with torch.no_grad():
        two_d = model(input_ids=input_ids, attention_mask=mask)
        four_d = model(input_ids=input_ids, attention_mask=bool_4d(mask))
    assert torch.equal(four_d.expert_counts, two_d.expert_counts)
    torch.testing.assert_close(four_d.logits, two_d.logits)
    # Padding takes no capacity: each row's prediction is the one it gets alone, without padding.
    with torch.no_grad():
        for row in range(input_ids.size(0)):
            length = int(mask[row].sum())
            alone = model(input_ids=input_ids[row : row + 1, :length])
            torch.testing.assert_close(alone.logits[0], four_d.logits[row], rtol=1e-5, atol=1e-5)


def test_llama_causal_four_d_mask_routes_real_tokens_only():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
    )
    model = upcycle(LlamaForSequenceClassification(config).eval(), num_experts=4, capacity_factor=0.0, seed=0)
    input_ids, mask = padded()
    input_ids, mask = input_ids.flip(1), mask.flip(1)
    embeds = torch.zeros(*input_ids.shape, 32)
    positions = torch.arange(input_ids.size(1))
    model.config._attn_implementation = "eager"  # builds a 4-D mask of its own
    causal = create_causal_mask(
        config=model.config, inputs_embeds=embeds, attention_mask=mask, cache=None, position_ids=positions
    )
    assert torch.equal(token_mask_from_attention_mask(causal).long(), mask)
    with torch.no_grad():
        two_d = model.eval()(input_ids=input_ids, attention_mask=mask)
        four_d = model(input_ids=input_ids, attention_mask=causal)
    assert four_d.expert_counts.sum(1).tolist() == [int(mask.sum())] * 2
    assert torch.equal(four_d.expert_counts, two_d.expert_counts)
    torch.testing.assert_close(four_d.logits, two_d.logits)


def test_experts_run_on_kept_rows_only():
    model = moe_bert(capacity_factor=0.5)
    rows_run = []
    handles = [
        module.experts.register_forward_pre_hook(lambda module, args: rows_run.append(args[0].size(0)))
        for module in model.moe_modules()
    ]
    input_ids, mask = padded()
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=mask)
    for handle in handles:
        handle.remove()
    kept = out.expert_counts.sum(1).tolist()
    assert rows_run == kept
    assert max(kept) < int(mask.sum())  # capacity dropped some real tokens and padding never ran
    assert (out.dropped_fraction > 0).all()


def test_kept_rows_gradients_match_the_masked_path(monkeypatch):
    model = moe_bert(capacity_factor=0.75).train()
    input_ids, mask = padded()
    labels = torch.tensor([0, 1, 1, 0])

    def grads():
        model.zero_grad()
        model(input_ids=input_ids, attention_mask=mask, labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    torch.manual_seed(1)
    kept_rows = grads()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # the static-shape path of torch.compile
    torch.manual_seed(1)
    all_rows = grads()
    assert kept_rows.keys() == all_rows.keys()
    for name, grad in kept_rows.items():
        torch.testing.assert_close(grad, all_rows[name], rtol=1e-4, atol=1e-6, msg=name)


def test_upcycle_rejects_dense_weights_it_has_no_place_for():
    dense = BertForSequenceClassification(tiny_backbone_config("bert")).eval()
    dense.bert.encoder.layer[0].extra = torch.nn.Linear(2, 2)  # a module the MoE model does not have
    with pytest.raises(RuntimeError, match="no place for.*encoder.layer.0.extra"):
        upcycle(dense, num_experts=2)
    vit = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=3,
        img_size=16,
        patch_size=4,
        depth=2,
        embed_dim=32,
        num_heads=4,
    )
    vit.blocks[1].norm1.register_parameter("stray", torch.nn.Parameter(torch.zeros(1)))
    with pytest.raises(RuntimeError, match="blocks.1.norm1.stray"):
        upcycle(vit, num_experts=2)
