"""Switch mixture-of-experts settings.

The MoE layout lives as flat fields (``num_experts``, ``moe_layers``, ``num_experts_per_tok``, ...) on the
model's config, the same way the early-exit fields do: ``SwitchMoE<Arch>Config`` *is* the family's config
(``BertConfig``, ...) plus these fields, with ``model_type = "switch_moe_<family>"``, so ``from_pretrained``
rebuilds the experts from ``config.json`` alone.

:class:`SwitchMoEConfig` is the standalone form of the same fields, passed to ``adaptive_hf.upcycle``. It is a
``PreTrainedConfig`` (so it can be saved and loaded by itself), but only the fields in :data:`MOE_FIELDS` are
copied into the upcycled model's config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedConfig

from ..core.adapters.base import FAMILY_ADAPTERS, BackboneAdapter
from ..core.adapters.builtin import BUILTIN_ADAPTERS
from ..core.configuration import (
    FrozenStructureMixin,
    check_choice,
    check_number,
    check_structure_unchanged,
    normalize_layer_list,
)

CAPACITY_GROUPS = ("sequence", "batch")
GATE_SCALINGS = ("straight_through", "probability", "normalized")

# name -> default. Every field of SwitchMoEConfig that a model config carries.
MOE_DEFAULTS: dict[str, Any] = {
    "num_experts": 8,
    "moe_layers": None,
    "num_experts_per_tok": 1,
    "capacity_factor": 1.25,
    "capacity_group": "sequence",
    "router_jitter": 0.0,
    "router_z_loss_coef": 1e-3,
    "router_aux_loss_coef": 1e-2,
    "expert_noise": 0.0,
    "gate_scaling": "straight_through",
    "add_aux_loss_without_labels": False,
    "global_load_balancing": True,
    "output_router_logits": False,
}
MOE_FIELDS = tuple(MOE_DEFAULTS)
MOE_ANNOTATIONS: dict[str, str] = {
    "num_experts": "int",
    "moe_layers": "list[int] | None",
    "num_experts_per_tok": "int",
    "capacity_factor": "float",
    "capacity_group": "str",
    "router_jitter": "float",
    "router_z_loss_coef": "float",
    "router_aux_loss_coef": "float",
    "expert_noise": "float",
    "gate_scaling": "str",
    "add_aux_loss_without_labels": "bool",
    "global_load_balancing": "bool",
    "output_router_logits": "bool",
}


def supports_moe(adapter: type[BackboneAdapter]) -> bool:
    """Whether switch MoE applies to a family: its adapter has an ``ffn_slot`` and ``task_classes``."""
    return adapter.ffn_slot is not None and bool(adapter.task_classes)


def moe_adapter_for(model_type: str) -> type[BackboneAdapter]:
    """The adapter of a family that switch MoE supports, or a ``ValueError`` listing the supported ones.

    Args:
        model_type: E.g. ``"bert"``; ``"switch_moe_bert"`` also works.
    """
    if model_type.startswith("switch_moe_"):
        model_type = model_type[len("switch_moe_") :]
    adapter = FAMILY_ADAPTERS.get(model_type)
    if adapter is None or not supports_moe(adapter):
        supported = ", ".join(sorted(k for k, a in FAMILY_ADAPTERS.items() if supports_moe(a)))
        raise ValueError(
            f"Unsupported architecture for switch MoE: model_type={model_type!r}. Supported families: {supported}. "
            "To add one, give its adapter (adaptive_hf.core.adapters.base.BackboneAdapter) an `ffn_slot` and "
            "`task_classes` and call adaptive_hf.register_family(YourAdapter)."
        )
    return adapter


def _check_bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{field}` must be True or False; got {value!r} ({type(value).__name__}).")
    return value


def validate_moe_runtime(config) -> None:
    """Checks the MoE knobs that are read at every forward (they may be changed after loading).

    Args:
        config: A config carrying the :data:`MOE_FIELDS`.
    """
    check_structure_unchanged(config)
    check_number("num_experts_per_tok", config.num_experts_per_tok, 1, config.num_experts, integer=True)
    check_number("capacity_factor", config.capacity_factor, 0.0, None)
    check_choice("capacity_group", config.capacity_group, CAPACITY_GROUPS)
    check_number("router_jitter", config.router_jitter, 0.0, 1.0, high_inclusive=False)
    check_number("router_z_loss_coef", config.router_z_loss_coef, 0.0, None)
    check_number("router_aux_loss_coef", config.router_aux_loss_coef, 0.0, None)
    check_choice("gate_scaling", config.gate_scaling, GATE_SCALINGS)
    _check_bool("add_aux_loss_without_labels", config.add_aux_loss_without_labels)
    _check_bool("global_load_balancing", config.global_load_balancing)
    _check_bool("output_router_logits", config.output_router_logits)


def validate_moe_settings(config, num_layers: int | None) -> None:
    """Validates and normalizes every MoE field; raises ``ValueError``/``TypeError`` naming the field.

    Args:
        config: A config carrying the :data:`MOE_FIELDS`.
        num_layers: Number of layers of the backbone, or ``None`` when unknown (standalone settings): then
            ``moe_layers`` is only checked to be positive 1-based indices.
    """
    check_number("num_experts", config.num_experts, 1, None, integer=True)
    if num_layers is not None:
        config.moe_layers = normalize_layer_list("moe_layers", config.moe_layers, num_layers, include_last=False)
    elif config.moe_layers is not None:
        layers = config.moe_layers
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or len(layers) == 0:
            raise TypeError(f"`moe_layers` must be None or a non-empty list of 1-based layer indices; got {layers!r}.")
        for layer in layers:
            check_number("moe_layers", layer, 1, None, integer=True)
        if len(set(layers)) != len(layers):
            raise ValueError(f"`moe_layers` must not repeat a layer; got {list(layers)}.")
        config.moe_layers = sorted(layers)
    check_number("expert_noise", config.expert_noise, 0.0, None)
    validate_moe_runtime(config)


def moe_settings_dict(config) -> dict[str, Any]:
    """The :data:`MOE_FIELDS` of ``config`` as a plain dict.

    Args:
        config: A :class:`SwitchMoEConfig` or a ``SwitchMoE<Arch>Config``.
    """
    return {name: getattr(config, name) for name in MOE_FIELDS}


class SwitchMoEConfig(PreTrainedConfig):
    """Switch mixture-of-experts settings, for ``adaptive_hf.upcycle`` and the ``SwitchMoE<Arch>Config`` fields.

    Args:
        num_experts: Experts per MoE layer (E).
        moe_layers: 1-based indices of the layers whose feed-forward block becomes an MoE layer; ``None`` = every
            layer.
        num_experts_per_tok: Experts per token (top-k); 1 is the Switch Transformer. Named as in Mixtral rather
            than ``top_k``, which transformers would take for a text-generation setting. ``top_k=`` is accepted
            here as an alias.
        capacity_factor: Per-expert capacity is ``ceil(k * tokens_in_group / E * capacity_factor)`` with
            ``k = num_experts_per_tok``; tokens beyond it are dropped (the layer outputs zero for them, the
            residual carries them). ``0`` = dropless.
        capacity_group: ``"sequence"`` (capacity counted per sequence) or ``"batch"`` (over the whole batch).
            Padding tokens never take capacity.
        router_jitter: Multiplicative uniform noise ``x * U(1 - jitter, 1 + jitter)`` on the router input, in
            training only; the experts always see the clean input. ``0`` disables it.
        router_z_loss_coef: Weight of the router z-loss ``mean(logsumexp(logits) ** 2)`` on the raw logits.
        router_aux_loss_coef: Weight of the Switch load-balancing loss ``E * sum_e f_e * P_e``.
        expert_noise: For upcycling: each expert starts as the dense FFN plus Gaussian noise of this many standard
            deviations of each weight tensor. ``0`` keeps the upcycled model's outputs equal to the dense model's.
        gate_scaling: How an expert's output is weighted by its router probability ``p``:
            ``"straight_through"`` multiplies by ``p / p.detach()`` (divided by k): the forward value is
            exactly ``1 / k`` (so an upcycled model equals the dense one) while the router still gets the
            gradient of ``p``. ``"probability"`` multiplies by ``p`` (the original Switch layer).
            ``"normalized"`` renormalizes the chosen top-k probabilities to sum to 1 (Mixtral); with one expert per
            token the router then learns only from the auxiliary losses.
        add_aux_loss_without_labels: In training, return the auxiliary losses as ``loss`` even without ``labels``.
        global_load_balancing: Under ``torch.distributed`` training, sum the expert token counts over all ranks
            so that the load-balancing and z-losses (and their gradients, after DDP averaging) equal those of the
            global batch rather than of each rank's shard.
        output_router_logits: Return every MoE layer's router logits in the outputs by default.
    """

    model_type = "switch_moe"

    num_experts: int = 8
    moe_layers: list[int] | None = None
    num_experts_per_tok: int = 1
    capacity_factor: float = 1.25
    capacity_group: str = "sequence"
    router_jitter: float = 0.0
    router_z_loss_coef: float = 1e-3
    router_aux_loss_coef: float = 1e-2
    expert_noise: float = 0.0
    gate_scaling: str = "straight_through"
    add_aux_loss_without_labels: bool = False
    global_load_balancing: bool = True
    output_router_logits: bool = False

    def __post_init__(self, **kwargs: Any):
        if "top_k" in kwargs:
            self.num_experts_per_tok = kwargs.pop("top_k")
        super().__post_init__(**kwargs)
        validate_moe_settings(self, None)

    def to_moe_dict(self) -> dict[str, Any]:
        """Only the MoE fields, as copied into an upcycled model's config."""
        return moe_settings_dict(self)


