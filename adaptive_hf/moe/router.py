"""Switch router: float32 logits, top-k choice, per-group capacity, and the router's auxiliary losses.

Everything here is tensor arithmetic with static shapes (no ``.item()``, no ``nonzero``, no ``bincount``), so the
routing never waits on the device and ``torch.compile`` traces it into one graph.

Routing produces a :class:`RoutingPlan`: the ``k * N`` (token, expert) assignments sorted by expert, with the
assignments that run (kept) first and the dropped or padding ones after them. Each expert's kept rows are
contiguous, and ``offsets`` gives their cumulative ends, which is what a grouped matmul takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class RoutingPlan:
    """How the assignments of one batch are dispatched to the experts.

    Attributes:
        token_index: ``(M,)`` flat token index of each sorted row (``M = top_k * N``).
        expert_index: ``(M,)`` expert of each sorted row; ``num_experts`` for rows that do not run.
        gate: ``(M,)`` float32 weight of each sorted row's expert output; ``None`` when not requested.
        valid: ``(M,)`` bool, whether the row runs (it is kept); ``None`` when every row runs.
        offsets: ``(E,)`` int32 cumulative kept-row counts per expert (the grouped-matmul offsets).
        inverse: ``(M,)`` sorted row of each assignment; assignment ``j * N + t`` is token ``t``'s ``j``-th choice.
            ``None`` with one expert per token, where ``token_index`` is a permutation of the tokens and the output
            is scattered back with it directly.
        expert_counts: ``(E,)`` assignments each expert processes (after capacity).
        routed_counts: ``(E,)`` assignments each expert was chosen for (before capacity), real tokens only.
        num_real: Scalar count of real (non-padding) tokens.
        dropped_fraction: Scalar fraction of real-token assignments dropped by capacity.
    """

    token_index: torch.Tensor
    expert_index: torch.Tensor
    gate: torch.Tensor | None
    valid: torch.Tensor | None
    offsets: torch.Tensor
    inverse: torch.Tensor | None
    expert_counts: torch.Tensor
    routed_counts: torch.Tensor
    num_real: torch.Tensor
    dropped_fraction: torch.Tensor


def gate_weights(top_probs: torch.Tensor, gate_scaling: str) -> torch.Tensor:
    """Weights of the chosen experts' outputs, ``(N, k)`` float32.

    Args:
        top_probs: ``(N, k)`` router probabilities of the chosen experts.
        gate_scaling: ``"straight_through"`` (value ``1/k``, gradient of ``p``), ``"probability"`` (``p``) or
            ``"normalized"`` (``p`` renormalized over the chosen experts).
    """
    k = top_probs.size(-1)
    if gate_scaling == "straight_through":
        # p / p is exactly 1 in IEEE arithmetic, so the forward is the unweighted expert mean while d/dp = 1 / p.
        weights = top_probs / top_probs.detach()
        return weights if k == 1 else weights * (1.0 / k)
    if gate_scaling == "normalized":
        return top_probs / top_probs.sum(-1, keepdim=True)
    if gate_scaling == "probability":
        return top_probs
    raise ValueError(
        f"`gate_scaling` must be one of 'straight_through', 'probability', 'normalized'; got {gate_scaling!r}."
    )


def group_capacity(real_per_group: torch.Tensor, top_k: int, num_experts: int, capacity_factor: float) -> torch.Tensor:
    """Per-expert capacity of each group: ``ceil(top_k * real_tokens / E * capacity_factor)``.

    Args:
        real_per_group: ``(G,)`` real (non-padding) tokens in each group.
        top_k: Experts per token.
        num_experts: E.
        capacity_factor: Positive factor.
    """
    exact = real_per_group.to(torch.float64) * (top_k * capacity_factor / num_experts)
    # The tolerance keeps products such as 30 * 1.1 / 3 = 11.000000000000002 at 11.
    return torch.ceil(exact - 1e-9).to(torch.long)


def route(
    logits: torch.Tensor,
    token_mask: torch.Tensor | None,
    *,
    top_k: int,
    capacity_factor: float,
    group_size: int,
    gate_scaling: str,
    need_gate: bool = True,
) -> tuple[RoutingPlan, torch.Tensor]:
    """Chooses experts for every token and lays the assignments out for grouped matmuls.

    Args:
        logits: ``(N, E)`` float32 router logits.
        token_mask: ``(N,)`` bool, ``True`` for real tokens; ``None`` when every token is real. Padding tokens are
            assigned to no expert: they take no capacity and produce zero output.
        top_k: Experts per token.
        capacity_factor: ``0`` = dropless; otherwise the per-expert capacity factor (see :func:`group_capacity`).
        group_size: Tokens per capacity group (the sequence length, or ``N`` for the whole batch); ``N`` must be a
            multiple of it.
        gate_scaling: See :func:`gate_weights`.
        need_gate: Compute ``plan.gate`` (an inference-mode top-1 straight-through gate is exactly 1 and unused).

    Returns:
        ``(plan, probs)``: the :class:`RoutingPlan` and the ``(N, E)`` float32 router probabilities.
    """
    num_tokens, num_experts = logits.shape
    device = logits.device
    probs = logits.softmax(dim=-1)
    top_probs, top_experts = probs.topk(top_k, dim=-1)
    # Assignment a = j * N + t: all first choices come before all second choices (Switch/GShard priority).
    assigned = top_experts.t().reshape(-1)
    num_rows = assigned.numel()
    rows = torch.arange(num_rows, device=device) if capacity_factor > 0 or top_k > 1 else None
    ones = torch.ones(num_rows, dtype=torch.long, device=device)
    if token_mask is not None:
        real = token_mask.repeat(top_k)
        key_expert = torch.where(real, assigned, num_experts)  # padding goes to the sentinel expert E
        routed_counts = torch.zeros(num_experts + 1, dtype=torch.long, device=device).scatter_add_(0, key_expert, ones)
        routed_counts = routed_counts[:num_experts]
        num_real = token_mask.sum()
    else:
        key_expert = assigned
        routed_counts = torch.zeros(num_experts, dtype=torch.long, device=device).scatter_add_(0, assigned, ones)
        num_real = torch.tensor(num_tokens, device=device)

    if capacity_factor > 0:
        num_groups = num_tokens // group_size
        group = (rows % num_tokens) // group_size
        # Sorting by (expert, group) keeps the priority order inside each (expert, group) segment, so a row's rank
        # in its segment is its position in that expert's queue for that group.
        key = key_expert * num_groups + group
        order = torch.argsort(key, stable=True)
        sorted_key = key.index_select(0, order)
        segment_sizes = torch.zeros((num_experts + 1) * num_groups, dtype=torch.long, device=device)
        segment_sizes.scatter_add_(0, key, ones)
        segment_start = segment_sizes.cumsum(0) - segment_sizes
        position = rows - segment_start.index_select(0, sorted_key)
        sorted_expert = torch.div(sorted_key, num_groups, rounding_mode="floor")
        sorted_group = sorted_key - sorted_expert * num_groups
        if token_mask is not None:
            real_per_group = token_mask.view(num_groups, group_size).sum(1)
        else:
            real_per_group = torch.full((num_groups,), group_size, dtype=torch.long, device=device)
        capacity = group_capacity(real_per_group, top_k, num_experts, capacity_factor)
        keep = (sorted_expert < num_experts) & (position < capacity.index_select(0, sorted_group))
        # Stable partition: kept rows first (still sorted by expert), dropped and padding rows after them.
        kept_before = keep.long().cumsum(0)
        num_kept = kept_before[-1:]
        new_row = torch.where(keep, kept_before - 1, num_kept + (rows - kept_before))
        order = torch.empty_like(order).scatter_(0, new_row, order)
        expert_sorted = torch.empty_like(sorted_expert).scatter_(
            0, new_row, torch.where(keep, sorted_expert, num_experts)
        )
        valid = expert_sorted < num_experts
    else:
        order = torch.argsort(key_expert, stable=True)
        expert_sorted = key_expert.index_select(0, order)
        valid = expert_sorted < num_experts if token_mask is not None else None

    if valid is None:
        expert_counts = routed_counts
    else:
        expert_counts = torch.zeros(num_experts + 1, dtype=torch.long, device=device)
        expert_counts = expert_counts.scatter_add_(0, expert_sorted, ones)[:num_experts]
    inverse = torch.empty_like(order).scatter_(0, order, rows) if top_k > 1 else None
    gate = None
    if need_gate:
        gate = gate_weights(top_probs, gate_scaling).t().reshape(-1).index_select(0, order)
    if valid is None:  # dropless without padding: nothing is dropped (a constant saves a handful of small ops)
        dropped_fraction = logits.new_zeros(())
    else:
        kept = expert_counts.sum()
        dropped_fraction = (1.0 - kept.float() / (num_real.float() * top_k).clamp(min=1.0)).clamp(min=0.0)
    plan = RoutingPlan(
        token_index=order if top_k == 1 else order % num_tokens,
        expert_index=expert_sorted,
        gate=gate,
        valid=valid,
        offsets=torch.cumsum(expert_counts, 0, dtype=torch.int32),
        inverse=inverse,
        expert_counts=expert_counts,
        routed_counts=routed_counts,
        num_real=num_real,
        dropped_fraction=dropped_fraction,
    )
    return plan, probs


def _all_reduce_sum(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sums a (non-differentiable) tensor over the default process group; returns it and the world size."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor, 1
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor, dist.get_world_size()


def router_losses(
    logits: torch.Tensor,
    probs: torch.Tensor,
    plan: RoutingPlan,
    token_mask: torch.Tensor | None,
    top_k: int,
    *,
    global_batch: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Switch load-balancing loss and the router z-loss, over real tokens only.

    * Load balancing: ``E * sum_e f_e * P_e`` with ``f_e`` the fraction of the ``top_k * tokens`` assignments that
      chose expert ``e`` (before capacity) and ``P_e`` the mean router probability of ``e``. It is 1 when the load
      is uniform.
    * z-loss: ``mean_t logsumexp(logits_t) ** 2``, on the raw logits (before softmax).

    Args:
        logits: ``(N, E)`` float32 raw router logits.
        probs: ``(N, E)`` softmax of ``logits``.
        plan: The routing of these tokens.
        token_mask: ``(N,)`` bool for real tokens, or ``None``.
        top_k: Experts per token.
        global_batch: Sum the counts over all ``torch.distributed`` ranks, and scale this rank's sums so that the
            ranks' mean loss (what DDP's gradient averaging optimizes) equals the loss of the global batch.

    Returns:
        ``(load_balancing_loss, z_loss)`` float32 scalars.
    """
    num_experts = logits.size(-1)
    z = torch.logsumexp(logits, dim=-1).square()
    if token_mask is not None:
        weights = token_mask.to(probs.dtype)
        prob_sum = (probs * weights.unsqueeze(-1)).sum(0)
        z_sum = (z * weights).sum()
    else:
        prob_sum = probs.sum(0)
        z_sum = z.sum()
    scale = 1.0
    if global_batch:
        counts = torch.cat([plan.routed_counts, plan.num_real.view(1)]).to(torch.float32)
        counts, world = _all_reduce_sum(counts.detach())
        scale = float(world)
        routed, num_real = counts[:num_experts], counts[num_experts].clamp(min=1.0)
    else:
        routed, num_real = plan.routed_counts.to(torch.float32), plan.num_real.to(torch.float32).clamp(min=1.0)
    fraction = routed / (num_real * top_k)
    mean_prob = prob_sum * scale / num_real
    load_balancing = num_experts * (fraction * mean_prob).sum()
    z_loss = z_sum * scale / num_real
    return load_balancing, z_loss


class SwitchRouter(nn.Module):
    """Linear router computed in float32, with multiplicative jitter on its input in training.

    Args:
        hidden_size: Input width.
        num_experts: Number of experts (logits per token).
    """

    def __init__(self, hidden_size: int, num_experts: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, hidden_size))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, hidden_states: torch.Tensor, jitter: float = 0.0) -> torch.Tensor:
        """Raw ``(N, E)`` float32 logits for ``(N, hidden)`` inputs.

        Args:
            hidden_states: Flat token activations.
            jitter: Noise amplitude; applied only in training, and only to the router's copy of the input.
        """
        x = hidden_states.to(torch.float32)
        if self.training and jitter > 0:
            x = x * torch.empty_like(x).uniform_(1.0 - jitter, 1.0 + jitter)
        return F.linear(x, self.weight.to(torch.float32))
