"""peft over every technique beyond text: image early exits (timm ViT and CNN, HF ViT), timm ViT halting, MoE on
ViTs, the RNN readers and the video frame samplers, each on one family from the shared tester's cases.

Each case trains a few LoRA (or IA3) steps, checks that the adapter and the adaptive parts both trained, saves the
adapter and reloads it into a fresh model with equal outputs, and checks that the wrapped eval forward computes
what the merged model computes (so no fast path reads unadapted weights).
"""

from __future__ import annotations

import pytest
import torch
from adaptive_case import NUM_LABELS
from adaptive_cases import CASES_BY_NAME
from cases_exits_halting import early_exit_text_case

import adaptive_hf
from adaptive_hf import check_peft_config, ia3_config, lora_config, peft_modules_to_save

peft = pytest.importorskip("peft")

# case name -> (peft method, name fragments of the adaptive parts that must train, per-sample output fields)
PEFT_CASES = {
    "early_exit/timm-vit": ("lora", ("exit_heads.",), ("exit_layer",)),
    "early_exit/timm-resnet_stage": ("lora", ("exit_heads.",), ("exit_layer",)),
    "early_exit/hf-vit": ("lora", ("exit_heads.",), ("exit_layer",)),
    "early_exit/timm-vit#ia3": ("ia3", ("exit_heads.",), ("exit_layer",)),
    "early_exit/bert#ia3": ("ia3", ("exit_heads.",), ("exit_layer",)),
    "early_exit/bert#lora": ("lora", ("exit_heads.",), ("exit_layer",)),
    "halting/bert-token-pondernet#lora": ("lora", ("halting_units.",), ("halting_steps",)),
    "early_exit/bert#prompt": ("prompt", ("exit_heads.",), ("exit_layer",)),
    "halting/bert-sample-act#ia3": ("ia3", ("halting_units.",), ("halting_steps",)),
    "halting/timm-vit-token-act#ia3": ("ia3", ("halting_units.",), ("halting_steps",)),
    "switch_moe/timm#ia3": ("ia3", (".router.",), ("expert_counts",)),
    "switch_moe/bert#ia3": ("ia3", (".router.",), ("expert_counts",)),
    "early_exit/hf-vit#ia3": ("ia3", ("exit_heads.",), ("exit_layer",)),
    "early_exit/timm-resnet_stage#ia3": ("ia3", ("exit_heads.",), ("exit_layer",)),
    "video/videomae-saliency#ia3": ("ia3", ("glance.",), ("frame_indices",)),
    "readers/jump_lstm#prompt": ("prompt", ("jump_policy.",), ("tokens_jumped",)),
    "readers/jump_lstm#lora-big-cell": ("lora-big-cell", ("jump_policy.", "big_cell."), ("tokens_jumped",)),
    "readers/skim_rnn#lora-big-cell": ("lora-big-cell", ("skim_gate.", "big_cell."), ("tokens_skimmed",)),
    "switch_moe/bert#prompt": ("prompt", (".router.",), ("expert_counts",)),
    "readers/skim_rnn#prompt": ("prompt", ("skim_gate.",), ("tokens_skimmed",)),
    "video/efficientnet-early_stop-attention#ia3": ("ia3", ("gate.", "attention."), ("frames_used",)),
    "halting/timm-vit-token-act": ("lora", ("halting_units.",), ("halting_steps",)),
    "switch_moe/vit": ("lora", (".router.",), ("expert_counts",)),
    "switch_moe/timm": ("lora", (".router.",), ("expert_counts",)),
    "readers/skim_rnn": ("lora", ("skim_gate.",), ("tokens_skimmed",)),
    "readers/jump_lstm": ("lora", ("jump_policy.",), ("tokens_jumped",)),
    "video/efficientnet-early_stop-attention": ("lora", ("gate.", "attention."), ("frames_used",)),
    "video/efficientnet-saliency": ("lora", ("glance.",), ("frame_indices",)),
    "video/videomae-saliency": ("lora", ("glance.",), ("frame_indices",)),
}


def _case(name: str):
    case_name = name.split("#")[0]
    if case_name == "early_exit/bert":
        return early_exit_text_case("bert")
    return CASES_BY_NAME[case_name]


