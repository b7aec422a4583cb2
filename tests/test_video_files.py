"""Frame samplers on video files: lazy two-pass decoding equals the same clips held as tensors, counts, bad input.

The clips are Moving Fashion-MNIST, encoded with PyAV into tmp_path (H.264 with groups of 4 frames, and MJPEG, whose
frames are all key frames); nothing binary is stored in the repository.
"""

from __future__ import annotations

import csv
import logging

import av
import numpy as np
import pytest
import torch

from adaptive_hf.video import decoding
from adaptive_hf.video.data import VideoCollator, fashion_mnist_available, generate_moving_fashion_mnist
from adaptive_hf.video.decoding import FrameDecoder, VideoDecodingError, probe_video, write_video
from adaptive_hf.video.file_evaluation import evaluate_video_files, run_video_files, with_model_labels
from adaptive_hf.video.files import VideoFileCollator, load_video_folder, slot_frames
from adaptive_hf.video.modeling import FrameSamplingVideoClassifier
from adaptive_hf.video.sources import TensorFrameSource

pytestmark = pytest.mark.skipif(
    not fashion_mnist_available(), reason="apt-get install -y dataset-fashion-mnist provides the images"
)
NUM_FRAMES = 8
SIZE = 32
NUM_VIDEOS = 5
# H.264 with a key frame exactly every 4 frames and no B-frames, so decode counts are known in advance.
H264 = dict(codec="libx264", gop=4, **{"x264-params": "keyint=4:min-keyint=4:scenecut=0:bframes=0"})
CODECS = {"h264": (".mp4", H264), "mjpeg": (".avi", dict(codec="mjpeg"))}


@pytest.fixture(scope="module")
def clips():
    return generate_moving_fashion_mnist("test", num_videos=NUM_VIDEOS, num_frames=NUM_FRAMES, image_size=SIZE)


@pytest.fixture(scope="module")
def folders(clips, tmp_path_factory):
    """``{codec: folder}``, one subfolder per class id."""
    out = {}
    for name, (suffix, settings) in CODECS.items():
        root = tmp_path_factory.mktemp(name)
        for i, (frames, label) in enumerate(zip(clips["frames"], clips["label"])):
            (root / str(label)).mkdir(exist_ok=True)
            write_video(root / str(label) / f"clip{i}{suffix}", frames, **settings)
        out[name] = root
    return out


def build(sampler: str, seed: int = 0, **settings) -> FrameSamplingVideoClassifier:
    torch.manual_seed(seed)
    settings = {"frame_budget": 3, "glance_resolution": 16, "glance_width": 4, "gate_hidden_size": 8, **settings}
    model = FrameSamplingVideoClassifier.from_timm(
        "test_efficientnet",
        num_labels=10,
        model_args={"in_chans": 1},
        num_frames=NUM_FRAMES,
        sampler=sampler,
        **settings,
    )
    with torch.no_grad():  # random BatchNorm statistics and a gate that stops some videos early and not others
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
        model.gate.hidden.weight.normal_(0, 1.0)
        model.gate.out.weight.normal_(0, 1.0)
    return model.eval()


def decode_everything(paths) -> np.ndarray:
    """Every frame of every file, decoded once: the tensors the lazy path must agree with."""
    clips = []
    for path in paths:
        index = probe_video(path)
        frames = FrameDecoder(index).decode(range(index.num_frames))
        clips.append(np.stack([frames[i] for i in range(index.num_frames)]))
    return np.stack(clips)


def rows_of(folder):
    dataset = load_video_folder(folder)
    return dataset, [dataset[i] for i in range(len(dataset))]


SETTINGS = {
    "uniform": dict(),
    "saliency": dict(),
    "early_stop_glance": dict(frame_order="glance", frame_budget=6),
    "early_stop_coverage": dict(frame_order="coverage", frame_budget=6, frames_per_step=2),
}


def with_threshold(model, pixels):
    """An exit threshold at the median first-step stop probability: some videos stop at once, some go on."""
    if model.config.sampler == "early_stop":
        model.config.exit_threshold = 1.0
        with torch.no_grad():
            first = model.frame_features(pixels[:, 0])
            model.config.exit_threshold = float(torch.sigmoid(model.gate(first, model.classify(first))).median())
    return model


