"""Early-exit sequence classifiers for Hugging Face text encoders.

``EarlyExit<Arch>ForSequenceClassification`` holds the stock base model under the family's usual attribute
(``bert``, ``roberta``, ...), so plain checkpoints load into it, plus one :class:`ExitHead` per exit layer.

* Training mode runs every layer and every head; ``loss`` is the configured training objective.
* Eval mode is batched adaptive inference: after each exit head the policy decides which rows stop, and those
  rows are removed from the tensors that the next layers compute.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..core.adapters.text import TEXT_ENCODER_ADAPTERS, EncoderState, TextEncoderAdapter
from ..core.flops import classifier_head_flops
from ..core.hub import AdaptiveHubMixin
from ..core.inputs import check_forward_options, report_nonfinite_rows
from ..core.layer_keyed import LayerKeyedModules
from ..core.modeling import TextBackboneMixin
from ..core.outputs import EarlyExitSequenceClassifierOutput
from .config import EARLY_EXIT_CONFIGS, validate_exit_settings, validate_exit_training
from .heads import ExitHead
from .policies import count_exits, initial_state
from .streaming import classify_text_stream


def _scatter_rows(rows: torch.Tensor | None, values: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``values`` of the given original ``rows`` in a ``(batch_size, ...)`` tensor, NaN elsewhere (``None``: all)."""
    if rows is None:
        return values
    out = values.new_full((batch_size, *values.shape[1:]), float("nan"))
    return out.index_copy_(0, rows, values)


