"""``SwitchMoEFeedForward``: router + experts, a drop-in for a transformer layer's feed-forward block.

Forward for ``(..., seq, hidden)`` activations:

1. the router scores every token in float32 (jitter on the router's copy of the input in training);
2. :func:`route` picks the top-k experts, applies per-group capacity and sorts the assignments by expert;
3. only the kept rows are gathered and run, one grouped matmul per projection, with the bias, activation and gate
   applied to them alone. When capacity or padding leaves rows out, eager mode reads the kept count on the host
   once per layer to slice them; under ``torch.compile`` every row runs with static shapes and the rows that were
   not kept are masked;
4. each row is weighted by its gate and scattered back; dropped and padding tokens get exactly zero, so the
   layer's residual connection carries them unchanged.

The layer records what happened in :attr:`SwitchMoEFeedForward.last_stats` (router logits, per-expert counts,
dropped fraction, auxiliary losses) for the model's outputs, and accumulates counts for the Trainer callback.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .experts import SwitchExperts
from .router import SwitchRouter, route, router_losses


def token_mask_from_attention_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The ``(batch, seq)`` real-token mask of a 2-D padding mask or a 4-D attention mask; ``None`` if unknown.

    A 4-D mask ``(batch, heads or 1, queries, keys)`` (boolean ``True`` = attend, or additive with large negative
    values for masked pairs) marks token ``i`` real when its query attends its own key. That holds for every real
    token under bidirectional, causal and sliding-window masks and for no padding token, whose key is masked. With
    a cache (more keys than queries) the queries are the last keys.

    Args:
        attention_mask: The model's ``attention_mask`` argument.
    """
    if not isinstance(attention_mask, torch.Tensor):
        return None
    if attention_mask.dim() == 2:
        return attention_mask
    if attention_mask.dim() != 4:
        raise ValueError(
            f"`attention_mask` must be (batch, seq) or (batch, heads, queries, keys); got shape "
            f"{tuple(attention_mask.shape)}."
        )
    mask = attention_mask[:, 0]
    queries, keys = mask.shape[-2:]
    diagonal = mask.diagonal(offset=keys - queries, dim1=-2, dim2=-1)
    if diagonal.dtype == torch.bool:
        return diagonal
    if diagonal.is_floating_point():
        return diagonal > torch.finfo(diagonal.dtype).min / 2
    return diagonal != 0


@dataclass
class MoELayerStats:
    """What one MoE layer did in its last forward.

    Attributes:
        router_logits: ``(N, E)`` raw float32 router logits (``N`` = flattened tokens, padding included).
        expert_counts: ``(E,)`` tokens (assignments) each expert processed.
        routed_counts: ``(E,)`` assignments each expert was chosen for, before capacity.
        dropped_fraction: Scalar fraction of real-token assignments dropped by capacity.
        aux_loss: Scalar Switch load-balancing loss.
        z_loss: Scalar router z-loss.
    """

    router_logits: torch.Tensor
    expert_counts: torch.Tensor
    routed_counts: torch.Tensor
    dropped_fraction: torch.Tensor
    aux_loss: torch.Tensor
    z_loss: torch.Tensor


