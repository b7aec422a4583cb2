"""The packaged evaluate metrics load offline by path and compute the right numbers."""

from __future__ import annotations

import os

import evaluate
import pytest

from adaptive_hf.metrics import METRIC_NAMES, load_metric, metric_path


def test_loads_offline_by_path():
    # conftest switches the Hub off before evaluate is imported; a Hub lookup would raise instead of loading.
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE
    assert [type(evaluate.load(metric_path(name))).__name__ for name in METRIC_NAMES] == [
        "Accuracy",
        "AdaptiveEfficiency",
    ]
    with pytest.raises(Exception):  # noqa: B017  (offline: the Hub script of a name cannot be fetched)
        evaluate.load("accuracy_not_packaged_here")


def test_metric_files_ship_with_the_package():
    for name in METRIC_NAMES:
        assert os.path.isfile(os.path.join(metric_path(name), f"{name}.py"))
    with pytest.raises(ValueError, match="accuracy.*adaptive_efficiency"):
        metric_path("bleu")


def test_accuracy_and_macro_f1_by_hand():
    metric = load_metric("accuracy")
    predictions = [0, 0, 1, 1, 2, 2, 2, 0]
    references = [0, 1, 1, 1, 2, 0, 2, 2]
    result = metric.compute(predictions=predictions, references=references)
    # Class 0: tp 1, predicted 3, actual 2 -> F1 2/5. Class 1: tp 2, 2, 3 -> 4/5. Class 2: tp 2, 3, 3 -> 4/6.
    assert result["accuracy"] == pytest.approx(5 / 8)
    assert result["f1"] == pytest.approx((2 / 5 + 4 / 5 + 4 / 6) / 3)
    weighted = metric.compute(predictions=predictions, references=references, average="weighted")
    assert weighted["f1"] == pytest.approx((2 * 2 / 5 + 3 * 4 / 5 + 3 * 4 / 6) / 8)
    assert metric.compute(predictions=predictions, references=references, average="micro")["f1"] == 5 / 8


def test_accuracy_accumulates_batches():
    metric = evaluate.load(metric_path("accuracy"))
    metric.add_batch(predictions=[1, 1], references=[1, 0])
    metric.add_batch(predictions=[0], references=[0])
    assert metric.compute() == {"accuracy": pytest.approx(2 / 3), "f1": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="average"):
        metric.compute(predictions=[1], references=[1], average="binary")


def test_adaptive_efficiency_without_costs():
    metric = load_metric("adaptive_efficiency")
    result = metric.compute(used=[2, 4, 6, 6], full=6)
    assert result["average_depth"] == 4.5
    assert result["relative_depth"] == 0.75
    assert result["theoretical_speedup"] == pytest.approx(24 / 18)
    assert result["depth_histogram"] == {"2": 0.25, "4": 0.25, "6": 0.5}


def test_adaptive_efficiency_with_costs_and_batches():
    metric = load_metric("adaptive_efficiency")
    metric.add_batch(used=[1, 2])
    metric.add_batch(used=[4])
    result = metric.compute(full=4, costs=[10.0, 20.0, 45.0], full_costs=[40.0, 40.0, 41.0])
    assert result["theoretical_speedup"] == pytest.approx(121 / 75)
    assert result["average_depth"] == pytest.approx(7 / 3)
    scalar = load_metric("adaptive_efficiency").compute(used=[1, 2], full=2, costs=[1.0, 3.0], full_costs=3.0)
    assert scalar["theoretical_speedup"] == pytest.approx(6 / 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"used": [1, 2]}, "full"),
        ({"used": [1, 9], "full": 4}, "used"),
        ({"used": [1, 2], "full": 0}, "full"),
        ({"used": [1, 2], "full": 4, "costs": [1.0, 2.0]}, "together"),
        ({"used": [1, 2], "full": 4, "costs": [1.0], "full_costs": 4.0}, "one value per sample"),
    ],
)
def test_adaptive_efficiency_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_metric("adaptive_efficiency").compute(**kwargs)