# --------------------------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("case", list(SETTINGS))
def test_sampler_on_files_equals_the_decoded_clips_as_tensors(folders, codec, case):
    sampler = "early_stop" if case.startswith("early_stop") else case
    model = build(sampler, **SETTINGS[case])
    dataset, rows = rows_of(folders[codec])
    pixels = VideoCollator().frames_to_pixel_values(decode_everything(dataset["video"]))
    with_threshold(model, pixels)
    batch = VideoFileCollator(NUM_FRAMES)(rows)
    with torch.no_grad():
        from_files = model(**batch)
        from_tensors = model(pixel_values=pixels)
    for name in ("frame_indices", "frames_used", "flops"):
        assert torch.equal(getattr(from_files, name), getattr(from_tensors, name)), name
    torch.testing.assert_close(from_files.logits, from_tensors.logits, rtol=1e-5, atol=1e-5)
    if from_tensors.frame_scores is not None:
        torch.testing.assert_close(from_files.frame_scores, from_tensors.frame_scores)
    assert from_tensors.frames_decoded is None
    decoded = from_files.frames_decoded
    if sampler == "saliency" or SETTINGS[case].get("frame_order") == "glance":
        # The glance pass decodes every frame at full resolution; the backbone pass reuses them.
        assert decoded.tolist() == [NUM_FRAMES] * NUM_VIDEOS
    elif codec == "mjpeg":  # every frame a key frame: exactly the frames the backbone saw
        assert torch.equal(decoded, from_files.frames_used)
    else:  # H.264: a frame costs at most its group of pictures up to it (4 frames here)
        assert (decoded >= from_files.frames_used).all() and (decoded <= 4 * from_files.frames_used).all()
    if sampler == "early_stop":
        assert len(set(from_files.frames_used.tolist())) > 1, "the threshold should stop some videos early"


