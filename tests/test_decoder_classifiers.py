"""Decoder classifiers (Llama, Qwen2, Qwen3): what the shared tester does not cover.

* a plain fine-tuned ``<Arch>ForSequenceClassification`` checkpoint loads into the early-exit and halting models
  with its backbone and ``score`` unchanged, and full compute gives the stock logits (left and right padding);
* the errors the issue lists: no pad token with batch > 1, per-token halting on a causal model;
* the intermediate exits read the last non-pad token through the final norm.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from text_testers import DECODER_FAMILIES, tiny_decoder_config

import adaptive_hf

AUTO_CLASSES = {
    "early_exit": adaptive_hf.AutoEarlyExitModelForSequenceClassification,
    "halting": adaptive_hf.AutoHaltingModelForSequenceClassification,
}


def stock_checkpoint(family: str, folder, **config_overrides):
    """A tiny random stock ``<Arch>ForSequenceClassification`` saved to ``folder`` (3 labels)."""
    torch.manual_seed(1)
    config = tiny_decoder_config(family, num_labels=3, **config_overrides)
    stock = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    stock.save_pretrained(folder)
    return stock


def padded(left: bool):
    ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 11, 12, 13], [14, 15, 16, 0, 0], [0, 0, 0, 0, 17]])
    if not left:  # the same rows with their padding moved to the right
        ids = torch.stack([torch.cat([row[row != 0], row[row == 0]]) for row in ids])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


@pytest.mark.parametrize("technique", sorted(AUTO_CLASSES))
@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_plain_checkpoint_loads_unchanged_and_full_compute_is_the_stock_model(family, technique, tmp_path):
    stock = stock_checkpoint(family, tmp_path)
    model, info = AUTO_CLASSES[technique].from_pretrained(tmp_path, output_loading_info=True)
    model.eval()
    own = model.state_dict()
    for name, tensor in stock.state_dict().items():  # the backbone and the stock `score`, bit for bit
        assert torch.equal(own[name], tensor), name
    new = {"early_exit": "exit_heads.", "halting": "halting_units."}[technique]
    assert info["missing_keys"] and all(key.startswith(new) for key in info["missing_keys"])
    assert not info["unexpected_keys"]
    for left in (True, False):
        batch = padded(left)
        with adaptive_hf.full_compute(model), torch.no_grad():
            out = model(**batch)
            expected = stock(**batch).logits
        torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_without_a_pad_token_batches_are_refused_and_one_row_is_the_stock_model(family, tmp_path):
    stock = stock_checkpoint(family, tmp_path, pad_token_id=None)
    model = adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    with pytest.raises(ValueError, match=f"{family} classifier has no pad token.*pad_token_id"):
        model(input_ids=ids)
    with torch.no_grad():  # one row: the last position is its last token, as transformers reads it
        torch.testing.assert_close(model(input_ids=ids[:1]).logits, stock(input_ids=ids[:1]).logits)
    model.config.pad_token_id = 0
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape == (2, 3)


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_per_token_halting_on_a_causal_model_says_why_it_is_refused(family):
    config = tiny_decoder_config(family)
    with pytest.raises(ValueError, match="not sound on the causal") as info:
        adaptive_hf.AutoHaltingModelForSequenceClassification.from_config(
            config, num_labels=2, halting_granularity="token"
        )
    message = str(info.value)
    assert "key and value" in message and "stale depth" in message and "last token" in message
    assert "bert" in message and "halting_granularity='sample'" in message


def test_intermediate_exits_read_the_last_non_pad_token_after_the_final_norm():
    torch.manual_seed(0)
    model = adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_config(
        tiny_decoder_config("qwen3"), num_labels=3, exit_layers=[2, 4]
    ).eval()
    batch = padded(left=False)
    with torch.no_grad():
        out = model(**batch, output_exit_logits=True)
        hidden = model.model(**batch, output_hidden_states=True).hidden_states[2]  # after layer 2
    last = batch["attention_mask"].sum(1) - 1
    pooled = model.model.norm(hidden[torch.arange(4), last])
    torch.testing.assert_close(out.exit_logits[0], model.exit_heads[0](pooled), rtol=1e-5, atol=1e-5)
    assert model.exit_heads.layers == [2] and isinstance(model.score, torch.nn.Linear) and model.score.bias is None


def test_per_row_position_ids_follow_the_rows_that_continue():
    from cases_exits_halting import stock_decoder_logits
    from text_testers import split_threshold

    from adaptive_hf.early_exit.policies import exit_score

    torch.manual_seed(0)
    model = adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_config(
        tiny_decoder_config("llama"), num_labels=3, head_type="linear"
    ).eval()
    batch = padded(left=True)
    # A different stride per row: the rotary embeddings then differ between rows beyond a shift, so a row that
    # got another row's cos/sin after compaction would change its logits.
    batch["position_ids"] = torch.arange(5)[None] * torch.arange(1, 5)[:, None]
    with adaptive_hf.full_compute(model), torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, stock_decoder_logits(model, batch), rtol=1e-5, atol=1e-5)
        first = model(**batch, output_exit_logits=True).exit_logits[0]
    model.config.exit_policy = "confidence"
    model.config.exit_threshold = split_threshold(exit_score("confidence", first))
    with torch.no_grad():
        out = model(**batch)
        singles = [model(**{key: value[row : row + 1] for key, value in batch.items()}) for row in range(4)]
    assert len(set(out.exit_layer.tolist())) > 1
    for row, single in enumerate(singles):
        torch.testing.assert_close(single.logits[0], out.logits[row], rtol=1e-4, atol=1e-5)
        assert single.exit_layer.item() == out.exit_layer[row].item()


def test_calibration_runs_on_a_decoder_classifier():
    import warnings

    from cases_exits_halting import text_batch

    torch.manual_seed(0)
    model = adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_config(
        tiny_decoder_config("qwen2"), num_labels=3, head_type="linear"
    ).eval()
    data = text_batch(0, left=True)(24, 7, 2)
    data["labels"] = torch.arange(24) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a tiny random model on few rows: the budget is wide on purpose
        report = adaptive_hf.calibrate(
            model, data, max_disagreement=0.9, delta=0.2, policies=["confidence"], batch_size=8, show_progress=False
        )
    assert report.chosen["setting"]["exit_policy"] == "confidence"
    assert report.chosen["theoretical_speedup"] > 1.0
    batch = {key: value for key, value in data.items() if key != "labels"}
    with torch.inference_mode():
        out = model(**batch)
    spent, full = adaptive_hf.compute_cost(model, out, batch)
    assert float(full.sum() / spent.sum()) == pytest.approx(report.chosen["theoretical_speedup"])


def test_lora_on_a_decoder_classifier_trains_the_heads_and_score_and_reloads(tmp_path):
    peft = pytest.importorskip("peft")

    def build():
        torch.manual_seed(0)
        return adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_config(
            tiny_decoder_config("qwen3"), num_labels=2
        )

    config = adaptive_hf.lora_config(build(), r=4)
    assert set(config.target_modules) == {"q_proj", "v_proj"} and "score" in config.modules_to_save
    wrapped = peft.get_peft_model(build(), config)
    batch = padded(left=True)
    wrapped(**batch, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    torch.optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=1.0).step()
    wrapped.save_pretrained(tmp_path)
    with torch.no_grad():  # the step moved what LoRA trains, so reloading has something to restore
        assert not torch.allclose(wrapped.eval()(**batch).logits, build().eval()(**batch).logits)
    reloaded = peft.PeftModel.from_pretrained(build(), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, wrapped.eval()(**batch).logits)
