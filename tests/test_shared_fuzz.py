"""Hypothesis fuzz of every technique, over the shared case registry (issue 14).

Per technique, at least 200 seeded examples over the family, batch size, lengths and padding, the runtime knobs
(each declared knob's candidates, random thresholds, full compute) and the label shapes. Each example either gets a
clear ``ValueError``/``TypeError`` raised by adaptive_hf's own code, or: finite outputs, per-sample compute fields
within range, and a row alone equal to the same row in the batch. Out-of-range ids and labels, and MoE label
shapes, are fuzzed as strategies of their own, so each invalid kind gets its 200 examples.
"""

from __future__ import annotations

import pytest
import torch
from adaptive_case import (
    PACKAGE_DIR,
    AdaptiveCase,
    config_values,
    real_positions,
    rows_of,
)
from adaptive_cases import CASES
from cases_moe_readers_video import DECODERS, VIDEO_FRAMES, video_batch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import adaptive_hf

EXAMPLES = 200
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # seeded: the same examples on every run
    deadline=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: a failure is reported fast
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Which registry cases each technique's fuzz draws from (the cheapest that still cover every kind of backbone).
FUZZ_CASE_NAMES = {
    "early_exit": [c.name for c in CASES if c.technique == "early_exit" and "timm-" not in c.name]
    + ["early_exit/timm-vit", "early_exit/timm-efficientnet"],
    "halting": [
        c.name for c in CASES if c.technique == "halting" and ("-act" in c.name or c.name.startswith("halting/bert"))
    ],
    "switch_moe": [c.name for c in CASES if c.technique == "switch_moe"],
    "readers": [c.name for c in CASES if c.technique == "readers"],
    "video": [
        "video/efficientnet-uniform",
        "video/efficientnet-saliency",
        "video/efficientnet-early_stop",
        "video/resnet-uniform",
        "video/videomae-saliency",
    ],  # fmt: skip
}
CASES_BY_NAME = {case.name: case for case in CASES}
LABEL_KINDS = ("none", "valid", "wrong_length", "column", "float")


# ----------------------------------------------------------------------------------------------- drawing inputs
def draw_batch(data, case: AdaptiveCase, out_of_range_id: bool = False) -> dict[str, torch.Tensor]:
    batch_size = data.draw(st.integers(1, 4), label="batch_size")
    seed = data.draw(st.integers(0, 10_000), label="seed")
    if case.technique == "video":
        frames = data.draw(st.sampled_from([VIDEO_FRAMES] * 5 + [VIDEO_FRAMES + 1, 1]), label="frames")
        return video_batch(batch_size, seed, frames=frames)
    batch = case.batch(batch_size, seed=seed, min_len=1)
    if "attention_mask" in batch:
        # A causal LM needs two tokens for one next-token target (one token gives the stock models' NaN loss).
        shortest = 2 if case.labels_from_ids else 1
        length = data.draw(st.integers(shortest, batch["input_ids"].size(1)), label="length")
        # Decoders are left-padded: keep the last positions, so every row keeps at least one real token.
        cut = slice(-length, None) if case.name.split("/")[1].split("-")[0] in DECODERS else slice(0, length)
        batch = {key: value[:, cut] for key, value in batch.items()}
        if out_of_range_id:
            row = data.draw(st.integers(0, batch_size - 1), label="bad_row")
            column = data.draw(st.integers(0, length - 1), label="bad_column")
            bad = data.draw(st.sampled_from([case.vocab_size, case.vocab_size + 7, -1]), label="bad_id")
            batch["input_ids"] = batch["input_ids"].clone()
            batch["input_ids"][row, column] = bad
    return batch


def draw_knobs(data, model) -> dict:
    """Full compute, or one declared knob at one of its candidates or at a random value in its range."""
    spec = adaptive_hf.technique_of(model)
    knobs = spec.knobs_for(model.config)
    choice = data.draw(st.integers(-1, len(knobs) - 1), label="knob")
    if choice < 0:
        settings_ = spec.full_compute_settings(model.config)
    else:
        knob = knobs[choice]
        candidates = knob.candidate_settings(model.config)
        settings_ = dict(data.draw(st.sampled_from(candidates), label=knob.field))
        value = settings_[knob.field]
        if isinstance(value, float) and data.draw(st.booleans(), label="random_value"):
            settings_[knob.field] = data.draw(st.floats(0.0, 1.0), label="value")
    if spec.name == "switch_moe":
        settings_["capacity_factor"] = data.draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]), label="capacity_factor")
        settings_["capacity_group"] = data.draw(st.sampled_from(["sequence", "batch"]), label="capacity_group")
    return settings_


def draw_labels(data, case, model, batch, kinds, out_of_range=False):
    rows = next(iter(batch.values())).size(0)
    if out_of_range:
        return torch.full((rows,), model.config.num_labels + data.draw(st.integers(0, 3)), dtype=torch.long)
    kind = data.draw(st.sampled_from(kinds), label="labels")
    if kind == "none":
        return None
    if case.labels_from_ids:
        return batch["input_ids"].clone()
    labels = torch.tensor(data.draw(st.lists(st.integers(0, 2), min_size=rows, max_size=rows), label="classes"))
    if kind == "wrong_length":
        return torch.cat([labels, labels[:1]])
    if kind == "column":
        return labels[:, None]
    if kind == "float":
        return labels.float()
    return labels


