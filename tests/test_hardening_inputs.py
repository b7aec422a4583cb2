"""Bad inputs get a ValueError/TypeError from adaptive_hf naming the field, never a framework error from inside."""

from __future__ import annotations

import pytest
import torch
from text_testers import VOCAB, padded_batch, tiny_backbone_config
from transformers import BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification

import adaptive_hf
from adaptive_hf import AutoEarlyExitModelForSequenceClassification, AutoHaltingModelForSequenceClassification
from adaptive_hf.moe.upcycle import upcycle

VIT_ARGS = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def early_exit(family="bert"):
    return AutoEarlyExitModelForSequenceClassification.from_config(
        tiny_backbone_config(family), num_labels=3, exit_policy="patience"
    ).eval()


def halting(family="bert"):
    return AutoHaltingModelForSequenceClassification.from_config(tiny_backbone_config(family), num_labels=3).eval()


def moe(task_class=BertForSequenceClassification):
    config = tiny_backbone_config("bert")
    config.num_labels = 3
    dense = task_class(config)
    return upcycle(dense, num_experts=2, moe_layers=[2]).eval()


TEXT_MODELS = {"early_exit": early_exit, "halting": halting, "moe": moe}


def ids_and_mask(batch_size=3, length=6):
    return padded_batch(batch_size, length)


@pytest.fixture(scope="module", params=sorted(TEXT_MODELS))
def text_model(request):
    torch.manual_seed(0)
    return TEXT_MODELS[request.param]()


@pytest.mark.parametrize("bad_id", [VOCAB, VOCAB + 50, -1])
def test_token_ids_out_of_range_even_in_padding(text_model, bad_id):
    ids, mask = ids_and_mask()
    ids[2, -1] = bad_id  # a padded position of the shortest row, or any position
    mask[2, -1] = 0
    with pytest.raises(ValueError, match=rf"`input_ids` must be token ids in \[0, vocab_size={VOCAB}\)"):
        text_model(input_ids=ids, attention_mask=mask)


@pytest.mark.parametrize(
    "ids, error, message",
    [
        (torch.rand(2, 5) * 10, TypeError, "`input_ids` must be an integer tensor"),
        (torch.ones(2, 5, 3, dtype=torch.long), ValueError, r"`input_ids` must have shape \(batch, seq_len\)"),
        (torch.ones(0, 5, dtype=torch.long), ValueError, "Empty batch"),
        (torch.ones(2, 0, dtype=torch.long), ValueError, "Empty sequences"),
    ],
)
def test_malformed_token_ids(text_model, ids, error, message):
    with pytest.raises(error, match=message):
        text_model(input_ids=ids)


def test_sequence_longer_than_the_position_embeddings(text_model):
    ids = torch.full((2, 65), 7)  # max_position_embeddings=64
    with pytest.raises(ValueError, match=r"65 tokens.*at most 64 \(`max_position_embeddings`\)"):
        text_model(input_ids=ids)


def test_roberta_style_positions_cover_fewer_tokens():
    model = early_exit("roberta")  # positions start at padding_idx + 1 = 2
    model(input_ids=torch.full((1, 62), 7))
    with pytest.raises(ValueError, match="at most 62"):
        model(input_ids=torch.full((1, 63), 7))


@pytest.mark.parametrize(
    "labels, error, message",
    [
        (torch.tensor([0, 7, 1]), ValueError, r"class ids in \[0, num_labels=3\).*\[7\]"),
        (torch.tensor([0, -3, 1]), ValueError, r"class ids in \[0, num_labels=3\).*\[-3\]"),
        (torch.tensor([-100, -100, -100]), ValueError, "Every entry of `labels` is -100"),
        (torch.tensor([[0], [1], [2]]), ValueError, r"`labels` must have shape \(batch,\) = \(3,\)"),
        (torch.tensor([0.0, 1.0, 2.0]), TypeError, "`labels` must be an integer tensor"),
    ],
)
def test_bad_class_labels(text_model, labels, error, message):
    ids, mask = ids_and_mask()
    with pytest.raises(error, match=message):
        text_model(input_ids=ids, attention_mask=mask, labels=labels)