class SwitchMoEConfigMixin(FrozenStructureMixin):
    """Validation shared by every ``SwitchMoE<Arch>Config`` (the family config plus :data:`MOE_FIELDS`)."""

    backbone_adapter = None  # set per family: its adapter class

    def __post_init__(self, **kwargs: Any):
        super().__post_init__(**kwargs)
        validate_moe_settings(self, self.backbone_adapter.num_layers_of(self))
        self.backbone_adapter.check_moe_config(self)

    def moe_settings(self) -> SwitchMoEConfig:
        """The MoE fields of this config as a standalone :class:`SwitchMoEConfig`."""
        return SwitchMoEConfig(**moe_settings_dict(self))


def make_moe_config_class(
    adapter: type[BackboneAdapter], module: str | None = None, config_class: type | None = None
) -> type:
    """Builds ``SwitchMoE<Arch>Config`` for a family: its config class plus the MoE fields.

    Args:
        adapter: The family's adapter class.
        module: Module the class is attributed to (it must be defined there under its name, for
            ``trust_remote_code``); default this one.
        config_class: The config class to extend; default the adapter's ``config_class``.
    """
    base = config_class or adapter.config_class
    name = f"SwitchMoE{adapter.class_prefix}Config"
    ignore = list(getattr(base, "keys_to_ignore_at_inference", []))
    namespace = {
        "__module__": module or __name__,
        "__qualname__": name,
        "__doc__": (f"{base.__name__} plus the switch-MoE fields; see :class:`SwitchMoEConfig` for their meaning."),
        "__annotations__": dict(MOE_ANNOTATIONS),
        **MOE_DEFAULTS,
        "model_type": f"switch_moe_{adapter.model_type}",
        "backbone_adapter": adapter,
        # The Trainer collects every output tensor at evaluation; routing statistics are not predictions.
        "keys_to_ignore_at_inference": ignore
        + ["aux_loss", "z_loss", "router_logits", "expert_counts", "dropped_fraction"],
    }
    return type(name, (SwitchMoEConfigMixin, base), namespace)


def _build_config_classes() -> dict[str, type]:
    classes = {}
    for adapter in BUILTIN_ADAPTERS:
        if supports_moe(adapter):
            cls = make_moe_config_class(adapter)
            # Module-level names: trust_remote_code and auto_map find classes by attribute name.
            globals()[cls.__name__] = cls
            classes[adapter.model_type] = cls
    return classes


# family model_type -> SwitchMoE<Arch>Config
SWITCH_MOE_CONFIGS: dict[str, type] = _build_config_classes()
