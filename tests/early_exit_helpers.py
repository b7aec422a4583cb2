"""Tiny early-exit models, tokenizers and datasets for the calibration, CLI and training-callback tests."""

from __future__ import annotations

import datasets
import torch
from text_testers import DECODER_CONFIGS, VOCAB, tiny_backbone_config, tiny_decoder_config

from adaptive_hf import AutoEarlyExitModelForSequenceClassification

NUM_WORDS = 40  # token ids 2..41, inside every tiny config's vocabulary


def tiny_model(family: str = "bert", num_labels: int = 2, seed: int = 0, **exit_settings):
    """A tiny random early-exit classifier in eval mode, with heads scaled up so their scores spread out."""
    torch.manual_seed(seed)
    config = tiny_decoder_config(family) if family in DECODER_CONFIGS else tiny_backbone_config(family)
    model = AutoEarlyExitModelForSequenceClassification.from_config(config, num_labels=num_labels, **exit_settings)
    with torch.no_grad():
        # Random heads give near-uniform softmaxes; larger weights give confident and unconfident rows alike,
        # so thresholds separate rows and calibration has real choices to make.
        for head in model.exit_heads:
            for parameter in head.parameters():
                parameter.mul_(8.0)
    return model.eval()


def tiny_tokenizer():
    """A whitespace word-level tokenizer over the words ``w0``..``w39`` (ids 2..41, pad 0, unk 1)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i + 2 for i in range(NUM_WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")


def random_texts(num_rows: int, num_labels: int = 2, seed: int = 0) -> tuple[list[str], list[int]]:
    """Texts of 3..12 words and labels; the label is the first word's id modulo ``num_labels`` (learnable)."""
    generator = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for _ in range(num_rows):
        length = int(torch.randint(3, 13, (1,), generator=generator))
        words = torch.randint(0, NUM_WORDS, (length,), generator=generator).tolist()
        texts.append(" ".join(f"w{w}" for w in words))
        labels.append(words[0] % num_labels)
    return texts, labels


def token_dataset(num_rows: int = 48, num_labels: int = 2, seed: int = 0, padded: bool = False, label_column="label"):
    """A tokenized ``datasets.Dataset`` of random rows (unpadded unless ``padded``), ids inside the tiny vocab."""
    generator = torch.Generator().manual_seed(seed)
    rows, masks = [], []
    max_len = 12
    for _ in range(num_rows):
        length = int(torch.randint(2, max_len + 1, (1,), generator=generator))
        ids = torch.randint(2, min(VOCAB, NUM_WORDS + 2), (length,), generator=generator).tolist()
        mask = [1] * length
        if padded:
            ids, mask = ids + [0] * (max_len - length), mask + [0] * (max_len - length)
        rows.append(ids)
        masks.append(mask)
    labels = torch.randint(0, num_labels, (num_rows,), generator=generator).tolist()
    return datasets.Dataset.from_dict({"input_ids": rows, "attention_mask": masks, label_column: labels})


def run_in_eval(model, dataset, batch_size: int = 16) -> tuple[float, float, torch.Tensor]:
    """Accuracy, average exit layer and per-sample exit layers of the model as configured, in eval mode."""
    from adaptive_hf.core.batching import iterate_batches

    model.eval()
    labels = torch.tensor(dataset["label"] if "label" in dataset.column_names else dataset["labels"])
    predictions, layers = [], []
    pad = _Pad()
    with torch.no_grad():
        for batch in iterate_batches(dataset, batch_size, data_collator=pad):
            output = model(**batch)
            predictions.append(output.logits.argmax(-1))
            layers.append(output.exit_layer)
    predictions, layers = torch.cat(predictions), torch.cat(layers)
    return float((predictions == labels).double().mean()), float(layers.double().mean()), layers


class _Pad:
    """Right-pads ``input_ids``/``attention_mask`` feature dicts with 0 (what DataCollatorWithPadding does)."""

    def __call__(self, features):
        longest = max(len(f["input_ids"]) for f in features)
        return {
            key: torch.tensor([list(f[key]) + [0] * (longest - len(f[key])) for f in features])
            for key in ("input_ids", "attention_mask")
        }


PAD = _Pad()