def test_some_ignored_labels_still_train(text_model):
    ids, mask = ids_and_mask()
    out = text_model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, -100, 2]))
    assert torch.isfinite(out.loss)


def test_moe_token_level_labels():
    ids, mask = ids_and_mask()
    mlm = moe(BertForMaskedLM)
    with pytest.raises(ValueError, match=r"`labels` must have shape \(batch, seq_len\) = \(3, 6\)"):
        mlm(input_ids=ids, attention_mask=mask, labels=torch.zeros(3, 1, dtype=torch.long))
    bad = torch.full((3, 6), -100)
    bad[0, 0] = VOCAB
    with pytest.raises(ValueError, match=rf"\[0, num_labels={VOCAB}\)"):
        mlm(input_ids=ids, attention_mask=mask, labels=bad)
    with pytest.warns(RuntimeWarning, match="-100"):
        mlm(input_ids=ids, attention_mask=mask, labels=torch.full((3, 6), -100))
    tagger = moe(BertForTokenClassification)
    tags = torch.zeros(3, 6, dtype=torch.long)
    tagger(input_ids=ids, attention_mask=mask, labels=tags)
    tags[1, 2] = 3
    with pytest.raises(ValueError, match=r"\[0, num_labels=3\).*\[3\]"):
        tagger(input_ids=ids, attention_mask=mask, labels=tags)


def timm_vit_models():
    from adaptive_hf import EarlyExitTimmForImageClassification, HaltingTimmConfig, HaltingTimmForImageClassification

    torch.manual_seed(0)
    early = EarlyExitTimmForImageClassification.from_timm("vit_tiny_patch16_224", model_args=VIT_ARGS, num_labels=3)
    halt = HaltingTimmForImageClassification(
        HaltingTimmConfig(architecture="vit_tiny_patch16_224", model_args=VIT_ARGS, num_labels=3)
    )
    return {"early_exit": early.eval(), "halting": halt.eval()}


@pytest.fixture(scope="module")
def vision_models():
    return timm_vit_models()


@pytest.mark.parametrize("technique", ["early_exit", "halting"])
def test_timm_vit_wrong_image_size_is_a_value_error(vision_models, technique):
    model = vision_models[technique]
    model(pixel_values=torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"`pixel_values` must be 32x32 images.*got 40x40.*dynamic_img_size"):
        model(pixel_values=torch.randn(2, 3, 40, 40))


@pytest.mark.parametrize("technique", ["early_exit", "halting"])
def test_half_precision_images_on_float32_weights(vision_models, technique):
    with pytest.raises(TypeError, match=r"`pixel_values` has dtype torch.float16.*weights are torch.float32"):
        vision_models[technique](pixel_values=torch.randn(2, 3, 32, 32, dtype=torch.float16))


def test_dynamic_image_size_vit_accepts_other_sizes():
    from adaptive_hf import EarlyExitTimmForImageClassification

    model = EarlyExitTimmForImageClassification.from_timm(
        "vit_tiny_patch16_224", model_args={**VIT_ARGS, "dynamic_img_size": True}, num_labels=3
    ).eval()
    assert model(pixel_values=torch.randn(1, 3, 40, 40)).logits.shape == (1, 3)


def test_switch_moe_timm_checks_images_too():
    import timm

    torch.manual_seed(0)
    model = adaptive_hf.upcycle(
        timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, **VIT_ARGS),
        num_experts=2,
        moe_layers=[1],
    ).eval()
    with pytest.raises(ValueError, match="32x32"):
        model(pixel_values=torch.randn(1, 3, 48, 48))


def test_video_frames_in_half_precision_on_float32_weights():
    from adaptive_hf.video.modeling import FrameSamplingVideoClassifier

    video = FrameSamplingVideoClassifier.from_timm(
        "test_resnet", model_args={"in_chans": 1}, num_labels=2, num_frames=3, glance_resolution=16, glance_width=4
    ).eval()
    video(pixel_values=torch.randn(1, 3, 1, 32, 32))
    with pytest.raises(TypeError, match=r"`pixel_values` has dtype torch.float16"):
        video(pixel_values=torch.randn(1, 3, 1, 32, 32, dtype=torch.float16))