class SwitchMoEFeedForward(nn.Module):
    """Switch mixture-of-experts feed-forward layer.

    The routing settings are read from ``config`` at every forward, so changing e.g. ``config.capacity_factor``
    after loading takes effect immediately.

    Args:
        config: Any object with the MoE fields (``num_experts``, ``num_experts_per_tok``, ``capacity_factor``,
            ``capacity_group``, ``router_jitter``, ``gate_scaling``, ``global_load_balancing``); usually the model
            config.
        hidden_size: Model width.
        intermediate_size: Hidden width of each expert.
        activation: Activation name in ``transformers.activations.ACT2FN``.
        gated: Gated experts (Llama).
        bias: Whether expert projections have biases.
        dropout: Dropout on the layer output (for families whose FFN module applies it).
    """

    def __init__(
        self,
        config,
        hidden_size: int,
        intermediate_size: int,
        activation: str = "gelu",
        *,
        gated: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.config = config
        self.num_experts = config.num_experts
        self.router = SwitchRouter(hidden_size, config.num_experts)
        self.experts = SwitchExperts(
            config.num_experts, hidden_size, intermediate_size, activation, gated=gated, bias=bias
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.token_mask: torch.Tensor | None = None
        self.last_stats: MoELayerStats | None = None
        self.reset_statistics()

    # ------------------------------------------------------------------------------------------- statistics
    def reset_statistics(self) -> None:
        """Clears the counts accumulated over training steps (read by ``ExpertLoadCallback``)."""
        self.running_counts: torch.Tensor | None = None
        self.running_routed = 0
        self.running_dropped: torch.Tensor | None = None
        self.running_steps = 0

    def _accumulate(self, stats: MoELayerStats) -> None:
        counts = stats.expert_counts.detach()
        dropped = (stats.routed_counts.sum() - counts.sum()).detach()
        if self.running_counts is None:
            self.running_counts = counts.clone()
            self.running_dropped = dropped.clone()
            self.running_routed = stats.routed_counts.detach().sum()
        else:
            self.running_counts = self.running_counts + counts
            self.running_dropped = self.running_dropped + dropped
            self.running_routed = self.running_routed + stats.routed_counts.detach().sum()
        self.running_steps += 1

    def set_token_mask(self, mask: torch.Tensor | None) -> None:
        """Sets the ``(batch, seq)`` padding mask (1 = real token) used by the next forwards.

        The model sets it before running its layers, because the stock layers do not pass the mask to their FFN.
        """
        self.token_mask = mask

    # ---------------------------------------------------------------------------------------------- forward
    def _run_kept_rows(self, x: torch.Tensor, plan, top_k: int, need_gate: bool) -> torch.Tensor:
        """Runs the experts, the bias, the activation and the gate on the kept rows only (one host read of their
        count); dropped and padding tokens get zero output."""
        kept = int(plan.offsets[-1])
        token_index = plan.token_index[:kept]
        out_rows = self.experts(x.index_select(0, token_index), plan.offsets, plan.expert_index[:kept], all_run=True)
        if need_gate:
            out_rows = out_rows * plan.gate[:kept].to(out_rows.dtype).unsqueeze(-1)
        out = x.new_zeros(x.shape[0], out_rows.size(-1), dtype=out_rows.dtype)
        if top_k == 1:  # each token has at most one kept row; the others stay zero
            return out.index_copy_(0, token_index, out_rows)
        return out.index_add_(0, token_index, out_rows)  # a token's k kept rows add up

    def _run_all_rows(self, x: torch.Tensor, plan, top_k: int, need_gate: bool) -> torch.Tensor:
        """Runs every row with static shapes (no host read, for ``torch.compile``); rows that were not kept are
        masked to zero."""
        num_tokens, hidden = x.shape
        rows = x.index_select(0, plan.token_index)
        if plan.valid is not None and torch.is_grad_enabled() and x.requires_grad:
            # The grouped matmul's input gradient is undefined beyond the kept rows; keep it out of x's gradient.
            rows = torch.where(plan.valid.unsqueeze(-1), rows, 0.0)
        out_rows = self.experts(rows, plan.offsets, plan.expert_index, all_run=plan.valid is None)
        if plan.valid is not None:
            # Before the gate: rows that did not run hold arbitrary values, and 0 * inf would reach the router.
            out_rows = torch.where(plan.valid.unsqueeze(-1), out_rows, 0.0)
        if need_gate:
            out_rows = out_rows * plan.gate.to(out_rows.dtype).unsqueeze(-1)
        if top_k == 1:
            # Each token is one sorted row: put the rows back in token order (dropped and padding rows are zero).
            return torch.empty_like(out_rows).index_copy_(0, plan.token_index, out_rows)
        return out_rows.index_select(0, plan.inverse).view(top_k, num_tokens, hidden).sum(0)

    def _flat_mask(self, hidden_states: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor | None:
        if token_mask is None or hidden_states.dim() < 3:
            return None
        batch, seq = hidden_states.shape[0], hidden_states.shape[-2]
        if token_mask.dim() != 2 or token_mask.size(0) != batch:
            raise ValueError(
                f"The MoE token mask must be (batch, seq) = ({batch}, {seq}) with 1 for real tokens; got shape "
                f"{tuple(token_mask.shape)}."
            )
        if token_mask.size(1) > seq:
            # Decoders with a cache pass a mask over past + current tokens; the layer sees the current ones.
            token_mask = token_mask[:, -seq:]
        elif token_mask.size(1) < seq:
            raise ValueError(f"The MoE token mask covers {token_mask.size(1)} positions, the input has {seq}.")
        return token_mask.reshape(-1).to(torch.bool)

    def forward(self, hidden_states: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Routes each token to its experts and returns the weighted expert outputs (zero for dropped tokens).

        Args:
            hidden_states: ``(..., seq, hidden)`` activations.
            token_mask: ``(batch, seq)`` 1 for real tokens, 0 for padding; defaults to the mask set with
                :meth:`set_token_mask`. Padding tokens take no capacity, count in no loss and get zero output.
        """
        config = self.config
        shape = hidden_states.shape
        hidden = shape[-1]
        x = hidden_states.reshape(-1, hidden)
        num_tokens = x.size(0)
        mask = self._flat_mask(hidden_states, token_mask if token_mask is not None else self.token_mask)
        top_k = config.num_experts_per_tok
        if config.capacity_group == "sequence" and hidden_states.dim() >= 2:
            group_size = shape[-2]
        else:
            group_size = num_tokens
        logits = self.router(x, config.router_jitter)
        # A straight-through top-1 gate is exactly 1; it only matters for the router's gradient.
        need_gate = not (top_k == 1 and config.gate_scaling == "straight_through" and not torch.is_grad_enabled())
        plan, probs = route(
            logits,
            mask,
            top_k=top_k,
            capacity_factor=float(config.capacity_factor),
            group_size=group_size,
            gate_scaling=config.gate_scaling,
            need_gate=need_gate,
        )
        if plan.valid is None or torch.compiler.is_compiling():
            out = self._run_all_rows(x, plan, top_k, need_gate)
        else:
            out = self._run_kept_rows(x, plan, top_k, need_gate)
        out = self.dropout(out.view(shape))
        global_batch = bool(config.global_load_balancing) and self.training
        aux_loss, z_loss = router_losses(logits, probs, plan, mask, top_k, global_batch=global_batch)
        self.last_stats = MoELayerStats(
            router_logits=logits,
            expert_counts=plan.expert_counts,
            routed_counts=plan.routed_counts,
            dropped_fraction=plan.dropped_fraction,
            aux_loss=aux_loss,
            z_loss=z_loss,
        )
        if self.training and not torch.compiler.is_compiling():
            self._accumulate(self.last_stats)
        return out
