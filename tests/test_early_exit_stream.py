"""``classify_stream`` of the early-exit text classifiers: continuous batching across batches of mixed lengths."""

from __future__ import annotations

import pytest
import torch
from early_exit_helpers import tiny_model
from text_testers import DECODER_FAMILIES, FAMILIES, padded_batch

from adaptive_hf.early_exit.policies import exit_score

NUM_ROWS = 23


def mixed_batches(model, seed: int = 0) -> list[dict]:
    """Batches of several sizes and padded lengths: tight padding, extra trailing padding, no mask, one row."""
    pad = model.config.pad_token_id or 0
    ids, mask = padded_batch(NUM_ROWS, 12, seed=seed, pad_token_id=pad, min_len=2)
    wide_ids = torch.cat([ids[5:13], torch.full((8, 8), pad)], dim=1)  # 8 columns of padding no row needs
    wide_mask = torch.cat([mask[5:13], torch.zeros(8, 8, dtype=mask.dtype)], dim=1)
    lengths = mask.sum(-1)
    full = lengths[13:16].min()  # three rows cut to a common length: a batch without attention_mask
    return [
        {"input_ids": ids[:5], "attention_mask": mask[:5], "labels": torch.zeros(5, dtype=torch.long)},
        {"input_ids": wide_ids, "attention_mask": wide_mask},
        {"input_ids": ids[13:16, :full]},
        {"input_ids": ids[16:17, : lengths[16]], "attention_mask": mask[16:17, : lengths[16]]},
        {"input_ids": ids[17:], "attention_mask": mask[17:]},
    ]


def rows_of(batches: list[dict]) -> list[dict]:
    """Every row of ``batches`` on its own, without padding."""
    rows = []
    for batch in batches:
        mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
        for ids, row_mask in zip(batch["input_ids"], mask):
            rows.append({"input_ids": ids[row_mask.bool()][None]})
    return rows


def set_policy(model, policy: str, rows: list[dict]) -> None:
    """Sets ``policy`` with a threshold amid the first head's scores, so rows leave at several exits."""
    config = model.config
    if policy == "patience":
        config.exit_threshold, config.patience = None, 1
    elif policy != "none":
        with torch.no_grad():
            logits = torch.cat([model(**row, output_exit_logits=True).exit_logits[0] for row in rows])
        scores = exit_score(policy, logits).sort().values
        middle = scores.numel() // 2  # halfway between two rows' scores: no row sits on the threshold
        config.exit_threshold = float(scores[middle - 1 : middle + 1].mean())
    config.exit_policy = policy


@pytest.mark.parametrize("pool_rows", [1, 4, 64])
@pytest.mark.parametrize("policy", ["confidence", "entropy", "margin", "patience", "none"])
def test_stream_equals_one_row_at_a_time(policy, pool_rows):
    model = tiny_model("bert", num_labels=3, seed=5)
    batches = mixed_batches(model)
    rows = rows_of(batches)
    set_policy(model, policy, rows)
    with torch.no_grad():
        singles = [model(**row) for row in rows]
    outputs = list(model.classify_stream(batches, pool_rows=pool_rows))
    assert [out.logits.size(0) for out in outputs] == [batch["input_ids"].size(0) for batch in batches]
    exit_layer = torch.cat([out.exit_layer for out in outputs])
    assert exit_layer.tolist() == [single.exit_layer.item() for single in singles]
    if policy != "none":
        assert len(set(exit_layer.tolist())) > 1  # the setting really splits the rows
    expected = torch.cat([single.logits for single in singles])
    torch.testing.assert_close(torch.cat([out.logits for out in outputs]), expected, rtol=1e-4, atol=1e-5)
    assert outputs[0].loss is None and not outputs[0].logits.requires_grad


def left_padded(batch: dict) -> dict:
    """``batch`` with each row's padding moved to its start, as decoder tokenizers pad."""
    if "attention_mask" not in batch:
        return dict(batch)
    ids, mask = batch["input_ids"].clone(), batch["attention_mask"].clone()
    for row, length in enumerate(mask.sum(-1).tolist()):
        shift = ids.size(1) - length
        ids[row], mask[row] = ids[row].roll(shift), mask[row].roll(shift)
    return {**batch, "input_ids": ids, "attention_mask": mask}


STREAM_FAMILIES = [*FAMILIES, "modernbert", "deberta-v2", "deberta-v2-conv", "llama", "qwen3"]


