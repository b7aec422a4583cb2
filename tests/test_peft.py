"""peft over adaptive models: forward keywords, a LoRA Trainer step, adapter save and reload with equal outputs."""

from __future__ import annotations

import pytest
import torch
from text_testers import padded_batch, tiny_backbone_config, tiny_dense_config
from trainer_testers import cpu_training_args
from transformers import AutoModelForSequenceClassification, Trainer

import adaptive_hf
from adaptive_hf import (
    AutoEarlyExitModelForSequenceClassification,
    AutoHaltingModelForSequenceClassification,
    lora_config,
    peft_modules_to_save,
    upcycle,
)

peft = pytest.importorskip("peft")

KINDS = ["early_exit", "halting", "switch_moe"]


def build(kind: str, seed: int = 0):
    """A tiny random adaptive BERT classifier of technique ``kind`` (same weights for the same seed)."""
    torch.manual_seed(seed)
    if kind == "early_exit":
        return AutoEarlyExitModelForSequenceClassification.from_config(tiny_backbone_config("bert"), num_labels=2)
    if kind == "halting":
        model = AutoHaltingModelForSequenceClassification.from_config(tiny_backbone_config("bert"), num_labels=2)
        for unit in model.halting_units:  # trained-looking units, so rows halt at different layers
            torch.nn.init.normal_(unit.proj.weight, std=0.6)
        return model
    dense = AutoModelForSequenceClassification.from_config(tiny_dense_config("bert"))
    return upcycle(dense, num_experts=2, seed=seed)


def batch(seed: int = 0, rows: int = 6):
    ids, mask = padded_batch(rows, 9, seed=seed, pad_token_id=0)
    return {"input_ids": ids, "attention_mask": mask}


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: int = 8):
        inputs = batch(seed=1, rows=rows)
        self.rows = [
            {"input_ids": inputs["input_ids"][i], "attention_mask": inputs["attention_mask"][i], "labels": i % 2}
            for i in range(rows)
        ]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]


@pytest.mark.parametrize("kind", KINDS)
def test_modules_to_save_name_the_adaptive_parts(kind):
    model = build(kind)
    names = peft_modules_to_save(model)
    parts = {"early_exit": "exit_heads.", "halting": "halting_units.", "switch_moe": ".router"}[kind]
    adaptive = {name for name, param in model.named_parameters() if parts in name}
    saved = {name for name, _ in model.named_parameters() if any(name.startswith(f"{leaf}.") for leaf in names)}
    assert adaptive and adaptive <= saved  # every weight of the adaptive parts is saved with the adapter
    assert not any(name.startswith(f"{model.base_model_prefix}.embeddings") for name in saved)


def test_modules_to_save_refuses_a_plain_model():
    with pytest.raises(TypeError, match="not an adaptive_hf model"):
        peft_modules_to_save(AutoModelForSequenceClassification.from_config(tiny_dense_config("bert")))


@pytest.mark.parametrize("kind", ["early_exit", "halting"])
def test_forward_accepts_what_peft_passes_and_names_what_it_refuses(kind):
    model = build(kind).eval()
    inputs = batch()
    plain = model(**inputs).logits
    passed = model(**inputs, output_attentions=None, output_hidden_states=False, return_dict=True).logits
    torch.testing.assert_close(passed, plain)
    assert torch.equal(model(**inputs, return_dict=False)[0], plain)
    with pytest.raises(ValueError, match="output_attentions"):
        model(**inputs, output_attentions=True)
    with pytest.raises(ValueError, match="output_hidden_states"):
        model(**inputs, output_hidden_states=True)
    with pytest.raises(TypeError, match="use_cache"):
        model(**inputs, use_cache=True)


