"""Early-exit configs: one subclass of each family's config, with the exit settings as extra fields.

Each ``EarlyExit<Arch>Config`` *is* a ``<Arch>Config`` (so the stock backbone builds from it and plain
checkpoints load into it) with ``model_type = "early_exit_<family>"``.
"""

from __future__ import annotations

from typing import Any

from ..core.adapters.builtin import BUILTIN_TEXT_LAYER_ADAPTERS
from ..core.adapters.text import POOLINGS, TEXT_ENCODER_ADAPTERS, TextEncoderAdapter
from ..core.configuration import (
    FrozenStructureMixin,
    RenamedFieldsMixin,
    check_choice,
    check_number,
    check_structure_unchanged,
    make_family_config_class,
    normalize_layer_list,
)
from .heads import EXIT_HEADS
from .policies import EXIT_POLICIES, NONFINITE_LOGITS, THRESHOLD_POLICIES

EXIT_TRAINING = ("joint", "two_stage", "distill")
# name -> (annotation, default) of the early-exit fields every EarlyExit<Arch>Config adds to its family's config.
EXIT_FIELD_SPECS: dict[str, tuple[str, Any]] = {
    "exit_layers": ("list[int] | None", None),
    "head_pooling": ("str", "mean"),
    "head_type": ("str", "mlp"),
    "exit_policy": ("str", "none"),
    "exit_threshold": ("float | None", None),
    "patience": ("int", 2),
    "exit_training": ("str", "joint"),
    "exit_loss_weights": ("list[float] | None", None),
    "exit_training_stage": ("int", 1),
    "distill_temperature": ("float", 2.0),
    "calibration": ("dict | None", None),
    "nonfinite_logits": ("str", "warn"),
}
EXIT_FIELDS = tuple(EXIT_FIELD_SPECS)
# Old name -> new name of the fields renamed to the names every technique shares; the old names stay accepted (with a
# FutureWarning) for one release.
EXIT_RENAMED_FIELDS = {"exit_pooling": "head_pooling", "exit_head": "head_type"}


def validate_exit_settings(config) -> None:
    """Checks the runtime exit knobs (policy, threshold, patience); called at config creation and each forward.

    Args:
        config: An early-exit config.
    """
    check_structure_unchanged(config)
    check_choice("exit_policy", config.exit_policy, EXIT_POLICIES)
    if config.exit_threshold is not None:
        check_number("exit_threshold", config.exit_threshold, 0.0, 1.0)
        if config.exit_policy not in THRESHOLD_POLICIES + ("none",):
            raise ValueError(
                f"`exit_threshold` applies to the policies {THRESHOLD_POLICIES}; exit_policy={config.exit_policy!r} "
                "uses `patience` instead. Set exit_threshold=None."
            )
    check_number("patience", config.patience, 1, None, integer=True)
    check_choice("nonfinite_logits", config.nonfinite_logits, NONFINITE_LOGITS)


def validate_exit_training(config) -> None:
    """Checks the training fields (scheme, stage, temperature, loss weights); called at creation and at every loss.

    Args:
        config: An early-exit config.
    """
    check_choice("exit_training", config.exit_training, EXIT_TRAINING)
    check_choice("exit_training_stage", config.exit_training_stage, (1, 2))
    check_number("distill_temperature", config.distill_temperature, 0.0, None, low_inclusive=False)
    weights = config.exit_loss_weights
    if weights is None:
        return
    if (
        isinstance(weights, (str, bytes))
        or not isinstance(weights, (list, tuple))
        or len(weights) != len(config.exit_layers)
    ):
        raise ValueError(
            f"`exit_loss_weights` must be a list with one weight per exit ({len(config.exit_layers)} exits at layers "
            f"{config.exit_layers}); got {weights!r}."
        )
    for weight in weights:
        check_number("exit_loss_weights", weight, 0.0, None)
    if sum(weights) <= 0:
        raise ValueError(f"`exit_loss_weights` must have a positive sum; got {weights!r}.")


