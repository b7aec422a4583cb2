"""Halting configs: one subclass of each family's config with the ACT / PonderNet fields."""

from __future__ import annotations

from typing import Any

from ..core.adapters.base import FAMILY_ADAPTERS
from ..core.adapters.builtin import BUILTIN_TEXT_LAYER_ADAPTERS
from ..core.adapters.text import TEXT_ENCODER_ADAPTERS, TextEncoderAdapter
from ..core.configuration import (
    FrozenStructureMixin,
    RenamedFieldsMixin,
    check_choice,
    check_number,
    check_structure_unchanged,
    make_family_config_class,
)

HALTING_METHODS = ("act", "pondernet")
HALTING_GRANULARITIES = ("sample", "token")
PONDERNET_INFERENCE = ("threshold", "sample")
HALTING_POOLINGS = ("mean", "cls")  # the encoders'; a family's are its adapter's poolings but "pooler"
DEFAULT_HALTING_THRESHOLDS = {"act": 0.99, "pondernet": 0.5}
HALTING_FIELDS: dict[str, tuple[str, Any]] = {
    "halting": ("str", "act"),
    "halting_granularity": ("str", "sample"),
    "halting_threshold": ("float | None", None),
    "halting_enabled": ("bool", True),
    "ponder_cost": ("float", 0.01),
    "max_ponder_steps": ("int | None", None),
    "prior_lambda": ("float", 0.2),
    "kl_weight": ("float", 0.01),
    "pondernet_inference": ("str", "threshold"),
    "head_pooling": ("str", "mean"),
    "halting_bias_init": ("float", -2.0),
    "head_type": ("str", "mlp"),
}
# Old name -> new name of the fields renamed to the names every technique shares; the old names stay accepted (with a
# FutureWarning) for one release.
HALTING_RENAMED_FIELDS = {"halting_pooling": "head_pooling", "classifier_head": "head_type"}


def validate_halting_settings(config) -> None:
    """Checks the runtime halting knobs; called at config creation and at every forward.

    Args:
        config: A halting config.
    """
    check_structure_unchanged(config)
    check_choice("halting", config.halting, HALTING_METHODS)
    check_choice("halting_granularity", config.halting_granularity, HALTING_GRANULARITIES)
    check_choice("halting_enabled", config.halting_enabled, (True, False))
    check_choice("pondernet_inference", config.pondernet_inference, PONDERNET_INFERENCE)
    # Checked here too (not only at creation): halting allows fewer poolings than the shared pooling code.
    check_choice("head_pooling", config.head_pooling, halting_poolings(config.backbone_adapter))
    if config.halting_threshold is not None:
        check_number("halting_threshold", config.halting_threshold, 0.0, 1.0, low_inclusive=False)
    num_layers = config.backbone_adapter.num_layers_of(config)
    if config.max_ponder_steps is not None:
        check_number("max_ponder_steps", config.max_ponder_steps, 1, num_layers, integer=True)
    if config.halting_granularity == "token" and not config.backbone_adapter.supports_token_subsets:
        supported = sorted(k for k, a in FAMILY_ADAPTERS.items() if a.supports_token_subsets)
        if config.backbone_adapter.causal:
            raise ValueError(
                f"`halting_granularity='token'` is not sound on the causal {config.backbone_adapter.family} decoder: "
                "a token that halts early is still read as key and value by every later token, at a stale depth, "
                "and the last token, which the classifier reads, decides the prediction from those stale states. "
                f"Use halting_granularity='sample'; token-level halting supports {supported}."
            )
        raise ValueError(
            f"`halting_granularity='token'` is not available for {config.backbone_adapter.family}; token-level "
            f"halting supports {supported}. Use halting_granularity='sample'."
        )


def halting_poolings(adapter) -> tuple[str, ...]:
    """The poolings ``halting_pooling`` accepts for a family: its adapter's, except the trained pooler.

    Args:
        adapter: The family's adapter class.
    """
    return tuple(pooling for pooling in getattr(adapter, "poolings", HALTING_POOLINGS) if pooling != "pooler")


