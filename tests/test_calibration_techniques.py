"""Generic calibration: the statistical guarantee, label-free data, every technique's knob, costs, bad input."""

from __future__ import annotations

import warnings

import pytest
import torch
from early_exit_helpers import PAD, tiny_model, token_dataset

import adaptive_hf
from adaptive_hf.calibration import (
    binomial_upper_bound,
    net_drop_p_value,
    net_drop_rows_needed,
    net_drop_upper_bound,
    rows_needed,
    select_setting,
)
from adaptive_hf.early_exit.calibration import ExitLogits
from adaptive_hf.early_exit.replay import replay_candidates
from adaptive_hf.early_exit.spec import CONFIDENCE_THRESHOLDS

DRAWS = 300
DELTA = 0.1
# Three standard deviations of the violation rate of 300 draws at delta = 0.1.
MARGIN = 3 * (DELTA * (1 - DELTA) / DRAWS) ** 0.5


# ----------------------------------------------------------------------------------------- the guarantee
def population_outcomes(size: int = 20_000, seed: int = 0):
    """Synthetic exit logits of a known population: three heads of rising quality, replayed for one chain."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (size,), generator=generator)
    sign = 2.0 * labels - 1.0
    heads = []
    for signal in (0.6, 1.2, 2.5):  # each later head separates the classes better
        margin = signal * sign + torch.randn(size, generator=generator)
        heads.append(torch.stack([torch.zeros(size), margin], dim=1))
    costs = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64).expand(size, -1).clone()
    table = ExitLogits(
        torch.stack(heads), labels, torch.ones(size, dtype=torch.long), [1, 2, 3], costs, torch.full((size,), 3.0)
    )
    chain = [{"exit_policy": "confidence", "exit_threshold": t} for t in CONFIDENCE_THRESHOLDS]
    return replay_candidates(None, table, [chain])


def population_risks(outcomes, risk: str) -> torch.Tensor:
    differs = outcomes.predictions[0] != outcomes.full_predictions
    if risk == "disagreement":
        return differs.double().mean(1)
    # The accuracy drop against full compute, net: rows the setting fixes offset rows it breaks.
    full_accuracy = (outcomes.full_predictions == outcomes.labels).double().mean()
    return full_accuracy - (outcomes.predictions[0] == outcomes.labels).double().mean(1)


def violation_rates(rule: str, criterion: str, epsilon: float, calibration_rows: int = 400):
    """Share of seeded draws whose chosen setting's population risk exceeds epsilon, and the mean speedup."""
    population = population_outcomes()
    risk = "disagreement" if criterion == "max_disagreement" else "accuracy_drop"
    true_risk = population_risks(population, risk)
    chain = population.chains[0]
    generator = torch.Generator().manual_seed(1)
    violations, speedups = 0, []
    for _ in range(DRAWS):
        rows = torch.randint(0, population.num_samples, (calibration_rows,), generator=generator)  # i.i.d. draws
        sample = population.subset(rows)
        if criterion == "max_disagreement":
            sample = sample.without_labels()
        report = select_setting(sample, delta=DELTA, rule=rule, **{criterion: epsilon})
        if report.chosen["setting"]:
            position = chain.index(report.chosen["setting"])
            violations += bool(true_risk[position] > epsilon)
            speedups.append(report.chosen["theoretical_speedup"])
        else:
            speedups.append(1.0)
    return violations / DRAWS, sum(speedups) / DRAWS


@pytest.mark.parametrize("criterion", ["max_accuracy_drop", "max_disagreement"])
def test_guarantee_holds_over_seeded_draws_and_the_point_estimate_does_not(criterion):
    guaranteed, guaranteed_speedup = violation_rates("learn_then_test", criterion, 0.05)
    assert guaranteed <= DELTA + MARGIN
    assert guaranteed_speedup > 1.05  # it does save compute, not only keep full compute
    # The same draws with the old rule: the winner's curse breaks the bound far more often than delta.
    point, point_speedup = violation_rates("point_estimate_no_guarantee", criterion, 0.05)
    assert point > DELTA + MARGIN
    assert point_speedup >= guaranteed_speedup


