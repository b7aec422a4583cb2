"""Frame samplers and their parts: frame orders, the glance network, differentiable top-k, aggregation, stop gate.

Everything here works on per-video tensors: ``scores`` are ``(batch, T)``, frame features ``(batch, k, dim)``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


def uniform_indices(num_frames: int, budget: int, device: torch.device | None = None) -> torch.Tensor:
    """``budget`` evenly spaced frame indices, each at the centre of its segment (all frames when equal).

    Args:
        num_frames: Frames in the clip (T).
        budget: Frames to pick (1..T).
        device: Device of the result.
    """
    if not 1 <= budget <= num_frames:
        raise ValueError(f"`frame_budget` must be in 1..{num_frames}; got {budget}.")
    positions = (torch.arange(budget, dtype=torch.float64) + 0.5) * num_frames / budget
    return positions.floor().long().clamp_(max=num_frames - 1).to(device)


def coverage_order(num_frames: int, device: torch.device | None = None) -> torch.Tensor:
    """All frame indices ordered coarse to fine: 0, T/2, T/4, 3T/4, T/8, ... (each new frame halves a gap).

    A prefix of any length is then spread over the whole clip, which is what an early stop wants.

    Args:
        num_frames: Frames in the clip (T).
        device: Device of the result.
    """
    return torch.tensor(_coverage_order(num_frames), dtype=torch.long, device=device)


@functools.lru_cache(maxsize=32)
def _coverage_order(num_frames: int) -> tuple[int, ...]:
    order: list[int] = []
    seen: set[int] = set()
    for n in range(4 * num_frames):
        # van der Corput: the binary digits of n mirrored behind the point (0, 1/2, 1/4, 3/4, 1/8, ...).
        position, denominator, rest = 0.0, 1.0, n
        while rest:
            denominator *= 2
            position += (rest & 1) / denominator
            rest >>= 1
        index = int(position * num_frames)
        if index not in seen:
            seen.add(index)
            order.append(index)
    order.extend(i for i in range(num_frames) if i not in seen)
    return tuple(order)


class GlanceCNN(nn.Module):
    """The built-in glance network: three strided 3x3 conv + BatchNorm + ReLU layers, then global average pooling.

    Args:
        in_chans: Input channels.
        width: Channels of the first layer (then 2x and 4x).
    """

    def __init__(self, in_chans: int, width: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_chans
        for multiplier in (1, 2, 4):
            layers += [
                nn.Conv2d(channels, width * multiplier, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width * multiplier),
                nn.ReLU(inplace=True),
            ]
            channels = width * multiplier
        self.layers = nn.Sequential(*layers)
        self.num_features = channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images).mean((2, 3))


class GlanceNetwork(nn.Module):
    """Cheap per-frame scorer: downsample, a small feature extractor, a saliency score and a frame classifier.

    Args:
        features: The feature extractor (``GlanceCNN`` or a timm model built with ``num_classes=0``).
        num_features: Its output width.
        num_labels: Classes of the auxiliary frame classifier.
        resolution: Side the frames are downsampled to.
    """

    def __init__(self, features: nn.Module, num_features: int, num_labels: int, resolution: int):
        super().__init__()
        self.features = features
        self.resolution = resolution
        self.score = nn.Linear(num_features, 1)
        self.classifier = nn.Linear(num_features, num_labels)

    def downsample(self, images: torch.Tensor) -> torch.Tensor:
        """Area-averages ``(n, C, H, W)`` images to the glance resolution (no-op when already there)."""
        if tuple(images.shape[-2:]) == (self.resolution, self.resolution):
            return images
        return F.adaptive_avg_pool2d(images, self.resolution)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and frame-classifier logits of ``(n, C, H, W)`` full-resolution frames: ``(n,)``, ``(n, L)``."""
        hidden = self.features(self.downsample(images))
        return self.score(hidden).squeeze(-1), self.classifier(hidden)


