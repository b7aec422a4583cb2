"""ONNX export that keeps the skipping: onnxruntime segments against the PyTorch model in eval mode.

Each exported model must give every row the exit layer PyTorch gives it and logits within 1e-4, at batch 1 and on
a padded batch of 64, for every exit policy; the policy's knobs change at run time; broken folders and
non-exportable techniques get clear errors.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from early_exit_helpers import tiny_model, tiny_tokenizer
from test_early_exit_vision import build_timm, build_vit, images
from text_testers import padded_batch, split_threshold

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from text_testers import tiny_backbone_config  # noqa: E402

from adaptive_hf import AutoHaltingModelForSequenceClassification  # noqa: E402
from adaptive_hf.cli import main  # noqa: E402
from adaptive_hf.early_exit.policies import exit_score  # noqa: E402
from adaptive_hf.onnx import MANIFEST, AdaptiveOnnxModel, export  # noqa: E402

THRESHOLD_POLICIES = ("confidence", "entropy", "margin")
# name -> (builder, exporter). The default dynamo exporter is exercised on BERT and the CNN; the TorchScript one,
# several times faster to export, on the others (both export the same segment modules).
CASES = {
    "bert": (lambda: tiny_model("bert", exit_layers=[1, 2, 4]), "dynamo"),
    "roberta": (lambda: tiny_model("roberta", exit_layers=[1, 2, 4]), "torchscript"),
    # Heads on the first token: later segments read only the prepared layer mask, and the tracer drops the token mask.
    "bert_cls": (lambda: tiny_model("bert", exit_layers=[1, 2, 4], head_pooling="cls"), "torchscript"),
    "distilbert": (lambda: tiny_model("distilbert", exit_layers=[1, 2, 4]), "torchscript"),
    "timm_cnn": (lambda: build_timm("resnet_block", image_size=[64, 64], exit_layers=[1, 3, 5]), "dynamo"),
    "timm_vit": (lambda: build_timm("vit", exit_layers=[1, 2, 4]), "torchscript"),
    "hf_vit": (lambda: build_vit(exit_layers=[1, 2, 4]), "torchscript"),
    "modernbert": (lambda: tiny_model("modernbert", exit_layers=[1, 2, 4]), "torchscript"),
    # DeBERTa-v3 settings (no segment embeddings: no token_type_ids input) and the v2 layout with the layer-0 conv.
    "deberta-v2": (lambda: tiny_model("deberta-v2", exit_layers=[1, 2, 4]), "torchscript"),
    "deberta-v2-conv": (lambda: tiny_model("deberta-v2-conv", exit_layers=[1, 2, 4]), "torchscript"),
    # Decoder classifiers, left-padded: causal masks and rotary tables rebuilt per segment for the kept rows, and the
    # pooling mask (last non-pad token) carried from the first segment.
    "llama": (lambda: tiny_model("llama", exit_layers=[1, 2, 4]), "torchscript"),
    "qwen3": (lambda: tiny_model("qwen3", exit_layers=[1, 2, 4]), "dynamo"),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (PyTorch model, its export folder); each exported once for the module."""
    cache = {}

    def get(name):
        if name not in cache:
            builder, exporter = CASES[name]
            model = builder()
            if hasattr(model, "exit_heads") and not name.startswith(("bert", "roberta", "distilbert")):
                with torch.no_grad():  # spread the random heads' confidences, so thresholds split the rows
                    for parameter in model.exit_heads.parameters():
                        parameter.mul_(8.0)
            folder = export(model, tmp_path_factory.mktemp(name), exporter=exporter)
            cache[name] = (model, folder)
        return cache[name]

    return get


def batch_of(model, batch_size: int, seed: int = 1) -> dict[str, torch.Tensor]:
    if getattr(model, "main_input_name", None) == "pixel_values":
        size = model.config.image_size
        return {"pixel_values": images(batch_size, seed=seed, size=size if isinstance(size, int) else size[0])}
    pad = getattr(model.config, "pad_token_id", None) or 0
    input_ids, mask = padded_batch(batch_size, 12, seed=seed, pad_token_id=pad)
    if getattr(getattr(model, "adapter", None), "causal", False):
        # Left padding, as decoder tokenizers pad; every third row ends with the pad id as a real token (eos used
        # as pad), which the head skips though the attention mask keeps it.
        input_ids, mask = input_ids.flip(1), mask.flip(1)
        input_ids[::3, -1] = pad
    return {"input_ids": input_ids, "attention_mask": mask}


def settings_for(model, batch, policy: str) -> dict:
    """A setting of ``policy`` under which the first exit takes about half the rows, far from any boundary."""
    if policy in ("none", "patience"):
        return {"exit_policy": policy, "exit_threshold": None, "patience": 1}
    model.config.exit_policy, model.config.exit_threshold = "none", None
    with torch.no_grad():
        first = model(**batch, output_exit_logits=True).exit_logits[0]
    return {"exit_policy": policy, "exit_threshold": split_threshold(exit_score(policy, first)), "patience": 2}