# ------------------------------------------------------------------------------------------------ the promises
def assert_in_range(case: AdaptiveCase, model, batch, out) -> None:
    """The per-sample compute fields lie where the technique says they can."""
    config = model.config
    lengths = batch["attention_mask"].sum(1) if "attention_mask" in batch else None
    if case.technique == "early_exit":
        assert set(out.exit_layer.tolist()) <= set(config.exit_layers)
    elif case.technique == "halting":
        steps = out.halting_steps
        layers = len(model.halting_units)
        if steps.dim() == 2 and lengths is not None:
            real = batch["attention_mask"].bool()
            assert bool((steps[~real] == 0).all()) and bool((steps[real] >= 1).all()) and bool((steps <= layers).all())
        else:
            assert bool(((steps >= 1) & (steps <= layers)).all())
        assert bool(torch.isfinite(out.ponder_cost).all()) and bool((out.ponder_cost >= 0).all())
    elif case.technique == "switch_moe":
        assert bool(((out.dropped_fraction >= 0) & (out.dropped_fraction <= 1)).all())
        assert bool((out.expert_counts >= 0).all())
        if lengths is not None:
            real = int(lengths.sum()) * config.num_experts_per_tok
            assert bool((out.expert_counts.sum(-1) <= real).all())
    elif case.technique == "readers":
        assert bool(((out.tokens_read >= 0) & (out.tokens_read <= lengths)).all())
        skipped = out.tokens_skimmed if out.tokens_skimmed is not None else out.tokens_jumped
        assert bool((out.tokens_read + skipped <= lengths).all())
        if config.model_type == "skim_rnn":  # Skim-RNN reads or skims every token
            assert torch.equal(out.tokens_read + out.tokens_skimmed, lengths)
    elif case.technique == "video":
        assert bool(((out.frames_used >= 1) & (out.frames_used <= config.num_frames)).all())
        indices = out.frame_indices  # -1 marks the slots of frames a video never used (it stopped first)
        assert bool(((indices >= -1) & (indices < config.num_frames)).all())
        assert torch.equal((indices >= 0).sum(1), out.frames_used)
        assert bool((out.flops > 0).all())


def rows_couple(model) -> bool:
    """Whether the knobs make one row's result depend on the others (expert capacity shared by the batch)."""
    config = model.config
    return getattr(config, "capacity_group", None) == "batch" and float(getattr(config, "capacity_factor", 0)) > 0


def run_example(case: AdaptiveCase, model, batch, labels, row: int) -> None:
    try:
        with torch.no_grad():
            out = model(**batch, labels=labels) if labels is not None else model(**batch)
    except (ValueError, TypeError) as error:
        frame = error.__traceback__
        while frame.tb_next is not None:
            frame = frame.tb_next
        raised_in = frame.tb_frame.f_code.co_filename
        assert raised_in.startswith(PACKAGE_DIR), f"{type(error).__name__} raised in {raised_in}: {error}"
        return
    assert bool(torch.isfinite(real_positions(out.logits, batch)).all())
    if labels is not None:
        assert out.loss is not None and bool(torch.isfinite(out.loss))
    assert_in_range(case, model, batch, out)
    if rows_couple(model):
        return
    # MoE capacity is counted over the padded sequence, and left-padded decoders cannot be cut on the right: keep the
    # padding there.
    trim = case.technique != "switch_moe" and case.modes[0].trim_padding
    with torch.no_grad():
        single = model(**rows_of(batch, row, trim))
    torch.testing.assert_close(single.logits[0], out.logits[row], rtol=1e-4, atol=1e-5)
    for name in case.sample_fields:
        if getattr(out, name) is not None:
            torch.testing.assert_close(getattr(single, name)[0], getattr(out, name)[row], rtol=1e-4, atol=1e-5)
    for name in case.token_fields:
        length = getattr(single, name).size(1)
        assert torch.equal(getattr(single, name)[0], getattr(out, name)[row, :length]), name


# --------------------------------------------------------------------------------------------------- the fuzz
def fuzz_params():
    params = []
    for technique in FUZZ_CASE_NAMES:
        strategies = ["main", "labels_out_of_range"]
        if technique != "video":
            strategies.append("ids_out_of_range")
        if technique == "switch_moe":
            strategies.append("label_shapes")
        params += [pytest.param(technique, strategy, id=f"{technique}-{strategy}") for strategy in strategies]
    return params


@pytest.mark.parametrize(("technique", "strategy"), fuzz_params())
@FUZZ_SETTINGS
@given(data=st.data())
def test_fuzz(technique, strategy, data):
    case = CASES_BY_NAME[data.draw(st.sampled_from(FUZZ_CASE_NAMES[technique]), label="case")]
    model = case.shared_model()
    batch = draw_batch(data, case, out_of_range_id=strategy == "ids_out_of_range")
    knobs = draw_knobs(data, model)
    # MoE label shapes other than (batch,) get their own strategy, so the main one keeps its valid examples.
    kinds = ("none", "valid") if technique == "switch_moe" and strategy == "main" else LABEL_KINDS
    labels = draw_labels(data, case, model, batch, kinds, out_of_range=strategy == "labels_out_of_range")
    row = data.draw(st.integers(0, next(iter(batch.values())).size(0) - 1), label="row")
    with config_values(model, knobs):
        run_example(case, model, batch, labels, row)
