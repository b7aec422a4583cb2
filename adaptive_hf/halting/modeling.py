"""Depth-adaptive halting (ACT, PonderNet) for text encoders, per sample or per token.

``Halting<Arch>ForSequenceClassification`` holds the stock base model under the family's attribute (plain
checkpoints load into it), one :class:`HaltingUnit` per layer and a classifier head.

* ``sample`` granularity: after each layer a unit reads the pooled state and the sample halts as a whole. In
  eval mode halted samples leave the batch.
* ``token`` granularity: a unit reads each token's state and tokens halt on their own. A halted token's state is
  frozen; later layers still use it as key and value but never compute it again (in eval mode only the active
  tokens are packed into the queries and the feed-forward block).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import initialization as hf_init

from ..core.adapters.text import TEXT_ENCODER_ADAPTERS, EncoderState, TextEncoderAdapter, TokenSubset
from ..core.flops import linear_flops
from ..core.heads import ExitHead
from ..core.hub import AdaptiveHubMixin
from ..core.inputs import check_forward_options
from ..core.layer_keyed import LayerKeyedModules
from ..core.modeling import TextBackboneMixin, make_family_model_class
from ..core.outputs import HaltingSequenceClassifierOutput
from .config import HALTING_CONFIGS, validate_halting_settings, validate_halting_training
from .layers import HaltingTracker, HaltingUnit, act_ponder_cost, halting_step, pondernet_kl


class HaltingForSequenceClassificationMixin(TextBackboneMixin, AdaptiveHubMixin):
    """The halting logic shared by every ``Halting<Arch>ForSequenceClassification``."""

    adapter_class: type[TextEncoderAdapter] = TextEncoderAdapter
    auto_class_name = "AutoModelForSequenceClassification"

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        setattr(self, self.base_model_prefix, self.adapter_class.build_base_model(config, add_pooling_layer=False))
        hidden_size = self.adapter_class.hidden_size_of(config)
        self.halting_units = LayerKeyedModules(
            range(1, config.num_ponder_steps + 1),
            [HaltingUnit(hidden_size, config.halting_bias_init) for _ in range(config.num_ponder_steps)],
            config_field="max_ponder_steps",
        )
        dropout = self.adapter_class.classifier_dropout_of(config)
        # A family with its own classification head (ModernBERT's head + classifier) classifies with it, under the
        # stock attribute names so that a plain checkpoint's head loads into it (`head_type` does not apply).
        stock_head = self.adapter_class.stock_head_modules(config)
        for name, module in stock_head.items():
            setattr(self, name, module)
        self._stock_head_names = tuple(stock_head)
        if not stock_head:
            self.classifier = ExitHead(hidden_size, config.num_labels, config.head_type, dropout)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, HaltingUnit):
            # hf_init skips tensors already loaded from a checkpoint
            hf_init.zeros_(module.proj.weight)
            hf_init.constant_(module.proj.bias, module.bias_init)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **unsupported,
    ) -> HaltingSequenceClassifierOutput | tuple:
        """Classifies a batch, halting per sample or per token.

        Args:
            input_ids: ``(batch, seq)`` token ids.
            attention_mask: ``(batch, seq)`` 1 for tokens, 0 for padding.
            token_type_ids: ``(batch, seq)`` segment ids (families that have them).
            position_ids: ``(batch, seq)`` positions.
            inputs_embeds: ``(batch, seq, dim)`` instead of ``input_ids``.
            labels: ``(batch,)`` class ids; adds ``loss`` (task loss plus ponder cost or KL).
            return_dict: Return a tuple when ``False``.
            output_attentions: Accepted as ``None``/``False`` (what peft and the pipelines pass); ``True`` is refused.
            output_hidden_states: Accepted as ``None``/``False``; ``True`` is refused.
            **unsupported: Any other keyword is refused with a ``TypeError`` naming it.
        """
        check_forward_options(type(self).__name__, output_attentions, output_hidden_states, unsupported)
        state = self.embed_text_inputs(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, labels)
        validate_halting_settings(self.config)
        return self._forward_encoded(state, labels, return_dict)

    def _check_halting_units(self) -> None:
        """Raises when ``max_ponder_steps`` was raised above the halting units the model was built with."""
        steps, units = self.config.num_ponder_steps, len(self.halting_units)
        if steps > units:
            raise ValueError(
                f"`max_ponder_steps` asks for {steps} steps, but this model has {units} halting units (it was built "
                f"with max_ponder_steps={units}). Set max_ponder_steps to at most {units}, or build a new model "
                "with the larger value (its new halting units must be trained)."
            )

    def _forward_encoded(self, state: EncoderState, labels, return_dict) -> HaltingSequenceClassifierOutput | tuple:
        self._check_halting_units()
        if not self.training and not self.config.halting_enabled:
            output = self._forward_full_depth(state, labels)
        elif self.config.halting_granularity == "sample":
            output = self._forward_sample(state, labels)
        else:
            output = self._forward_token(state, labels)
        return output.to_tuple() if return_dict is False else output

    # -------------------------------------------------------------------------------------- shared pieces
    def _pool(self, hidden: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """The per-sample vector the sample-level halting units read."""
        return self.adapter.pool(hidden, token_mask, self.config.head_pooling)

    def _classify(self, hidden: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """Logits from token states (ACT passes its mixture of the states, which it then classifies)."""
        if self._stock_head_names:
            return self.adapter.stock_head_logits(self, hidden, token_mask)
        return self.classifier(self._pool(hidden, token_mask))

    def _step_settings(self) -> tuple[str, float, bool, bool, int]:
        """``(method, threshold, enabled, sample, num_steps)``, read from the config once per forward.

        Config attribute reads are slow enough (a few microseconds each through ``PreTrainedConfig``) to show in
        the per-layer cost of a small model at batch 1, so the layer loops never read the config themselves.
        """
        config = self.config
        method = config.halting
        sample = method == "pondernet" and config.pondernet_inference == "sample" and not self.training
        return method, config.effective_threshold(), config.halting_enabled, sample, config.num_ponder_steps

    def _step(self, n: int, lam_input: torch.Tensor, tracker: HaltingTracker, settings: tuple):
        method, threshold, enabled, sample, num_steps = settings
        is_last = n == num_steps - 1
        if not enabled:
            count = lam_input.shape[:-1]
            weight = torch.full(count, 1.0 if is_last else 0.0, device=lam_input.device)
            halted = torch.full(count, is_last, dtype=torch.bool, device=lam_input.device)
            return weight, halted, HaltingTracker(tracker.cumulative, tracker.survival, tracker.steps + 1)
        lam = self.halting_units[n](lam_input)
        return halting_step(method, lam, tracker, threshold, is_last, sample)

    def _loss(self, logits, labels, ponder, kl):
        if labels is None:
            return None
        config = self.config
        validate_halting_training(config)  # training fields may have changed since construction
        loss = F.cross_entropy(logits, labels)
        if config.halting == "act":
            return loss + config.ponder_cost * ponder.mean()
        return loss + config.kl_weight * kl

    def _forward_full_depth(self, state: EncoderState, labels) -> HaltingSequenceClassifierOutput:
        """Inference with halting disabled: the backbone's own layers on the whole batch, no halting bookkeeping.

        This is the full-compute reference the benchmarks time against, so it must cost what the plain backbone
        costs. The outputs are what the halting path gives when nothing halts before the last step.
        """
        config = self.config
        steps_count = config.num_ponder_steps
        for n in range(steps_count):
            state.hidden_states = self.adapter.run_layer(n, state)
        logits = self._classify(state.hidden_states, state.token_mask)
        device = logits.device
        if config.halting_granularity == "sample":
            steps = torch.full((state.num_rows,), steps_count, dtype=torch.long, device=device)
        else:
            steps = state.token_mask.long() * steps_count
        # ACT's ponder cost is N + R, with R = 1 at the single (last) halting step; PonderNet's is N.
        ponder = torch.full((state.num_rows,), float(steps_count + (config.halting == "act")), device=device)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return HaltingSequenceClassifierOutput(loss, logits, steps, ponder)

    # ---------------------------------------------------------------------------------- sample granularity
    def _forward_sample(self, state: EncoderState, labels) -> HaltingSequenceClassifierOutput:
        if self.training:
            return self._forward_sample_train(state, labels)
        device = state.hidden_states.device
        batch_size = state.num_rows
        active = torch.arange(batch_size, device=device)
        tracker = HaltingTracker.start(batch_size, device)
        logits_out = None
        steps_out = torch.zeros(batch_size, dtype=torch.long, device=device)
        ponder_out = torch.zeros(batch_size, device=device)
        mixture = None
        settings = self._step_settings()
        act = settings[0] == "act"
        for n in range(settings[-1]):
            state.hidden_states = self.adapter.run_layer(n, state)
            pooled = self._pool(state.hidden_states, state.token_mask)
            weight, halted, tracker = self._step(n, pooled, tracker, settings)
            if act:
                contribution = weight.to(pooled.dtype)[:, None, None] * state.hidden_states
                mixture = contribution if mixture is None else mixture + contribution
            halting_now = int(halted.sum())
            if halting_now == 0:
                continue
            states = mixture if act else state.hidden_states
            if halting_now == batch_size:  # the whole batch halts together (always so at batch 1): no gathers
                logits_out = self._classify(states, state.token_mask)
                steps_out.fill_(n + 1)
                ponder_out = act_ponder_cost(tracker.steps, weight) if act else ponder_out.fill_(float(n + 1))
                break
            rows = halted.nonzero().squeeze(1)
            logits = self._classify(states.index_select(0, rows), state.token_mask.index_select(0, rows))
            if logits_out is None:
                logits_out = logits.new_full((batch_size, logits.size(-1)), float("nan"))
            target = active.index_select(0, rows)
            logits_out.index_copy_(0, target, logits)
            steps_out.index_fill_(0, target, n + 1)
            if act:
                ponder_out.index_copy_(0, target, act_ponder_cost(tracker.steps[rows], weight[rows]))
            else:
                ponder_out.index_fill_(0, target, float(n + 1))
            if halting_now == halted.numel():
                break
            keep = (~halted).nonzero().squeeze(1)
            active = active.index_select(0, keep)
            state = state.select(keep)
            tracker = tracker.select(keep)
            if mixture is not None:
                mixture = mixture.index_select(0, keep)
        loss = F.cross_entropy(logits_out, labels) if labels is not None else None
        return HaltingSequenceClassifierOutput(loss, logits_out, steps_out, ponder_out)

    def _forward_sample_train(self, state: EncoderState, labels) -> HaltingSequenceClassifierOutput:
        config = self.config
        device = state.hidden_states.device
        batch_size = state.num_rows
        tracker = HaltingTracker.start(batch_size, device)
        running = torch.ones(batch_size, dtype=torch.bool, device=device)
        steps = torch.zeros(batch_size, dtype=torch.long, device=device)
        remainder = torch.zeros(batch_size, device=device)
        mixture = 0.0
        step_logits, step_weights = [], []
        chosen = None
        settings = self._step_settings()
        for n in range(settings[-1]):
            state.hidden_states = self.adapter.run_layer(n, state)
            pooled = self._pool(state.hidden_states, state.token_mask)
            weight, halted, tracker = self._step(n, pooled, tracker, settings)
            newly = halted & running
            if config.halting == "act":
                weight = weight * running
                mixture = mixture + weight.to(pooled.dtype)[:, None, None] * state.hidden_states
                remainder = torch.where(newly, weight, remainder)
            else:
                logits_n = self._classify(state.hidden_states, state.token_mask)
                step_logits.append(logits_n)
                step_weights.append(weight)
                chosen = logits_n if chosen is None else torch.where(newly[:, None], logits_n, chosen)
            steps = torch.where(newly, torch.full_like(steps, n + 1), steps)
            running = running & ~halted
        if config.halting == "act":
            logits = self._classify(mixture, state.token_mask)
            ponder = act_ponder_cost(steps, remainder)
            return HaltingSequenceClassifierOutput(self._loss(logits, labels, ponder, None), logits, steps, ponder)
        probabilities = torch.stack(step_weights, dim=1)  # (batch, steps), rows sum to 1
        expected_steps = (probabilities * torch.arange(1, probabilities.size(1) + 1, device=device)).sum(1)
        loss = None
        if labels is not None:
            validate_halting_training(config)
            per_step = torch.stack([F.cross_entropy(x, labels, reduction="none") for x in step_logits], dim=1)
            kl = pondernet_kl(probabilities, config.prior_lambda).mean()
            loss = (probabilities * per_step).sum(1).mean() + config.kl_weight * kl
        return HaltingSequenceClassifierOutput(loss, chosen, steps, expected_steps)

    # ----------------------------------------------------------------------------------- token granularity
    def _forward_token(self, state: EncoderState, labels) -> HaltingSequenceClassifierOutput:
        if not self.training:
            return self._forward_token_eval(state, labels)
        config = self.config
        hidden = state.hidden_states
        real = state.token_mask.bool()
        device = hidden.device
        tracker = HaltingTracker(
            torch.zeros(real.shape, device=device),
            torch.ones(real.shape, device=device),
            torch.zeros(real.shape, dtype=torch.long, device=device),
        )
        active = real.clone()  # tokens whose state still updates
        running = real.clone()  # tokens the halting rule has not stopped yet
        steps = torch.zeros(real.shape, dtype=torch.long, device=device)
        remainder = torch.zeros(real.shape, device=device)
        output_states = torch.zeros_like(hidden)
        step_weights = []
        expected = config.halting == "pondernet"  # PonderNet training needs every token's state at every step
        settings = self._step_settings()
        for n in range(settings[-1]):
            new = self.adapter.run_layer(n, EncoderState(hidden, state.token_mask, state.layer_kwargs))
            hidden = torch.where(active[..., None], new, hidden)  # halted tokens stay frozen
            weight, halted, tracker = self._step(n, hidden, tracker, settings)
            weight = weight * (real if expected else active)
            output_states = output_states + weight.to(hidden.dtype)[..., None] * hidden
            step_weights.append(weight)
            newly = halted & running
            steps = torch.where(newly, torch.full_like(steps, n + 1), steps)
            remainder = torch.where(newly, weight, remainder)
            running = running & ~halted
            if not expected:
                active = running
        token_count = real.sum(1).clamp(min=1)
        logits = self._classify(output_states, state.token_mask)
        if config.halting == "act":
            ponder = (act_ponder_cost(steps, remainder) * real).sum(1) / token_count
            loss = self._loss(logits, labels, ponder, None)
        else:
            probabilities = torch.stack(step_weights, dim=-1)  # (batch, seq, steps)
            n_range = torch.arange(1, probabilities.size(-1) + 1, device=device)
            ponder = ((probabilities * n_range).sum(-1) * real).sum(1) / token_count
            kl = (pondernet_kl(probabilities, config.prior_lambda) * real).sum() / real.sum().clamp(min=1)
            loss = self._loss(logits, labels, None, kl)
        return HaltingSequenceClassifierOutput(loss, logits, steps, ponder)

    def _forward_token_eval(self, state: EncoderState, labels) -> HaltingSequenceClassifierOutput:
        """Inference: only the active tokens run; their positions and halting state are kept packed.

        The active tokens are listed once, as ``(row, token)`` positions in row-major order, together with their
        halting state; each step runs the layer on them, then drops the ones that halted. Rows whose tokens have
        all halted leave the layer's batch. Per-token outputs (steps, ponder remainder, the ACT mixture) are
        accumulated into dense tensors with one scatter each, so the bookkeeping per layer is a handful of ops
        whatever the batch size.
        """
        config = self.config
        act = config.halting == "act"
        hidden = state.hidden_states
        real = state.token_mask.bool()
        batch, seq = real.shape
        device = hidden.device
        row_index, token_index = real.nonzero(as_tuple=True)
        tokens = hidden[row_index, token_index]  # current states of the active tokens, packed
        tracker = HaltingTracker.start(row_index.numel(), device)
        steps = torch.zeros(batch, seq, dtype=torch.long, device=device)
        remainder = torch.zeros(batch, seq, device=device)
        output_states = torch.zeros_like(hidden) if act else None
        mixture = torch.zeros_like(tokens) if act else None  # ACT's running mixture of the active tokens
        grad_free = not torch.is_grad_enabled()
        settings = self._step_settings()
        num_real = row_index.numel()
        # Every position real (images, unpadded text): the packed order is the row-major flattening, so while
        # nothing has halted the packed states are a view of the layer's output (no gather, no scatter).
        dense_view = num_real == batch * seq
        for n in range(settings[-1]):
            if row_index.numel() == num_real:
                # Nothing has halted yet: the backbone's own layer on the whole batch (it computes exactly these
                # tokens, plus padding as the backbone does) is cheaper than packing them.
                layer_state = EncoderState(hidden, state.token_mask, state.layer_kwargs)
                new_hidden = self.adapter.run_layer(n, layer_state)
                written = dense_view
                if dense_view:
                    hidden = new_hidden
                    tokens = new_hidden.reshape(num_real, -1)
                else:
                    tokens = new_hidden[row_index, token_index]
            else:
                written = False
                if batch == 1:  # the only row runs while it has an active token; no per-row bookkeeping
                    layer_hidden, key_mask, local_rows, counts = hidden, real, row_index, torch.ones(1)
                else:
                    rows, local_rows, counts = torch.unique_consecutive(
                        row_index, return_inverse=True, return_counts=True
                    )
                    if rows.numel() < batch:  # rows with no active token left leave the layer's batch
                        layer_hidden, key_mask = hidden.index_select(0, rows), real.index_select(0, rows)
                    else:
                        layer_hidden, key_mask = hidden, real
                subset = TokenSubset.from_positions(local_rows, token_index, counts, tokens)
                tokens = self.adapter.run_layer_on_tokens(n, layer_hidden, None, key_mask, state.layer_kwargs, subset)
            position = (row_index, token_index)
            # Positions are unique, so plain (non-accumulating) scatters suffice; they are much cheaper on CPU.
            # In-place only without autograd: the old states may be saved for backward (eval mode with grad).
            if not written:  # a dense layer's output already is the new state of every token
                hidden = hidden.index_put_(position, tokens) if grad_free else hidden.index_put(position, tokens)
            weight, halted, tracker = self._step(n, tokens, tracker, settings)
            steps.index_put_(position, tracker.steps)
            if act:
                mixture = torch.addcmul(mixture, weight.to(tokens.dtype)[:, None], tokens)
                output_states.index_put_(position, mixture)
                remainder.index_put_(position, weight)  # the last write, at the halting step, is ACT's R
            keep = (~halted).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            if keep.numel() < halted.numel():
                row_index, token_index = row_index.index_select(0, keep), token_index.index_select(0, keep)
                tokens, tracker = tokens.index_select(0, keep), tracker.select(keep)
                if act:
                    mixture = mixture.index_select(0, keep)
        if not act:  # PonderNet reads each token at its halting step, where its state froze
            output_states = hidden * real[..., None].to(hidden.dtype)
        token_count = real.sum(1).clamp(min=1)
        logits = self._classify(output_states, state.token_mask)
        if act:
            ponder = (act_ponder_cost(steps, remainder) * real).sum(1) / token_count
        else:
            ponder = (steps.float() * real).sum(1) / token_count
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return HaltingSequenceClassifierOutput(loss, logits, steps, ponder)

    # ------------------------------------------------------------------------------------------ cost model
    def halting_flops(
        self, halting_steps: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[int, int]:
        """Theoretical FLOPs of full depth and of what the halting model spent, from its ``halting_steps``.

        Args:
            halting_steps: The output's ``halting_steps`` (per sample or per token).
            attention_mask: ``(batch, seq)`` mask of the inputs (token counts; required for token granularity).

        Returns:
            ``(full, spent)`` summed over the batch. Token granularity counts, for each layer a row still runs,
            the query/output projections, attention and FFN of its active tokens plus the key/value projections of
            all its real tokens (halted tokens are still attended to).
        """
        config = self.config
        hidden = self.adapter_class.hidden_size_of(config)
        num_layers = self.adapter.num_layers
        unit = linear_flops(1, hidden, 1)
        if attention_mask is None:
            attention_mask = torch.ones(halting_steps.shape[:1] + (1,), dtype=torch.long)
        full = spent = 0
        if halting_steps.dim() == 1:
            for steps, length in zip(halting_steps.tolist(), attention_mask.sum(1).tolist()):
                layer = self.adapter.layer_flops(int(length))
                full += layer * num_layers
                spent += steps * (layer + unit)
            return full, spent
        per_token_update = self.adapter_class.token_update_flops(config)  # query and output projections, FFN
        per_token_kv = linear_flops(1, hidden, 2 * hidden)
        for row_steps, row_mask in zip(halting_steps.tolist(), attention_mask.tolist()):
            real_steps = [s for s, m in zip(row_steps, row_mask) if m]
            length = len(real_steps)
            full += self.adapter.layer_flops(length) * num_layers
            for n in range(1, max(real_steps) + 1):
                updated = sum(1 for s in real_steps if s >= n)
                spent += updated * (per_token_update + unit + 4 * length * hidden) + length * per_token_kv
        return full, spent

    def theoretical_speedup(self, halting_steps: torch.Tensor, attention_mask: torch.Tensor | None = None) -> float:
        """Full-depth compute divided by the compute spent (see :meth:`halting_flops`)."""
        full, spent = self.halting_flops(halting_steps, attention_mask)
        return full / spent


def make_halting_model_class(adapter: type[TextEncoderAdapter], config_class: type | None = None) -> type:
    """Builds ``Halting<Arch>ForSequenceClassification`` for a family.

    Args:
        adapter: The family's adapter class.
        config_class: The family's halting config class (default: the built-in one).
    """
    return make_family_model_class(
        adapter,
        class_name=f"Halting{adapter.class_prefix}ForSequenceClassification",
        mixin=HaltingForSequenceClassificationMixin,
        config_class=config_class or HALTING_CONFIGS[adapter.model_type],
        module=__name__,
        doc=f"ACT/PonderNet halting classifier on a {adapter.family} encoder; see the halting mixin.",
    )


HaltingBertForSequenceClassification = make_halting_model_class(TEXT_ENCODER_ADAPTERS["bert"])
HaltingRobertaForSequenceClassification = make_halting_model_class(TEXT_ENCODER_ADAPTERS["roberta"])
HaltingXLMRobertaForSequenceClassification = make_halting_model_class(TEXT_ENCODER_ADAPTERS["xlm-roberta"])
HaltingDistilBertForSequenceClassification = make_halting_model_class(TEXT_ENCODER_ADAPTERS["distilbert"])
HaltingAlbertForSequenceClassification = make_halting_model_class(TEXT_ENCODER_ADAPTERS["albert"])
HaltingElectraForSequenceClassification = make_halting_model_class(TEXT_ENCODER_ADAPTERS["electra"])
HaltingMPNetForSequenceClassification = make_halting_model_class(TEXT_ENCODER_ADAPTERS["mpnet"])

HALTING_MODELS: dict[str, type] = {
    cls.adapter_class.model_type: cls
    for cls in (
        HaltingBertForSequenceClassification,
        HaltingRobertaForSequenceClassification,
        HaltingXLMRobertaForSequenceClassification,
        HaltingDistilBertForSequenceClassification,
        HaltingAlbertForSequenceClassification,
        HaltingElectraForSequenceClassification,
        HaltingMPNetForSequenceClassification,
    )
}
for _model_type, _config_class in HALTING_CONFIGS.items():  # the other built-in families (ModernBERT, ...)
    if _model_type not in HALTING_MODELS:
        _model_class = make_halting_model_class(_config_class.backbone_adapter, _config_class)
        HALTING_MODELS[_model_type] = globals()[_model_class.__name__] = _model_class
