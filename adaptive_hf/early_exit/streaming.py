"""Early-exit inference over a stream of batches (images or text), with the continuing rows pooled across batches.

Batched early exits leave fewer and fewer rows in the batch: with a confident model, a batch of 64 reaches the last
layers with a handful of rows. Those layers then cost nearly as much as with the whole batch where they are bound by
reading their weights and by per-operation overhead rather than by arithmetic. For throughput over many batches
(offline scoring of a dataset, a serving queue), the stream holds the rows that continue past an exit in a queue in
front of the next segment of the backbone (the layers up to the next exit) and runs that segment once ``pool_rows``
rows wait, mixing rows of several input batches. Every row still takes the same exit with the same logits as when it
is classified on its own; only the order of the work changes, and an input batch's result is yielded as soon as all
of its rows have exited, in input order.

Images go through :func:`~adaptive_hf.early_exit.vision_streaming.classify_image_stream` (a separate module, so that a
saved text model's code bundle does not carry the vision backbones). Text batches have different padded lengths. Pooled
rows are re-padded to the longest real row of the pool (the adapter's ``concat_states``:
:meth:`~adaptive_hf.core.adapters.text.TextEncoderAdapter.concat_states` pads encoders on the right,
:meth:`~adaptive_hf.core.adapters.decoders.DecoderClassifierAdapter.concat_states` decoders on the left) rather than
bucketed by length: with dynamic padding nearly every batch has its own width, so per-width queues would rarely fill
and would hold rows (and their activations) back; one queue per segment keeps pools full. Re-padding also drops the
padding columns that only the rows which already exited needed, so a segment never computes more columns than its
longest remaining row.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..core.batching import LABEL_COLUMNS
from ..core.compaction import batch_runs
from ..core.configuration import check_number
from ..core.inputs import report_nonfinite_rows
from .config import validate_exit_settings
from .policies import PatienceState, decide_exit, initial_state

# What a text batch may hold: the embedding inputs, plus labels (a DataLoader's batches carry them; not used).
TEXT_STREAM_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", *LABEL_COLUMNS)


@dataclass
class _Rows:
    """Rows waiting in front of a segment: their state, stream-wide ids (ascending) and patience state."""

    state: Any
    ids: torch.Tensor
    policy_state: PatienceState | None

    @property
    def num_rows(self) -> int:
        return self.ids.numel()

    def select(self, rows: torch.Tensor) -> _Rows:
        policy_state = self.policy_state.select(rows) if self.policy_state is not None else None
        return _Rows(self.state.select(rows), self.ids.index_select(0, rows), policy_state)


@dataclass
class _PendingBatch:
    """An input batch whose rows have not all exited yet."""

    start: int
    logits: torch.Tensor | None
    exit_layer: torch.Tensor
    remaining: int


def stream_exits(
    model,
    batches: Iterable[Any],
    pool_rows: int | None,
    embed: Callable[[Any], Any],
    concat_states: Callable[[list], Any],
) -> Iterator:
    """The continuous-batching loop of every early-exit model; the modality enters through two callables.

    Args:
        model: An early-exit model in eval mode (:class:`~adaptive_hf.early_exit.modeling.EarlyExitModelMixin`).
        batches: Iterable of input batches, each handed to ``embed``.
        pool_rows: Rows that must wait in front of a segment before it runs (``None``: the first batch's size).
        embed: Checks one input batch and returns its state before the first layer (``hidden_states``,
            ``num_rows``, ``select``).
        concat_states: The rows of one or more states as one state, in order (text: re-padded).

    Yields:
        One ``model.output_class`` (``logits``, ``exit_layer``; no ``loss``) per input batch, in input order.
    """
    if model.training:
        raise ValueError("classify_stream runs inference; call `model.eval()` first.")
    if pool_rows is not None:
        check_number("pool_rows", pool_rows, 1, integer=True)
    config = model.config
    validate_exit_settings(config)
    policy = config.exit_policy
    last = len(config.exit_layers) - 1
    # Policy `none` evaluates only the final head, so the whole backbone is one segment.
    heads = list(range(last + 1)) if policy != "none" else [last]
    bounds = [0] + [config.exit_layers[k] for k in heads]
    queues: list[list[_Rows]] = [[] for _ in heads]
    pending: deque[_PendingBatch] = deque()
    adapter = model.adapter
    next_id = 0

    def record(finished: _Rows, logits: torch.Tensor, exit_layer: int) -> None:
        end = pending[-1].start + pending[-1].exit_layer.numel()
        for index, first, stop in batch_runs(finished.ids, [batch.start for batch in pending], end):
            batch = pending[index]
            rows = finished.ids[first:stop] - batch.start
            if batch.logits is None:
                batch.logits = logits.new_full((batch.exit_layer.numel(), logits.size(-1)), float("nan"))
            batch.logits.index_copy_(0, rows, logits[first:stop])
            batch.exit_layer.index_fill_(0, rows, exit_layer)
            batch.remaining -= stop - first

    def run_segment(position: int) -> None:
        parts, queues[position] = queues[position], []
        policy_states = [part.policy_state for part in parts]
        rows = _Rows(
            concat_states([part.state for part in parts]),
            torch.cat([part.ids for part in parts]) if len(parts) > 1 else parts[0].ids,
            PatienceState.cat(policy_states) if policy_states[0] is not None else None,
        )
        for index in range(bounds[position], bounds[position + 1]):
            rows.state.hidden_states = adapter.run_layer(index, rows.state)
        k = heads[position]
        logits = model._exit_head_runner(rows.state)(k, rows.state)
        if k == last:
            record(rows, logits, config.exit_layers[k])
            return
        threshold, patience = config.exit_threshold, config.patience
        done, rows.policy_state = decide_exit(policy, logits, threshold, patience, rows.policy_state)
        finished = done.nonzero().squeeze(1)
        if finished.numel():
            record(rows.select(finished), logits.index_select(0, finished), config.exit_layers[k])
        if finished.numel() < rows.num_rows:
            queues[position + 1].append(rows.select((~done).nonzero().squeeze(1)))

    def drain(flush: bool) -> Iterator:
        with torch.inference_mode():
            for position in range(len(heads)):
                waiting = sum(part.num_rows for part in queues[position])
                if waiting and (flush or waiting >= pool_rows):
                    run_segment(position)
        while pending and pending[0].remaining == 0:
            batch = pending.popleft()
            report_nonfinite_rows(batch.logits, config.nonfinite_logits)
            yield model.output_class(loss=None, logits=batch.logits.clone(), exit_layer=batch.exit_layer.clone())

    for batch in batches:
        with torch.inference_mode():
            state = embed(batch)
        batch_size = state.num_rows
        if pool_rows is None:
            pool_rows = batch_size
        device = state.hidden_states.device
        ids = torch.arange(next_id, next_id + batch_size, device=device)
        queues[0].append(_Rows(state, ids, initial_state(policy, batch_size, device)))
        pending.append(
            _PendingBatch(next_id, None, torch.full((batch_size,), config.exit_layers[-1], device=device), batch_size)
        )
        next_id += batch_size
        yield from drain(flush=False)
    yield from drain(flush=True)


def classify_text_stream(model, batches: Iterable[Mapping[str, torch.Tensor]], pool_rows: int | None = None):
    """Classifies a stream of tokenized batches with early exits, pooling the continuing rows across batches.

    Args:
        model: An ``EarlyExit<Arch>ForSequenceClassification`` in eval mode. Its config's exit policy, threshold and
            patience apply, as in ``model(**batch)``.
        batches: Iterable of tokenizer outputs (mappings): ``input_ids`` ``(batch, seq)`` and, for padded batches, an
            ``attention_mask`` (right-padded; decoder classifiers may be padded on either side); optionally
            ``token_type_ids`` and ``position_ids``. ``labels`` may be present and are not used. Batches may differ in
            size and padded length.
        pool_rows: How many rows must wait in front of a segment (the layers up to the next exit) before it runs;
            defaults to the size of the first batch. Whatever is still waiting when the input ends runs then.

    Yields:
        One :class:`~adaptive_hf.core.outputs.EarlyExitSequenceClassifierOutput` per input batch, in input order,
        with ``logits`` and ``exit_layer`` as ``model(**batch)`` returns them (no ``loss``).
    """

    def embed(batch):
        if not isinstance(batch, Mapping) or batch.get("input_ids") is None:
            got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(
                "classify_stream on a text model needs batches of tokenizer outputs: mappings with `input_ids` "
                f"(and `attention_mask` for padded batches); got {got}."
            )
        unknown = sorted(set(batch) - set(TEXT_STREAM_KEYS))
        if unknown:
            raise ValueError(f"classify_stream does not take {unknown}; a text batch may hold {TEXT_STREAM_KEYS}.")
        get = batch.get
        inputs = (get("input_ids"), get("attention_mask"), get("token_type_ids"), get("position_ids"), None, None)
        return model.embed_text_inputs(*inputs)

    return stream_exits(model, batches, pool_rows, embed, model.adapter.concat_states)
