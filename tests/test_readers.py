"""Skim-RNN and LSTM-Jump readers: invariants on tiny random configs (shared helpers, parametrized by reader)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from torch import nn
from trainer_testers import cpu_training_args
from transformers import Trainer, TrainingArguments

import adaptive_hf  # noqa: F401  (registers the Auto classes)
from adaptive_hf import (
    JumpLstmConfig,
    JumpLstmForSequenceClassification,
    SkimRnnConfig,
    SkimRnnForSequenceClassification,
)
from adaptive_hf.readers import jump_lstm as jump_module
from adaptive_hf.readers import skim_rnn as skim_module

VOCAB = 60
READERS = ["skim_rnn", "jump_lstm"]


def build(kind: str, seed: int = 0, **settings):
    """A tiny reader with decision networks scaled up so that decisions are mixed and far from ties."""
    torch.manual_seed(seed)
    base = dict(vocab_size=VOCAB, embedding_size=8, hidden_size=12, num_labels=3, classifier_dropout=0.0)
    if kind == "skim_rnn":
        config = SkimRnnConfig(**{**base, "small_hidden_size": 3, **settings})
        model = SkimRnnForSequenceClassification(config)
        decision = model.skim_gate
    else:
        config = JumpLstmConfig(**{**base, "read_tokens": 2, "max_jump": 3, "max_jumps": 3, **settings})
        model = JumpLstmForSequenceClassification(config)
        decision = model.jump_policy
    with torch.no_grad():
        model.embeddings.weight.normal_(0.0, 1.0)
        decision.weight.normal_(0.0, 2.0)
        decision.bias.normal_(0.0, 0.5)
    return model.eval()


def padded_batch(batch_size=6, max_len=11, seed=0, min_len=1):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=generator)
    lengths[0] = max_len
    ids = torch.randint(1, VOCAB, (batch_size, max_len), generator=generator)
    mask = (torch.arange(max_len)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def plain_lstm_last_state(model, batch) -> torch.Tensor:
    """Last state of a torch.nn.LSTM built from the big cell's weights, each row run alone over its real tokens."""
    cell = model.big_cell
    lstm = nn.LSTM(cell.input_size, cell.hidden_size, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(lstm, f"{name}_l0").copy_(getattr(cell, name))
    states = []
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
        tokens = ids[: int(mask.sum())]
        _, (h, _) = lstm(model.embeddings(tokens)[None])
        states.append(h[0, 0])
    return torch.stack(states)


def lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def reference_skim(model, tokens):
    """Skim-RNN on one unpadded sequence, token by token, written from the paper's equations."""
    config, big, small = model.config, model.big_cell, model.small_cell
    s = config.small_hidden_size
    h = torch.zeros(config.hidden_size)
    c = torch.zeros(config.hidden_size)
    skimmed = 0
    for token in tokens:
        x = model.embeddings.weight[token]
        p_skim = F.softmax(model.skim_gate(torch.cat([x, h])), -1)[1]
        if p_skim >= config.skim_threshold:
            w_h = torch.cat([small.weight_hh, small.weight_ih[:, config.embedding_size :]], dim=1)
            w_x = small.weight_ih[:, : config.embedding_size]
            h_s, c_s = lstm_step(x, h, c[:s], w_x, w_h, small.bias_ih, small.bias_hh)
            h, c = torch.cat([h_s, h[s:]]), torch.cat([c_s, c[s:]])
            skimmed += 1
        else:
            h, c = lstm_step(x, h, c, big.weight_ih, big.weight_hh, big.bias_ih, big.bias_hh)
    return model.classifier(h), skimmed


def reference_jump(model, tokens):
    """LSTM-Jump on one unpadded sequence, token by token, with greedy decisions."""
    config, big = model.config, model.big_cell
    h = torch.zeros(config.hidden_size)
    c = torch.zeros(config.hidden_size)
    position = jumps = read = 0
    while True:
        for _ in range(config.read_tokens):
            if position >= len(tokens):
                break
            x = model.embeddings.weight[tokens[position]]
            h, c = lstm_step(x, h, c, big.weight_ih, big.weight_hh, big.bias_ih, big.bias_hh)
            position += 1
            read += 1
        if position >= len(tokens) or jumps == config.max_jumps:
            break
        logits = model.jump_policy(h)
        action = int(logits.argmax())
        if action == 0 and float(F.softmax(logits, -1)[0]) < config.stop_threshold:
            action = int(logits[1:].argmax()) + 1  # a stop that is not likely enough becomes the best jump
        if action == 0:
            break
        position += action - 1
        jumps += 1
    return model.classifier(h), read


def reference(model, tokens):
    if isinstance(model, SkimRnnForSequenceClassification):
        logits, skimmed = reference_skim(model, tokens)
        return logits, len(tokens) - skimmed
    return reference_jump(model, tokens)


# ------------------------------------------------------------------------------------------- reading invariants
@pytest.mark.parametrize("kind", READERS)
# Eval without gradients is the shared tester's full-compute check.
@pytest.mark.parametrize(("training", "grad"), [(False, True), (True, True)])
def test_full_reading_equals_plain_lstm(kind, training, grad):
    # Full reading runs torch's fused LSTM on the big cell's weights, with and without gradients.
    model = build(kind, reading_policy="full").train(training)
    batch = padded_batch()
    with torch.set_grad_enabled(grad):
        out = model(**batch)
    expected = model.classifier(plain_lstm_last_state(model, batch))
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)
    lengths = batch["attention_mask"].sum(1)
    assert torch.equal(out.tokens_read, lengths)
    assert int(out.tokens_skimmed.sum()) == int(out.tokens_jumped.sum()) == 0


