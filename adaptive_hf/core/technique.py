"""The technique contract: what each adaptive technique declares once, so generic code can serve all of them.

A technique (early exits, halting, switch MoE, readers, video samplers) describes itself with one
:class:`TechniqueSpec` and registers it with :func:`register_technique` from its own ``spec.py``. Generic code
(calibration, evaluation, benchmarks, the CLI, hardening, the shared tester) reads the spec instead of guessing the
technique with ``hasattr``:

* ``knobs``: the runtime knobs, each with its candidate values in order from most to least compute; calibration
  walks them in that order.
* ``full_compute``: the config values that run the model at full compute (:func:`full_compute`).
* ``structural_fields`` / ``training_fields``: fields fixed at construction, and fields read by the training loss.
* ``cost``: the per-sample compute an output records, as ``(spent, full)``.
* ``replay``: optionally, a fast way to measure every candidate setting at once (early exits replay stored exit
  logits); without it, calibration runs the model once per candidate setting.
* ``cli``: the ``adaptive-hf`` commands the technique serves, each a hook in the technique's own modules
  (:data:`CommandHook`); the CLI dispatches to them by the saved config's ``model_type``.
* ``exportable`` / ``export_refusal``: whether ``adaptive_hf.onnx.export`` (and ``adaptive-hf export``) can write the
  technique's models as ONNX segments that keep the skipping, and if not, why.

``core`` imports no technique: the specs arrive here by registration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

KnobValues = Sequence[Any] | Callable[[Any], Sequence[Any]]


@dataclass(frozen=True)
class Knob:
    """One runtime knob and the values calibration may try, from most to least compute.

    Args:
        field: The config field, e.g. ``"exit_threshold"``.
        values: Candidate values in order from most to least compute, or a function of the config returning them
            (e.g. patience values up to the number of exits).
        when: Other config values the knob is tried with, e.g. ``{"exit_policy": "confidence"}``. Knobs with
            different ``when`` are independent chains of candidates.
        applies: Optional predicate on the config: whether this knob exists for that model (e.g. only Skim-RNN
            has ``skim_threshold``). ``None`` means always.
    """

    field: str
    values: KnobValues
    when: Mapping[str, Any] = field(default_factory=dict)
    applies: Callable[[Any], bool] | None = None

    def applies_to(self, config: Any) -> bool:
        """Whether the knob exists for a model with this config."""
        return self.applies is None or bool(self.applies(config))

    def candidate_settings(self, config: Any) -> list[dict[str, Any]]:
        """The config overrides to try, in order from most to least compute.

        Args:
            config: The model's config (read when ``values`` is a function).
        """
        values = self.values(config) if callable(self.values) else self.values
        return [{**self.when, self.field: value} for value in values]


CostFunction = Callable[[Any, Any, Mapping[str, Any]], tuple[torch.Tensor, torch.Tensor]]
# replay(model, data, chains, **options) -> core.candidates.CandidateOutcomes, or None when it cannot read `data`
ReplayFunction = Callable[..., Any]

# ``hook(args, prepare) -> exit status``: ``args`` is the command's parsed ``argparse.Namespace`` (``model_dir``,
# ``dataset``, ``json``, ...); ``prepare(require_labels)`` loads the model and its text or image data the CLI's way
# and returns an object with ``model``, ``labels``, ``num_samples``, ``batches(batch_size, limit=None)``,
# ``make_batches``, ``tokenizer``, ``dataset``, ``preprocessing`` and ``is_image``. A hook that loads its own data
# (video clips) ignores ``prepare``. Hooks raise ``ValueError``/``TypeError`` for user errors; the CLI prints them
# without a traceback. Passing ``prepare`` in keeps the techniques free of any import of the CLI.
CommandHook = Callable[[Any, Callable[[bool], Any]], int]


@dataclass(frozen=True)
class TechniqueSpec:
    """Everything generic code needs to know about one adaptive technique.

    Args:
        name: Registry key, e.g. ``"early_exit"``.
        model_types: ``model_type`` values (or prefixes ending in ``"_"``) of the technique's configs, e.g.
            ``("early_exit_",)``.
        knobs: Runtime knobs, each with its candidates from most to least compute. Empty for a technique with
            nothing to calibrate.
        full_compute: Config values that run the model at full compute (no skipping), or a function of the config
            returning them.
        structural_fields: Config fields fixed once the model is built (layers, heads, pooling, experts, cells).
        training_fields: Config fields read by the training loss; validated where they are used.
        cost: ``cost(model, outputs, batch) -> (spent, full)``: per-sample FLOPs spent and at full compute, both
            ``(batch,)`` tensors.
        description: One line for reports and the CLI.
        replay: Optional ``replay(model, data, chains, *, batch_size, data_collator, tokenizer, show_progress,
            require_labels) -> CandidateOutcomes``: measures every candidate setting in fewer passes than one per
            setting. It returns ``None`` for data it does not handle, and the generic collector runs instead.
        cli: ``adaptive-hf`` command name (``"calibrate"``, ``"evaluate"``, ``"bench"``, ...) -> its
            :data:`CommandHook` for this technique. A command missing here is refused for the technique's models.
        exportable: Whether ``adaptive_hf.onnx.export`` writes this technique's models as one ONNX graph per
            segment between decision points, run by ``adaptive_hf.onnx.AdaptiveOnnxModel`` with the same policy.
        export_refusal: For a technique that is not exportable: why, in one or two sentences (the export error
            shows it).
        adaptive_modules: Name suffixes of the modules a technique adds (exit heads, halting units, routers);
            ``adaptive_hf.peft_modules_to_save`` lists them for peft's ``modules_to_save`` so they train fully and
            are saved with an adapter.
        adaptive_children: Names of the model's own child modules (top level only) that a technique adds, for
            parts whose name is too common to match as a suffix anywhere in the model (a video model's
            ``attention`` pooling, next to the backbone's attention layers). Read like ``adaptive_modules``.
    """

    name: str
    model_types: tuple[str, ...]
    knobs: tuple[Knob, ...] = ()
    full_compute: Mapping[str, Any] | Callable[[Any], Mapping[str, Any]] = field(default_factory=dict)
    structural_fields: tuple[str, ...] = ()
    training_fields: tuple[str, ...] = ()
    cost: CostFunction | None = None
    description: str = ""
    replay: ReplayFunction | None = None
    cli: Mapping[str, CommandHook] = field(default_factory=dict)
    exportable: bool = False
    export_refusal: str = ""
    adaptive_modules: tuple[str, ...] = ()
    adaptive_children: tuple[str, ...] = ()

    def matches(self, config: Any) -> bool:
        """Whether ``config`` belongs to this technique (by its ``model_type``)."""
        model_type = getattr(config, "model_type", None) or ""
        return any(
            model_type.startswith(known) if known.endswith("_") else model_type == known for known in self.model_types
        )

    def full_compute_settings(self, config: Any) -> dict[str, Any]:
        """The config values that run a model with this config at full compute."""
        return dict(self.full_compute(config) if callable(self.full_compute) else self.full_compute)

    def command(self, name: str) -> CommandHook | None:
        """The technique's hook for the ``adaptive-hf`` command ``name``, or ``None`` when it has none."""
        return self.cli.get(name)

    def knobs_for(self, config: Any) -> list[Knob]:
        """The knobs that exist for a model with this config."""
        return [knob for knob in self.knobs if knob.applies_to(config)]

    def candidate_chains(self, config: Any) -> list[list[dict[str, Any]]]:
        """One chain of candidate settings per knob, each ordered from most to least compute.

        Args:
            config: The model's config.
        """
        return [knob.candidate_settings(config) for knob in self.knobs_for(config)]


TECHNIQUES: dict[str, TechniqueSpec] = {}


def register_technique(spec: TechniqueSpec) -> TechniqueSpec:
    """Registers a technique's spec (once, from the technique's own ``spec.py``).

    Args:
        spec: The technique's :class:`TechniqueSpec`.

    Returns:
        ``spec``, so a module can write ``SPEC = register_technique(TechniqueSpec(...))``.
    """
    existing = TECHNIQUES.get(spec.name)
    if existing is not None and existing is not spec:
        raise ValueError(f"A technique named {spec.name!r} is already registered.")
    TECHNIQUES[spec.name] = spec
    return spec


def technique_of(model_or_config: Any) -> TechniqueSpec:
    """The spec of the technique a model (or config) belongs to.

    Args:
        model_or_config: An adaptive model, or its config.

    Raises:
        TypeError: When it is not an adaptive model of any registered technique.
    """
    config = getattr(model_or_config, "config", model_or_config)
    for spec in TECHNIQUES.values():
        if spec.matches(config):
            return spec
    model_type = getattr(config, "model_type", None)
    raise TypeError(
        f"{type(model_or_config).__name__} (model_type={model_type!r}) is not an adaptive_hf model; the registered "
        f"techniques are {sorted(TECHNIQUES)}."
    )


@contextlib.contextmanager
def config_overrides(config: Any, settings: Mapping[str, Any]) -> Iterator[None]:
    """Sets config values inside the ``with`` block and restores the old ones afterwards.

    Args:
        config: A model config.
        settings: Field values to set (``None`` values first, so e.g. a threshold is cleared before a policy that
            forbids one is set).
    """
    saved = {name: getattr(config, name) for name in settings}
    try:
        apply_settings(config, settings)
        yield
    finally:
        for name, value in saved.items():
            setattr(config, name, value)


def apply_settings(config: Any, settings: Mapping[str, Any]) -> None:
    """Writes a candidate's values into a config (``None`` values first).

    Args:
        config: A model config.
        settings: Field values.
    """
    ordered = sorted(settings.items(), key=lambda item: item[1] is not None)
    for name, value in ordered:
        setattr(config, name, value)


@contextlib.contextmanager
def full_compute(model: Any) -> Iterator[Any]:
    """Runs any adaptive model at full compute inside the ``with`` block, then restores its runtime knobs.

    Args:
        model: An adaptive model of any registered technique.

    Example:
        >>> with adaptive_hf.full_compute(model):
        ...     reference = model(**batch).logits
    """
    with config_overrides(model.config, technique_of(model).full_compute_settings(model.config)):
        yield model


def compute_cost(model: Any, outputs: Any, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample theoretical FLOPs an adaptive model spent on a batch, and what full compute would spend.

    One cost method for every technique: each technique declares it once in its spec (``TechniqueSpec.cost``) and
    counts it from what the output records (exit layers, halting steps, tokens read, frames used).

    Args:
        model: An adaptive model of any registered technique.
        outputs: The model's output for ``batch`` (eval mode).
        batch: The model inputs of that forward (e.g. ``input_ids`` + ``attention_mask``, or ``pixel_values``).

    Returns:
        ``(spent, full)``: two ``(batch,)`` float64 tensors of FLOPs per sample.

    Raises:
        TypeError: When the model is not an adaptive model, or its technique declares no cost.
    """
    spec = technique_of(model)
    if spec.cost is None:
        raise TypeError(f"The {spec.name!r} technique declares no per-sample cost (TechniqueSpec.cost is None).")
    spent, full = spec.cost(model, outputs, batch)
    return torch.as_tensor(spent, dtype=torch.float64).cpu(), torch.as_tensor(full, dtype=torch.float64).cpu()