@pytest.mark.parametrize("case", list(SETTINGS))
def test_files_batched_equals_one_at_a_time(folders, case):
    sampler = "early_stop" if case.startswith("early_stop") else case
    model = build(sampler, seed=1, **SETTINGS[case])
    dataset, rows = rows_of(folders["h264"])
    with_threshold(model, VideoCollator().frames_to_pixel_values(decode_everything(dataset["video"])))
    collator = VideoFileCollator(NUM_FRAMES)
    with torch.no_grad():
        batched = model(**collator(rows))
        single = [model(**collator([row])) for row in rows]
    for name in ("frame_indices", "frames_used", "frames_decoded", "flops"):
        assert torch.equal(getattr(batched, name), torch.cat([getattr(s, name) for s in single])), name
    torch.testing.assert_close(batched.logits, torch.cat([s.logits for s in single]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler", ["saliency", "early_stop"])
def test_glance_stride_equals_a_tensor_source_with_that_stride(folders, sampler):
    model = build(sampler, frame_order="glance", frame_budget=3, exit_threshold=0.99)
    dataset, rows = rows_of(folders["mjpeg"])
    pixels = VideoCollator().frames_to_pixel_values(decode_everything(dataset["video"]))
    with torch.no_grad():
        from_files = model(**VideoFileCollator(NUM_FRAMES, glance_stride=2)(rows))
        from_tensors = model(frame_source=TensorFrameSource(pixels, glance_stride=2))
    assert torch.equal(from_files.frame_indices, from_tensors.frame_indices)
    torch.testing.assert_close(from_files.logits, from_tensors.logits, rtol=1e-5, atol=1e-5)
    scores = from_files.frame_scores
    assert torch.isinf(scores[:, 1::2]).all() and torch.isfinite(scores[:, ::2]).all()
    if sampler == "saliency":
        assert (from_files.frame_indices % 2 == 0).all()  # only glanced frames can win
    # MJPEG: the glance decodes the 4 even frames, the backbone pass only the chosen frames it does not hold yet.
    chosen = from_files.frame_indices
    extra = [len({i for i in row if i >= 0 and i % 2}) for row in chosen.tolist()]
    assert from_files.frames_decoded.tolist() == [NUM_FRAMES // 2 + e for e in extra]


def test_uniform_decodes_only_the_chosen_frames_seeking_to_key_frames(folders):
    dataset, rows = rows_of(folders["h264"])
    index = probe_video(dataset["video"][0])
    assert index.keyframe.tolist() == [True, False, False, False] * 2
    model = build("uniform", frame_budget=3)
    with torch.no_grad():
        out = model(**VideoFileCollator(NUM_FRAMES)(rows))
    assert out.frame_indices[0].tolist() == [1, 4, 6]
    # Frame 1: key frame 0 then 1; frame 4: a seek to key frame 4; frame 6: decoding goes on through 5.
    assert out.frames_decoded.tolist() == [5] * NUM_VIDEOS
    model.config.frame_budget = None  # every frame: one pass through the file, nothing decoded twice
    with torch.no_grad():
        assert model(**VideoFileCollator(NUM_FRAMES)(rows)).frames_decoded.tolist() == [NUM_FRAMES] * NUM_VIDEOS


def test_early_stop_stops_decoding_when_it_stops(folders):
    model = build("early_stop", frame_order="coverage", frame_budget=6, frames_per_step=2)
    dataset, rows = rows_of(folders["mjpeg"])
    with_threshold(model, VideoCollator().frames_to_pixel_values(decode_everything(dataset["video"])))
    with torch.no_grad():
        out = model(**VideoFileCollator(NUM_FRAMES)(rows))
    assert torch.equal(out.frames_decoded, out.frames_used)
    assert int(out.frames_decoded.min()) == 2 and int(out.frames_decoded.sum()) < 6 * NUM_VIDEOS


def test_keyframe_glance_scores_each_frame_on_its_key_frame(folders):
    model = build("saliency", frame_budget=2)
    dataset, rows = rows_of(folders["h264"])
    collator = VideoFileCollator(NUM_FRAMES, glance_keyframes=True)
    batch = collator(rows)
    with torch.no_grad():
        out = model(**batch)
    scores = out.frame_scores
    assert torch.equal(scores[:, :4], scores[:, :1].expand(-1, 4)) and torch.equal(
        scores[:, 4:], scores[:, 4:5].expand(-1, 4)
    )
    assert batch["frame_source"].glance_decoded().tolist() == [2] * NUM_VIDEOS
    assert (out.frames_decoded <= 2 + NUM_FRAMES).all() and (out.frames_decoded > 2).all()


def test_lowres_glance_decodes_smaller_frames(folders):
    model = build("saliency", frame_budget=2)
    dataset, rows = rows_of(folders["mjpeg"])
    source = VideoFileCollator(NUM_FRAMES, glance_lowres=1)(rows)["frame_source"]
    indices, pixels = source.glance_frames()
    assert pixels.shape == (NUM_VIDEOS, NUM_FRAMES, 1, SIZE // 2, SIZE // 2)
    with torch.no_grad():
        out = model(**VideoFileCollator(NUM_FRAMES, glance_lowres=1)(rows))
    # Low-resolution glance frames cannot serve the backbone: its 2 frames are decoded again at full resolution.
    assert out.frames_decoded.tolist() == [NUM_FRAMES + 2] * NUM_VIDEOS
    assert out.frames_used.tolist() == [2] * NUM_VIDEOS


@pytest.mark.parametrize("codec", list(CODECS))
def test_gray_frames_equal_ffmpegs_conversion(folders, codec):
    path = load_video_folder(folders[codec])["video"][0]
    with av.open(path) as container:
        expected = [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]
    index = probe_video(path)
    decoded = FrameDecoder(index).decode(range(index.num_frames))
    for number, image in enumerate(expected):
        assert np.array_equal(decoded[number], image), number
    rgb = FrameDecoder(index, color="rgb").decode([3])[3]
    assert rgb.shape == (SIZE, SIZE, 3) and rgb.dtype == np.uint8


def test_all_key_frame_reading_equals_plain_decoding(folders):
    path = load_video_folder(folders["mjpeg"])["video"][1]
    index = probe_video(path)
    skipping = FrameDecoder(index)  # one thread: reads packets, decodes only the wanted ones
    plain = FrameDecoder(index, threads=2)  # decoder threads: the plain decode-and-seek path
    for wanted in ([6, 1], [0, 2, 4], [7], [3, 5]):
        fast, slow = skipping.decode(wanted), plain.decode(wanted)
        assert sorted(fast) == sorted(wanted) and all(np.array_equal(fast[n], slow[n]) for n in wanted)
    assert skipping.frames_decoded == 8  # each frame once, none decoded only to be passed
    skipping.close()
    plain.close()


def test_slots_of_longer_and_padded_clips():
    assert slot_frames(8, 8).tolist() == list(range(8))
    assert slot_frames(16, 4).tolist() == [2, 6, 10, 14]
    assert slot_frames(3, 6).tolist() == [0, 0, 1, 1, 2, 2]


# -------------------------------------------------------------------------------------------- datasets
def test_load_video_folder_from_class_folders_and_csv(folders, clips, tmp_path):
    dataset = load_video_folder(folders["h264"])
    names = dataset.features["label"].names
    assert names == sorted({str(label) for label in clips["label"]})
    assert sorted(int(names[label]) for label in dataset["label"]) == sorted(clips["label"].tolist())
    table = tmp_path / "videos.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for path, label in zip(dataset["video"], dataset["label"]):
            writer.writerow([path, f"class {names[label]}"])
    from_csv = load_video_folder(table)
    assert from_csv["video"] == dataset["video"]
    assert [from_csv.features["label"].names[i] for i in from_csv["label"]] == [
        f"class {names[i]}" for i in dataset["label"]
    ]
    assert load_video_folder(tmp_path)["video"] == dataset["video"]  # a folder holding one CSV


def test_evaluate_video_files_reports_decoding(folders, clips):
    model = build("saliency", frame_budget=2)
    dataset = load_video_folder(folders["mjpeg"])
    result = evaluate_video_files(model, dataset, VideoFileCollator(NUM_FRAMES), batch_size=2)
    pixels = VideoCollator().frames_to_pixel_values(decode_everything(dataset["video"]))
    labels = torch.as_tensor([int(dataset.features["label"].names[i]) for i in dataset["label"]])
    with torch.no_grad():
        expected = (model(pixel_values=pixels).logits.argmax(-1) == labels).float().mean().item()
    assert result["accuracy"] == pytest.approx(expected)
    assert result["videos"] == NUM_VIDEOS and result["frames_used"] == 2 and result["frames_decoded"] == NUM_FRAMES
    assert result["glance_frames_decoded"] == NUM_FRAMES and 0 < result["decode_share"] < 1


def test_stock_trainer_evaluates_a_video_folder_lazily(folders, tmp_path):
    from transformers import Trainer, TrainingArguments

    model = build("early_stop", frame_order="glance", frame_budget=4, exit_threshold=0.5)
    dataset = load_video_folder(folders["h264"])
    names = dataset.features["label"].names
    dataset = dataset.map(lambda row: {"labels": int(names[row["label"]])}).remove_columns("label")
    args = TrainingArguments(
        str(tmp_path), per_device_eval_batch_size=2, report_to=[], use_cpu=True, remove_unused_columns=False
    )
    collator = VideoFileCollator(NUM_FRAMES, label_column="labels")
    metrics = Trainer(model=model, args=args, eval_dataset=dataset, data_collator=collator).evaluate()
    pixels = VideoCollator().frames_to_pixel_values(decode_everything(dataset["video"]))
    labels = torch.as_tensor(dataset["labels"])
    with torch.no_grad():  # the Trainer averages the batch losses weighted by batch size
        losses = [
            float(model(pixel_values=pixels[i : i + 2], labels=labels[i : i + 2]).loss) * len(labels[i : i + 2])
            for i in range(0, NUM_VIDEOS, 2)
        ]
    assert metrics["eval_loss"] == pytest.approx(sum(losses) / NUM_VIDEOS, rel=1e-5)


# ------------------------------------------------------------------------------------------- bad input
def test_bad_files_get_errors_naming_them(folders, clips, tmp_path):
    collator = VideoFileCollator(NUM_FRAMES)
    missing = tmp_path / "missing.mp4"
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        collator([{"video": str(missing), "label": 0}])
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(VideoDecodingError, match="notes.mp4.*cannot be read as a video"):
        collator([{"video": str(text), "label": 0}])
    short = write_video(tmp_path / "short.mp4", clips["frames"][0][:5], **H264)
    with pytest.raises(VideoDecodingError, match="short.mp4: has 5 frames, fewer than num_frames=8.*pad='repeat'"):
        collator([{"video": str(short), "label": 0}])
    padded = VideoFileCollator(NUM_FRAMES, pad="repeat")([{"video": str(short), "label": 0}])
    with torch.no_grad():
        out = build("uniform", frame_budget=None)(**padded)
    assert out.frames_decoded.tolist() == [5]  # repeated frames are decoded once
    audio = tmp_path / "tone.wav"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            container.mux(packet)
    with pytest.raises(VideoDecodingError, match="tone.wav: has no video stream"):
        collator([{"video": str(audio), "label": 0}])


def test_unsupported_codec_is_named(folders, monkeypatch):
    path = load_video_folder(folders["h264"])["video"][0]

    class NoDecoder:
        def __init__(self, name, mode):
            raise av.error.FFmpegError(0, f"no decoder for {name}")

    monkeypatch.setattr(decoding.import_av().codec, "Codec", NoDecoder)
    with pytest.raises(VideoDecodingError, match=r"clip\d\.mp4: uses codec 'h264'.*unsupported codec"):
        probe_video(path)


def test_folder_without_labels_is_an_error(tmp_path, clips):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_video_folder(tmp_path / "nowhere")
    write_video(tmp_path / "flat.mp4", clips["frames"][0], **H264)  # a video, but no class folder and no CSV
    with pytest.raises(ValueError, match="no labelled videos"):
        load_video_folder(tmp_path)
    table = tmp_path / "list.csv"
    table.write_text("path,label\nflat.mp4,a\ngone.mp4,b\n")
    with pytest.raises(FileNotFoundError, match="row 2 names .*gone.mp4"):
        load_video_folder(table)


def test_corrupt_file_in_a_folder_is_skipped_and_named_or_raises(folders, tmp_path, caplog, monkeypatch):
    model = build("uniform")
    dataset = load_video_folder(folders["mjpeg"])
    rows = with_model_labels(model, dataset)
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"RIFF" + bytes(200))
    rows.insert(2, {"video": str(broken), "label": 0, "labels": 0})
    with pytest.raises(VideoDecodingError, match="broken.avi"):
        run_video_files(model, rows, VideoFileCollator(NUM_FRAMES), batch_size=4)
    collator = VideoFileCollator(NUM_FRAMES, on_error="skip")
    with caplog.at_level(logging.WARNING):
        totals = run_video_files(model, rows, collator, batch_size=4)
    assert totals["videos"] == NUM_VIDEOS and [path for path, _ in collator.skipped] == [str(broken)]
    assert "broken.avi" in caplog.text
    # A file that breaks while decoding (after its frame table read fine) is skipped the same way.
    bad = dataset["video"][3]
    original = FrameDecoder.decode

    def failing(self, frames):
        if self.index.path == bad:
            raise VideoDecodingError(bad, "is corrupt: decoding failed (test).")
        return original(self, frames)

    monkeypatch.setattr(FrameDecoder, "decode", failing)
    collator = VideoFileCollator(NUM_FRAMES, on_error="skip")
    totals = run_video_files(model, rows[:2] + rows[3:], collator, batch_size=4)
    assert totals["videos"] == NUM_VIDEOS - 1 and collator.skipped[0][0] == bad
    with pytest.raises(VideoDecodingError, match="decoding failed"):
        run_video_files(model, rows[:2] + rows[3:], VideoFileCollator(NUM_FRAMES), batch_size=4)


def test_frame_source_misuse_is_clear(folders):
    model = build("uniform")
    dataset, rows = rows_of(folders["mjpeg"])
    batch = VideoFileCollator(NUM_FRAMES)(rows)
    with pytest.raises(ValueError, match="either `pixel_values` or `frame_source`"):
        model(pixel_values=torch.zeros(1, NUM_FRAMES, 1, SIZE, SIZE), frame_source=batch["frame_source"])
    with pytest.raises(TypeError, match="`frame_source` must be"):
        model(frame_source=rows)
    with pytest.raises(ValueError, match="frames per video but `num_frames` is 8"):
        model(frame_source=VideoFileCollator(4)(rows)["frame_source"])
    model.train()
    with pytest.raises(ValueError, match="for inference"):
        model(frame_source=batch["frame_source"])
    for bad in ({"pad": "loop"}, {"on_error": "ignore"}, {"glance_stride": 0}, {"glance_lowres": 5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            VideoFileCollator(NUM_FRAMES, **bad)
    with pytest.raises(ValueError, match="glance_keyframes"):
        VideoFileCollator(NUM_FRAMES, glance_keyframes=True, glance_stride=2)


# ------------------------------------------------------------------------------------------------ command line
def test_cli_evaluate_and_bench_on_a_video_folder(folders, tmp_path, capsys):
    import json

    from adaptive_hf.cli import main
    from adaptive_hf.video.evaluation import save_video_collator

    model = build("saliency", frame_budget=2)
    model.save_pretrained(tmp_path / "model")
    save_video_collator(VideoCollator(num_channels=1), tmp_path / "model", image_size=SIZE)
    folder = str(folders["mjpeg"])
    argv = ["evaluate", str(tmp_path / "model"), "--dataset", folder, "--json", str(tmp_path / "e.json")]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "e.json").read_text())["rows"]
    dataset = load_video_folder(folder)
    pixels = VideoCollator().frames_to_pixel_values(decode_everything(dataset["video"]))
    labels = torch.as_tensor([int(dataset.features["label"].names[i]) for i in dataset["label"]])
    with torch.no_grad():
        expected = (model(pixel_values=pixels).logits.argmax(-1) == labels).float().mean().item()
    saved = rows[0]
    assert saved["setting"].startswith("saved: saliency") and saved["accuracy"] == pytest.approx(expected)
    assert saved["frames_used"] == 2 and saved["frames_decoded"] == NUM_FRAMES
    uniform_two = next(r for r in rows if r["sampler"] == "uniform" and r["frame_budget"] == 2)
    assert uniform_two["frames_decoded"] == 2  # uniform decodes only its frames
    assert "frames decoded / video" in capsys.readouterr().out
    argv = ["bench", str(tmp_path / "model"), "--dataset", folder, "--batch-sizes", "2", "--repeats", "1"]
    argv += ["--glance-stride", "2", "--threads", "1", "--json", str(tmp_path / "b.json")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "b.json").read_text())["results"][0]
    # Every other frame glanced, and the 2 frames chosen among those: 4 frames decoded (MJPEG) against all 8.
    assert result["batch_size"] == 2 and result["frames_decoded"] == NUM_FRAMES // 2
    assert result["full_frames_decoded"] == NUM_FRAMES and result["realized_speedup"] > 0
    assert "decode share" in capsys.readouterr().out
    assert main(argv[:-2] + ["--glance-stride", "0"]) == 2
    assert "--glance-stride must be >= 1" in capsys.readouterr().err


def test_bench_heading_names_the_setting_the_data_and_the_threads():
    from types import SimpleNamespace

    from adaptive_hf.video.file_commands import bench_heading

    early_stop = SimpleNamespace(sampler="early_stop", budget=3, exit_threshold=0.6)
    heading = bench_heading(early_stop, "; 8 clips", 2)
    assert (
        heading
        == f"early_stop sampler (frame budget 3, exit threshold 0.6); 8 clips; torch {torch.__version__}, 2 thread(s)"
    )
    saliency = SimpleNamespace(sampler="saliency", budget=4, exit_threshold=0.6)
    heading = bench_heading(saliency, " on 5 video files, decoding included", 1)
    assert heading.startswith("saliency sampler (frame budget 4) on 5 video files, decoding included; torch ")