@pytest.mark.parametrize("kind", READERS)
def test_full_reading_trains_the_big_cell_and_adds_no_state(kind):
    # The fused LSTM reads the cell's own tensors: every one of them gets a gradient and nothing joins the state dict.
    model = build(kind, reading_policy="full").train()
    keys = set(model.state_dict())
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    model(**padded_batch(), labels=labels).loss.backward()
    for name, parameter in model.big_cell.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        model(**padded_batch())
    assert set(model.state_dict()) == keys


@pytest.mark.parametrize("kind", READERS)
def test_adaptive_reader_that_never_skips_equals_plain_lstm(kind):
    model = build(kind, max_jumps=20) if kind == "jump_lstm" else build(kind)
    with torch.no_grad():
        if kind == "skim_rnn":  # the gate always reads
            model.skim_gate.weight.zero_()
            model.skim_gate.bias.copy_(torch.tensor([20.0, -20.0]))
        else:  # the policy always picks "skip 0 tokens", so every chunk is read
            model.jump_policy.weight.zero_()
            model.jump_policy.bias.copy_(torch.tensor([0.0, 20.0, 0.0, 0.0, 0.0]))
    batch = padded_batch()
    out = model(**batch)
    expected = model.classifier(plain_lstm_last_state(model, batch))
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.tokens_read, batch["attention_mask"].sum(1))


@pytest.mark.parametrize("kind", READERS)
def test_adaptive_reading_matches_token_by_token_reference(kind):
    model = build(kind)
    batch = padded_batch(batch_size=8, max_len=13, seed=1)
    with torch.no_grad():
        out = model(**batch)
        lengths = batch["attention_mask"].sum(1)
        for row in range(8):
            tokens = batch["input_ids"][row, : int(lengths[row])].tolist()
            logits, read = reference(model, tokens)
            torch.testing.assert_close(out.logits[row], logits, atol=1e-5, rtol=1e-5)
            assert int(out.tokens_read[row]) == read
    total = out.tokens_read + out.tokens_skimmed + out.tokens_jumped
    assert torch.equal(total, lengths)
    assert 0 < int(out.tokens_read.sum()) < int(lengths.sum())  # decisions are mixed, so the test can fail