def _assemble_exits(
    finished: list[tuple[torch.Tensor | None, torch.Tensor, int]], batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's logits and exit layers from the groups of rows that exited together, in the original row order.

    Args:
        finished: ``(original rows or None for every row, their logits, their exit layer)`` per exit group.
        batch_size: Rows in the batch.
    """
    rows, logits, layer = finished[0]
    if rows is None:  # the whole batch exited together (always so at batch 1): nothing to scatter
        return logits, torch.full((batch_size,), layer, dtype=torch.long, device=logits.device)
    logits_out = logits.new_empty((batch_size, logits.size(-1)))
    exit_layer = torch.empty(batch_size, dtype=torch.long, device=logits.device)
    for rows, logits, layer in finished:
        logits_out.index_copy_(0, rows, logits)
        exit_layer.index_fill_(0, rows, layer)
    return logits_out, exit_layer


class EarlyExitModelMixin(AdaptiveHubMixin):
    """The modality-independent early-exit loop: training schemes, adaptive inference, two-stage freezing, card.

    A subclass provides ``self.adapter`` (``num_layers``, ``run_layer(index, state)`` returning the new
    ``state.hidden_states``), a state with ``hidden_states``, ``num_rows`` and ``select(rows)``,
    ``self.exit_heads``, :meth:`_head_logits` and :meth:`backbone_parameters`. The final exit's parameters come
    from :meth:`final_exit_parameters`, so a subclass can make the backbone's own classifier the last exit;
    ``output_class`` is the ``ModelOutput`` returned (fields ``loss``, ``logits``, ``exit_layer``, ``exit_logits``).
    """

    output_class: type = EarlyExitSequenceClassifierOutput

    def backbone_parameters(self):
        """Parameters of the backbone (trained in stage 1 of ``two_stage``, frozen in stage 2)."""
        raise NotImplementedError

    def final_exit_parameters(self):
        """Parameters of the final exit's classifier, trained and frozen together with the backbone."""
        return self.exit_heads[-1].parameters()

    def _head_logits(self, k: int, state) -> torch.Tensor:
        raise NotImplementedError

    def card_tags(self) -> list[str]:
        """Hub tags naming the backbone family and task, for the model card."""
        return [self.adapter_class.family, self.pipeline_tag()]

    def set_exit_training_stage(self, stage: int) -> None:
        """Switches the ``two_stage`` scheme: 1 trains backbone and final head, 2 freezes them and trains the rest.

        Args:
            stage: 1 or 2.
        """
        if stage not in (1, 2):
            raise ValueError(f"`exit_training_stage` must be 1 or 2; got {stage!r}.")
        if stage == 2 and len(self.config.exit_layers) < 2:
            raise ValueError("`exit_training_stage=2` trains the intermediate heads, but `exit_layers` has none.")
        self.config.exit_training_stage = stage
        self._apply_training_stage()

    def _apply_training_stage(self) -> None:
        frozen = self.config.exit_training == "two_stage" and self.config.exit_training_stage == 2
        for parameter in list(self.backbone_parameters()) + list(self.final_exit_parameters()):
            parameter.requires_grad_(not frozen)

    def _forward_all_exits(self, state: EncoderState, labels, output_exit_logits: bool):
        """Training: every layer runs; heads run as the training scheme needs; the loss combines them."""
        config = self.config
        validate_exit_training(config)  # training fields may have changed since construction
        scheme, stage = config.exit_training, config.exit_training_stage
        final_only = scheme == "two_stage" and stage == 1
        frozen_backbone = scheme == "two_stage" and stage == 2
        last = len(config.exit_layers) - 1
        head_of_layer = {layer: k for k, layer in enumerate(config.exit_layers)}
        no_grad = torch.no_grad if frozen_backbone else contextlib.nullcontext
        exit_logits: list[torch.Tensor | None] = [None] * len(config.exit_layers)
        for index in range(self.adapter.num_layers):
            with no_grad():
                state.hidden_states = self.adapter.run_layer(index, state)
            k = head_of_layer.get(index + 1)
            if k is None or (final_only and k != last):
                continue
            with no_grad() if k == last and frozen_backbone else contextlib.nullcontext():
                exit_logits[k] = self._head_logits(k, state)
        logits = exit_logits[last]
        loss = None
        if labels is not None:
            loss = self._training_loss(exit_logits, labels)
        batch_size = logits.size(0)
        exit_layer = torch.full((batch_size,), config.exit_layers[-1], dtype=torch.long, device=logits.device)
        all_logits = None
        if output_exit_logits:
            all_logits = tuple(x if x is not None else torch.full_like(logits, float("nan")) for x in exit_logits)
        report_nonfinite_rows(logits, config.nonfinite_logits)
        return self.output_class(loss=loss, logits=logits, exit_layer=exit_layer, exit_logits=all_logits)

    def _training_loss(self, exit_logits: list[torch.Tensor | None], labels: torch.Tensor) -> torch.Tensor:
        config = self.config
        validate_exit_training(config)
        weights = config.loss_weights()
        last = len(exit_logits) - 1
        scheme, stage = config.exit_training, config.exit_training_stage
        if scheme == "joint":
            total = sum(w * F.cross_entropy(x, labels) for w, x in zip(weights, exit_logits))
            return total / sum(weights)
        if scheme == "two_stage":
            if stage == 1:
                return F.cross_entropy(exit_logits[last], labels)
            early = list(zip(weights[:last], exit_logits[:last]))
            return sum(w * F.cross_entropy(x, labels) for w, x in early) / sum(w for w, _ in early)
        # distill: the final head learns from the labels, earlier heads from the final head (FastBERT).
        loss = F.cross_entropy(exit_logits[last], labels)
        if last > 0:
            temperature = config.distill_temperature
            teacher = F.softmax(exit_logits[last].detach() / temperature, dim=-1)
            distill = sum(
                w * F.kl_div(F.log_softmax(x / temperature, dim=-1), teacher, reduction="batchmean")
                for w, x in zip(weights[:last], exit_logits[:last])
            )
            loss = loss + distill * temperature**2 / sum(weights[:last])
        return loss

    def _exit_head_runner(self, state):
        """``(k, state) -> logits`` of exit head ``k`` in eval mode, for the rows of ``state``.

        Called once per forward and again after each compaction, so a subclass can prepare per-row work (the pooling
        weights) once instead of at every head. By default, :meth:`_head_logits`.
        """
        return self._head_logits

    def _forward_adaptive(self, state: EncoderState, labels, output_exit_logits: bool):
        """Eval: rows leave the batch at the exit their policy chooses; later layers never see them.

        Per exit head the host waits for the device once (how many rows exit); until the first row exits nothing is
        gathered or copied, and with policy ``none`` (full compute) only the final head runs.
        """
        config = self.config
        policy = config.exit_policy
        exit_layers = config.exit_layers
        last = len(exit_layers) - 1
        adapter = self.adapter  # a property that checks its cache: once per forward, not once per layer
        num_layers = adapter.num_layers
        head_at: list[int | None] = [None] * (num_layers + 1)
        for k, layer in enumerate(exit_layers):
            if k == last or policy != "none" or output_exit_logits:
                head_at[layer] = k
        batch_size = state.num_rows
        threshold, patience = config.exit_threshold, config.patience
        policy_state = initial_state(policy, batch_size, state.hidden_states.device)
        run_head = self._exit_head_runner(state)
        active: torch.Tensor | None = None  # original row of each remaining row; None while no row has exited
        finished: list[tuple[torch.Tensor | None, torch.Tensor, int]] = []  # (original rows, logits, exit layer)
        all_logits: list[tuple[torch.Tensor | None, torch.Tensor]] | None = [] if output_exit_logits else None
        for index in range(num_layers):
            state.hidden_states = adapter.run_layer(index, state)
            k = head_at[index + 1]
            if k is None:
                continue
            logits = run_head(k, state)
            if all_logits is not None:
                all_logits.append((active, logits))
            if k == last:
                finished.append((active, logits, index + 1))
                break
            if policy == "none":
                continue
            exiting, done, policy_state = count_exits(policy, logits, threshold, patience, policy_state)
            rows = logits.size(0)
            if exiting == 0:
                continue
            if exiting == rows:
                finished.append((active, logits, index + 1))
                break
            # Sizes known on the host: no second wait for the device (nonzero would wait to size its output).
            leaving = torch.nonzero_static(done, size=exiting).squeeze(1)
            staying = torch.nonzero_static(~done, size=rows - exiting).squeeze(1)
            finished.append(
                (
                    leaving if active is None else active.index_select(0, leaving),
                    logits.index_select(0, leaving),
                    index + 1,
                )
            )
            active = staying if active is None else active.index_select(0, staying)
            state = state.select(staying)
            if policy_state is not None:
                policy_state = policy_state.select(staying)
            run_head = self._exit_head_runner(state)
        logits_out, exit_layer = _assemble_exits(finished, batch_size)
        report_nonfinite_rows(logits_out, config.nonfinite_logits)
        loss = F.cross_entropy(logits_out, labels) if labels is not None else None
        exit_logits = None
        if all_logits is not None:
            exit_logits = tuple(_scatter_rows(rows, logits, batch_size) for rows, logits in all_logits)
            exit_logits += tuple(torch.full_like(logits_out, float("nan")) for _ in range(len(exit_logits), last + 1))
        return self.output_class(loss=loss, logits=logits_out, exit_layer=exit_layer, exit_logits=exit_logits)

    # ----------------------------------------------------------------------------------------------- model card
    def model_card_details(self) -> tuple[list[str], str]:
        config = self.config
        tags = ["adaptive-hf", "early-exit", *self.card_tags()]
        rows = [
            ("exit_policy", config.exit_policy),
            ("exit_threshold", config.exit_threshold),
            ("patience", config.patience),
            ("exit_layers", config.exit_layers),
            ("head_pooling", config.head_pooling),
            ("head_type", config.head_type),
            ("exit_training", config.exit_training),
        ]
        body = "## Exit policy\n\n| setting | value |\n|---|---|\n"
        body += "".join(f"| `{name}` | `{value}` |\n" for name, value in rows)
        body += "\nChange any of these after loading through `model.config`; they are read at every forward.\n"
        return tags, body


class EarlyExitForSequenceClassificationMixin(TextBackboneMixin, EarlyExitModelMixin):
    """The early-exit logic shared by every ``EarlyExit<Arch>ForSequenceClassification``.

    Combined with a family's ``PreTrainedModel`` base by :func:`make_early_exit_model_class`.
    """

    adapter_class: type[TextEncoderAdapter] = TextEncoderAdapter
    auto_class_name = "AutoModelForSequenceClassification"

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        base_model = self.adapter_class.build_base_model(config, add_pooling_layer=config.head_pooling == "pooler")
        setattr(self, self.base_model_prefix, base_model)
        hidden_size = self.adapter_class.hidden_size_of(config)
        dropout = self.adapter_class.classifier_dropout_of(config)
        # A family with its own classification head (ModernBERT's head + classifier) keeps it as the final exit,
        # under the stock attribute names so that a plain checkpoint's head loads into it: new heads only before it.
        stock_head = self.adapter_class.stock_head_modules(config)
        for name, module in stock_head.items():
            setattr(self, name, module)
        self._stock_head_names = tuple(stock_head)
        layers = config.exit_layers[:-1] if stock_head else config.exit_layers
        self.exit_heads = LayerKeyedModules(
            layers,
            [ExitHead(hidden_size, config.num_labels, config.head_type, dropout) for _ in layers],
            config_field="exit_layers",
        )
        self.post_init()
        self._apply_training_stage()

    def final_exit_parameters(self):
        """Parameters of the final exit: the family's stock head where it has one, else the last exit head."""
        if not self._stock_head_names:
            return super().final_exit_parameters()
        return (p for name in self._stock_head_names for p in getattr(self, name).parameters())

    def backbone_parameters(self):
        """Parameters of the base model (embeddings, layers, pooler)."""
        return getattr(self, self.base_model_prefix).parameters()

    # ----------------------------------------------------------------------------------------------- cost model
    def head_flops(self, seq_len: int) -> int:
        """Theoretical FLOPs of one intermediate exit head on one sequence."""
        config = self.config
        return classifier_head_flops(
            self.adapter_class.hidden_size_of(config),
            config.num_labels,
            mlp=config.head_type == "mlp",
            pooler=config.head_pooling == "pooler",
            seq_len=seq_len if config.head_pooling == "mean" else 1,
        )

    def exit_flops(self, seq_len: int) -> tuple[list[int], int]:
        """Theoretical cost of exiting at each exit head, and of the full-depth model (policy ``none``).

        Args:
            seq_len: Tokens in the sequence.

        Returns:
            ``(costs, full_cost)``: ``costs[k]`` is the FLOPs spent by a sample that exits at head ``k`` (all layers
            up to it and every head evaluated on the way); ``full_cost`` is every layer plus the final head.
        """
        layer = self.adapter.layer_flops(seq_len)
        head = self.head_flops(seq_len)
        costs = [layer * exit_layer + head * (k + 1) for k, exit_layer in enumerate(self.config.exit_layers)]
        if not self._stock_head_names:
            return costs, layer * self.adapter.num_layers + head
        final = self.adapter_class.stock_head_flops(self.config, seq_len)
        costs[-1] += final - head  # the final exit is the family's own head
        return costs, layer * self.adapter.num_layers + final

    # -------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_exit_logits: bool | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **unsupported,
    ) -> EarlyExitSequenceClassifierOutput | tuple:
        """Classifies a batch, exiting early per sample in eval mode.

        Args:
            input_ids: ``(batch, seq)`` token ids.
            attention_mask: ``(batch, seq)`` 1 for tokens, 0 for padding.
            token_type_ids: ``(batch, seq)`` segment ids (families that have them).
            position_ids: ``(batch, seq)`` positions.
            inputs_embeds: ``(batch, seq, dim)`` instead of ``input_ids``.
            labels: ``(batch,)`` class ids; adds ``loss``.
            output_exit_logits: Also return every head's logits. With policy ``none`` in eval mode this evaluates
                every head on every row (what calibration uses).
            return_dict: Return a tuple when ``False``.
            output_attentions: Accepted as ``None``/``False`` (what peft and the pipelines pass); ``True`` is refused.
            output_hidden_states: Accepted as ``None``/``False``; ``True`` is refused.
            **unsupported: Any other keyword is refused with a ``TypeError`` naming it.
        """
        check_forward_options(type(self).__name__, output_attentions, output_hidden_states, unsupported)
        state = self.embed_text_inputs(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, labels)
        validate_exit_settings(self.config)
        if self.training:
            output = self._forward_all_exits(state, labels, bool(output_exit_logits))
        else:
            output = self._forward_adaptive(state, labels, bool(output_exit_logits))
        if return_dict is False:
            return output.to_tuple()
        return output

    def _head_logits(self, k: int, state: EncoderState) -> torch.Tensor:
        if self._stock_head_names and k == len(self.config.exit_layers) - 1:
            return self.adapter.stock_head_logits(self, state.hidden_states, state.token_mask)
        pooled = self.adapter.pool(state.hidden_states, state.token_mask, self.config.head_pooling)
        return self.exit_heads[k](pooled)

    def _exit_head_runner(self, state: EncoderState):
        """Eval-mode heads as bare ops; masked mean pooling as one batched product with weights made once.

        The weights ``mask / token count`` depend only on the rows, so they are computed when the rows change (once
        per forward and after each compaction), not at every head. A family's own final head runs as it is.
        """
        run_head = self._intermediate_head_runner(state)
        if not self._stock_head_names:
            return run_head
        last = len(self.config.exit_layers) - 1
        adapter = self.adapter

        def run_with_stock_head(k: int, current: EncoderState) -> torch.Tensor:
            if k == last:
                return adapter.stock_head_logits(self, current.hidden_states, current.token_mask)
            return run_head(k, current)

        return run_with_stock_head

    def _intermediate_head_runner(self, state: EncoderState):
        pooling = self.config.head_pooling
        heads = self.exit_heads
        adapter = self.adapter
        if pooling != "mean":

            def run_pooled(k: int, current: EncoderState) -> torch.Tensor:
                return heads[k](adapter.pool(current.hidden_states, current.token_mask, pooling))

            return run_pooled
        mask = state.token_mask.to(state.hidden_states.dtype)
        weights = (mask / mask.sum(-1, keepdim=True).clamp(min=1.0)).unsqueeze(1)  # (rows, 1, seq)

        def run_mean(k: int, current: EncoderState) -> torch.Tensor:
            states = adapter.exit_states(current.hidden_states)
            return heads[k].inference(torch.bmm(weights, states).squeeze(1))

        return run_mean

    def classify_stream(self, batches, pool_rows: int | None = None):
        """Eval-mode inference over many batches, pooling the rows that continue past an exit across batches.

        Each row gets the exit and logits that ``model(**batch)`` gives it (up to float rounding); the later layers
        run on about ``pool_rows`` rows at a time, re-padded to the longest row of the pool, instead of the few left
        of one batch at that batch's padded length. See :func:`adaptive_hf.early_exit.streaming.classify_text_stream`.

        Args:
            batches: Iterable of tokenizer outputs (``input_ids``, ``attention_mask``, ...), of any sizes and lengths.
            pool_rows: Rows that must wait in front of a segment before it runs (default: the first batch's size).

        Yields:
            One output (``logits``, ``exit_layer``) per input batch, in input order.
        """
        return classify_text_stream(self, batches, pool_rows)

    # ----------------------------------------------------------------------------------------------- model card
    def pipeline_tag(self) -> str:
        return "text-classification"