def test_bounds_and_rows_needed():
    assert binomial_upper_bound(0, 100, 0.1) == pytest.approx(1 - 0.1 ** (1 / 100))
    assert binomial_upper_bound(100, 100, 0.1) == 1.0
    assert binomial_upper_bound([0, 5], 100, 0.1)[1] > binomial_upper_bound(0, 100, 0.1)
    assert rows_needed(0.005, 0.1) == 460 and (1 - 0.005) ** 460 <= 0.1 < (1 - 0.005) ** 459
    assert rows_needed(0.0, 0.1) is None


@pytest.mark.parametrize(("fixed_rate", "rows"), [(0.0, 400), (0.03, 400), (0.15, 300)])
def test_net_drop_test_rejects_a_true_null_at_most_delta_of_the_time(fixed_rate, rows):
    # Paired counts at the null boundary (drop exactly epsilon), the hardest case for the test's level.
    epsilon = 0.02
    generator = torch.Generator().manual_seed(7)
    probabilities = torch.tensor([fixed_rate + epsilon, fixed_rate, 1 - 2 * fixed_rate - epsilon])
    counts = torch.multinomial(probabilities, rows * DRAWS, replacement=True, generator=generator).view(DRAWS, rows)
    broken, fixed = (counts == 0).sum(1).tolist(), (counts == 1).sum(1).tolist()
    p_values = net_drop_p_value(broken, fixed, rows, epsilon, DELTA)
    assert sum(p <= DELTA for p in p_values) / DRAWS <= DELTA + MARGIN
    # ... and the bound sits where the test starts certifying every budget above it (on its scan grid).
    for b, c in list(zip(broken, fixed, strict=True))[:6]:
        bound = net_drop_upper_bound(b, c, rows, DELTA)
        assert bound >= (b - c) / rows and net_drop_p_value(b, c, rows, bound, DELTA) <= DELTA
        below = [bound - k * 2.5e-4 for k in range(1, 41) if bound - k * 2.5e-4 >= max(0.0, (b - c) / rows)]
        assert not below or any(net_drop_p_value(b, c, rows, budget, DELTA) > DELTA for budget in below)


def test_net_drop_counts_fixed_rows_and_matches_the_count_test_without_them():
    # With no fixed row the paired test is the one-sided count test plus the 1% of delta spent on the nuisance.
    one_sided = binomial_upper_bound(3, 1000, 0.1)
    assert net_drop_upper_bound(3, 0, 1000, 0.1) == pytest.approx(one_sided, abs=5e-4)  # scan grid: 1 / (4n)
    # Fixed rows pay for broken ones: 8 broken and 8 fixed certify what 8 broken alone cannot.
    assert net_drop_p_value(8, 8, 1000, 0.01, 0.1) <= 0.1 < net_drop_p_value(8, 0, 1000, 0.01, 0.1)
    assert net_drop_upper_bound(8, 8, 1000, 0.1) < net_drop_upper_bound(8, 0, 1000, 0.1)
    assert net_drop_rows_needed(0.005, 0.1) in range(rows_needed(0.005, 0.1), rows_needed(0.005, 0.1) + 5)
    assert net_drop_rows_needed(0.0, 0.1) is None


def test_too_few_rows_keep_full_compute_and_say_how_many_are_needed():
    model = tiny_model("bert", exit_policy="confidence", exit_threshold=0.5)
    with pytest.warns(UserWarning, match=r"at least 368 rows"):
        report = adaptive_hf.calibrate(
            model, token_dataset(40), max_disagreement=0.01, data_collator=PAD, show_progress=False
        )
    assert report.chosen["setting"] == {} and model.config.exit_policy == "none"
    assert report.rows_needed == rows_needed(0.01, DELTA / 4) == 368
    assert "368" in report.statement() and "full compute" in report.statement()


