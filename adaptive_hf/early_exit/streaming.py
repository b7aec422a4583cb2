"""Early-exit inference over a stream of image batches, with the continuing images pooled across batches.

Batched early exits leave fewer and fewer images in the batch: with a confident model, a batch of 64 reaches the
last stages with a handful of images. On a CPU those stages then cost nearly as much as with the whole batch,
because they are bound by reading their weights and by per-operation overhead, not by arithmetic. For throughput
over many batches (offline scoring of a dataset, a serving queue), :func:`classify_stream` holds the images that
continue past an exit in a queue in front of the next segment of the backbone and runs that segment once
``pool_rows`` images wait, mixing images of several input batches. Every image still takes the same exit with the
same logits as when it is classified on its own; only the order in which the work is done changes, and an input
batch's result is yielded as soon as all of its images have exited.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch

from ..core.compaction import batch_runs
from ..core.configuration import check_number
from ..core.inputs import report_nonfinite_rows
from ..core.vision_backbones import ImageState, check_pixel_values
from .config import validate_exit_settings
from .policies import PatienceState, decide_exit, initial_state


@dataclass
class _Rows:
    """Images waiting in front of a segment: their features, stream-wide ids and patience state."""

    state: ImageState
    ids: torch.Tensor
    policy_state: PatienceState | None

    @property
    def num_rows(self) -> int:
        return self.ids.numel()

    def select(self, rows: torch.Tensor) -> _Rows:
        policy_state = self.policy_state.select(rows) if self.policy_state is not None else None
        return _Rows(self.state.select(rows), self.ids.index_select(0, rows), policy_state)


def _concatenate(parts: list[_Rows]) -> _Rows:
    if len(parts) == 1:
        return parts[0]
    states = [part.policy_state for part in parts]
    policy_state = PatienceState.cat(states) if states[0] is not None else None
    return _Rows(ImageState.cat([part.state for part in parts]), torch.cat([part.ids for part in parts]), policy_state)


@dataclass
class _PendingBatch:
    """An input batch whose images have not all exited yet."""

    start: int
    logits: torch.Tensor | None
    exit_layer: torch.Tensor
    remaining: int


def classify_stream(model, batches: Iterable[torch.Tensor], pool_rows: int | None = None) -> Iterator:
    """Classifies a stream of image batches with early exits, pooling the continuing images across batches.

    Args:
        model: An early-exit image classifier (:class:`~adaptive_hf.EarlyExitTimmForImageClassification` or
            :class:`~adaptive_hf.EarlyExitViTForImageClassification`) in eval mode. Its config's exit policy and
            threshold apply, as in ``model(pixel_values)``.
        batches: Iterable of ``(batch, channels, height, width)`` normalized float image tensors, or of mappings
            holding them under ``"pixel_values"`` (other keys, e.g. ``labels``, are not used). Batches may differ in
            size.
        pool_rows: How many images must wait in front of a segment of the backbone (the units between two exits)
            before it runs; defaults to the size of the first batch. Larger pools use the hardware better and hold
            more images (and their feature maps) back. Whatever is still waiting when the input ends runs then.

    Yields:
        One :class:`~adaptive_hf.early_exit.vision_modeling.EarlyExitImageClassifierOutput` per input batch, in input
        order, with ``logits`` and ``exit_layer`` as ``model(pixel_values)`` returns them (no ``loss``).
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
        rows = _concatenate(queues[position])
        queues[position] = []
        state, adapter = rows.state, model.adapter
        for index in range(bounds[position], bounds[position + 1]):
            state.hidden_states = adapter.run_layer(index, state)
        k = heads[position]
        logits = model._head_logits(k, state)
        rows.state = state
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
        # DataLoader batches of an image dataset are mappings ({"pixel_values": ..., "labels": ...}).
        pixel_values = batch["pixel_values"] if isinstance(batch, Mapping) else batch
        batch_size = check_pixel_values(pixel_values, model._in_chans(), getattr(model, "timm_model", None))
        if pool_rows is None:
            pool_rows = batch_size
        with torch.inference_mode():
            state = model._embed(pixel_values)
            device = state.hidden_states.device
            ids = torch.arange(next_id, next_id + batch_size, device=device)
            queues[0].append(_Rows(state, ids, initial_state(policy, batch_size, device)))
        pending.append(
            _PendingBatch(next_id, None, torch.full((batch_size,), config.exit_layers[-1], device=device), batch_size)
        )
        next_id += batch_size
        yield from drain(flush=False)
    yield from drain(flush=True)