@pytest.mark.parametrize("kind", KINDS)
def test_lora_trains_the_adaptive_parts_and_reloads_to_equal_outputs(kind, tmp_path):
    config = lora_config(build(kind), r=4, lora_alpha=8)
    assert config.task_type == ("SEQ_CLS" if kind != "halting" else None)  # halting: see sequence_classification_task
    model = peft.get_peft_model(build(kind), config)
    spec_modules = adaptive_hf.technique_of(model.base_model.model).adaptive_modules
    adaptive_before = {
        name: param.detach().clone()
        for name, param in model.named_parameters()
        if param.requires_grad and any(f".{part}." in name for part in spec_modules)
    }
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    assert adaptive_before and lora_before
    args = cpu_training_args(tmp_path / "run", num_train_epochs=1, per_device_train_batch_size=4, learning_rate=1e-2)
    Trainer(model=model, args=args, train_dataset=_Rows()).train()
    params = dict(model.named_parameters())
    assert any(not torch.equal(params[n], before) for n, before in adaptive_before.items()), "adaptive parts frozen"
    assert any(not torch.equal(params[n], before) for n, before in lora_before.items()), "LoRA did not train"

    model.eval()
    inputs = batch(seed=3)
    expected = model(**inputs).logits
    model.save_pretrained(tmp_path / "adapter")
    fresh = build(kind, seed=0)
    reloaded = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    torch.testing.assert_close(reloaded(**inputs).logits, expected)
    assert not torch.equal(build(kind).eval()(**inputs).logits, expected)  # the adapter changed the outputs


def test_lora_config_refuses_a_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        lora_config(build("early_exit"), r=0)


@pytest.mark.parametrize("family", ["distilbert", "mpnet", "albert"])
def test_lora_config_adapts_families_without_bert_names(family):
    torch.manual_seed(0)
    model = AutoEarlyExitModelForSequenceClassification.from_config(tiny_backbone_config(family), num_labels=2)
    wrapped = peft.get_peft_model(model, lora_config(model, r=2)).train()
    inputs = batch(seed=2)
    pad = model.config.pad_token_id or 0
    inputs["input_ids"] = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, pad)
    wrapped(**inputs, labels=torch.tensor([0, 1, 0, 1, 0, 1])).loss.backward()
    lora_grads = [p.grad for n, p in wrapped.named_parameters() if "lora_B" in n]
    head_grads = [p.grad for n, p in wrapped.named_parameters() if "exit_heads" in n and p.requires_grad]
    assert lora_grads and all(grad is not None for grad in lora_grads)
    assert head_grads and all(grad is not None for grad in head_grads)


@pytest.mark.parametrize("kind", ["early_exit", "halting"])
def test_ia3_wraps_the_adaptive_models(kind):
    model = build(kind).eval()
    expected = model(**batch()).logits
    config = peft.IA3Config(
        task_type=adaptive_hf.core.peft.sequence_classification_task(model),
        target_modules=["key", "value", "output.dense"],
        feedforward_modules=["output.dense"],
        modules_to_save=peft_modules_to_save(model),
    )
    wrapped = peft.get_peft_model(model, config).eval()
    torch.testing.assert_close(wrapped(**batch()).logits, expected)  # IA3 starts as the identity


@pytest.mark.parametrize("kind", ["early_exit", "halting"])
def test_prefix_tuning_is_refused_with_a_clear_error(kind):
    # Rows leave the backbone at different layers; these models keep no key/value cache to prepend a prefix to.
    wrapped = peft.get_peft_model(build(kind), peft.PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=3))
    with pytest.raises(ValueError, match="past key values"):
        wrapped(**batch())


def test_a_plain_seq_cls_config_on_halting_is_refused_before_training():
    # peft's SEQ_CLS task wraps the halting classifier head and the `classifier` layer inside it; that adapter would
    # fail to reload, so the first forward says so and names the way out.
    model = build("halting")
    config = peft.LoraConfig(task_type="SEQ_CLS", target_modules=["query", "value"])
    wrapped = peft.get_peft_model(model, config)
    with pytest.raises(ValueError, match="lora_config"):
        wrapped(**batch())