def make_early_exit_model_class(adapter: type[TextEncoderAdapter], config_class: type) -> type:
    """Builds ``EarlyExit<Arch>ForSequenceClassification`` for an adapter and its early-exit config class.

    Args:
        adapter: The family's :class:`TextEncoderAdapter`.
        config_class: The family's early-exit config class.
    """
    name = f"EarlyExit{adapter.class_prefix}ForSequenceClassification"
    namespace = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": (
            f"Early-exit sequence classifier on a {adapter.family} backbone. See "
            ":class:`EarlyExitForSequenceClassificationMixin` for the behaviour and ``forward`` arguments."
        ),
        "config_class": config_class,
        "adapter_class": adapter,
        "base_model_prefix": adapter.pretrained_model_class.base_model_prefix,
    }
    return type(name, (EarlyExitForSequenceClassificationMixin, adapter.pretrained_model_class), namespace)


EarlyExitBertForSequenceClassification = make_early_exit_model_class(
    TEXT_ENCODER_ADAPTERS["bert"], EARLY_EXIT_CONFIGS["bert"]
)
EarlyExitRobertaForSequenceClassification = make_early_exit_model_class(
    TEXT_ENCODER_ADAPTERS["roberta"], EARLY_EXIT_CONFIGS["roberta"]
)
EarlyExitXLMRobertaForSequenceClassification = make_early_exit_model_class(
    TEXT_ENCODER_ADAPTERS["xlm-roberta"], EARLY_EXIT_CONFIGS["xlm-roberta"]
)
EarlyExitDistilBertForSequenceClassification = make_early_exit_model_class(
    TEXT_ENCODER_ADAPTERS["distilbert"], EARLY_EXIT_CONFIGS["distilbert"]
)
EarlyExitAlbertForSequenceClassification = make_early_exit_model_class(
    TEXT_ENCODER_ADAPTERS["albert"], EARLY_EXIT_CONFIGS["albert"]
)
EarlyExitElectraForSequenceClassification = make_early_exit_model_class(
    TEXT_ENCODER_ADAPTERS["electra"], EARLY_EXIT_CONFIGS["electra"]
)
EarlyExitMPNetForSequenceClassification = make_early_exit_model_class(
    TEXT_ENCODER_ADAPTERS["mpnet"], EARLY_EXIT_CONFIGS["mpnet"]
)

EARLY_EXIT_MODELS: dict[str, type] = {
    cls.adapter_class.model_type: cls
    for cls in (
        EarlyExitBertForSequenceClassification,
        EarlyExitRobertaForSequenceClassification,
        EarlyExitXLMRobertaForSequenceClassification,
        EarlyExitDistilBertForSequenceClassification,
        EarlyExitAlbertForSequenceClassification,
        EarlyExitElectraForSequenceClassification,
        EarlyExitMPNetForSequenceClassification,
    )
}
for _model_type, _config_class in EARLY_EXIT_CONFIGS.items():  # the other built-in families (ModernBERT, ...)
    if _model_type not in EARLY_EXIT_MODELS:
        _model_class = make_early_exit_model_class(_config_class.backbone_adapter, _config_class)
        EARLY_EXIT_MODELS[_model_type] = globals()[_model_class.__name__] = _model_class