def test_stop_threshold_reads_more_and_matches_the_reference():
    model = build("jump_lstm", max_jumps=6)
    with torch.no_grad():
        model.jump_policy.bias[0] += 2.0  # stopping is likely, so the threshold has something to change
    batch = padded_batch(batch_size=8, max_len=20, seed=13)
    lengths = batch["attention_mask"].sum(1)
    with torch.no_grad():
        greedy = model(**batch)
        model.config.stop_threshold = 0.9
        patient = model(**batch)
        for row in range(8):
            logits, read = reference(model, batch["input_ids"][row, : int(lengths[row])].tolist())
            torch.testing.assert_close(patient.logits[row], logits, atol=1e-5, rtol=1e-5)
            assert int(patient.tokens_read[row]) == read
            one = model(**{key: value[row : row + 1] for key, value in batch.items()})
            assert int(one.tokens_read[0]) == read
    assert bool((patient.num_decisions >= greedy.num_decisions).all())
    assert int(patient.num_decisions.sum()) > int(greedy.num_decisions.sum())
    with pytest.raises(ValueError, match="stop_threshold"):
        JumpLstmConfig(stop_threshold=1.5)


@pytest.mark.parametrize("policy", ["adaptive", "full"])
@pytest.mark.parametrize("stop_threshold", [0.0, 0.9])
def test_jump_stream_equals_one_at_a_time(policy, stop_threshold, monkeypatch):
    from adaptive_hf.readers import streaming

    model = build("jump_lstm", seed=8, max_jumps=4, reading_policy=policy, stop_threshold=stop_threshold)
    with torch.no_grad():
        model.jump_policy.bias[0] += 1.0  # some rows stop early, others read on
    batches = [padded_batch(batch_size=n, max_len=length, seed=20 + n) for n, length in ((5, 13), (3, 7), (6, 16))]
    batches[1]["input_ids"][1] = 0  # an empty row (all padding)
    batches[1]["attention_mask"][1] = 0
    widths = []
    original = streaming.lstm_steps

    def counting_lstm_steps(inputs, lengths, state, cell, *rest):
        widths.append(inputs.size(0))
        return original(inputs, lengths, state, cell, *rest)

    monkeypatch.setattr(streaming, "lstm_steps", counting_lstm_steps)
    with torch.no_grad():
        outputs = list(model.classify_stream(batches, pool_rows=4))
    assert [out.logits.size(0) for out in outputs] == [5, 3, 6]
    fields = ("tokens_read", "tokens_skimmed", "tokens_jumped", "num_decisions", "num_jumps")
    for batch, out in zip(batches, outputs, strict=True):
        for row in range(batch["input_ids"].size(0)):
            with torch.no_grad():
                one = model(**{key: value[row : row + 1] for key, value in batch.items()})
            torch.testing.assert_close(out.logits[row], one.logits[0], atol=1e-5, rtol=1e-5)
            for field in fields:
                assert int(getattr(out, field)[row]) == int(getattr(one, field)[0]), (row, field)
        assert out.loss is None and not out.logits.requires_grad
    # Continuous batching: every round runs on a full working set of 4 rows until the input runs dry; after that
    # the set only shrinks.
    first_short = next(index for index, width in enumerate(widths) if width < 4)
    assert first_short >= 3 and set(widths[:first_short]) == {4}
    assert widths[first_short:] == sorted(widths[first_short:], reverse=True)
    if policy == "adaptive":
        assert sum(int(out.tokens_jumped.sum()) for out in outputs) > 0


def test_jump_stream_errors():
    model = build("jump_lstm")
    with pytest.raises(ValueError, match="pool_rows"):
        list(model.classify_stream([padded_batch()], pool_rows=0))
    with pytest.raises(ValueError, match="input_ids"):
        list(model.classify_stream([{"inputs_embeds": torch.zeros(2, 3, 8)}]))
    model.train()
    with pytest.raises(ValueError, match="eval"):
        list(model.classify_stream([padded_batch()]))