@pytest.mark.parametrize("family", STREAM_FAMILIES)
def test_stream_equals_one_row_at_a_time_for_every_family(family):
    model = tiny_model(family, num_labels=3, seed=2)
    batches = mixed_batches(model, seed=3)
    if family in DECODER_FAMILIES:  # left padding, as decoder tokenizers pad, but one batch stays right-padded
        batches = [left_padded(batch) if index != 4 else batch for index, batch in enumerate(batches)]
    if family == "bert":
        batches[0]["token_type_ids"] = torch.ones_like(batches[0]["input_ids"])
    rows = rows_of(batches)
    if family == "bert":
        rows[0]["token_type_ids"] = torch.ones_like(rows[0]["input_ids"])
        for row in rows[1:5]:
            row["token_type_ids"] = torch.ones_like(row["input_ids"])
    set_policy(model, "margin", rows)
    with torch.no_grad():
        singles = [model(**row) for row in rows]
    outputs = list(model.classify_stream(batches, pool_rows=6))
    exit_layer = torch.cat([out.exit_layer for out in outputs])
    assert exit_layer.tolist() == [single.exit_layer.item() for single in singles]
    assert len(set(exit_layer.tolist())) > 1
    expected = torch.cat([single.logits for single in singles])
    torch.testing.assert_close(torch.cat([out.logits for out in outputs]), expected, rtol=1e-4, atol=1e-5)


def test_stream_pools_continuing_rows_and_drops_unused_padding():
    model = tiny_model("bert", num_labels=3, seed=1)
    pad = model.config.pad_token_id
    ids, mask = padded_batch(32, 10, seed=5, min_len=2)
    ids = torch.cat([ids, torch.full((32, 6), pad)], dim=1)  # every batch padded to 16 columns
    mask = torch.cat([mask, torch.zeros(32, 6, dtype=mask.dtype)], dim=1)
    batches = [{"input_ids": i, "attention_mask": m} for i, m in zip(ids.split(4), mask.split(4))]
    set_policy(model, "confidence", rows_of(batches))
    with torch.no_grad():
        per_batch = torch.cat([model(**batch).exit_layer for batch in batches])
    layers = model.bert.encoder.layer
    calls = {index: [] for index in range(len(layers))}
    hooks = [
        layer.register_forward_hook(lambda m, a, o, index=index: calls[index].append(tuple(a[0].shape[:2])))
        for index, layer in enumerate(layers)
    ]
    outputs = list(model.classify_stream(batches, pool_rows=12))
    for hook in hooks:
        hook.remove()
    exit_layer = torch.cat([out.exit_layer for out in outputs])
    assert torch.equal(exit_layer, per_batch)
    for index in range(len(layers)):
        # Every row that reaches layer `index` runs there once, in pools of at least 12 rows (several batches of 4)
        # but the final flush, and never on the 6 columns of padding that no row needs.
        rows = [shape[0] for shape in calls[index]]
        assert sum(rows) == int((exit_layer > index).sum())
        assert all(count >= 12 for count in rows[:-1])
        assert all(width <= 10 for _, width in calls[index])
    assert max(shape[0] for shape in calls[1]) > 4  # the continuing rows of several batches ran together


def test_stream_errors():
    model = tiny_model("bert")
    batch = {"input_ids": torch.tensor([[5, 6, 7]])}
    for bad in (0, 2.5, "8"):
        with pytest.raises((ValueError, TypeError), match="pool_rows"):
            list(model.classify_stream([batch], pool_rows=bad))
    with pytest.raises(ValueError, match="input_ids"):
        list(model.classify_stream([{"attention_mask": torch.ones(1, 3)}]))
    with pytest.raises(ValueError, match="input_ids"):
        list(model.classify_stream([torch.tensor([[5, 6, 7]])]))
    with pytest.raises(ValueError, match="inputs_embeds"):
        list(model.classify_stream([{**batch, "inputs_embeds": torch.zeros(1, 3, 32)}]))
    with pytest.raises(ValueError, match="Empty batch"):
        list(model.classify_stream([batch, {"input_ids": torch.zeros(0, 3, dtype=torch.long)}]))
    model.train()
    with pytest.raises(ValueError, match="eval"):
        list(model.classify_stream([batch]))


def test_concat_states_refuses_layer_inputs_it_cannot_rebuild():
    model = tiny_model("bert")
    state = model.adapter.embed(torch.tensor([[5, 6, 7]]))
    state.layer_kwargs["rotary"] = torch.zeros(1, 3, 8)  # as if a family's embed added an input
    with pytest.raises(NotImplementedError, match="layer_inputs"):
        model.adapter.concat_states([state, state])
