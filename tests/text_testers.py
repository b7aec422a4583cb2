"""Shared tester for the text encoder families: tiny random configs and batch builders."""

from __future__ import annotations

import torch
from transformers import (
    AlbertConfig,
    BertConfig,
    DebertaV2Config,
    Dinov2Config,
    DistilBertConfig,
    ElectraConfig,
    GPT2Config,
    LlamaConfig,
    ModernBertConfig,
    MPNetConfig,
    Qwen2Config,
    Qwen3Config,
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

# DeBERTa-v3 (relative attention with log buckets, c2p + p2c through shared projections, layer-normed relative
# embeddings, no absolute positions); 6 buckets make sequences of 10 tokens use both the linear and the log range.
DEBERTA_V3 = dict(
    relative_attention=True,
    position_buckets=6,
    max_relative_positions=64,
    pos_att_type=["p2c", "c2p"],
    norm_rel_ebd="layer_norm",
    share_att_key=True,
    position_biased_input=False,
    type_vocab_size=0,
)
DEBERTA_V2_CONV = dict(
    DEBERTA_V3,
    share_att_key=False,
    norm_rel_ebd="none",
    conv_kernel_size=3,
    position_biased_input=True,
    type_vocab_size=2,
)
# Shared-tester variants of DeBERTa-v2 (tiny_backbone_config keys; the model_type of both is "deberta-v2").
DEBERTA_VARIANTS = ["deberta-v2", "deberta-v2-conv"]


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
    if family == "modernbert":
        # Windows of 4 tokens (2 either side) on every other layer: the test batches (10 tokens) exceed them.
        return ModernBertConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=NUM_LAYERS,
            num_attention_heads=4,
            intermediate_size=40,
            max_position_embeddings=64,
            local_attention=4,
            global_attn_every_n_layers=2,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            cls_token_id=1,
            sep_token_id=2,
            embedding_dropout=0.1,
            attention_dropout=0.1,
            mlp_dropout=0.1,
            classifier_pooling="mean",
        )
    if family == "deberta-v2":  # DeBERTa-v3 settings, position buckets scaled down to the tiny sequences
        return DebertaV2Config(**COMMON, **DEBERTA_V3)
    if family == "deberta-v2-conv":  # DeBERTa-v2 xlarge-like: conv after layer 0, separate position projections
        return DebertaV2Config(**COMMON, **DEBERTA_V2_CONV)
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
    if family in DECODER_CONFIGS:
        return tiny_decoder_config(family)
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

# Decoder classifiers (left-padded in the shared cases): model_type -> config class.
DECODER_CONFIGS = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}
DECODER_FAMILIES = list(DECODER_CONFIGS)


def tiny_decoder_config(family: str, **overrides):
    """A tiny random decoder config (grouped-query attention: 4 query heads, 2 key/value heads; pad token 0)."""
    settings = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    return DECODER_CONFIGS[family](**{**settings, **overrides})


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