def test_skim_rows_run_only_the_small_cell(monkeypatch):
    model = build("skim_rnn", seed=4)
    rows = {"big": 0, "small": 0}
    originals = {name: getattr(skim_module, name) for name in ("_small_update", "_big_update", "_read_rows")}

    def counting(name, key, rows_of):
        def wrapper(*args):
            rows[key] += rows_of(*args)
            return originals[name](*args)

        return wrapper

    monkeypatch.setattr(
        skim_module, "_small_update", counting("_small_update", "small", lambda v, c, h, s: v[0].size(0))
    )
    monkeypatch.setattr(skim_module, "_big_update", counting("_big_update", "big", lambda g, c, h: g.size(0)))
    monkeypatch.setattr(skim_module, "_read_rows", counting("_read_rows", "big", lambda x, h, c, r, big: x.size(0)))
    model.big_cell.register_forward_hook(lambda *args: pytest.fail("the nn.LSTMCell module must not run in eval"))
    batch = padded_batch(batch_size=9, max_len=12, seed=5)
    with torch.no_grad():
        out = model(**batch)
        assert rows["big"] == int(out.tokens_read.sum())
        assert rows["small"] == int(out.tokens_skimmed.sum())
        assert rows["big"] > 0 and rows["small"] > 0
        for row in range(9):  # one row at a time takes the scalar-decision path
            rows.update(big=0, small=0)
            one = model(**{key: value[row : row + 1] for key, value in batch.items()})
            assert rows["big"] == int(one.tokens_read[0]) == int(out.tokens_read[row])
            assert rows["small"] == int(one.tokens_skimmed[0])


def test_jumped_tokens_and_stopped_rows_are_not_computed(monkeypatch):
    model = build("jump_lstm", seed=6)
    computed = []
    original = jump_module.lstm_steps

    def counting_lstm_steps(inputs, lengths, state, cell, *rest):
        computed.append(inputs.size(0) * inputs.size(1) if lengths is None else int(lengths.sum()))
        return original(inputs, lengths, state, cell, *rest)

    monkeypatch.setattr(jump_module, "lstm_steps", counting_lstm_steps)
    batch = padded_batch(batch_size=9, max_len=20, seed=7)
    with torch.no_grad():
        out = model(**batch)
    assert sum(computed) == int(out.tokens_read.sum())
    assert int(out.tokens_jumped.sum()) > 0
    assert len(computed) <= model.config.max_jumps + 1
    for row in range(9):  # one row at a time takes the scalar-bookkeeping path
        computed.clear()
        with torch.no_grad():
            one = model(**{key: value[row : row + 1] for key, value in batch.items()})
        assert sum(computed) == int(one.tokens_read[0]) == int(out.tokens_read[row])


def test_skim_threshold_and_reading_policy_are_read_at_every_forward():
    model = build("skim_rnn")
    batch = padded_batch()
    lengths = batch["attention_mask"].sum(1)
    with torch.no_grad():
        model.config.skim_threshold = 0.0
        assert torch.equal(model(**batch).tokens_skimmed, lengths)
        model.config.skim_threshold = 1.0
        assert int(model(**batch).tokens_skimmed.sum()) == 0
        model.config.skim_threshold = 0.5
        mixed = model(**batch)
        model.config.reading_policy = "full"
        full = model(**batch)
    assert 0 < int(mixed.tokens_skimmed.sum()) < int(lengths.sum())
    assert torch.equal(full.tokens_read, lengths)


@pytest.mark.parametrize("kind", READERS)
def test_theoretical_flops(kind):
    model = build(kind)
    batch = padded_batch()
    with torch.no_grad():
        adaptive = model(**batch)
        model.config.reading_policy = "full"
        full = model(**batch)
    spent, total = model.theoretical_flops(full)
    assert torch.equal(spent, total)
    assert model.theoretical_speedup(full) == 1.0
    spent, total = model.theoretical_flops(adaptive)
    assert torch.equal(total, model.theoretical_flops(full)[1])
    config = model.config
    big = 2 * (config.embedding_size + config.hidden_size) * 4 * config.hidden_size
    head = 2 * config.hidden_size * config.num_labels
    expected = adaptive.tokens_read * big + adaptive.num_decisions * model.decision_flops() + head
    expected = expected + adaptive.tokens_skimmed * model.skim_flops()
    expected = expected + adaptive.tokens_read * model.adaptive_read_flops()
    assert torch.equal(spent, expected.double())
    assert model.theoretical_speedup(adaptive) > 1.0


