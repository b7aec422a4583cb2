"""``ExpertLoadCallback``: logs the expert load and drop rate of every MoE layer during ``Trainer`` training."""

from __future__ import annotations

import torch
from transformers import TrainerCallback


def _moe_layers(model) -> list[tuple[int, torch.nn.Module]]:
    """``(1-based layer number, MoE module)`` pairs; found by duck typing so remote-code models work too."""
    if model is None:
        return []
    if hasattr(model, "moe_modules") and hasattr(getattr(model, "config", None), "moe_layers"):
        return list(zip(model.config.moe_layers, model.moe_modules(), strict=True))
    modules = [m for m in model.modules() if hasattr(m, "running_counts") and hasattr(m, "reset_statistics")]
    return list(enumerate(modules, start=1))


def expert_load_summary(model, *, per_expert: bool = False, reset: bool = True) -> dict[str, float]:
    """Expert load statistics accumulated by the MoE layers since the last reset (training forwards only).

    Per MoE layer ``n``: ``moe/layer_n/drop_rate`` (dropped / routed real-token assignments),
    ``moe/layer_n/load_max`` (the busiest expert's share times E; 1.0 = perfectly balanced),
    ``moe/layer_n/load_cv`` (coefficient of variation of the per-expert shares) and, with ``per_expert``,
    ``moe/layer_n/expert_e`` (each expert's share).

    Args:
        model: A switch-MoE model (or any module containing MoE layers).
        per_expert: Also report every expert's share.
        reset: Clear the accumulated counts afterwards.
    """
    logs: dict[str, float] = {}
    for number, module in _moe_layers(model):
        counts = module.running_counts
        if counts is None:
            continue
        counts = counts.double().cpu()
        shares = counts / counts.sum().clamp(min=1.0)
        prefix = f"moe/layer_{number}"
        routed = float(module.running_routed)
        logs[f"{prefix}/drop_rate"] = float(module.running_dropped) / routed if routed > 0 else 0.0
        logs[f"{prefix}/load_max"] = float(shares.max()) * counts.numel()
        logs[f"{prefix}/load_cv"] = float(shares.std(unbiased=False) / shares.mean()) if shares.mean() > 0 else 0.0
        if per_expert:
            for expert, share in enumerate(shares.tolist()):
                logs[f"{prefix}/expert_{expert}"] = share
        if reset:
            module.reset_statistics()
    return logs


class ExpertLoadCallback(TrainerCallback):
    """Adds the expert load and drop rate of every MoE layer to each ``Trainer`` log entry.

    The numbers cover the training steps since the previous log (this process's batches). See
    :func:`expert_load_summary` for the keys.

    Args:
        per_expert: Also log each expert's share of the tokens (E values per layer).
    """

    def __init__(self, per_expert: bool = False):
        self.per_expert = per_expert

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        summary = expert_load_summary(model, per_expert=self.per_expert)
        if logs is not None and summary:
            logs.update(summary)
            # The Trainer appends its own copy of this entry to the history before calling the callbacks.
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1].update(summary)
        return control
