"""Switch-MoE models: upcycling equals the dense model, Hub round trips, remote code, Trainer training."""

from __future__ import annotations

import pytest
import timm
import torch
import transformers
from text_testers import TINY_TIMM_VIT, TINY_TIMM_VIT_ARGS, VOCAB, padded_batch, tiny_dense_config
from trainer_testers import cpu_training_args
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    Trainer,
)

import adaptive_hf
from adaptive_hf import ExpertLoadCallback, SwitchMoEConfig, upcycle

TEXT_FAMILIES = ["bert", "roberta", "xlm-roberta", "electra", "distilbert", "mpnet"]
IMAGE_FAMILIES = ["vit", "timm"]  # Hugging Face ViT, timm ViT
FAMILIES = TEXT_FAMILIES + ["gpt2", "llama"] + IMAGE_FAMILIES
TIMM_ARCH = TINY_TIMM_VIT
TIMM_ARGS = TINY_TIMM_VIT_ARGS


def tiny_config(family: str, **kwargs):
    """A tiny random dense config of ``family`` (dropout off so train and eval forwards compare)."""
    if family == "timm":
        return {"architecture": TIMM_ARCH, "model_args": dict(TIMM_ARGS), **kwargs}
    config = tiny_dense_config(family)
    for name, value in kwargs.items():
        setattr(config, name, value)
    return config


def dense_model(family: str, seed: int = 0, num_labels: int = 3):
    """A dense sequence/image classifier of ``family`` with random weights."""
    torch.manual_seed(seed)
    if family == "timm":
        return timm.create_model(TIMM_ARCH, pretrained=False, num_classes=num_labels, **TIMM_ARGS).eval()
    config = tiny_config(family, num_labels=num_labels)
    if family == "vit":
        return transformers.ViTForImageClassification(config).eval()
    return AutoModelForSequenceClassification.from_config(config).eval()


def batch_for(family: str, batch_size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if family in IMAGE_FAMILIES:
        return {"pixel_values": torch.randn(batch_size, 3, 16, 16, generator=generator)}
    pad = 1 if family in ("roberta", "xlm-roberta", "mpnet") else 0
    input_ids, mask = padded_batch(batch_size, 9, seed=seed, pad_token_id=pad)
    if family in ("gpt2", "llama"):  # left padding for decoders, as generation uses
        input_ids, mask = input_ids.flip(1), mask.flip(1)
    return {"input_ids": input_ids, "attention_mask": mask}


@pytest.mark.parametrize("family", FAMILIES)
def test_upcycle_builds_the_family_class(family):
    """The class and config upcycling builds; that it computes what the dense model did is the shared tester's
    ``test_full_compute_equals_plain_backbone[switch_moe/<family>]``."""
    dense = dense_model(family)
    moe = upcycle(dense, SwitchMoEConfig(num_experts=4, moe_layers=[1, 3, 4], capacity_factor=0.0), seed=0)
    if family == "timm":
        assert type(moe) is adaptive_hf.SwitchMoETimmForImageClassification
        assert moe.config.architecture == TIMM_ARCH and moe.config.model_args == TIMM_ARGS
        assert moe.config.num_labels == 3
    else:
        assert type(moe).__name__ == f"SwitchMoE{type(dense).__name__}"
        assert isinstance(moe, type(dense))
    assert len(moe.moe_modules()) == 3 and moe.config.num_experts == 4


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_expert_noise_and_capacity_change_the_function(family):
    dense = dense_model(family)
    batch = batch_for(family)
    noisy = upcycle(dense, num_experts=4, moe_layers=[2], capacity_factor=0.0, expert_noise=0.5, seed=0)
    tight = upcycle(dense, num_experts=4, moe_layers=[2], capacity_factor=0.25, seed=0)
    with torch.no_grad():
        expected = dense(**batch, output_hidden_states=True).hidden_states[-1]
        assert not torch.allclose(noisy(**batch, output_hidden_states=True).hidden_states[-1], expected, atol=1e-4)
        out = tight(**batch, output_hidden_states=True)
    assert out.dropped_fraction.item() > 0
    assert not torch.allclose(out.hidden_states[-1], expected, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_built_from_scratch_trains(family):
    moe_settings = dict(num_experts=4, moe_layers=[2, 4], num_experts_per_tok=2)
    if family == "timm":
        config = adaptive_hf.SwitchMoETimmConfig(**tiny_config(family, num_labels=3), **moe_settings)
        model_class = adaptive_hf.SwitchMoETimmForImageClassification
    else:
        config_class = adaptive_hf.SWITCH_MOE_CONFIGS[family]
        dense_config = tiny_config(family, num_labels=3).to_dict()
        dense_config.pop("model_type", None)
        config = config_class(**dense_config, **moe_settings)
        model_class = getattr(adaptive_hf, f"SwitchMoE{config_class.backbone_adapter.task_classes[1].__name__}")
    model = model_class(config).train()
    batch = batch_for(family)
    if family in ("gpt2", "llama"):
        batch["labels"] = batch["input_ids"]
    else:
        batch["labels"] = torch.tensor([0, 1, 2, 1])
    out = model(**batch)
    out.loss.backward()
    task_loss = out.loss - config.router_aux_loss_coef * out.aux_loss - config.router_z_loss_coef * out.z_loss
    assert task_loss.item() > 0
    if family not in ("gpt2", "llama"):  # the aux losses are in `loss`, on top of the task's cross-entropy
        torch.testing.assert_close(task_loss, torch.nn.functional.cross_entropy(out.logits, batch["labels"]))
    for module in model.moe_modules():
        assert module.router.weight.grad is not None and module.experts.up_proj.grad.abs().sum() > 0


def test_aux_losses_join_the_loss_in_training_only():
    dense = dense_model("bert")
    model = upcycle(dense, num_experts=4, moe_layers=[1, 2], router_aux_loss_coef=0.5, router_z_loss_coef=0.25)
    model.config.hidden_dropout_prob = 0.0
    batch = batch_for("bert")
    labels = torch.tensor([0, 1, 2, 1])
    model.eval()
    with torch.no_grad():
        eval_out = model(**batch, labels=labels)
        assert model(**batch).loss is None
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    train_out = model(**batch, labels=labels)
    torch.testing.assert_close(
        train_out.loss, eval_out.loss + 0.5 * train_out.aux_loss + 0.25 * train_out.z_loss, rtol=1e-5, atol=1e-6
    )
    assert model(**batch).loss is None
    model.config.add_aux_loss_without_labels = True
    out = model(**batch)
    torch.testing.assert_close(out.loss, 0.5 * out.aux_loss + 0.25 * out.z_loss)
    assert out.router_logits is None
    assert len(model(**batch, output_router_logits=True).router_logits) == 2


def test_dense_checkpoint_loads_into_moe_class_by_upcycling(tmp_path):
    dense = dense_model("bert")
    dense.save_pretrained(tmp_path)
    moe = adaptive_hf.SwitchMoEBertForSequenceClassification.from_pretrained(
        tmp_path, num_experts=4, moe_layers=[1, 4], capacity_factor=0.0
    ).eval()
    assert moe.config.model_type == "switch_moe_bert" and moe.config.num_experts == 4
    batch = batch_for("bert")
    with torch.no_grad():
        torch.testing.assert_close(moe(**batch).logits, dense(**batch).logits, rtol=1e-5, atol=1e-5)


def test_generation_with_cache_routes_only_new_tokens():
    torch.manual_seed(0)
    dense = transformers.GPT2LMHeadModel(tiny_config("gpt2")).eval()
    moe = upcycle(dense, num_experts=4, moe_layers=[1, 3], capacity_factor=0.0)
    batch = batch_for("gpt2", batch_size=2)
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert moe.generation_config.top_k in (None, 50)  # the MoE fields do not leak into generation settings
    assert torch.equal(moe.generate(**batch, **kwargs), dense.generate(**batch, **kwargs))


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, count: int = 32):
        generator = torch.Generator().manual_seed(0)
        self.ids, self.mask = padded_batch(count, 8, seed=3)
        self.labels = (self.ids[:, 0] % 2).long()  # learnable from the first token
        del generator

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"input_ids": self.ids[index], "attention_mask": self.mask[index], "labels": self.labels[index]}