def validate_halting_training(config) -> None:
    """Checks the fields the training loss reads; called at creation and at every loss.

    Args:
        config: A halting config.
    """
    check_number("ponder_cost", config.ponder_cost, 0.0, None)
    check_number("prior_lambda", config.prior_lambda, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_number("kl_weight", config.kl_weight, 0.0, None)


class HaltingConfigMixin(RenamedFieldsMixin, FrozenStructureMixin):
    """Validation and helpers shared by every ``Halting<Arch>Config``.

    Fields (validated in ``__init__``; the runtime ones again at each forward):
        halting: ``"act"`` (Graves 2016) or ``"pondernet"`` (Banino et al. 2021).
        halting_granularity: ``"sample"`` (the whole input stops) or ``"token"`` (each token stops on its own).
        halting_threshold: ACT: halt once the cumulative halting probability reaches it (1 - epsilon).
            PonderNet: halt once the cumulative probability of having halted reaches it. In (0, 1]. ``None`` (the
            default) uses the method's own default: 0.99 for ACT, 0.5 for PonderNet.
        halting_enabled: ``False`` runs every layer and reproduces the backbone (the halting units are ignored).
        ponder_cost: ACT's tau, weight of the ponder cost N + R in the loss.
        max_ponder_steps: Layers at most (``None`` = every layer). The model builds one halting unit per step, so
            after construction it can only be lowered, not raised above the units it was built with.
        prior_lambda: PonderNet's geometric prior parameter.
        kl_weight: PonderNet's beta, weight of the KL term to the prior.
        pondernet_inference: ``"threshold"`` (deterministic) or ``"sample"`` (Bernoulli halting).
        head_pooling: Pooling for the classifier and the per-sample halting units: ``"mean"`` or ``"cls"``;
            ``"last"`` for decoder classifiers (the last non-pad token after the final norm).
            Formerly ``halting_pooling`` (still accepted, deprecated).
        halting_bias_init: Initial bias of the halting units (negative = start by using most layers).
        head_type: The classifier head: ``"linear"`` or ``"mlp"``. Formerly ``classifier_head`` (still accepted,
            deprecated). Families with their own classification head (ModernBERT, decoders' ``score``) classify
            with that head instead, as their stock ``...ForSequenceClassification`` does.
    """

    backbone_adapter: type[TextEncoderAdapter] = TextEncoderAdapter
    renamed_fields = HALTING_RENAMED_FIELDS

    def __post_init__(self, **kwargs: Any):
        super().__post_init__(**kwargs)
        self.validate_halting()

    def validate_halting(self) -> None:
        """Validates every halting field; raises ``ValueError``/``TypeError`` naming the field."""
        validate_halting_settings(self)
        validate_halting_training(self)
        check_number("halting_bias_init", self.halting_bias_init)
        check_choice("head_pooling", self.head_pooling, halting_poolings(self.backbone_adapter))
        check_choice("head_type", self.head_type, ("linear", "mlp"))
        stock_type = self.backbone_adapter.config_defaults.get("head_type")
        if stock_type is not None and self.head_type != stock_type:
            raise ValueError(
                f"`head_type` must be {stock_type!r} for {self.backbone_adapter.family}: the classifier is the "
                f"family's own head (as in its ForSequenceClassification model); got {self.head_type!r}."
            )
        if self.num_labels < 2:
            raise ValueError(f"`num_labels` must be >= 2 for halting classifiers; got {self.num_labels}.")

    @property
    def num_ponder_steps(self) -> int:
        """Layers available to the model (``max_ponder_steps`` or every layer)."""
        return self.max_ponder_steps or self.backbone_adapter.num_layers_of(self)

    def effective_threshold(self) -> float:
        """The halting threshold in use (the method's default when ``halting_threshold`` is None)."""
        if self.halting_threshold is None:
            return DEFAULT_HALTING_THRESHOLDS[self.halting]
        return self.halting_threshold


def make_halting_config_class(adapter: type[TextEncoderAdapter]) -> type:
    """Builds ``Halting<Arch>Config`` for a family.

    Args:
        adapter: The family's adapter class.
    """
    return make_family_config_class(
        adapter,
        class_name=f"Halting{adapter.class_prefix}Config",
        model_type=f"halting_{adapter.model_type}",
        mixin=HaltingConfigMixin,
        fields=HALTING_FIELDS,
        module=__name__,
    )


HaltingBertConfig = make_halting_config_class(TEXT_ENCODER_ADAPTERS["bert"])
HaltingRobertaConfig = make_halting_config_class(TEXT_ENCODER_ADAPTERS["roberta"])
HaltingXLMRobertaConfig = make_halting_config_class(TEXT_ENCODER_ADAPTERS["xlm-roberta"])
HaltingDistilBertConfig = make_halting_config_class(TEXT_ENCODER_ADAPTERS["distilbert"])
HaltingAlbertConfig = make_halting_config_class(TEXT_ENCODER_ADAPTERS["albert"])
HaltingElectraConfig = make_halting_config_class(TEXT_ENCODER_ADAPTERS["electra"])
HaltingMPNetConfig = make_halting_config_class(TEXT_ENCODER_ADAPTERS["mpnet"])

HALTING_CONFIGS: dict[str, type] = {
    cls.backbone_adapter.model_type: cls
    for cls in (
        HaltingBertConfig,
        HaltingRobertaConfig,
        HaltingXLMRobertaConfig,
        HaltingDistilBertConfig,
        HaltingAlbertConfig,
        HaltingElectraConfig,
        HaltingMPNetConfig,
    )
}
for _adapter in BUILTIN_TEXT_LAYER_ADAPTERS:  # the other built-in families (ModernBERT, ...)
    if _adapter.model_type not in HALTING_CONFIGS:
        HALTING_CONFIGS[_adapter.model_type] = make_halting_config_class(_adapter)
        globals()[HALTING_CONFIGS[_adapter.model_type].__name__] = HALTING_CONFIGS[_adapter.model_type]