# ------------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("kind", READERS)
def test_gradient_reaches_the_decision_network(kind):
    model = build(kind).train()
    batch = padded_batch(batch_size=8, max_len=14)
    out = model(**batch, labels=torch.arange(8) % 3)
    out.loss.backward()
    names = ["skim_gate", "small_cell", "big_cell"] if kind == "skim_rnn" else ["jump_policy", "baseline", "big_cell"]
    for name in names:
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None and bool(g.abs().sum() > 0) for g in grads), name


def test_skim_penalty_is_part_of_the_loss():
    model = build("skim_rnn", skim_penalty=0.0).train()
    batch = padded_batch()
    labels = torch.arange(6) % 3
    torch.manual_seed(0)
    plain = model(**batch, labels=labels)
    model.config.skim_penalty = 1.0
    torch.manual_seed(0)
    penalized = model(**batch, labels=labels)
    assert float(penalized.loss.detach()) > float(plain.loss.detach())
    torch.testing.assert_close(plain.logits, penalized.logits)


def test_read_penalty_shapes_the_reinforce_reward():
    losses = {}
    for penalty in (0.0, 2.0):
        model = build("jump_lstm", read_penalty=penalty).train()
        torch.manual_seed(0)
        out = model(**padded_batch(batch_size=8, max_len=14), labels=torch.arange(8) % 3)
        losses[penalty] = (float(out.loss.detach()), out.logits.detach())
    torch.testing.assert_close(losses[0.0][1], losses[2.0][1])  # same sampled reading
    assert losses[0.0][0] != losses[2.0][0]


def test_probability_reward_grades_the_reinforce_reward():
    batch, labels = padded_batch(batch_size=8, max_len=14), torch.arange(8) % 3
    outputs = {}
    for reward in ("accuracy", "probability"):
        model = build("jump_lstm", reward=reward).train()
        torch.manual_seed(0)
        out = model(**batch, labels=labels)
        out.loss.backward()
        outputs[reward] = (out, model.jump_policy.weight.grad.clone())
    (plain, plain_grad), (graded, graded_grad) = outputs["accuracy"], outputs["probability"]
    torch.testing.assert_close(plain.logits, graded.logits)  # same sampled reading, same predictions
    assert float(plain.loss.detach()) != float(graded.loss.detach())
    assert not torch.allclose(plain_grad, graded_grad) and bool(graded_grad.abs().sum() > 0)
    with pytest.raises(ValueError, match="reward.*'accuracy', 'probability'"):
        JumpLstmConfig(reward="f1")


def test_full_reading_loss_adds_the_full_cross_entropy():
    batch, labels = padded_batch(batch_size=8, max_len=14), torch.arange(8) % 3
    losses = {}
    for coef in (0.0, 0.5):
        model = build("jump_lstm", full_reading_loss_coef=coef).train()
        torch.manual_seed(0)
        losses[coef] = model(**batch, labels=labels)
    model.config.reading_policy = "full"
    model.train()
    expected = F.cross_entropy(model(**batch).logits, labels)  # dropout is 0 in the tiny config
    torch.testing.assert_close(losses[0.0].logits, losses[0.5].logits)
    torch.testing.assert_close(losses[0.5].loss - losses[0.0].loss, 0.5 * expected)
    with pytest.raises(ValueError, match="full_reading_loss_coef"):
        JumpLstmConfig(full_reading_loss_coef=-1.0)