class _Images(torch.utils.data.Dataset):
    def __init__(self, count: int = 32):
        generator = torch.Generator().manual_seed(3)
        self.images = torch.randn(count, 3, 16, 16, generator=generator)
        self.labels = (self.images[:, 0, :4, :4].mean((1, 2)) > 0).long()  # learnable from the first patch

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"pixel_values": self.images[index], "labels": self.labels[index]}


@pytest.mark.parametrize("family", ["bert", "timm"])
def test_stock_trainer_reduces_loss_and_logs_expert_load(tmp_path, family):
    dense = dense_model(family, num_labels=2)
    model = upcycle(dense, num_experts=4, moe_layers=[2, 4], capacity_factor=1.0, router_jitter=0.01, seed=0)
    dataset = _Images if family == "timm" else _Tokens
    args = cpu_training_args(
        tmp_path, per_device_train_batch_size=8, num_train_epochs=6, learning_rate=3e-3, logging_steps=4
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset(), callbacks=[ExpertLoadCallback(per_expert=True)])
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < losses[0]
    logged = [entry for entry in trainer.state.log_history if "moe/layer_2/drop_rate" in entry]
    assert logged, trainer.state.log_history
    entry = logged[-1]
    assert 0.0 <= entry["moe/layer_4/drop_rate"] <= 1.0
    assert entry["moe/layer_2/load_max"] >= 1.0
    assert sum(entry[f"moe/layer_2/expert_{e}"] for e in range(4)) == pytest.approx(1.0)
    # evaluation predictions are the logits alone: the routing statistics are not collected as predictions
    predictions = trainer.predict(dataset(8)).predictions
    assert isinstance(predictions, __import__("numpy").ndarray) and predictions.shape == (8, 2)


def test_unsupported_family_error_names_the_supported_ones():
    config = transformers.AlbertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37
    )
    with pytest.raises(ValueError, match="switch MoE.*bert, deberta-v2, .*distilbert"):
        upcycle(transformers.AlbertForSequenceClassification(config), num_experts=2)
    with pytest.raises(TypeError, match="Unknown MoE settings"):
        upcycle(dense_model("bert"), num_expert=2)
    resnet = timm.create_model("resnet18", pretrained=False, num_classes=2)
    with pytest.raises(ValueError, match="supports vision transformers.*resnet18.* is a resnet"):
        upcycle(resnet, num_experts=2)
    handmade = timm.models.VisionTransformer(**TIMM_ARGS, num_classes=2)
    with pytest.raises(ValueError, match="timm.create_model"):
        upcycle(handmade, num_experts=2)


def test_causal_lm_auto_class(tmp_path):
    torch.manual_seed(0)
    config = adaptive_hf.SwitchMoELlamaConfig(**{**tiny_config("llama").to_dict(), "model_type": None}, num_experts=2)
    model = AutoModelForCausalLM.from_config(config)
    assert type(model).__name__ == "SwitchMoELlamaForCausalLM"
    assert len(model.moe_modules()) == 4