# -------------------------------------------------------------------------------------------- label-free
def test_label_free_calibration_on_data_without_labels():
    model = tiny_model("bert")
    data = token_dataset(200, seed=3).remove_columns("label")
    report = adaptive_hf.calibrate(model, data, max_disagreement=0.2, data_collator=PAD, show_progress=False)
    assert report.risk == "disagreement" and report.full_depth_accuracy is None
    assert report.chosen["setting"], report.note
    assert report.chosen["upper_bound"] <= 0.2 and report.chosen["accuracy"] is None
    assert "of predictions different from full compute" in model.config.calibration["statement"]
    with pytest.raises(ValueError, match="label"):
        adaptive_hf.calibrate(model, data, max_accuracy_drop=0.2, data_collator=PAD, show_progress=False)


# ------------------------------------------------------------------------------------- every technique
def _halting():
    from test_halting import build

    return build("bert", halting="act", halting_granularity="sample")


def _reader(kind):
    from test_readers import build

    return lambda: build(kind)


def _video(sampler):
    from test_video_models import build

    return lambda: build("resnet", sampler=sampler)


def _text_data(rows: int = 48, max_len: int = 10, vocab: int = 60) -> dict:
    generator = torch.Generator().manual_seed(5)
    lengths = torch.randint(2, max_len + 1, (rows,), generator=generator)
    mask = (torch.arange(max_len)[None, :] < lengths[:, None]).long()
    ids = torch.randint(1, vocab, (rows, max_len), generator=generator) * mask
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.arange(rows) % 3}


def _video_data(rows: int = 12) -> dict:
    from test_video_models import videos

    return {"pixel_values": videos(rows, seed=2), "labels": torch.arange(rows) % 3}


def _image_data(rows: int = 24) -> dict:
    from test_early_exit_vision import images

    return {"pixel_values": images(rows, seed=4), "labels": torch.arange(rows) % 3}


def _vision_early_exit():
    from test_early_exit_vision import build_timm

    return build_timm("efficientnet")


TECHNIQUE_CASES = {
    "early_exit_vision": (_vision_early_exit, _image_data, "exit_threshold", ["confidence"]),
    "halting": (_halting, _text_data, "halting_threshold", None),
    "skim_rnn": (_reader("skim_rnn"), _text_data, "skim_threshold", None),
    "jump_lstm": (_reader("jump_lstm"), _text_data, "stop_threshold", None),
    "video_early_stop": (_video("early_stop"), _video_data, "exit_threshold", ["early_stop"]),
    "video_saliency": (_video("saliency"), _video_data, "frame_budget", ["saliency"]),
}


@pytest.mark.parametrize("case", sorted(TECHNIQUE_CASES))
def test_each_technique_calibrates_stores_and_survives_save_and_load(case, tmp_path):
    build, data, knob, policies = TECHNIQUE_CASES[case]
    model = build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny random models on few rows: the budget is wide on purpose
        report = adaptive_hf.calibrate(
            model, data(), max_disagreement=0.9, delta=0.2, policies=policies, batch_size=8, show_progress=False
        )
    spec = adaptive_hf.technique_of(model)
    assert report.technique == spec.name and report.num_samples == len(data()["labels"])
    chosen = report.chosen["setting"]
    assert chosen and knob in chosen, report.to_markdown()
    for name, value in chosen.items():
        assert getattr(model.config, name) == value
    assert report.upper_bound <= 0.9 and report.chosen["theoretical_speedup"] > 1.0
    # The setting the report describes is what the model does now, in eval mode, on the same rows.
    batch = {k: v for k, v in data().items() if k != "labels"}
    with torch.inference_mode():
        out = model.eval()(**batch)
    spent, full = adaptive_hf.compute_cost(model, out, batch)
    assert spent.shape == full.shape == (len(data()["labels"]),) and spent.dtype == torch.float64
    assert float(full.sum() / spent.sum()) == pytest.approx(report.chosen["theoretical_speedup"])
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path)
    assert loaded.config.calibration == model.config.calibration
    assert all(getattr(loaded.config, name) == value for name, value in chosen.items())
    assert report.statement() in (tmp_path / "README.md").read_text()