class EarlyExitConfigMixin(RenamedFieldsMixin, FrozenStructureMixin):
    """Validation and helpers shared by every ``EarlyExit<Arch>Config``.

    Fields (all validated in ``__init__``):
        exit_layers: 1-based layers that carry an exit head; ``None`` = every layer. The last layer always does.
        head_pooling: How a head pools the sequence: ``"mean"``, ``"cls"`` or ``"pooler"`` (BERT/ALBERT/MPNet);
            decoder classifiers (Llama, Qwen2, Qwen3) pool ``"last"`` (the last non-pad token, after the final norm).
            Formerly ``exit_pooling`` (still accepted, deprecated).
        head_type: The exit heads: ``"linear"`` or ``"mlp"``. Formerly ``exit_head`` (still accepted, deprecated).
        exit_policy: ``"none"``, ``"confidence"``, ``"entropy"``, ``"margin"`` or ``"patience"``.
        exit_threshold: Threshold in [0, 1] for the threshold policies; ``None`` = the policy's default.
        patience: Consecutive agreeing heads for ``"patience"`` (PABEE).
        exit_training: ``"joint"``, ``"two_stage"`` (DeeBERT) or ``"distill"`` (FastBERT self-distillation).
        exit_loss_weights: One non-negative weight per exit for ``joint``/``distill``; ``None`` = the 1-based
            layer index of each exit (PABEE's weighting).
        exit_training_stage: For ``two_stage``: 1 trains backbone and final head, 2 trains the other heads.
        distill_temperature: Softmax temperature for ``distill``.
        calibration: The setting chosen by ``adaptive_hf.calibrate`` and its report summary.
        nonfinite_logits: What a forward does when a row's logits hold NaN/inf (from NaN/inf inputs or weights):
            ``"warn"`` (a ``RuntimeWarning`` naming the rows) or ``"error"`` (a ``ValueError``). Either way such a
            row never exits early; it runs to the last exit. Read at every forward.
    """

    backbone_adapter: type[TextEncoderAdapter] = TextEncoderAdapter
    renamed_fields = EXIT_RENAMED_FIELDS

    def __post_init__(self, **kwargs: Any):
        super().__post_init__(**kwargs)
        self.validate_early_exit()

    @property
    def num_backbone_layers(self) -> int:
        return self.backbone_adapter.num_layers_of(self)

    def validate_early_exit(self) -> None:
        """Validates and normalizes every exit field; raises ``ValueError``/``TypeError`` naming the field."""
        num_layers = self.num_backbone_layers
        self.exit_layers = normalize_layer_list("exit_layers", self.exit_layers, num_layers, include_last=True)
        # A text family's own poolings (decoders: "last"); adapters without the attribute (vision) keep the defaults.
        check_choice("head_pooling", self.head_pooling, getattr(self.backbone_adapter, "poolings", POOLINGS))
        if self.head_pooling == "pooler" and not self.backbone_adapter.has_pooler:
            raise ValueError(
                f"`head_pooling='pooler'` needs a family with a trained pooler; {self.backbone_adapter.family} has "
                "none. Use 'mean' or 'cls'."
            )
        check_choice("head_type", self.head_type, EXIT_HEADS)
        validate_exit_settings(self)
        validate_exit_training(self)
        if self.exit_loss_weights is not None:
            self.exit_loss_weights = [float(w) for w in self.exit_loss_weights]
        if self.num_labels < 2:
            raise ValueError(f"`num_labels` must be >= 2 for early-exit classification; got {self.num_labels}.")
        if self.problem_type not in (None, "single_label_classification"):
            raise ValueError(
                f"`problem_type` must be None or 'single_label_classification' for early exits; got "
                f"{self.problem_type!r}."
            )

    def loss_weights(self) -> list[float]:
        """The per-exit loss weights in use (PABEE's layer-index weights unless set)."""
        if self.exit_loss_weights is not None:
            return list(self.exit_loss_weights)
        return [float(layer) for layer in self.exit_layers]


def _make_config_class(adapter: type[TextEncoderAdapter]) -> type:
    return make_family_config_class(
        adapter,
        class_name=f"EarlyExit{adapter.class_prefix}Config",
        model_type=f"early_exit_{adapter.model_type}",
        mixin=EarlyExitConfigMixin,
        fields=EXIT_FIELD_SPECS,
        module=__name__,
    )


EarlyExitBertConfig = _make_config_class(TEXT_ENCODER_ADAPTERS["bert"])
EarlyExitRobertaConfig = _make_config_class(TEXT_ENCODER_ADAPTERS["roberta"])
EarlyExitXLMRobertaConfig = _make_config_class(TEXT_ENCODER_ADAPTERS["xlm-roberta"])
EarlyExitDistilBertConfig = _make_config_class(TEXT_ENCODER_ADAPTERS["distilbert"])
EarlyExitAlbertConfig = _make_config_class(TEXT_ENCODER_ADAPTERS["albert"])
EarlyExitElectraConfig = _make_config_class(TEXT_ENCODER_ADAPTERS["electra"])
EarlyExitMPNetConfig = _make_config_class(TEXT_ENCODER_ADAPTERS["mpnet"])

EARLY_EXIT_CONFIGS: dict[str, type] = {
    cls.backbone_adapter.model_type: cls
    for cls in (
        EarlyExitBertConfig,
        EarlyExitRobertaConfig,
        EarlyExitXLMRobertaConfig,
        EarlyExitDistilBertConfig,
        EarlyExitAlbertConfig,
        EarlyExitElectraConfig,
        EarlyExitMPNetConfig,
    )
}
for _adapter in BUILTIN_TEXT_LAYER_ADAPTERS:  # the other built-in families (ModernBERT, ...)
    if _adapter.model_type not in EARLY_EXIT_CONFIGS:
        EARLY_EXIT_CONFIGS[_adapter.model_type] = _make_config_class(_adapter)
        globals()[EARLY_EXIT_CONFIGS[_adapter.model_type].__name__] = EARLY_EXIT_CONFIGS[_adapter.model_type]


def make_early_exit_config_class(adapter: type[TextEncoderAdapter]) -> type:
    """Builds the early-exit config class for a newly registered adapter.

    Args:
        adapter: A :class:`TextEncoderAdapter` subclass.
    """
    return _make_config_class(adapter)
