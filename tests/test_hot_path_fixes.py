"""Fixes on the hot paths (issue 13): halting defaults and steps, timing on CUDA, timm weight loading by name."""

from __future__ import annotations

import pytest
import torch
from text_testers import NUM_LAYERS, padded_batch, tiny_backbone_config

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


def test_raising_max_ponder_steps_after_construction_is_a_clear_error():
    torch.manual_seed(0)
    model = AutoHaltingModelForSequenceClassification.from_config(
        tiny_backbone_config("bert"), num_labels=3, max_ponder_steps=2
    ).eval()
    ids, mask = padded_batch(3, 8)
    model.config.max_ponder_steps = 1  # lowering uses the first units: fine
    assert model(input_ids=ids, attention_mask=mask).halting_steps.max() <= 1
    for steps in (NUM_LAYERS, None):  # None = every layer, also more than the two units
        model.config.max_ponder_steps = steps
        for training in (False, True):
            model.train(training)
            with pytest.raises(ValueError, match=r"`max_ponder_steps` asks for 4 steps, but this model has 2"):
                model(input_ids=ids, attention_mask=mask, labels=torch.zeros(3, dtype=torch.long))


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