def test_batches_with_labels_and_a_dict_of_tensors_give_the_same_report():
    data = _text_data(24)
    batches = [{k: v[i : i + 8] for k, v in data.items()} for i in range(0, 24, 8)]  # the readers recipe's form
    reports = []
    for form in (data, batches):
        model = _reader("jump_lstm")()
        reports.append(adaptive_hf.calibrate(model, form, max_disagreement=0.5, show_progress=False).to_dict())
    assert reports[0] == reports[1]


def test_full_compute_cost_is_spent_equals_full_for_every_technique():
    for build, data, _, _ in TECHNIQUE_CASES.values():
        model = build()
        batch = {k: v[:4] for k, v in data().items() if k != "labels"}
        with adaptive_hf.full_compute(model), torch.inference_mode():
            out = model.eval()(**batch)
            spent, full = adaptive_hf.compute_cost(model, out, batch)
        torch.testing.assert_close(spent, full)
        assert (full > 0).all()


def test_model_without_runtime_knob_is_rejected():
    from text_testers import tiny_backbone_config
    from transformers import AutoModelForSequenceClassification

    dense = AutoModelForSequenceClassification.from_config(tiny_backbone_config("bert"))
    model = adaptive_hf.upcycle(dense, num_experts=2, moe_layers=[1], capacity_factor=0.0, seed=0)
    batch = {k: v for k, v in _text_data(4, vocab=40).items() if k != "labels"}
    spent, full = adaptive_hf.compute_cost(model, model.eval()(**batch), batch)
    torch.testing.assert_close(spent, full)  # a switch layer skips nothing
    with pytest.raises(ValueError, match="no runtime knob"):
        adaptive_hf.calibrate(model, _text_data(8, vocab=40), max_accuracy_drop=0.05, show_progress=False)


def test_empty_data_and_missing_labels_name_the_problem():
    model = _halting()
    before = model.config.to_dict()
    empty = {k: v[:0] for k, v in _text_data().items()}
    with pytest.raises(ValueError, match="empty"):
        adaptive_hf.calibrate(model, empty, max_disagreement=0.1, show_progress=False)
    unlabelled = {k: v for k, v in _text_data().items() if k != "labels"}
    with pytest.raises(ValueError, match="no label column.*max_disagreement"):
        adaptive_hf.calibrate(model, unlabelled, max_accuracy_drop=0.1, show_progress=False)
    assert model.config.to_dict() == before  # nothing applied on error


# ------------------------------------------------------------------------------------- batches of a dataset
def test_calibration_batches_a_dataset_with_the_shared_iterate_batches():
    import datasets

    from adaptive_hf.calibration.collect import INPUT_COLUMNS, prepare_batches
    from adaptive_hf.core.batching import iterate_batches

    pixels = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    images = datasets.Dataset.from_dict({"pixel_values": pixels.tolist(), "label": [0, 1, 2, 0, 1]})
    batches, labels = prepare_batches(images, batch_size=2)
    assert [tuple(b["pixel_values"].shape) for b in batches] == [(2, 3, 4, 4), (2, 3, 4, 4), (1, 3, 4, 4)]
    torch.testing.assert_close(torch.cat([b["pixel_values"] for b in batches]), pixels)
    assert labels.tolist() == [0, 1, 2, 0, 1]
    shared = list(iterate_batches(images, 2, input_columns=INPUT_COLUMNS))
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(batches, shared, strict=True))
    with pytest.raises(ValueError, match="`input_ids`"):
        list(iterate_batches(images, 2))  # text batches need input_ids; images are asked for explicitly
    ragged = datasets.Dataset.from_dict({"input_ids": [[5, 6, 7], [5, 6]], "label": [0, 1]})
    with pytest.raises(ValueError, match="cannot be stacked.*tokenizer="):
        prepare_batches(ragged)
    masks_only = datasets.Dataset.from_dict({"attention_mask": [[1, 1]], "label": [0]})
    with pytest.raises(ValueError, match="no `input_ids` or `pixel_values` column"):
        prepare_batches(masks_only)
