"""``Trainer`` callbacks and metric helpers for adaptive models.

* :class:`TwoStageExitTrainingCallback` runs DeeBERT's two-stage scheme inside one ``Trainer.train()``: the
  backbone and final head first, then only the intermediate exit heads with the backbone frozen.
* :class:`ExitStatisticsCallback` adds exit statistics (average exit layer, share of samples per exit layer,
  theoretical speedup) to the metrics of every evaluation.
* :func:`exit_compute_metrics` is a ``compute_metrics`` for the stock ``Trainer`` that understands the early-exit
  outputs (logits plus per-sample exit layer).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class TwoStageExitTrainingCallback(TrainerCallback):
    """Switches a ``two_stage`` early-exit model from stage 1 to stage 2 partway through training (DeeBERT).

    Stage 1 trains the backbone and the final head; stage 2 freezes them and trains the intermediate heads.
    The switch happens once ``state.global_step >= switch_fraction * state.max_steps``, checked after each
    optimizer step (so gradient accumulation never mixes stages). Frozen parameters keep their values: after the
    switch they get no gradients, and the optimizers skip parameters without gradients. The model stays in
    stage 2 after training (``config.exit_training_stage == 2``), which is what a saved two-stage model records.
    Models with another ``exit_training`` are left alone.

    Args:
        switch_fraction: Fraction of the optimizer steps spent in stage 1, in (0, 1).
    """

    def __init__(self, switch_fraction: float = 0.5):
        if isinstance(switch_fraction, bool) or not isinstance(switch_fraction, (int, float)):
            raise TypeError(f"`switch_fraction` must be a number in (0, 1); got {switch_fraction!r}.")
        if not 0.0 < switch_fraction < 1.0:
            raise ValueError(f"`switch_fraction` must be in (0, 1); got {switch_fraction!r}.")
        self.switch_fraction = float(switch_fraction)

    @staticmethod
    def _applies(model) -> bool:
        config = getattr(model, "config", None)
        return getattr(config, "exit_training", None) == "two_stage" and hasattr(model, "set_exit_training_stage")

    def _due(self, state) -> bool:
        return state.max_steps > 0 and state.global_step >= self.switch_fraction * state.max_steps

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None or not self._applies(model):
            if model is not None:
                logger.warning("TwoStageExitTrainingCallback: exit_training is not 'two_stage'; nothing to switch.")
            return
        if self._due(state):
            # Resuming past the switch point.
            model.set_exit_training_stage(2)
        elif model.config.exit_training_stage != 1:
            # The optimizer was built from the parameters trainable now; a model saved in stage 2 has a frozen
            # backbone that the optimizer does not know about, so stage 1 cannot train it.
            raise ValueError(
                "The model is in exit_training_stage=2 at the start of training, so its backbone is frozen and left "
                "out of the optimizer. Call model.set_exit_training_stage(1) before creating the Trainer."
            )

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None and self._applies(model) and model.config.exit_training_stage == 1 and self._due(state):
            logger.info("Two-stage exit training: switching to stage 2 at step %d.", state.global_step)
            model.set_exit_training_stage(2)


class ExitStatisticsCallback(TrainerCallback):
    """Adds exit statistics to each evaluation's metrics.

    A forward hook on the model records the per-sample ``exit_layer`` of the eval-mode forward of each
    evaluation step (other forwards are ignored). At ``on_evaluate`` the callback adds, under the evaluation's
    prefix (``eval_``): ``average_exit_layer``, ``exit_fraction_layer_<L>`` per exit layer and, for models with
    ``exit_flops``, ``theoretical_speedup``. They land in the metrics dict that ``Trainer.evaluate`` returns and in
    ``trainer.state.log_history``. (The ``Trainer`` logs its metrics before ``on_evaluate`` runs, so logging
    integrations such as TensorBoard do not see them; use :func:`exit_compute_metrics` for that.)

    The hook is installed when the ``Trainer`` is created, so pass the callback to ``Trainer(callbacks=[...])``,
    or pass ``model=`` here when adding it later. In distributed evaluation each process reports its own rows.

    Args:
        model: The model to hook now (optional; otherwise hooked at ``on_init_end`` / ``on_train_begin``).
    """

    def __init__(self, model=None):
        self._handle = None
        self._model = None
        self._pending: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self._exit_layers: list[torch.Tensor] = []
        self._token_counts: list[torch.Tensor] = []
        if model is not None:
            self._install(model)

    def _install(self, model) -> None:
        if model is None or self._model is model:
            return
        if self._handle is not None:
            self._handle.remove()
        self._model = model
        self._handle = model.register_forward_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs, output) -> None:
        if module.training:
            return
        exit_layer = getattr(output, "exit_layer", None)
        if exit_layer is None:
            return
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids")
        if mask is not None:
            counts = mask.detach().sum(-1).cpu()
        elif ids is not None:
            counts = torch.full((ids.size(0),), ids.size(-1))
        else:
            counts = None
        self._pending.append((exit_layer.detach().cpu(), counts))

    def reset(self) -> None:
        """Forgets the exit layers recorded so far."""
        self._pending.clear()
        self._exit_layers.clear()
        self._token_counts.clear()

    def statistics(self) -> dict[str, float]:
        """Statistics of the eval-mode forwards recorded since the last reset (empty when there were none)."""
        if not self._exit_layers or self._model is None:
            return {}
        layers = torch.cat(self._exit_layers).long()
        stats: dict[str, float] = {"average_exit_layer": float(layers.double().mean())}
        exit_layers = list(getattr(self._model.config, "exit_layers", sorted(set(layers.tolist()))))
        for layer in exit_layers:
            stats[f"exit_fraction_layer_{layer}"] = float((layers == layer).double().mean())
        counts = torch.cat(self._token_counts).long() if len(self._token_counts) == len(self._exit_layers) else None
        if hasattr(self._model, "exit_flops") and counts is not None and len(counts) == len(layers):
            head_of_layer = {layer: k for k, layer in enumerate(exit_layers)}
            policy_none = self._model.config.exit_policy == "none"
            spent = full = 0.0
            table: dict[int, tuple[list[int], int]] = {}
            for layer, n in zip(layers.tolist(), counts.tolist(), strict=True):
                if n not in table:
                    table[n] = self._model.exit_flops(int(n))
                costs, full_cost = table[n]
                full += full_cost
                spent += full_cost if policy_none else costs[head_of_layer[layer]]
            stats["theoretical_speedup"] = full / spent
        return stats

    def on_init_end(self, args, state, control, model=None, **kwargs):
        self._install(model)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._install(model)
        self.reset()

    def on_prediction_step(self, args, state, control, **kwargs):
        # Each evaluation step is one forward, just before this event; earlier eval-mode forwards (a user's own
        # calls between evaluations) are not part of the evaluation.
        if self._pending:
            exit_layer, counts = self._pending[-1]
            self._exit_layers.append(exit_layer)
            if counts is not None:
                self._token_counts.append(counts)
        self._pending.clear()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        stats = self.statistics()
        self.reset()
        if not stats or metrics is None:
            return
        prefix = next((key[: -len("_runtime")] for key in metrics if key.endswith("_runtime")), "eval")
        named = {f"{prefix}_{key}": value for key, value in stats.items()}
        metrics.update(named)
        if state.log_history and all(state.log_history[-1].get(k) == v for k, v in metrics.items() if k not in named):
            state.log_history[-1].update(named)

    def on_predict(self, args, state, control, metrics=None, **kwargs):
        self.on_evaluate(args, state, control, metrics=metrics, **kwargs)


def exit_compute_metrics(eval_prediction) -> dict[str, float]:
    """``compute_metrics`` for early-exit models under the stock ``Trainer``.

    The ``Trainer`` hands over ``predictions = (logits, exit_layer[, ...])`` for early-exit outputs. Returns
    ``accuracy``, ``f1`` (macro, via the packaged evaluate metric) and, when exit layers are present,
    ``average_exit_layer``.

    Args:
        eval_prediction: The ``transformers.EvalPrediction`` the ``Trainer`` passes.
    """
    from .metrics import load_metric

    predictions = eval_prediction.predictions
    exit_layer = None
    if isinstance(predictions, (tuple, list)):
        logits = predictions[0]
        if len(predictions) > 1 and np.ndim(predictions[1]) == 1:
            exit_layer = np.asarray(predictions[1])
    else:
        logits = predictions
    labels = np.asarray(eval_prediction.label_ids)
    result: dict[str, Any] = load_metric("accuracy").compute(
        predictions=np.asarray(logits).argmax(-1), references=labels
    )
    if exit_layer is not None:
        result["average_exit_layer"] = float(exit_layer.mean())
    return result