@pytest.mark.parametrize("uniform", [True, False])
def test_fast_lstm_steps_equal_the_differentiable_steps(uniform):
    from adaptive_hf.readers.modeling import lstm_steps

    model = build("jump_lstm")
    torch.manual_seed(1)
    inputs = torch.randn(5, 6, 8)
    lengths = None if uniform else torch.tensor([6, 0, 3, 6, 1])
    state = (torch.randn(5, 12), torch.randn(5, 12))
    with torch.no_grad():
        slow = lstm_steps(inputs, lengths, state, model.big_cell)
        fast = lstm_steps(inputs, lengths, state, model.big_cell, model.fast_lstm())
    for a, b in zip(slow, fast, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    if not uniform:  # a row of length 0 keeps its initial state
        assert torch.equal(fast[0][1], state[0][1]) and torch.equal(fast[1][1], state[1][1])


@pytest.mark.parametrize("kind", READERS)
def test_inference_weight_cache_follows_parameter_updates(kind):
    model = build(kind)
    batch = padded_batch(batch_size=5, max_len=9, seed=12)
    with torch.no_grad():
        model(**batch)  # fills the cache of packed weights
        model.big_cell.weight_hh.mul_(1.5)  # an in-place update, as an optimizer step does
        if kind == "skim_rnn":
            model.small_cell.weight_hh.mul_(0.5)
        out = model(**batch)
        lengths = batch["attention_mask"].sum(1)
        for row in range(5):
            logits, read = reference(model, batch["input_ids"][row, : int(lengths[row])].tolist())
            torch.testing.assert_close(out.logits[row], logits, atol=1e-5, rtol=1e-5)
            assert int(out.tokens_read[row]) == read


def tiny_dataset(n=24, seed=0):
    batch = padded_batch(batch_size=n, max_len=10, seed=seed, min_len=3)
    labels = (batch["input_ids"][:, 0] % 3).tolist()
    return Dataset.from_dict({**{k: v.tolist() for k, v in batch.items()}, "labels": labels})


@pytest.mark.parametrize("kind", READERS)
def test_stock_trainer_trains_reader_and_decisions(kind, tmp_path):
    model = build(kind, reading_policy="adaptive")
    decision = model.skim_gate if kind == "skim_rnn" else model.jump_policy
    before = decision.weight.detach().clone()
    big_before = model.big_cell.weight_ih.detach().clone()
    args = cpu_training_args(
        tmp_path, per_device_train_batch_size=8, per_device_eval_batch_size=8, max_steps=4, learning_rate=1e-2
    )
    data = tiny_dataset()
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(before, decision.weight.detach())
    assert not torch.equal(big_before, model.big_cell.weight_ih.detach())
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics
    prediction = trainer.predict(data)
    assert prediction.predictions[0].shape == (24, 3)


def test_frozen_embeddings_do_not_train():
    model = build("jump_lstm", freeze_embeddings=True).train()
    assert not model.embeddings.weight.requires_grad
    out = model(**padded_batch(), labels=torch.zeros(6, dtype=torch.long))
    out.loss.backward()
    assert model.embeddings.weight.grad is None


# ------------------------------------------------------------------------------------------------- hub round trip
@pytest.mark.parametrize("kind", READERS)
def test_embeddings_from_a_pretrained_hf_model(kind, tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=77,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            pad_token_id=3,
        )
    )
    bert.save_pretrained(tmp_path / "bert")
    cls = SkimRnnForSequenceClassification if kind == "skim_rnn" else JumpLstmForSequenceClassification
    model = cls.from_pretrained_embeddings(tmp_path / "bert", hidden_size=10, num_labels=2)
    assert (model.config.vocab_size, model.config.embedding_size, model.config.pad_token_id) == (77, 16, 3)
    assert torch.equal(model.embeddings.weight, bert.get_input_embeddings().weight)
    with pytest.raises(ValueError, match="vocab_size"):
        cls.from_pretrained_embeddings(tmp_path / "bert", vocab_size=5)


