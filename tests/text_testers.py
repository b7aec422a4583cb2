"""Shared tester for the text encoder families: tiny random configs and batch builders."""

from __future__ import annotations

import torch
from transformers import (
    AlbertConfig,
    BertConfig,
    Dinov2Config,
    DistilBertConfig,
    ElectraConfig,
    GPT2Config,
    LlamaConfig,
    MPNetConfig,
    RobertaConfig,
    ViTConfig,
    XLMRobertaConfig,
)

VOCAB = 99
NUM_LAYERS = 4
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=NUM_LAYERS,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)


def tiny_backbone_config(family: str):
    """A tiny random config of ``family`` (a backbone model_type)."""
    if family == "bert":
        return BertConfig(**COMMON)
    if family == "roberta":
        return RobertaConfig(**COMMON, pad_token_id=1)
    if family == "xlm-roberta":
        return XLMRobertaConfig(**COMMON, pad_token_id=1)
    if family == "electra":
        return ElectraConfig(**COMMON, embedding_size=16)
    if family == "albert":
        return AlbertConfig(**COMMON, embedding_size=16, num_hidden_groups=1, inner_group_num=1)
    if family == "mpnet":
        return MPNetConfig(**COMMON, pad_token_id=1)
    if family == "distilbert":
        return DistilBertConfig(
            vocab_size=VOCAB, dim=32, n_layers=NUM_LAYERS, n_heads=4, hidden_dim=37, max_position_embeddings=64
        )
    raise KeyError(family)


# A tiny random timm ViT: 16x16 images, 4x4 patches, 4 blocks of width 32.
TINY_TIMM_VIT = "vit_tiny_patch16_224"
TINY_TIMM_VIT_ARGS = {"img_size": 16, "patch_size": 4, "depth": 4, "embed_dim": 32, "num_heads": 4}


def tiny_dense_config(family: str):
    """A tiny random config of a dense model that switch MoE upcycles: a text family, ``gpt2``, ``llama`` or the
    Hugging Face ``vit`` / ``dinov2`` (16x16 images, 4x4 patches)."""
    if family == "gpt2":
        return GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=4, n_head=4, n_positions=64, pad_token_id=0)
    if family == "llama":
        return LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=40,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            pad_token_id=0,
        )
    if family == "vit":
        return ViTConfig(
            image_size=16,
            patch_size=4,
            num_channels=3,
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=37,
        )
    if family == "dinov2":
        return Dinov2Config(
            image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, mlp_ratio=2
        )
    return tiny_backbone_config(family)


FAMILIES = ["bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "mpnet"]


def padded_batch(batch_size: int, max_len: int, seed: int = 0, pad_token_id: int = 0, min_len: int = 3):
    """Random token ids with per-row lengths, right-padded; returns (input_ids, attention_mask)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=generator)
    lengths[0] = max_len
    input_ids = torch.randint(5, VOCAB, (batch_size, max_len), generator=generator)
    mask = (torch.arange(max_len)[None, :] < lengths[:, None]).long()
    input_ids = torch.where(mask.bool(), input_ids, torch.full_like(input_ids, pad_token_id))
    return input_ids, mask


def split_threshold(scores: torch.Tensor) -> float:
    """A threshold between two well-separated scores near the median, so float noise cannot flip a decision."""
    values = scores.sort().values
    middle = len(values) // 2
    window = range(max(1, middle - 3), min(len(values), middle + 4))
    best = max(window, key=lambda i: values[i] - values[i - 1])
    return float((values[best] + values[best - 1]) / 2)