def pytorch_outputs(model, batch, settings):
    for name, value in settings.items():
        setattr(model.config, name, value)
    with torch.no_grad():
        return model(**batch)


def assert_same(ort_output, reference):
    np.testing.assert_array_equal(ort_output.exit_layer, reference.exit_layer.numpy())
    np.testing.assert_allclose(ort_output.logits, reference.logits.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("policy", ["none", *THRESHOLD_POLICIES, "patience"])
def test_same_exits_and_logits_as_pytorch(exported, name, policy):
    model, folder = exported(name)
    ort_model = AdaptiveOnnxModel(folder, threads=1)
    batch = batch_of(model, 64)
    settings = settings_for(model, batch, policy)
    reference = pytorch_outputs(model, batch, settings)
    if policy in THRESHOLD_POLICIES:
        # The threshold splits the rows: some leave at the first exit, so compaction is exercised.
        assert len(set(reference.exit_layer.tolist())) >= 2
    for name_, value in settings.items():
        setattr(ort_model.config, name_, value)
    assert_same(ort_model(**batch), reference)
    # Batch 1: single rows, one leaving early and one going on where the policy splits them.
    layers = reference.exit_layer
    rows = {0, int(layers.argmin()), int(layers.argmax())}
    for row in sorted(rows):
        single = {key: value[row : row + 1] for key, value in batch.items()}
        assert_same(ort_model(**single), pytorch_outputs(model, single, settings))


def test_knobs_change_at_run_time(exported):
    model, folder = exported("bert")
    ort_model = AdaptiveOnnxModel(folder)
    batch = batch_of(model, 64, seed=3)
    settings = settings_for(model, batch, "confidence")
    loose = {**settings, "exit_threshold": 0.0}  # every row leaves at the first exit
    ort_model.config.exit_policy = "confidence"
    ort_model.config.exit_threshold = settings["exit_threshold"]
    split = ort_model(**batch)
    ort_model.config.exit_threshold = 0.0
    assert (ort_model(**batch).exit_layer == 1).all()
    assert_same(ort_model(**batch), pytorch_outputs(model, batch, loose))
    # Keyword overrides hold for one call only.
    assert_same(ort_model(**batch, exit_threshold=settings["exit_threshold"]), pytorch_outputs(model, batch, settings))
    assert (ort_model(**batch).exit_layer == 1).all()
    np.testing.assert_array_equal(split.exit_layer, pytorch_outputs(model, batch, settings).exit_layer.numpy())
    # The full-depth graph and the segments without exits agree.
    full = ort_model.run_full_depth(**batch)
    assert (full.exit_layer == 4).all()
    assert_same(full, pytorch_outputs(model, batch, {"exit_policy": "none", "exit_threshold": None}))
    with pytest.raises(ValueError, match="exit_policy"):
        ort_model(**batch, exit_policy="sometimes")
    ort_model.config.exit_policy = "patience"  # a threshold with patience is refused, as in PyTorch
    with pytest.raises(ValueError, match="exit_threshold"):
        ort_model(**batch)


def test_manifest_records_the_policy_and_segments(exported):
    _, folder = exported("roberta")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["exit_layers"] == [1, 2, 4]
    # The settings at export time (tiny_model's defaults; the tests change the live model's config afterwards).
    assert manifest["policy"] == {
        "exit_policy": "none",
        "exit_threshold": None,
        "patience": 2,
        "nonfinite_logits": "warn",
    }
    assert [s["file"] for s in manifest["segments"]] == ["segment_0.onnx", "segment_1.onnx", "segment_2.onnx"]
    assert [(s["first_layer"], s["exit_layer"]) for s in manifest["segments"]] == [(0, 1), (1, 2), (2, 4)]
    # BERT layout: later segments take the attention mask the first one prepared instead of rebuilding it.
    assert manifest["segments"][0]["outputs"] == ["hidden_states_out", "layer_attention_mask", "logits"]
    assert manifest["segments"][1]["inputs"] == ["hidden_states", "attention_mask", "layer_attention_mask"]
    assert manifest["full_graph"]["file"] == "full.onnx"
    import onnx

    graph = onnx.load(str(folder / "segment_1.onnx"), load_external_data=False)
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and isinstance(dims[1], str) and dims[2] == 32  # dynamic batch and sequence


def test_decoder_segments_carry_the_pooling_mask(exported):
    model, folder = exported("llama")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["segments"][0]["inputs"] == ["input_ids", "attention_mask"]
    assert manifest["segments"][0]["outputs"] == ["hidden_states_out", "token_mask", "logits"]
    assert manifest["segments"][1]["inputs"] == ["hidden_states", "attention_mask", "token_mask"]
    # The pad id as the last real token: pooling the attention mask's last token instead would change the logits.
    batch = batch_of(model, 4)
    assert (batch["input_ids"][0, -1] == model.config.pad_token_id) and batch["attention_mask"][0, -1] == 1
    reference = pytorch_outputs(model, batch, {"exit_policy": "none", "exit_threshold": None})
    ort_model = AdaptiveOnnxModel(folder, threads=1)
    ort_model.full_graph = None  # through the segments, not full.onnx
    assert_same(ort_model(**batch, exit_policy="none"), reference)


# ------------------------------------------------------------------------------------------------- bad input
def copy_of(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def test_missing_segment_is_named(exported, tmp_path):
    _, folder = exported("roberta")
    broken = copy_of(folder, tmp_path)
    (broken / "segment_1.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="segment_1.onnx"):
        AdaptiveOnnxModel(broken)


def test_manifest_that_does_not_match_its_graphs(exported, tmp_path):
    _, folder = exported("roberta")
    _, other = exported("distilbert")
    broken = copy_of(folder, tmp_path)
    shutil.copy(other / "segment_1.onnx", broken / "segment_1.onnx")  # same names, another export
    with pytest.raises(ValueError, match="another export"):
        AdaptiveOnnxModel(broken)

    def edited(change):
        folder_ = copy_of(folder, tmp_path / f"edit{len(list(tmp_path.iterdir()))}")
        manifest = json.loads((folder_ / MANIFEST).read_text())
        change(manifest)
        (folder_ / MANIFEST).write_text(json.dumps(manifest))
        return folder_

    with pytest.raises(ValueError, match="one segment per exit"):
        AdaptiveOnnxModel(edited(lambda m: m.update(exit_layers=[2, 4])))
    with pytest.raises(ValueError, match="does not match its graphs"):
        AdaptiveOnnxModel(edited(lambda m: m["segments"][1].update(inputs=["hidden", "attention_mask"])))
    with pytest.raises(ValueError, match="num_labels"):
        AdaptiveOnnxModel(edited(lambda m: m.update(num_labels=5)))
    with pytest.raises(ValueError, match="format"):
        AdaptiveOnnxModel(edited(lambda m: m.update(format="something else")))
    (broken / MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        AdaptiveOnnxModel(broken)
    with pytest.raises(FileNotFoundError, match=MANIFEST):
        AdaptiveOnnxModel(tmp_path)


def test_bad_inputs_to_the_runner(exported):
    _, folder = exported("distilbert")
    ort_model = AdaptiveOnnxModel(folder)
    ids, mask = padded_batch(2, 6)
    with pytest.raises(TypeError, match="token_type_ids"):
        ort_model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
    with pytest.raises(ValueError, match="attention_mask"):
        ort_model(input_ids=ids, attention_mask=mask[:, :3])
    with pytest.raises(ValueError, match="input_ids"):
        ort_model(attention_mask=mask)
    _, image_folder = exported("timm_vit")
    with pytest.raises(ValueError, match="exported input size"):
        AdaptiveOnnxModel(image_folder)(pixel_values=images(1, size=48))


def test_non_exportable_technique_is_refused_with_the_reason(tmp_path):
    torch.manual_seed(0)
    halting = AutoHaltingModelForSequenceClassification.from_config(tiny_backbone_config("bert"), num_labels=2)
    with pytest.raises(ValueError, match="not exportable.*token"):
        export(halting, tmp_path / "out", exporter="torchscript")
    halting.save_pretrained(tmp_path / "halting")
    assert main(["export", str(tmp_path / "halting"), str(tmp_path / "out2")]) == 2
    assert not (tmp_path / "out2").exists()


def test_missing_onnxruntime_names_the_extra(exported, monkeypatch):
    _, folder = exported("roberta")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"adaptive-hf\[export\]"):
        AdaptiveOnnxModel(folder)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match=r"onnxscript.*adaptive-hf\[export\]"):
        export(tiny_model("bert"), folder.parent / "never")


def test_cli_export_of_a_saved_model(tmp_path, capsys):
    model = tiny_model("bert", exit_layers=[2, 4], exit_policy="confidence", exit_threshold=0.9)
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    status = main(["export", str(tmp_path / "model"), str(tmp_path / "onnx"), "--exporter", "torchscript"])
    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "onnx" / "tokenizer.json").is_file()
    ort_model = AdaptiveOnnxModel(tmp_path / "onnx")
    assert ort_model.config.exit_threshold == 0.9 and ort_model.config.exit_policy == "confidence"
    batch = batch_of(model, 8)
    assert_same(ort_model(**batch), pytorch_outputs(model, batch, {}))
    tokens = tiny_tokenizer()(["w1 w2 w3", "w4"], padding=True, return_tensors="np")
    assert ort_model(**tokens).logits.shape == (2, 2)