def _config(method: str, model):
    if method == "prompt":  # virtual tokens through inputs_embeds; the adaptive parts saved in full
        # A reader's config has no transformer sizes for peft to read: one layer of the embeddings' width.
        sizes = {} if hasattr(model.config, "num_hidden_layers") else {"num_layers": 1, "num_attention_heads": 1}
        config = peft.PromptTuningConfig(
            task_type="SEQ_CLS",
            num_virtual_tokens=3,
            modules_to_save=peft_modules_to_save(model),
            token_dim=model.get_input_embeddings().embedding_dim,
            **sizes,
        )
        check_peft_config(model, config)
        return config
    if method == "lora-big-cell":  # the LSTM cell LoRA cannot adapt, trained in full instead
        return lora_config(model, r=2, lora_alpha=8, modules_to_save=["big_cell"])
    return lora_config(model, r=2, lora_alpha=8) if method == "lora" else ia3_config(model)


def _labels(batch) -> torch.Tensor:
    rows = next(iter(batch.values())).size(0)
    return torch.arange(rows) % NUM_LABELS


def _outputs(model, batch, fields):
    with torch.no_grad():
        out = model(**batch)
    return out.logits, {field: getattr(out, field) for field in fields}


@pytest.mark.parametrize("name", list(PEFT_CASES))
def test_peft_trains_the_adaptive_parts_and_reloads_to_equal_outputs(name, tmp_path):
    method, parts, fields = PEFT_CASES[name]
    case = _case(name)
    batch = case.batch_maker(6, 0, 1)
    wrapped = peft.get_peft_model(case.builder(), _config(method, case.builder()))
    lora = ("lora_A", "lora_B", "lora_embedding")
    adapter_names = {"lora": lora, "lora-big-cell": lora, "ia3": ("ia3_l",), "prompt": ("prompt_encoder",)}[method]
    adaptive = {n: p for n, p in wrapped.named_parameters() if p.requires_grad and any(s in n for s in parts)}
    adapter = {n: p for n, p in wrapped.named_parameters() if any(s in n for s in adapter_names)}
    assert adaptive and adapter, "the adaptive parts or the adapter have no trainable weights"
    before = {n: p.detach().clone() for n, p in {**adaptive, **adapter}.items()}

    wrapped.train()
    optimizer = torch.optim.Adam([p for p in wrapped.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        wrapped(**batch, labels=_labels(batch)).loss.backward()
        optimizer.step()
    assert any(not torch.equal(p, before[n]) for n, p in adaptive.items()), "the adaptive parts did not train"
    assert any(not torch.equal(p, before[n]) for n, p in adapter.items()), "the adapter did not train"

    wrapped.eval()
    logits, compute = _outputs(wrapped, batch, fields)
    wrapped.save_pretrained(tmp_path / "adapter")
    reloaded = peft.PeftModel.from_pretrained(case.builder(), tmp_path / "adapter").eval()
    reloaded_logits, reloaded_compute = _outputs(reloaded, batch, fields)
    torch.testing.assert_close(reloaded_logits, logits)
    for field, value in compute.items():
        assert torch.equal(reloaded_compute[field], value), field
    assert not torch.allclose(_outputs(case.builder(), batch, ())[0], logits), "the adapter changed nothing"
    if method == "prompt":
        return  # virtual tokens do not merge into weights
    # The wrapped eval forward (with its inference fast paths) computes what the merged plain model computes.
    merged_logits, merged_compute = _outputs(wrapped.merge_and_unload().eval(), batch, fields)
    torch.testing.assert_close(merged_logits, logits, rtol=1e-4, atol=1e-5)
    for field, value in compute.items():
        assert torch.equal(merged_compute[field], value), field


@pytest.mark.parametrize("name", [n for n in PEFT_CASES if "#" not in n])
def test_forward_takes_the_keywords_peft_and_pipelines_pass(name):
    case = _case(name)
    model = case.builder()
    batch = case.batch_maker(3, 0, 1)
    plain = _outputs(model, batch, ())[0]
    with torch.no_grad():
        passed = model(**batch, output_attentions=None, output_hidden_states=False, return_dict=True).logits
        as_tuple = model(**batch, return_dict=False)
    torch.testing.assert_close(passed, plain)
    torch.testing.assert_close(next(t for t in as_tuple if t is not None and t.shape == plain.shape), plain)
    if "pixel_values" in batch:  # peft's SEQ_CLS wrapper passes text inputs as None: accepted, a value is not
        with torch.no_grad():
            torch.testing.assert_close(model(**batch, input_ids=None, attention_mask=None).logits, plain)
        with pytest.raises(ValueError, match="pixel_values"):
            model(**batch, input_ids=torch.ones(3, 4, dtype=torch.long))
    if not name.startswith("switch_moe/vit"):  # the stock HF ViT forward honours output_hidden_states itself
        with pytest.raises(ValueError, match="output_hidden_states"):
            model(**batch, output_hidden_states=True)
        with pytest.raises(TypeError, match="use_cache"):
            model(**batch, use_cache=True)


@pytest.mark.parametrize(
    "name", ["early_exit/timm-vit", "readers/skim_rnn", "video/efficientnet-early_stop-attention"]
)
def test_modules_to_save_cover_the_adaptive_parts_and_the_classifier(name):
    model = _case(name).builder()
    saved = peft_modules_to_save(model)
    spec = adaptive_hf.technique_of(model)
    parts = [n for n, _ in model.named_parameters() if n.split(".")[0] in spec.adaptive_children]
    parts += [n for n, _ in model.named_parameters() if any(f"{m}." in n for m in spec.adaptive_modules)]
    assert parts and all(any(n.startswith(f"{leaf}.") for leaf in saved) for n in parts)
    classifier = {"early_exit/timm-vit": "timm_model.head", "readers/skim_rnn": "classifier"}
    assert classifier.get(name, "backbone.classifier") in saved


# ------------------------------------------------------------------------------------------------- bad input
def _timm_exits():
    return CASES_BY_NAME["early_exit/timm-vit"].builder()


def test_prefix_tuning_is_refused_before_wrapping():
    config = peft.PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=3)
    for model in (_timm_exits(), CASES_BY_NAME["readers/jump_lstm"].builder()):
        with pytest.raises(ValueError, match="past_key_values"):
            check_peft_config(model, config)


def test_prompt_tuning_on_an_image_model_is_refused():
    with pytest.raises(ValueError, match="prepends learned token embeddings"):
        check_peft_config(_timm_exits(), peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=3))


