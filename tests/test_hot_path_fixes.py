"""Fixes on the hot paths (issue 13): halting defaults and steps, timing on CUDA, timm weight loading by name."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from text_testers import NUM_LAYERS, padded_batch, tiny_backbone_config
from torch.overrides import TorchFunctionMode

from adaptive_hf import AutoHaltingModelForSequenceClassification, HaltingBertConfig

VIT_ARGS = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": NUM_LAYERS, "num_heads": 2}


# ------------------------------------------------------------------------------------------------------ halting
@pytest.mark.parametrize(("method", "expected"), [("act", 0.99), ("pondernet", 0.5)])
def test_halting_threshold_defaults_to_the_methods_own(method, expected):
    from adaptive_hf import HaltingTimmConfig

    text = HaltingBertConfig(**tiny_backbone_config("bert").to_dict(), halting=method)
    vision = HaltingTimmConfig(architecture="vit_tiny_patch16_224", model_args=VIT_ARGS, halting=method)
    for config in (text, vision):
        assert config.halting_threshold is None
        assert config.effective_threshold() == expected
    assert (
        HaltingBertConfig(**tiny_backbone_config("bert").to_dict(), halting_threshold=0.7).effective_threshold() == 0.7
    )


def test_changing_max_ponder_steps_after_construction_is_a_clear_error():
    torch.manual_seed(0)
    model = AutoHaltingModelForSequenceClassification.from_config(
        tiny_backbone_config("bert"), num_labels=3, max_ponder_steps=2
    ).eval()
    # The halting units are built for max_ponder_steps (and keyed by layer), so the field is structure.
    for steps in (1, NUM_LAYERS, None):
        with pytest.raises(ValueError, match=r"`max_ponder_steps` is a structural field.*Rebuild the model"):
            model.config.max_ponder_steps = steps
    ids, mask = padded_batch(3, 8)
    assert model(input_ids=ids, attention_mask=mask).halting_steps.max() <= 2


# ------------------------------------------------------------------------------------------------------- timing
class _FakeCuda:
    """Records CUDA synchronizations and the clock reads around them (no GPU needed)."""

    def __init__(self, monkeypatch, initialized: bool):
        import time

        import adaptive_hf.core.timing as timing

        self.events: list[str] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: initialized)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialized)
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: self.events.append(f"sync {device}"))
        real_clock = time.perf_counter

        def clock():
            self.events.append("clock")
            return real_clock()

        monkeypatch.setattr(timing.time, "perf_counter", clock)


@pytest.mark.parametrize("device", [None, "cuda:0"])
def test_timing_waits_for_cuda_before_every_clock_read(monkeypatch, device):
    from adaptive_hf.core.timing import time_interleaved

    fake = _FakeCuda(monkeypatch, initialized=True)
    calls = []
    timing = time_interleaved(
        lambda: calls.append("A"),
        lambda: calls.append("B"),
        repeats=2,
        warmup=1,
        run_plain=lambda: calls.append("C"),
        device=device,
    )
    assert calls == ["A", "B", "C"] * 3
    assert len(timing.adaptive_times) == len(timing.full_times) == len(timing.plain_times) == 2
    clocks = [i for i, event in enumerate(fake.events) if event == "clock"]
    assert len(clocks) == 2 * 3 * 3  # a start and an end read per run
    expected = f"sync {torch.device(device) if device else None}"
    assert all(fake.events[i - 1] == expected for i in clocks), fake.events[:6]


def test_timing_on_cpu_never_synchronizes(monkeypatch):
    from adaptive_hf.core.timing import time_interleaved

    fake = _FakeCuda(monkeypatch, initialized=False)
    time_interleaved(lambda: None, lambda: None, repeats=1, warmup=0)
    time_interleaved(lambda: None, lambda: None, repeats=1, warmup=0, device="cpu")
    assert fake.events == ["clock"] * 8


def test_timing_summary_reports_the_plain_backbone():
    from adaptive_hf.core.timing import InterleavedTiming

    timing = InterleavedTiming([1.0, 1.0, 1.0], [2.0, 2.0, 2.0], None, 1, plain_times=[1.5, 1.5, 1.5])
    summary = timing.summary(theoretical_speedup=2.5)
    assert summary["realized_speedup"] == 2.0
    assert summary["realized_speedup_vs_plain"] == 1.5
    assert summary["full_over_plain"] == pytest.approx(4 / 3)
    assert summary["efficiency_vs_plain"] == pytest.approx(0.6)
    assert "plain_seconds" not in InterleavedTiming([1.0], [2.0], None, 1).summary(2.0)


# ------------------------------------------------------------------------------------------- timm weight loading
def test_timm_weights_are_matched_by_name_never_by_position():
    import timm

    from adaptive_hf.core.vision_backbones import load_timm_state_dict

    torch.manual_seed(0)
    source = timm.create_model("test_resnet", num_classes=3)
    norm = source.conv1[1]
    with torch.no_grad():  # running statistics that differ, so a swap of the two is visible
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
    weights = {f"param_{i}": tensor for i, tensor in enumerate(source.state_dict().values())}
    names = list(source.state_dict())
    first, second = names.index("conv1.1.running_mean"), names.index("conv1.1.running_var")
    # Two same-shape tensors in each other's place, under names that say nothing: nothing may load.
    weights[f"param_{first}"], weights[f"param_{second}"] = weights[f"param_{second}"], weights[f"param_{first}"]
    target = timm.create_model("test_resnet", num_classes=3)
    before = {name: tensor.clone() for name, tensor in target.state_dict().items()}
    with pytest.raises(ValueError, match=r"'param_0'.*conv1\.0\.weight"):
        load_timm_state_dict(target, weights, "test_resnet", 3)
    assert all(torch.equal(before[name], tensor) for name, tensor in target.state_dict().items())
    # Right names in another order load each tensor where its name says.
    shuffled = dict(reversed(list(source.state_dict().items())))
    assert load_timm_state_dict(target, shuffled, "test_resnet", 3) == []
    assert torch.equal(target.conv1[1].running_mean, norm.running_mean)
    assert torch.equal(target.conv1[1].running_var, norm.running_var)


def test_efficientnet_pytorch_names_map_by_name():
    import timm

    from adaptive_hf.core.vision_backbones import match_timm_names

    with torch.device("meta"):
        model = timm.create_model("tf_efficientnet_lite0")
    state = model.state_dict()
    # Block 1 expands (expand, depthwise, project: bn0/bn1/bn2 are timm's bn1/bn2/bn3); block 0 does not.
    pairs = {
        "_conv_stem.weight": "conv_stem.weight",
        "_bn0.running_var": "bn1.running_var",
        "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
        "_blocks.0._bn2.bias": "blocks.0.0.bn2.bias",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        "_blocks.1._bn2.bias": "blocks.1.0.bn3.bias",
        "_blocks.2._project_conv.weight": "blocks.1.1.conv_pwl.weight",
        "_blocks.2._expand_conv.weight": "blocks.1.1.conv_pw.weight",
        "_bn1.weight": "bn2.weight",
        "_fc.bias": "classifier.bias",
    }
    matched = match_timm_names(model, {ours: state[timm_name] for ours, timm_name in pairs.items()}, "lite0")
    assert set(matched) == set(pairs.values())
    with pytest.raises(ValueError, match=r"_blocks\.0\._no_such_part\.weight"):
        match_timm_names(model, {"_blocks.0._no_such_part.weight": state["conv_stem.weight"]}, "lite0")


# -------------------------------------------------------------------------------------------- early-exit hot path
class _TensorOps(TorchFunctionMode):
    """Counts the torch functions and tensor methods called inside it, by name."""

    def __init__(self):
        super().__init__()
        self.names: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names[getattr(func, "__name__", str(func))] += 1
        return func(*args, **(kwargs or {}))


# Calls that make the host wait for the device (on CUDA; nonzero sizes its output from the data).
HOST_SYNCS = ("__bool__", "__int__", "__float__", "__index__", "item", "tolist", "nonzero")


def test_one_host_sync_per_exit_head():
    from early_exit_helpers import tiny_model

    model = tiny_model("bert", num_labels=2)
    ids, mask = padded_batch(8, 10, seed=2)
    model.config.exit_policy, model.config.exit_threshold = "none", None
    with torch.no_grad(), _TensorOps() as full:
        model(input_ids=ids, attention_mask=mask)
    model.config.exit_policy, model.config.exit_threshold = "confidence", 0.6
    with torch.no_grad(), _TensorOps() as adaptive:
        out = model(input_ids=ids, attention_mask=mask)
    exits = out.exit_layer.tolist()
    intermediate = model.config.exit_layers[:-1]
    assert len(set(exits)) >= 3, exits  # rows leave at several heads, so compaction paths run
    heads_run = sum(1 for layer in intermediate if layer <= max(exits))
    syncs = sum(adaptive.names[name] - full.names[name] for name in HOST_SYNCS)
    assert syncs == heads_run, adaptive.names - full.names


def test_full_compute_runs_only_the_final_head_and_copies_nothing(monkeypatch):
    from early_exit_helpers import tiny_model

    model = tiny_model("bert", num_labels=3)
    returned = {}
    for k, head in enumerate(model.exit_heads):
        original = head.inference

        def counted(pooled, k=k, original=original):
            returned[k] = original(pooled)
            return returned[k]

        monkeypatch.setattr(head, "inference", counted)
    ids, mask = padded_batch(5, 9)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    assert list(returned) == [len(model.exit_heads) - 1]
    assert out.logits.data_ptr() == returned[len(model.exit_heads) - 1].data_ptr()


def test_vision_full_compute_runs_exactly_the_plain_timm_ops():
    from adaptive_hf.early_exit.vision_modeling import EarlyExitTimmForImageClassification

    torch.manual_seed(0)
    model = EarlyExitTimmForImageClassification.from_timm("test_resnet", num_labels=3, model_args={"in_chans": 1})
    model.eval()
    images = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        with _TensorOps() as plain:
            expected = model.timm_model(images)
        with _TensorOps() as full:
            out = model(images)
    torch.testing.assert_close(out.logits, expected)
    metadata = {"size", "dim", "__get__", "is_contiguous", "shape", "device", "dtype"}
    extra = {name: count for name, count in (full.names - plain.names).items() if name not in metadata}
    # The exit_layer output, and the non-finite row report on the final logits (issue 14: one isfinite over
    # (batch, num_labels) and one host read); no copies of logits or features.
    report = {"isfinite": 1, "all": 1, "any": 1, "__invert__": 1, "__bool__": 1, "detach": 1}
    assert extra == {"full": 1, **report}, extra
    assert not plain.names - full.names


def test_speedup_measurements_report_the_plain_backbone():
    from early_exit_helpers import tiny_model
    from transformers import BertForSequenceClassification

    from adaptive_hf.early_exit.benchmarking import measure_speedup, plain_counterpart
    from adaptive_hf.early_exit.vision_calibration import measure_image_speedup
    from adaptive_hf.early_exit.vision_modeling import EarlyExitTimmForImageClassification

    model = tiny_model("bert")
    plain = plain_counterpart(model)
    assert type(plain) is BertForSequenceClassification and not plain.training
    for name, tensor in model.bert.state_dict().items():
        assert torch.equal(plain.bert.state_dict()[name], tensor), name
    ids, mask = padded_batch(4, 8)
    result = measure_speedup(model, [{"input_ids": ids, "attention_mask": mask}], repeats=1, plain_model=plain)
    assert result["plain_seconds"] > 0 and result["realized_speedup_vs_plain"] > 0 and result["full_over_plain"] > 0
    vision = EarlyExitTimmForImageClassification.from_timm("test_resnet", num_labels=3, model_args={"in_chans": 1})
    images = [torch.randn(2, 1, 32, 32)]
    result = measure_image_speedup(vision.eval(), images, repeats=1, warmup=0, plain_model=vision.timm_model)
    assert result["plain_seconds"] > 0 and "efficiency_vs_plain" in result


@pytest.mark.parametrize("policy", ["confidence", "entropy", "margin", "patience"])
def test_count_exits_decides_exactly_as_decide_exit_one_row_at_a_time(policy):
    from adaptive_hf.early_exit.policies import count_exits, decide_exit, initial_state

    logits = torch.randn(64, 3, generator=torch.Generator().manual_seed(0)) * 3
    scores = logits.softmax(-1).max(-1).values
    # Thresholds on the float32 scores themselves and one float32 step either side: the boundary cases.
    thresholds = [None, 0.9] + [float(v) for v in scores[:8]]
    thresholds += [float(torch.nextafter(s, torch.tensor(2.0))) for s in scores[:8]]
    thresholds += [float(torch.nextafter(s, torch.tensor(0.0))) for s in scores[:8]]
    if policy == "patience":
        thresholds = [None]
    for threshold in thresholds:
        batch_mask, _ = decide_exit(policy, logits, threshold, 1, initial_state(policy, 64, logits.device))
        count, mask, _ = count_exits(policy, logits, threshold, 1, initial_state(policy, 64, logits.device))
        assert count == int(batch_mask.sum()) and torch.equal(mask, batch_mask)
        for row in range(64):
            state = initial_state(policy, 1, logits.device)
            count, _, _ = count_exits(policy, logits[row : row + 1], threshold, 1, state)
            assert count == int(batch_mask[row]), (threshold, row)
