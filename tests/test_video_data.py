"""Moving Fashion-MNIST: determinism, disjoint splits, difficulty (the label is clear in only some frames), errors.

The Debian package ``dataset-fashion-mnist`` provides the images; tests that need them skip only when it is absent.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptive_hf.video.data import (
    ITEM_SIZE,
    VideoCollator,
    fashion_mnist_available,
    generate_moving_fashion_mnist,
    load_fashion_mnist_arrays,
    load_fashion_mnist_frames,
    load_moving_fashion_mnist,
    split_source_indices,
)

needs_data = pytest.mark.skipif(
    not fashion_mnist_available(), reason="apt-get install -y dataset-fashion-mnist provides the images"
)
SMALL = dict(num_videos=12, num_frames=8, image_size=40)


@needs_data
def test_clips_are_deterministic_and_extend_with_num_videos():
    a = generate_moving_fashion_mnist("train", seed=3, **SMALL)
    b = generate_moving_fashion_mnist("train", seed=3, **SMALL)
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    longer = generate_moving_fashion_mnist("train", seed=3, **dict(SMALL, num_videos=20))
    assert np.array_equal(longer["frames"][:12], a["frames"])
    other = generate_moving_fashion_mnist("train", seed=4, **SMALL)
    assert not np.array_equal(other["frames"], a["frames"])


@needs_data
def test_splits_never_share_a_source_image():
    train_part, train = split_source_indices("train")
    val_part, val = split_source_indices("validation")
    test_part, test = split_source_indices("test")
    assert train_part == val_part == "train" and test_part == "test"
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 60_000 and len(test) == 10_000
    pools = {"train": set(train.tolist()), "validation": set(val.tolist()), "test": set(test.tolist())}
    for split, pool in pools.items():
        clips = generate_moving_fashion_mnist(split, seed=0, **SMALL)
        used = set(clips["source_index"].tolist()) | set(clips["distractor_index"].tolist())
        assert used <= pool, split


@needs_data
def test_label_is_clear_in_a_strict_subset_of_frames():
    clips = generate_moving_fashion_mnist("validation", seed=1, min_clear_frames=2, max_clear_frames=4, **SMALL)
    images, labels = load_fashion_mnist_arrays("train")
    assert (clips["label"] == labels[clips["source_index"]]).all()
    assert (clips["distractor_label"] == labels[clips["distractor_index"]]).all()
    assert (clips["label"] != clips["distractor_label"]).all()
    counts = clips["clear"].sum(1)
    assert ((counts >= 2) & (counts <= 4)).all()
    for i in range(len(clips["label"])):
        item = images[clips["source_index"][i]]
        for t in range(SMALL["num_frames"]):
            frame = clips["frames"][i, t]
            if clips["clear"][i, t]:
                # Exactly the labelled item on a black canvas: no noise, no distractor, no occlusion.
                ys, xs = np.nonzero(frame)
                y, x = ys.min(), xs.min()
                assert np.count_nonzero(frame) == np.count_nonzero(item)
                assert int(frame.sum()) == int(item.sum())
                assert ys.max() - y < ITEM_SIZE and xs.max() - x < ITEM_SIZE
            else:
                # Corrupted frames carry noise all over the canvas.
                assert np.count_nonzero(frame) > ITEM_SIZE * ITEM_SIZE


@needs_data
def test_items_move_between_frames():
    clips = generate_moving_fashion_mnist("train", seed=2, corruptions=["noise"], noise_std=0.0, **SMALL)
    # With no noise, each frame's brightest region follows the item: its centre of mass changes over time.
    centres = []
    for frame in clips["frames"][0].astype(float):
        ys, xs = np.nonzero(frame)
        centres.append((ys.mean(), xs.mean()))
    assert len({(round(y), round(x)) for y, x in centres}) > 1


@needs_data
def test_dataset_columns_and_collator():
    dataset = load_moving_fashion_mnist("test", seed=0, **SMALL)
    assert len(dataset) == 12
    assert dataset.features["label"].names[0] == "t-shirt/top"
    row = dataset[0]
    assert np.asarray(row["frames"], dtype=np.uint8).shape == (8, 40, 40)
    clips = generate_moving_fashion_mnist("test", seed=0, **SMALL)
    assert row["clear_frames"] == np.flatnonzero(clips["clear"][0]).tolist()
    rows = [dataset.with_format("numpy")[i] for i in range(3)]
    batch = VideoCollator(num_channels=3, image_size=32, mean=[0.5, 0.5, 0.5], std=0.25)(rows)
    assert batch["pixel_values"].shape == (3, 8, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].tolist() == clips["label"][:3].tolist()
    plain = VideoCollator()(rows)["pixel_values"]
    expected = (torch.from_numpy(clips["frames"][:3]).float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(plain[:, :, 0], expected)


@needs_data
def test_pretraining_frames_are_clear_items_from_the_split_sources():
    frames = load_fashion_mnist_frames("validation", 20, image_size=40, seed=1).with_format("numpy")[:]
    again = load_fashion_mnist_frames("validation", 20, image_size=40, seed=1).with_format("numpy")[:]
    assert np.array_equal(frames["frames"], again["frames"]) and frames["frames"].shape == (20, 1, 40, 40)
    images, labels = load_fashion_mnist_arrays("train")
    _, sources = split_source_indices("validation")
    pool = images[sources]
    sums, counts = pool.reshape(len(pool), -1).sum(1), np.count_nonzero(pool.reshape(len(pool), -1), 1)
    for frame, label in zip(frames["frames"][:, 0], frames["label"]):
        # The frame is one source image of the split pasted on a black canvas, with that image's label.
        candidates = np.flatnonzero((sums == frame.sum()) & (counts == np.count_nonzero(frame)))
        room = 40 - ITEM_SIZE + 1
        found = [
            i
            for i in candidates
            for y in range(room)
            for x in range(room)
            if np.array_equal(frame[y : y + ITEM_SIZE, x : x + ITEM_SIZE], pool[i])
        ]
        assert found and any(labels[sources[i]] == label for i in found)


def test_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get update && apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist_arrays("train", data_dir=str(tmp_path))
    assert not fashion_mnist_available(str(tmp_path))


@pytest.mark.parametrize(
    "settings,match",
    [
        ({"split": "dev"}, "`split` must be one of 'train', 'validation', 'test'"),
        ({"max_clear_frames": 8}, "max_clear_frames"),
        ({"min_clear_frames": 0}, "min_clear_frames"),
        ({"image_size": 20}, "image_size"),
        ({"corruptions": ["blur"]}, "corruptions"),
        ({"num_frames": 1}, "num_frames"),
    ],
)
def test_setting_errors_name_the_field(settings, match):
    kwargs = dict(SMALL, **settings)
    with pytest.raises((ValueError, TypeError), match=match):
        generate_moving_fashion_mnist(**kwargs)


def test_collator_errors():
    with pytest.raises(ValueError, match="num_channels"):
        VideoCollator(num_channels=2)
    with pytest.raises(ValueError, match="mean"):
        VideoCollator(num_channels=3, mean=[0.1, 0.2])