# ------------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("config_class", "settings", "pattern"),
    [
        (SkimRnnConfig, {"small_hidden_size": 12, "hidden_size": 12}, "small_hidden_size"),
        (SkimRnnConfig, {"small_hidden_size": 0}, "small_hidden_size"),
        (SkimRnnConfig, {"skim_threshold": 1.5}, "skim_threshold"),
        (SkimRnnConfig, {"gumbel_temperature": 0.0}, "gumbel_temperature"),
        (SkimRnnConfig, {"skim_penalty": -1.0}, "skim_penalty"),
        (SkimRnnConfig, {"reading_policy": "skim"}, "reading_policy.*'adaptive', 'full'"),
        (SkimRnnConfig, {"pad_token_id": 100, "vocab_size": 50}, "pad_token_id"),
        (SkimRnnConfig, {"num_labels": 1}, "num_labels"),
        (JumpLstmConfig, {"read_tokens": 0}, "read_tokens"),
        (JumpLstmConfig, {"max_jump": -1}, "max_jump"),
        (JumpLstmConfig, {"max_jumps": 1.5}, "max_jumps"),
        (JumpLstmConfig, {"entropy_coef": -0.1}, "entropy_coef"),
        (JumpLstmConfig, {"read_penalty": -0.5}, "read_penalty"),
        (JumpLstmConfig, {"hidden_size": 0}, "hidden_size"),
        (JumpLstmConfig, {"classifier_dropout": 1.0}, "classifier_dropout"),
    ],
)
def test_bad_config_values(config_class, settings, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        config_class(**settings)


@pytest.mark.parametrize("kind", READERS)
def test_bad_inputs(kind):
    model = build(kind)
    batch = padded_batch()
    left_padded = batch["attention_mask"].flip(1)
    with pytest.raises(ValueError, match="right-padded"):
        model(input_ids=batch["input_ids"], attention_mask=left_padded)
    with pytest.raises(ValueError, match="vocab_size=60"):
        model(input_ids=batch["input_ids"] + VOCAB)
    with pytest.raises(TypeError, match="input_ids"):
        model(input_ids=batch["input_ids"].float())
    with pytest.raises(ValueError, match="embedding_size=8"):
        model(inputs_embeds=torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="labels"):
        model(**batch, labels=torch.zeros(2, dtype=torch.long))
    model.config.reading_policy = "skim everything"
    with pytest.raises(ValueError, match="reading_policy"):
        model(**batch)


@pytest.mark.parametrize("kind", READERS)
def test_tokenizer_outputs_inputs_embeds_and_tuples(kind):
    model = build(kind)
    batch = padded_batch()
    with torch.no_grad():
        out = model(**batch, token_type_ids=torch.zeros_like(batch["input_ids"]))
        from_embeds = model(inputs_embeds=model.embeddings(batch["input_ids"]), attention_mask=batch["attention_mask"])
        as_tuple = model(**batch, return_dict=False)
    torch.testing.assert_close(out.logits, from_embeds.logits)
    assert torch.equal(as_tuple[0], out.logits)


@pytest.mark.parametrize("kind", READERS)
def test_evaluation_helpers(kind):
    from adaptive_hf.readers.evaluation import evaluate_reader, time_reader

    model = build(kind)
    batch = padded_batch(batch_size=8, max_len=12, seed=11)
    batches = [{**batch, "labels": torch.arange(8) % 3}]
    full = evaluate_reader(model, batches, reading_policy="full")
    adaptive = evaluate_reader(model, batches)
    assert full["read_rate"] == 1.0 and full["theoretical_speedup"] == pytest.approx(1.0)
    assert adaptive["read_rate"] + adaptive["skim_rate"] + adaptive["jump_rate"] == pytest.approx(1.0)
    assert adaptive["read_rate"] < 1.0 and adaptive["theoretical_speedup"] > 1.0
    assert model.config.reading_policy == "adaptive"  # overrides are restored
    model.train()
    knob = {"skim_rnn": "skim_threshold", "jump_lstm": "stop_threshold"}[kind]
    before = getattr(model.config, knob)
    with pytest.raises(KeyError, match="labels"):
        evaluate_reader(model, [batch], reading_policy="full", **{knob: 0.25})  # unlabelled: fails mid-run
    assert model.config.reading_policy == "adaptive" and model.training  # restored after the error too
    assert getattr(model.config, knob) == before != 0.25
    model.eval()
    timing = time_reader(model, batches, repetitions=2, warmup=0)
    assert timing["adaptive_s"] > 0 and timing["full_s"] > 0 and timing["spread"] >= 1.0
    if kind == "jump_lstm":
        streamed = time_reader(model, batches * 3, repetitions=2, warmup=0, pool_rows=4)
        assert streamed["pool_rows"] == 4 and streamed["theoretical_speedup"] == pytest.approx(
            time_reader(model, batches * 3, repetitions=1, warmup=0)["theoretical_speedup"]
        )
    else:
        with pytest.raises(ValueError, match="pool_rows"):
            time_reader(model, batches, repetitions=1, warmup=0, pool_rows=4)


def test_policy_gradient_to_reader_switch():
    grads = {}
    for through in (True, False):
        model = build("jump_lstm", policy_gradient_to_reader=through, classifier_dropout=0.0).train()
        torch.manual_seed(0)
        out = model(**padded_batch(batch_size=8, max_len=14), labels=torch.arange(8) % 3)
        out.loss.backward()
        assert model.jump_policy.weight.grad.abs().sum() > 0
        grads[through] = model.big_cell.weight_hh.grad.clone()
    # Same sampled trajectories (same seed); only the REINFORCE term's path into the LSTM differs.
    assert not torch.allclose(grads[True], grads[False])


@pytest.mark.parametrize("kind", READERS)
def test_full_reading_warmup_reads_every_token_first(kind, tmp_path):
    from adaptive_hf.readers.training import FullReadingWarmupCallback

    model = build(kind, reading_policy="adaptive")
    decision = model.skim_gate if kind == "skim_rnn" else model.jump_policy
    seen, decision_weights = [], []

    def record(module, args, kwargs):
        if module.training:
            seen.append(module.config.reading_policy)
            decision_weights.append(decision.weight.detach().clone())

    model.register_forward_pre_hook(record, with_kwargs=True)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=4,
        learning_rate=1e-2,
        weight_decay=0.0,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=tiny_dataset(), callbacks=[FullReadingWarmupCallback(0.5)])
    trainer.train()
    assert seen == ["full", "full", "adaptive", "adaptive"]
    # The decision network gets no gradient while every token is read, and learns afterwards.
    assert torch.equal(decision_weights[0], decision_weights[2])
    assert not torch.equal(decision_weights[2], decision.weight.detach())
    assert model.config.reading_policy == "adaptive"  # the configured policy is what gets saved


@pytest.mark.parametrize("fraction", [-0.1, 1.0, "half"])
def test_full_reading_warmup_rejects_bad_fractions(fraction):
    from adaptive_hf.readers.training import FullReadingWarmupCallback

    with pytest.raises((ValueError, TypeError), match="full_reading_fraction"):
        FullReadingWarmupCallback(fraction)


@pytest.mark.parametrize("kind", READERS)
def test_plain_lstm_classifier_matches_full_reading_and_is_timed(kind):
    from adaptive_hf.readers.evaluation import PlainLSTMClassifier, time_reader

    model = build(kind).eval()
    batch = padded_batch(batch_size=8, max_len=12, seed=5)
    plain = PlainLSTMClassifier.from_reader(model)
    model.config.reading_policy = "full"
    with torch.no_grad():
        expected = model(**batch).logits
        got = plain(**batch)
    model.config.reading_policy = "adaptive"
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    timing = time_reader(model, [batch], repetitions=2, warmup=0, plain=plain)
    assert timing["plain_s"] > 0 and timing["realized_speedup_vs_plain"] > 0 and timing["full_over_plain"] > 0
    with pytest.raises(TypeError, match="reader"):
        PlainLSTMClassifier.from_reader(torch.nn.Linear(2, 2))
