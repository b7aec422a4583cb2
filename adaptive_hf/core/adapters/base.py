"""The backbone adapter contract: the only place that knows the internals of an architecture family.

One adapter class describes one family for every technique. An adapter instance wraps the family's stock base
model (``BertModel``, ``ViTModel``, ...) and reuses its modules and weights; nothing here copies modeling code.
What the techniques read from it:

* ``embed``, ``layer_modules`` (the layer list), ``run_layer`` (layer ``i`` on the rows still computed),
  ``run_layer_on_tokens`` (layer ``i`` on a token subset), ``pool`` and ``layer_flops``: early exits and halting.
  Adapters that implement them set ``runs_layers = True`` (and ``supports_token_subsets`` for the token subset).
* ``ffn_slot`` (where each layer keeps its feed-forward block and how to swap it), ``ffn_spec`` (the shape of one
  expert) and ``task_classes`` (the stock classes that get an MoE variant): switch MoE and upcycling.

A new family is one adapter class passed to ``adaptive_hf.register_family``, which gives it every technique whose
requirements it meets. Adapters are found by ``model_type`` in :data:`FAMILY_ADAPTERS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..flops import linear_flops


@dataclass(frozen=True)
class FfnSlot:
    """Where a transformer layer keeps its feed-forward block, as attribute paths inside the layer.

    The MoE layer replaces the module at ``module``. A ``down`` projection outside ``module`` (BERT's
    ``output.dense``, followed by the family's own dropout, residual and LayerNorm) becomes an identity, so the rest
    of the family's code still runs on the MoE output.

    Attributes:
        module: Attribute of a layer that holds the FFN (e.g. ``"intermediate"``, ``"mlp"``).
        up: Path of the up projection (e.g. ``"intermediate.dense"``).
        down: Path of the down projection (e.g. ``"output.dense"``).
        gate: Path of the gate projection for gated FFNs (``down(act(gate(x)) * up(x))``), else ``None``.
        weights_in_out: The projections store their weights ``(in, out)`` already (GPT-2's ``Conv1D``) rather than
            ``(out, in)`` (``nn.Linear``).
        packed: For a gated FFN whose gate and up projections are one layer (ModernBERT's ``mlp.Wi``), the roles
            (``"gate"``, ``"up"``) in the order their equal blocks are stacked along that layer's outputs; ``up``
            and ``gate`` then both name that layer. Empty (the default) when every role has its own layer.
    """

    module: str
    up: str
    down: str
    gate: str | None = None
    weights_in_out: bool = False
    packed: tuple[str, ...] = ()

    def __post_init__(self):
        if self.packed and (sorted(self.packed) != ["gate", "up"] or self.up != self.gate):
            raise ValueError(
                f"FfnSlot.packed must order the roles ('gate', 'up') of one layer named by both `up` and `gate`; got "
                f"packed={self.packed!r}, up={self.up!r}, gate={self.gate!r}."
            )

    @property
    def gated(self) -> bool:
        """Whether the FFN is gated."""
        return self.gate is not None

    def replaced_paths(self) -> tuple[str, ...]:
        """Paths inside a layer whose parameters the MoE layer replaces (its weights move into the experts)."""
        paths = [self.module]
        if not self.down.startswith(self.module + "."):
            paths.append(self.down)
        return tuple(paths)

    def dense_weights(self, layer: nn.Module) -> dict[str, torch.Tensor | None]:
        """The dense FFN of ``layer`` as ``(in, out)`` matrices: ``up``, ``up_bias``, ``down``, ``down_bias`` (and
        ``gate``, ``gate_bias`` for gated FFNs).

        Args:
            layer: A transformer layer of the family.
        """
        weights = {}
        for role, path in (("gate", self.gate), ("up", self.up), ("down", self.down)):
            if path is None:
                continue
            projection = layer.get_submodule(path)
            weight, bias = projection.weight, projection.bias
            if role in self.packed:  # this role's block of the outputs of a packed layer
                block = self.packed.index(role)
                weight = weight.chunk(len(self.packed), dim=1 if self.weights_in_out else 0)[block]
                bias = None if bias is None else bias.chunk(len(self.packed))[block]
            weights[role] = weight if self.weights_in_out else weight.t()
            weights[f"{role}_bias"] = bias
        return weights

    def install(self, layer: nn.Module, moe: nn.Module) -> None:
        """Puts ``moe`` in place of the FFN of ``layer``.

        Args:
            layer: A transformer layer of the family.
            moe: The module that takes the FFN's place.
        """
        setattr(layer, self.module, moe)
        if not self.down.startswith(self.module + "."):
            parent, _, name = self.down.rpartition(".")
            setattr(layer.get_submodule(parent), name, nn.Identity())

    def get(self, layer: nn.Module) -> nn.Module:
        """The module in the FFN's place in ``layer`` (the MoE layer once installed)."""
        return getattr(layer, self.module)


class BackboneAdapter:
    """Base of every backbone adapter: class attributes describe the family, instances wrap its base model.

    Args:
        base_model: The family's base model module (e.g. a ``BertModel``).

    Class attributes:
        family: Short family name, e.g. ``"bert"``.
        model_type: The ``model_type`` of the family's config.
        class_prefix: CamelCase used in generated class names (``EarlyExit<class_prefix>ForSequenceClassification``).
        config_class: The family's config class.
        pretrained_model_class: The family's ``PreTrainedModel`` base (weight init, attention flags), or ``None``.
        modality: ``"text"`` (token sequences with an attention mask) or ``"image"``.
        runs_layers: The adapter implements ``embed``, ``run_layer``, ``pool`` and ``layer_flops`` (early exits,
            halting).
        supports_token_subsets: The adapter implements ``run_layer_on_tokens`` (per-token halting).
        ffn_slot: Where each layer keeps its feed-forward block (switch MoE), or ``None``.
        task_classes: The family's stock model classes that get a switch-MoE variant.
        causal: Each position attends only to itself and earlier positions (decoder LLMs). Per-token halting is
            refused on such families: a token that stopped early would still serve as key and value to later
            tokens at a stale depth, and the last token, which the classifier reads, decides.
        config_defaults: Technique config fields whose default differs for this family (e.g. ``head_pooling`` is
            ``"last"`` for decoders); the technique config classes built for the family take these defaults.
    """

    family: ClassVar[str] = ""
    model_type: ClassVar[str] = ""
    class_prefix: ClassVar[str] = ""
    config_class: ClassVar[type | None] = None
    pretrained_model_class: ClassVar[type | None] = None
    modality: ClassVar[str] = "text"
    runs_layers: ClassVar[bool] = False
    supports_token_subsets: ClassVar[bool] = False
    ffn_slot: ClassVar[FfnSlot | None] = None
    task_classes: ClassVar[tuple[type, ...]] = ()
    causal: ClassVar[bool] = False
    config_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, base_model: nn.Module):
        self.base_model = base_model
        self.config = base_model.config

    # ------------------------------------------------------------------------------------------- shape of config
    @classmethod
    def num_layers_of(cls, config) -> int:
        """Number of transformer layers for ``config``."""
        return config.num_hidden_layers

    @classmethod
    def hidden_size_of(cls, config) -> int:
        """Model width for ``config``."""
        return config.hidden_size

    @classmethod
    def intermediate_size_of(cls, config) -> int:
        """Feed-forward width for ``config``."""
        return config.intermediate_size

    @property
    def num_layers(self) -> int:
        return self.num_layers_of(self.config)

    # ---------------------------------------------------------------------------------------------- the layers
    def layer_modules(self) -> nn.ModuleList:
        """The transformer layers, in order."""
        raise NotImplementedError(f"{type(self).__name__} does not list its layers.")

    # ------------------------------------------------------------ running layers (``runs_layers`` adapters)
    def embed(self, *inputs: Any, **kwargs: Any) -> Any:
        """The state before the first layer (``EncoderState`` for text, ``ImageState`` for images)."""
        raise self._missing("embed")

    def run_layer(self, index: int, state: Any) -> torch.Tensor:
        """New hidden states of every row of ``state`` after layer ``index`` (0-based)."""
        raise self._missing("run_layer")

    def run_layer_on_rows(self, index: int, state: Any, rows: torch.Tensor) -> torch.Tensor:
        """New hidden states of ``rows`` (a 1-D index tensor into ``state``) after layer ``index``; the other rows
        are never computed.

        Args:
            index: 0-based layer index.
            state: The state of every row.
            rows: Rows to run.
        """
        return self.run_layer(index, state.select(rows))

    def run_layer_on_tokens(self, index: int, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """New states of a token subset after layer ``index`` (``supports_token_subsets`` adapters)."""
        raise self._missing("run_layer_on_tokens")

    def pool(self, hidden_states: torch.Tensor, *args: Any) -> torch.Tensor:
        """``(rows, hidden)`` vectors of ``(rows, positions, hidden)`` states."""
        raise self._missing("pool")

    def layer_flops(self, seq_len: int) -> int:
        """Theoretical FLOPs of one layer on one input of ``seq_len`` positions."""
        raise self._missing("layer_flops")

    @classmethod
    def stock_head_modules(cls, config) -> dict[str, nn.Module]:
        """The family's own sequence-classification head, which the techniques then use as their final classifier.

        Keys are the attribute names in the stock ``<Arch>ForSequenceClassification`` (so a plain checkpoint's head
        weights load into them); an empty dict (the default) means the techniques build their own final head.

        Args:
            config: The model config (``num_labels`` set).
        """
        return {}

    def stock_head_logits(self, owner: nn.Module, hidden_states: torch.Tensor, token_mask: torch.Tensor):
        """Logits of the stock head that ``owner`` holds (see :meth:`stock_head_modules`) on the last layer's
        states, computed as the stock ``<Arch>ForSequenceClassification`` computes them.

        Args:
            owner: The model holding the stock head modules as attributes.
            hidden_states: ``(rows, seq, hidden)`` states after the last layer.
            token_mask: ``(rows, seq)`` 1 for real tokens, 0 for padding.
        """
        raise self._missing("stock_head_logits")

    @classmethod
    def stock_head_flops(cls, config, seq_len: int) -> int:
        """Theoretical FLOPs of the stock head (see :meth:`stock_head_modules`) on one sequence.

        Args:
            config: The model config.
            seq_len: Tokens in the sequence.
        """
        raise NotImplementedError(f"{cls.__name__} has no stock classification head.")

    @classmethod
    def token_update_flops(cls, config) -> int:
        """FLOPs of updating one token in a layer apart from attention over the keys and the key/value projections:
        its query and output projections and its feed-forward block (the per-token halting cost model).

        Args:
            config: The model config.
        """
        hidden, inter = cls.hidden_size_of(config), cls.intermediate_size_of(config)
        return linear_flops(1, hidden, 2 * hidden) + 2 * linear_flops(1, hidden, inter)

    def _missing(self, method: str) -> NotImplementedError:
        return NotImplementedError(
            f"{type(self).__name__} does not implement `{method}`: the {self.family or 'family'} adapter serves "
            f"{'switch MoE only' if not self.runs_layers else 'some techniques only'}."
        )

    @classmethod
    def model_layers(cls, model: nn.Module) -> nn.ModuleList:
        """The transformer layers of a family model (its base model or any task model around it).

        Args:
            model: A model of the family.
        """
        return cls(model.base_model).layer_modules()

    # -------------------------------------------------------------------------------------- FFN slot (for MoE)
    @classmethod
    def activation_of(cls, config) -> str:
        """Name of the FFN activation in ``transformers.activations.ACT2FN``."""
        return config.hidden_act

    @classmethod
    def ffn_bias_of(cls, config) -> bool:
        """Whether the FFN projections have biases."""
        return True

    @classmethod
    def ffn_dropout_of(cls, config) -> float:
        """Dropout that an MoE layer in the FFN's place applies to its output (0 where the layer applies it)."""
        return 0.0

    @classmethod
    def ffn_spec(cls, config, layer: nn.Module | None = None) -> dict[str, Any]:
        """Shape of one expert, as keyword arguments of ``SwitchMoEFeedForward`` (after ``config``).

        Read from the config by default; families whose config does not describe the FFN (timm) read ``layer``.

        Args:
            config: The model config.
            layer: The transformer layer whose FFN is replaced, when available.
        """
        cls.require_ffn_slot()
        return {
            "hidden_size": cls.hidden_size_of(config),
            "intermediate_size": cls.intermediate_size_of(config),
            "activation": cls.activation_of(config),
            "gated": cls.ffn_slot.gated,
            "bias": cls.ffn_bias_of(config),
            "dropout": cls.ffn_dropout_of(config),
        }

    @classmethod
    def require_ffn_slot(cls) -> FfnSlot:
        """The family's :class:`FfnSlot`, or a ``ValueError`` saying the family has none."""
        if cls.ffn_slot is None:
            raise ValueError(f"The {cls.family or cls.__name__} adapter declares no `ffn_slot`; switch MoE needs one.")
        return cls.ffn_slot

    @classmethod
    def dense_ffn_weights(cls, layer: nn.Module) -> dict[str, torch.Tensor | None]:
        """The dense FFN of ``layer`` as ``(in, out)`` matrices (see :meth:`FfnSlot.dense_weights`)."""
        return cls.require_ffn_slot().dense_weights(layer)

    @classmethod
    def install_ffn(cls, layer: nn.Module, module: nn.Module) -> None:
        """Puts ``module`` in place of the FFN of ``layer`` (see :meth:`FfnSlot.install`)."""
        cls.require_ffn_slot().install(layer, module)

    @classmethod
    def check_moe_config(cls, config) -> None:
        """Rejects family settings an MoE layer in the FFN's place cannot honour.

        Args:
            config: The model config.
        """
        if getattr(config, "chunk_size_feed_forward", 0):
            raise ValueError(
                "`chunk_size_feed_forward` must be 0 for switch-MoE models: chunking the sequence would split a "
                "capacity group."
            )


# model_type -> adapter class, for every family whose adapter module has been imported or that was registered.
FAMILY_ADAPTERS: dict[str, type[BackboneAdapter]] = {}


def check_adapter(adapter: type[BackboneAdapter]) -> None:
    """Checks the class attributes every technique reads; raises ``TypeError``/``ValueError`` naming the field.

    Args:
        adapter: A :class:`BackboneAdapter` subclass.
    """
    if not (isinstance(adapter, type) and issubclass(adapter, BackboneAdapter)):
        raise TypeError(f"A family adapter must be a BackboneAdapter subclass; got {adapter!r}.")
    for name in ("family", "model_type", "class_prefix"):
        if not isinstance(getattr(adapter, name), str) or not getattr(adapter, name):
            raise ValueError(f"{adapter.__name__}.{name} must be a non-empty string.")
    if adapter.config_class is None:
        raise ValueError(f"{adapter.__name__}.config_class must be the family's config class.")
    if adapter.modality not in ("text", "image"):
        raise ValueError(f"{adapter.__name__}.modality must be 'text' or 'image'; got {adapter.modality!r}.")


def add_adapter(adapter: type[BackboneAdapter]) -> type[BackboneAdapter]:
    """Records ``adapter`` under its ``model_type`` (see :func:`check_adapter`).

    Args:
        adapter: A :class:`BackboneAdapter` subclass.

    Returns:
        ``adapter``.
    """
    check_adapter(adapter)
    FAMILY_ADAPTERS[adapter.model_type] = adapter
    return adapter