def test_prompt_tuning_on_text_halting_is_refused_for_its_nested_classifier():
    model = CASES_BY_NAME["halting/bert-sample-act"].builder()
    config = peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=3, modules_to_save=["halting_units"])
    with pytest.raises(ValueError, match="task_type=None"):
        check_peft_config(model, config)


def test_a_method_without_modules_to_save_cannot_wrap_the_adaptive_parts():
    config = peft.TrainableTokensConfig(target_modules=["embeddings"], token_indices=[1, 2])
    with pytest.raises(ValueError, match="cannot wrap the adaptive parts"):
        check_peft_config(CASES_BY_NAME["readers/skim_rnn"].builder(), config)


def test_a_lora_config_that_leaves_the_adaptive_parts_out_is_refused():
    model = _timm_exits()
    config = peft.LoraConfig(r=2, target_modules=["qkv"], modules_to_save=["timm_model.head"])
    with pytest.raises(ValueError, match="exit_heads.layer_1"):
        check_peft_config(model, config)
    # Used anyway, the first training forward refuses it: the exit heads would neither train nor be saved.
    wrapped = peft.get_peft_model(model, config).train()
    batch = CASES_BY_NAME["early_exit/timm-vit"].batch_maker(2, 0, 1)
    with pytest.raises(ValueError, match="left every adaptive part frozen"):
        wrapped(**batch, labels=torch.tensor([0, 1]))
    with torch.no_grad():
        wrapped.eval()(**batch)  # inference with a config of one's own stays possible


def test_ia3_on_a_reader_names_what_to_use_instead():
    with pytest.raises(ValueError, match="lora_config"):
        ia3_config(CASES_BY_NAME["readers/jump_lstm"].builder())


@pytest.mark.parametrize("name", ["early_exit/timm-vit", "video/efficientnet-early_stop-attention"])
def test_the_stock_trainer_trains_a_pixel_model_under_lora(name, tmp_path):
    from trainer_testers import cpu_training_args
    from transformers import Trainer

    case = _case(name)
    batch = case.batch_maker(4, 1, 1)
    rows = [{"pixel_values": batch["pixel_values"][i], "labels": i % NUM_LABELS} for i in range(4)]
    wrapped = peft.get_peft_model(case.builder(), lora_config(case.builder(), r=2))
    lora_before = {n: p.detach().clone() for n, p in wrapped.named_parameters() if "lora_B" in n}
    args = cpu_training_args(tmp_path / "run", max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2)
    Trainer(model=wrapped, args=args, train_dataset=rows).train()
    params = dict(wrapped.named_parameters())
    assert any(not torch.equal(params[n], before) for n, before in lora_before.items())


def test_lora_config_adds_the_callers_modules_to_save_and_checks_a_task_type_override():
    model = CASES_BY_NAME["readers/skim_rnn"].builder()
    config = lora_config(model, r=2, modules_to_save=["big_cell"])
    assert {"big_cell", "skim_gate", "small_cell", "classifier"} <= set(config.modules_to_save)
    with pytest.raises(ValueError, match="task_type=None"):
        lora_config(CASES_BY_NAME["halting/bert-sample-act"].builder(), r=2, task_type="SEQ_CLS")
