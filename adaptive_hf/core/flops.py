"""Per-layer cost model: the theoretical compute that reports and calibration count.

Costs are multiply-accumulates counted as two FLOPs, for one sample. Only matmuls are counted: norms, softmax
and activations are a few percent of a transformer layer and the same for every layer.
"""

from __future__ import annotations


def linear_flops(tokens: int, in_features: int, out_features: int) -> int:
    """FLOPs of a dense layer applied to ``tokens`` vectors.

    Args:
        tokens: Number of input vectors.
        in_features: Input width.
        out_features: Output width.
    """
    return 2 * tokens * in_features * out_features


def encoder_layer_flops(seq_len: int, hidden_size: int, intermediate_size: int) -> int:
    """FLOPs of one transformer encoder layer on one sequence.

    Args:
        seq_len: Sequence length the layer runs on (padding included, since padded positions are computed).
        hidden_size: Model width.
        intermediate_size: Feed-forward width.
    """
    projections = linear_flops(seq_len, hidden_size, 4 * hidden_size)  # q, k, v, output
    attention = 2 * 2 * seq_len * seq_len * hidden_size  # scores and weighted sum
    feed_forward = linear_flops(seq_len, hidden_size, intermediate_size) * 2
    return projections + attention + feed_forward


def decoder_layer_flops(
    seq_len: int,
    hidden_size: int,
    intermediate_size: int,
    *,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    gated: bool = True,
) -> int:
    """FLOPs of one decoder layer (grouped-query attention, gated FFN) on one sequence.

    The attention is counted over every query-key pair: the causal mask halves the useful work, but the attention
    kernels on the padded batch compute the masked half too.

    Args:
        seq_len: Sequence length the layer runs on (padding included).
        hidden_size: Model width.
        intermediate_size: Feed-forward width.
        num_heads: Query heads.
        num_kv_heads: Key/value heads.
        head_dim: Width of one head.
        gated: Whether the FFN has a gate projection (``down(act(gate(x)) * up(x))``).
    """
    query_width, kv_width = num_heads * head_dim, num_kv_heads * head_dim
    projections = linear_flops(seq_len, hidden_size, query_width + 2 * kv_width) + linear_flops(
        seq_len, query_width, hidden_size
    )
    attention = 2 * 2 * seq_len * seq_len * query_width
    feed_forward = linear_flops(seq_len, hidden_size, intermediate_size) * (3 if gated else 2)
    return projections + attention + feed_forward


def classifier_head_flops(hidden_size: int, num_labels: int, *, mlp: bool, pooler: bool, seq_len: int = 1) -> int:
    """FLOPs of one exit head: pooling, optional pooler dense layer, optional hidden layer, classifier.

    Args:
        hidden_size: Model width.
        num_labels: Number of classes.
        mlp: Whether the head has a hidden dense layer before the classifier.
        pooler: Whether a pooler dense layer runs first.
        seq_len: Sequence length, for mean pooling (one add per element).
    """
    flops = seq_len * hidden_size
    if pooler:
        flops += linear_flops(1, hidden_size, hidden_size)
    if mlp:
        flops += linear_flops(1, hidden_size, hidden_size)
    return flops + linear_flops(1, hidden_size, num_labels)


def frame_sampling_flops(
    frames_used,
    frame_flops: int,
    *,
    glance_frames=0,
    glance_frame_flops: int = 0,
    classifier_evals=1,
    classifier_flops: int = 0,
    gate_evals=0,
    gate_flops: int = 0,
):
    """FLOPs of classifying one video from sampled frames (works elementwise on per-video tensors too).

    Args:
        frames_used: Frames the expensive per-frame network ran on.
        frame_flops: FLOPs of the per-frame network (and its share of the aggregation) on one frame.
        glance_frames: Frames the glance network scored.
        glance_frame_flops: FLOPs of the glance network (downsampling and heads included) on one frame.
        classifier_evals: Times the clip classifier ran on an aggregate (once per step for an early stop).
        classifier_flops: FLOPs of one clip-classifier evaluation.
        gate_evals: Stop-gate evaluations.
        gate_flops: FLOPs of one stop-gate evaluation.
    """
    return (
        frames_used * frame_flops
        + glance_frames * glance_frame_flops
        + classifier_evals * classifier_flops
        + gate_evals * gate_flops
    )
