"""The shared tester's case type: one technique x backbone family, as a tiny random model, and its helpers.

In the manner of transformers' ``ModelTesterMixin`` and peft's common tester, each :class:`AdaptiveCase` says how
to build a tiny random model, how to make a batch (with padding), which output fields record per-sample compute,
what the plain backbone computes, and how to count the work the layers really did. ``test_shared_invariants.py``
and ``test_shared_fuzz.py`` run every invariant over ``adaptive_cases.CASES``. The technique is read from the model
with ``adaptive_hf.technique_of`` and full compute is ``adaptive_hf.full_compute``: no ``hasattr`` guessing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import transformers
from text_testers import COMMON, VOCAB
from torch import nn

import adaptive_hf

Batch = dict[str, torch.Tensor]
NUM_LABELS = 3
NUM_LAYERS = COMMON["num_hidden_layers"]


@dataclass(frozen=True)
class Mode:
    """Runtime settings under which some rows (or tokens, frames) stop early.

    Args:
        name: Shown in test ids.
        settings: ``settings(model, batch) -> {config field: value}``; may look at the batch (e.g. to put a
            threshold between two rows' scores so both early and late stops happen).
        trim_padding: One at a time, each row is cut to its real length; ``False`` keeps its padding (for
            decoders, left-padded, and for capacity counted over the padded sequence).
        mixed: Whether the settings guarantee that some rows stop early and others do not.
    """

    name: str
    settings: Callable[[nn.Module, Batch], dict[str, Any]] = lambda model, batch: {}
    trim_padding: bool = True
    mixed: bool = True


@dataclass
class AdaptiveCase:
    """One technique x family: a tiny random model and how to check it.

    Args:
        name: Test id, ``"<technique>/<family>[-variant]"``.
        technique: The registered ``TechniqueSpec`` name the model must report.
        builder: ``builder(**config overrides) -> model`` in eval mode, deterministic.
        batch_maker: ``batch_maker(batch_size, seed, min_len) -> inputs`` (text batches are padded).
        modes: Runtime settings to run the adaptive invariants under; the first is the default.
        sample_fields: Output fields with one entry per sample (batch first).
        token_fields: ``(batch, seq)`` output fields, compared on real tokens.
        summed_fields: Output fields summed over the batch, e.g. MoE expert counts.
        reference: ``reference(model, batch) -> logits`` of the plain backbone, or ``None``.
        full_fields: ``full_fields(model, batch, output)`` asserts the compute fields at full compute.
        work: ``work(model, batch) -> (observed, expected, output)``: units of work counted by hooks in eval,
            and what the output fields say must have run; ``None`` when there is nothing to count.
        auto_class: The transformers Auto class that reloads a saved model.
        aux_off: Training-field overrides that turn the auxiliary loss terms off.
        loss_is_task_loss_without_aux: With ``aux_off``, the loss is the cross-entropy of the returned logits.
        aux_parameters: Name prefixes of parameters the training loss must reach (heads, units, routers, gates).
        remote_code: Included in the ``trust_remote_code`` check in a fresh process.
        token_inputs: Whether the model takes token ids (``input_ids``), for the id checks.
        vocab_size: Vocabulary size of token models.
        variants: Structural overrides the full-compute check also runs on (e.g. each pooling), each with the
            error it must raise or ``None``.
        labels_from_ids: The labels are the token ids (a causal LM).
        save_overrides: Structural overrides for the save/load check (e.g. experts that differ from each other).
        never_stopping: Makes the adaptive path run but never stop early (it must then equal the backbone too).
        stopped_early: ``stopped_early(output, batch)``: whether the output shows early stops (so a mixed mode
            really exercises compaction).
        card_words: Words the saved model card (README.md) must contain.
        trainer_step: Whether the stock ``Trainer`` step runs on this case (default: the remote-code cases; a
            Trainer costs about a second, so it runs on a few cases per technique).
    """

    name: str
    technique: str
    builder: Callable[..., nn.Module]
    batch_maker: Callable[..., Batch]
    modes: tuple[Mode, ...] = (Mode("default", mixed=False),)
    sample_fields: tuple[str, ...] = ()
    token_fields: tuple[str, ...] = ()
    summed_fields: tuple[str, ...] = ()
    reference: Callable[[nn.Module, Batch], torch.Tensor] | None = None
    full_fields: Callable[[nn.Module, Batch, Any], None] | None = None
    work: Callable[[nn.Module, Batch], tuple[list[int], list[int], Any]] | None = None
    auto_class: Any = transformers.AutoModelForSequenceClassification
    aux_off: dict[str, Any] | Callable[[nn.Module], dict[str, Any]] = field(default_factory=dict)
    loss_is_task_loss_without_aux: bool = True
    aux_parameters: tuple[str, ...] = ()
    remote_code: bool = False
    token_inputs: bool = True
    vocab_size: int = VOCAB
    variants: tuple[tuple[dict[str, Any], type[Exception] | None], ...] = ()
    labels_from_ids: bool = False
    save_overrides: dict[str, Any] = field(default_factory=dict)
    never_stopping: Callable[[nn.Module], nn.Module] | None = None
    stopped_early: Callable[[Any, Batch], bool] | None = None
    card_words: tuple[str, ...] = ()
    trainer_step: bool | None = None

    def __post_init__(self):
        if self.trainer_step is None:
            self.trainer_step = self.remote_code

    def build(self, **overrides) -> nn.Module:
        """The tiny random model in eval mode (the same weights on every call)."""
        return self.builder(**overrides)

    def shared_model(self) -> nn.Module:
        """One built model per case and process, for checks that leave it as they found it (bad inputs, fuzz)."""
        cached = _SHARED_MODELS.get(self.name)
        if cached is None:
            cached = _SHARED_MODELS[self.name] = self.build()
        return cached

    def batch(self, batch_size: int = 6, seed: int = 0, min_len: int = 3) -> Batch:
        """Inputs for ``batch_size`` rows; text rows get random lengths (row 0 the longest) and padding."""
        return self.batch_maker(batch_size, seed, min_len)

    def labels(self, batch: Batch) -> torch.Tensor:
        """Labels that fit the model: class ids, or the token ids for a causal LM."""
        if self.labels_from_ids:
            return batch["input_ids"].clone()
        rows = next(iter(batch.values())).size(0)
        return torch.arange(rows) % NUM_LABELS

    def aux_off_settings(self, model: nn.Module) -> dict[str, Any]:
        """The config overrides that turn the auxiliary loss terms off for ``model``."""
        return dict(self.aux_off(model) if callable(self.aux_off) else self.aux_off)

    def __repr__(self) -> str:
        return self.name


_SHARED_MODELS: dict[str, nn.Module] = {}
PACKAGE_DIR = str(__import__("pathlib").Path(adaptive_hf.__file__).parent)


@contextlib.contextmanager
def config_values(model: nn.Module, settings: dict[str, Any]) -> Iterator[None]:
    """Sets config fields inside the block and restores them afterwards."""
    saved = {name: getattr(model.config, name) for name in settings}
    try:
        for name, value in settings.items():
            setattr(model.config, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(model.config, name, value)


def rows_of(batch: Batch, row: int, trim: bool) -> Batch:
    """Row ``row`` of a batch, cut to its real length when ``trim`` (right padding only)."""
    single = {key: value[row : row + 1] for key, value in batch.items()}
    length = int(batch["attention_mask"][row].sum()) if "attention_mask" in batch else None
    if trim and length:  # an all-padding row keeps its padding: there is nothing to cut it to
        single = {key: value[:, :length] if value.dim() == 2 else value for key, value in single.items()}
    return single


def real_positions(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per-token logits at real tokens only (a padding position's output is not part of the contract)."""
    if logits.dim() == 3 and "attention_mask" in batch:
        return logits[batch["attention_mask"].bool()]
    return logits


def count_rows(modules, size=lambda args: args[0].size(0)) -> tuple[list[int], Callable[[], None]]:
    """Registers forward hooks that record ``size(args)`` of every call; returns the list and a remover."""
    seen: list[int] = []
    handles = [module.register_forward_hook(lambda m, args, out: seen.append(int(size(args)))) for module in modules]
    return seen, lambda: [handle.remove() for handle in handles]


def run_counted(model, batch, modules, size=lambda args: args[0].size(0)):
    """Runs ``model(**batch)`` without gradients with hooks counting rows at ``modules``."""
    seen, remove = count_rows(modules, size)
    try:
        with torch.no_grad():
            out = model(**batch)
    finally:
        remove()
    return seen, out