def gumbel_like(scores: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise of the shape of ``scores``."""
    uniform = torch.rand_like(scores).clamp_(1e-9, 1.0 - 1e-9)
    return -torch.log(-torch.log(uniform))


def relaxed_topk(keys: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """Soft k-hot relaxation of top-k (Xie & Ermon, 2019): ``k`` successive softmaxes, each damping what the
    previous ones took. Rows sum to ``k``; as the temperature goes to 0 it becomes the hard k-hot of ``keys``.

    Args:
        keys: ``(batch, T)`` (perturbed) scores.
        k: Frames to select.
        temperature: Softmax temperature (> 0).

    Returns:
        ``(batch, T)`` soft selection (each row sums to ``k``).
    """
    khot = torch.zeros_like(keys)
    onehot = torch.zeros_like(keys)
    for _ in range(k):
        keys = keys + torch.log((1.0 - onehot).clamp_min(1e-20))
        onehot = torch.softmax(keys / temperature, dim=-1)
        khot = khot + onehot
    return khot


def plackett_luce_log_prob(scores: torch.Tensor, ordered_choice: torch.Tensor) -> torch.Tensor:
    """Log-probability of drawing ``ordered_choice`` (in that order, without replacement) from
    ``softmax(scores)``: what Gumbel top-k samples.

    Args:
        scores: ``(batch, T)`` logits.
        ordered_choice: ``(batch, k)`` frame indices in the order drawn.
    """
    log_prob = scores.new_zeros(scores.size(0))
    taken = torch.zeros_like(scores, dtype=torch.bool)
    for j in range(ordered_choice.size(1)):
        index = ordered_choice[:, j : j + 1]
        remaining = scores.masked_fill(taken, float("-inf"))
        log_prob = log_prob + scores.gather(1, index).squeeze(1) - torch.logsumexp(remaining, dim=-1)
        taken = taken.scatter(1, index, True)
    return log_prob


class AttentionPooling(nn.Module):
    """Attention pooling over frames: ``softmax_t(w^T tanh(W z_t))``-weighted sum of the frame features.

    Args:
        dim: Feature width.
        hidden_size: Width of the scorer.
    """

    def __init__(self, dim: int, hidden_size: int):
        super().__init__()
        self.hidden = nn.Linear(dim, hidden_size)
        self.out = nn.Linear(hidden_size, 1)

    def frame_logits(self, features: torch.Tensor) -> torch.Tensor:
        """``(..., dim)`` -> ``(...)`` unnormalized attention scores."""
        return self.out(torch.tanh(self.hidden(features))).squeeze(-1)


def aggregate(
    features: torch.Tensor,
    attention_logits: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pools ``(batch, k, dim)`` frame features into ``(batch, dim)``: a mean, or attention when
    ``attention_logits`` are given.

    Args:
        features: Features of the chosen frames.
        attention_logits: ``(batch, k)`` attention scores, or ``None`` for the mean.
        weights: ``(batch, k)`` multiplicative frame weights (straight-through selection weights in training,
            value 1), or ``None``.
        mask: ``(batch, k)`` bool, False for frames not (yet) processed; ``None`` = all valid.
    """
    if attention_logits is None:
        coefficients = features.new_ones(features.shape[:2])
        if mask is not None:
            coefficients = coefficients * mask
        coefficients = coefficients / coefficients.sum(1, keepdim=True)
    else:
        if mask is not None:
            attention_logits = attention_logits.masked_fill(~mask, float("-inf"))
        coefficients = torch.softmax(attention_logits, dim=1)
    if weights is not None:
        coefficients = coefficients * weights
    return torch.einsum("bk,bkd->bd", coefficients, features)


class StopGate(nn.Module):
    """FrameExit-style gate: from the running aggregate and the current class probabilities, the probability that
    the prediction is already right (so processing can stop).

    Args:
        dim: Feature width.
        num_labels: Number of classes.
        hidden_size: Hidden width.
    """

    def __init__(self, dim: int, num_labels: int, hidden_size: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.hidden = nn.Linear(dim + num_labels, hidden_size)
        self.out = nn.Linear(hidden_size, 1)

    def forward(self, aggregate_features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Stop logits ``(rows,)``; the inputs are detached so the gate never bends the classifier."""
        inputs = torch.cat([self.norm(aggregate_features.detach()), torch.softmax(logits.detach(), -1)], -1)
        return self.out(F.relu(self.hidden(inputs))).squeeze(-1)


def stop_gate_flops(dim: int, num_labels: int, hidden_size: int) -> int:
    """FLOPs of one :class:`StopGate` evaluation (the softmax and norm are not counted).

    Args:
        dim: Feature width.
        num_labels: Number of classes.
        hidden_size: Hidden width.
    """
    return 2 * (dim + num_labels) * hidden_size + 2 * hidden_size


def attention_flops(dim: int, hidden_size: int) -> int:
    """FLOPs of scoring one frame with :class:`AttentionPooling` plus its share of the weighted sum.

    Args:
        dim: Feature width.
        hidden_size: Hidden width of the scorer.
    """
    return 2 * dim * hidden_size + 2 * hidden_size + 2 * dim
