"""timm adapters: run a timm image model one block or stage at a time, for every technique.

An adapter wraps a stock timm model (``VisionTransformer``, ``ResNet``, ``EfficientNet``/``MobileNetV3``,
``ConvNeXt``) and exposes what the techniques need: the stem, unit ``i`` (a block or a stage) run on whatever images
are still active, pooling of a unit's output, and the model's own head for the final exit (early exits, video
frames). The vision transformer adapter also runs a block on a token subset (per-token halting), knows where each
block keeps its ``Mlp`` (switch MoE) and counts a block's FLOPs from its real widths. It calls the model's modules in
the order the model's own ``forward_features``/``forward_head`` does; it never copies modeling code, so running
every unit reproduces the model's logits.

To support another timm family, subclass :class:`TimmAdapter` (set ``model_classes`` and override ``stem_modules``,
``stage_modules`` and, if needed, ``block_units``/``final_logits``) and pass it to :func:`register_timm_adapter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..compaction import select_rows
from ..flops import encoder_layer_flops
from .base import BackboneAdapter, FfnSlot
from .states import TokenSubset

VISION_POOLINGS = ("mean", "cls")
GRANULARITIES = ("block", "stage")


@dataclass
class ImageState:
    """What flows between units for the images still being computed.

    Attributes:
        hidden_states: ``(rows, channels, height, width)`` feature maps or ``(rows, tokens, dim)`` tokens.
        layer_kwargs: Extra per-unit inputs; tensors whose first dimension is the row count follow the rows.
    """

    hidden_states: torch.Tensor
    layer_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return self.hidden_states.size(0)

    def select(self, rows: torch.Tensor) -> ImageState:
        """Returns the state restricted to ``rows`` (a 1-D index tensor)."""
        hidden = self.hidden_states
        # index_select returns NCHW; indexing keeps a channels_last feature map channels_last (CPU CNNs run faster so).
        hidden = hidden[rows] if hidden.dim() == 4 and not hidden.is_contiguous() else hidden.index_select(0, rows)
        return ImageState(hidden, select_rows(self.layer_kwargs, rows, self.num_rows))

    @classmethod
    def cat(cls, states: list[ImageState]) -> ImageState:
        """The rows of ``states``, one after another (a common channels_last layout is kept).

        Raises:
            ValueError: When a state carries ``layer_kwargs``, which have no defined concatenation.
        """
        if any(state.layer_kwargs for state in states):
            raise ValueError("ImageState.cat concatenates feature maps only; these states carry layer_kwargs.")
        return cls(torch.cat([state.hidden_states for state in states]))


def pool_features(hidden_states: torch.Tensor, pooling: str, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Pools one unit's output into ``(rows, width)``.

    Args:
        hidden_states: ``(rows, C, H, W)`` feature maps (always averaged) or ``(rows, tokens, dim)`` tokens.
        pooling: ``"mean"`` (average; over patch tokens only for token inputs) or ``"cls"`` (first token).
        num_prefix_tokens: Class/distillation/register tokens in front of the patch tokens.
    """
    if hidden_states.dim() == 4:
        return hidden_states.mean((2, 3))
    if pooling == "cls":
        return hidden_states[:, 0]
    if pooling == "mean":
        return hidden_states[:, num_prefix_tokens:].mean(1)
    raise ValueError(f"`head_pooling` must be one of {VISION_POOLINGS}; got {pooling!r}.")


class TimmAdapter(BackboneAdapter):
    """Adapter over a timm classification model, split into its stages or blocks.

    Args:
        model: The timm model.
        granularity: ``"stage"`` or ``"block"`` (transformers have only blocks).

    Class attributes:
        family: Short family name for messages and model cards.
        model_classes: Names of the timm model classes this adapter handles (subclasses included).
        is_transformer: Whether units output tokens (``(rows, tokens, dim)``) rather than feature maps.
    """

    family: ClassVar[str] = "timm"
    model_type: ClassVar[str] = "timm"
    class_prefix: ClassVar[str] = "Timm"
    modality: ClassVar[str] = "image"
    runs_layers: ClassVar[bool] = True
    model_classes: ClassVar[tuple[str, ...]] = ()
    is_transformer: ClassVar[bool] = False

    def __init__(self, model: nn.Module, granularity: str = "block"):
        # A timm model has no HF config; the technique's config (architecture, model_args) describes it.
        self.model = self.base_model = model
        self.config = None
        if granularity not in GRANULARITIES:
            raise ValueError(f"`exit_granularity` must be one of {GRANULARITIES}; got {granularity!r}.")
        if granularity == "stage" and self.is_transformer:
            raise ValueError(
                f"`exit_granularity='stage'` is not available for {type(model).__name__}: a plain vision transformer "
                "has no stages. Use 'block'."
            )
        self.granularity = granularity
        self.units = self.stage_modules() if granularity == "stage" else self.block_units()

    @classmethod
    def handles(cls, model: nn.Module) -> bool:
        return any(klass.__name__ in cls.model_classes for klass in type(model).__mro__)

    @property
    def num_layers(self) -> int:
        return len(self.units)

    def layer_modules(self) -> list[nn.Module]:
        """The units (blocks or stages), in order."""
        return self.units

    @property
    def num_prefix_tokens(self) -> int:
        return int(getattr(self.model, "num_prefix_tokens", 0))

    def default_pooling(self) -> str:
        return "mean"

    def stem_modules(self) -> list[nn.Module]:
        """Modules before the first unit, in ``forward_features`` order."""
        raise NotImplementedError

    def stage_modules(self) -> list[nn.Module]:
        """The stages, in order."""
        raise NotImplementedError

    def block_units(self) -> list[nn.Module]:
        """The blocks, in order (by default every block of every stage)."""
        return [block for stage in self.stage_modules() for block in stage.children()]

    def embed(self, pixel_values: torch.Tensor) -> ImageState:
        """Runs the stem."""
        hidden = pixel_values
        for module in self.stem_modules():
            hidden = module(hidden)
        return ImageState(hidden)

    def run_layer(self, index: int, state: ImageState) -> torch.Tensor:
        """Runs unit ``index`` (0-based) on the images in ``state``; returns their new features."""
        return self.units[index](state.hidden_states)

    def final_logits(self, hidden_states: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The model's own head on the last unit's output (the rest of ``forward_features``, then ``forward_head``).

        Args:
            hidden_states: The last unit's output.
            pre_logits: Return the pooled features before the classifier (``forward_head(..., pre_logits=True)``).
        """
        return self.model.forward_head(hidden_states, pre_logits=pre_logits)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled features of full compute: the stem, every unit, then the head up to the classifier.

        Args:
            pixel_values: ``(batch, channels, height, width)`` images.
        """
        hidden = self.embed(pixel_values).hidden_states
        for unit in self.units:
            hidden = unit(hidden)
        return self.final_logits(hidden, pre_logits=True)

    def pool(self, hidden_states: torch.Tensor, pooling: str) -> torch.Tensor:
        return pool_features(hidden_states, pooling, self.num_prefix_tokens)


class TimmViTAdapter(TimmAdapter):
    """timm vision transformers (ViT, DeiT incl. distilled, DeiT III): one unit per block.

    Besides the units it runs a block on a token subset (per-token halting), and each block's ``mlp`` is a timm
    ``Mlp`` (``fc1``, activation, ``fc2``) that switch MoE replaces; the block applies ``drop_path``, layer scale
    and the residual around it. Shapes are read from the blocks (a timm config holds only constructor arguments).
    """

    family = "vit"
    model_classes = ("VisionTransformer",)
    is_transformer = True
    supports_token_subsets = True
    ffn_slot = FfnSlot("mlp", up="mlp.fc1", down="mlp.fc2")

    def default_pooling(self) -> str:
        return "cls" if getattr(self.model, "global_pool", "token") == "token" else "mean"

    def embed(self, pixel_values: torch.Tensor) -> ImageState:
        model = self.model
        hidden = model.patch_embed(pixel_values)
        hidden = model._pos_embed(hidden)
        hidden = model.patch_drop(hidden)
        return ImageState(model.norm_pre(hidden))

    def block_units(self) -> list[nn.Module]:
        return list(self.model.blocks)

    def final_logits(self, hidden_states: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.model.forward_head(self.model.norm(hidden_states), pre_logits=pre_logits)

    # ------------------------------------------------------------------------------------------ shapes and cost
    @classmethod
    def num_layers_of(cls, config) -> int:
        """Blocks of the timm ViT that a ``TimmClassifierConfig`` describes (a ``ValueError`` for other models)."""
        return config.check_vision_transformer(
            f"{type(config).__name__} supports vision transformers (timm ViT, DeiT: `VisionTransformer` and its "
            "subclasses)"
        ).num_units

    @classmethod
    def hidden_size_of(cls, config) -> int:
        return cls.block_widths(config.meta_model().blocks[0])[0]

    @classmethod
    def intermediate_size_of(cls, config) -> int:
        """The MLP width of the first block (``mlp_ratio`` times the width, whatever the ratio)."""
        return cls.block_widths(config.meta_model().blocks[0])[1]

    @staticmethod
    def block_widths(block: nn.Module) -> tuple[int, int]:
        """``(width, MLP width)`` of a timm ViT block, read from its modules."""
        return block.norm1.normalized_shape[0], mlp_of(block).fc1.out_features

    def layer_flops(self, seq_len: int, index: int = 0) -> int:
        """Theoretical FLOPs of block ``index`` on one image of ``seq_len`` tokens, from its real widths."""
        width, mlp_width = self.block_widths(self.units[index])
        return encoder_layer_flops(seq_len, width, mlp_width)

    # --------------------------------------------------------------------------------------- FFN slot (for MoE)
    @classmethod
    def model_layers(cls, model: nn.Module) -> list[nn.Module]:
        """The blocks of a timm ViT, or of the one inside a technique model (its ``timm_model``)."""
        return cls(getattr(model, "timm_model", model), "block").units

    @classmethod
    def check_moe_config(cls, config) -> None:
        pass  # nothing to reject beyond what num_layers_of checks

    @classmethod
    def ffn_spec(cls, config, layer: nn.Module | None = None) -> dict[str, Any]:
        if layer is None:
            raise ValueError("A timm ViT's FFN shape is read from the block; pass `layer`.")
        mlp = mlp_of(layer, for_moe=True)
        # drop1 (inside the MLP) is not reproduced by the experts; the output dropout drop2 is.
        return {
            "hidden_size": mlp.fc1.in_features,
            "intermediate_size": mlp.fc1.out_features,
            "activation": timm_activation_name(mlp.act),
            "gated": False,
            "bias": mlp.fc1.bias is not None,
            "dropout": float(getattr(mlp.drop2, "p", 0.0)),
        }

    @classmethod
    def dense_ffn_weights(cls, layer: nn.Module) -> dict[str, torch.Tensor | None]:
        mlp_of(layer, for_moe=True)  # rejects the MLPs the experts cannot reproduce
        return super().dense_ffn_weights(layer)

    # ---------------------------------------------------------------------------------- token subsets (halting)
    def run_layer_on_tokens(
        self,
        index: int,
        hidden_states: torch.Tensor,
        active: torch.Tensor | None,
        key_mask: torch.Tensor,
        layer_kwargs: dict[str, Any] | None = None,
        subset: TokenSubset | None = None,
    ) -> torch.Tensor:
        """Runs block ``index`` for the ``active`` tokens only; every token still serves as key and value.

        Args:
            index: 0-based block index.
            hidden_states: ``(rows, tokens, dim)`` current states of every token.
            active: ``(rows, tokens)`` bool, tokens to update.
            key_mask: ``(rows, tokens)`` bool, tokens that may be attended to.
            layer_kwargs: Unused (timm blocks take no extra per-layer inputs); kept for the adapter interface.
            subset: The active tokens already packed (then ``active`` may be ``None``).

        Returns:
            ``(num_active, dim)`` new states of the active tokens, in ``active.nonzero()`` order.
        """
        block = self.units[index]
        attention = block.attn
        if getattr(attention, "gate", None) is not None or not hasattr(attention, "qkv"):
            raise NotImplementedError(
                f"Token halting needs a fused-qkv timm Attention; got {type(attention).__name__}."
            )
        rows, seq, _ = hidden_states.shape
        heads, head_dim, width = attention.num_heads, attention.head_dim, attention.attn_dim
        normed = block.norm1(hidden_states)
        subset = subset if subset is not None else TokenSubset.from_mask(active)
        row_index, token_index, slots = subset.rows, subset.tokens, subset.slots
        tokens = subset.gather_states(hidden_states)
        qkv = attention.qkv
        if type(qkv) is nn.Linear:  # queries for the active tokens only, keys and values for every token
            weight, bias = qkv.weight, qkv.bias
            query = F.linear(normed[row_index, token_index], weight[:width], None if bias is None else bias[:width])
            key_value = F.linear(normed, weight[width:], None if bias is None else bias[width:])
        else:  # a wrapped projection (a peft LoRA or IA3 layer) computes more than its base weight: call it
            projected = qkv(normed)
            query, key_value = projected[row_index, token_index, :width], projected[..., width:]
        keys, values = key_value.view(rows, seq, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        keys = _apply(attention.k_norm, keys)
        queries = subset.to_slots(query.view(-1, heads, head_dim), rows)
        queries = _apply(attention.q_norm, queries.transpose(1, 2))
        # Every token is real in an image, so an all-true key mask is no mask (SDPA then takes its fastest kernel).
        attn_mask = None if bool(key_mask.all()) else key_mask[:, None, None, :]
        context = F.scaled_dot_product_attention(queries, keys, values, attn_mask=attn_mask)
        context = context.transpose(1, 2).reshape(rows, slots, width)
        context = subset.from_slots(context)
        update = _apply(attention.proj_drop, attention.proj(_apply(attention.norm, context)))
        tokens = tokens + _apply(block.drop_path1, _apply(block.ls1, update))
        return tokens + _apply(block.drop_path2, _apply(block.ls2, block.mlp(block.norm2(tokens))))


def _apply(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, skipping the call for ``nn.Identity`` (timm blocks hold several; each call costs time at
    batch 1, where a block is a few small matmuls)."""
    return x if isinstance(module, nn.Identity) else module(x)


# timm activation modules (by class name) -> the transformers ACT2FN name computing the same function.
_TIMM_ACTIVATIONS = {
    "GELU": "gelu",
    "GELUTanh": "gelu_pytorch_tanh",
    "QuickGELU": "quick_gelu",
    "SiLU": "silu",
    "Swish": "silu",
    "ReLU": "relu",
}


def timm_activation_name(module: nn.Module) -> str:
    """The ``ACT2FN`` name of a timm MLP activation module, or a ``ValueError`` naming the supported ones.

    Args:
        module: E.g. ``nn.GELU()``.
    """
    name = type(module).__name__
    if name == "GELU" and getattr(module, "approximate", "none") == "tanh":
        return "gelu_pytorch_tanh"
    if name in _TIMM_ACTIVATIONS:
        return _TIMM_ACTIVATIONS[name]
    raise ValueError(
        f"Unsupported timm MLP activation {name} for switch MoE; supported: {', '.join(sorted(_TIMM_ACTIVATIONS))}."
    )


def mlp_of(block: nn.Module, for_moe: bool = False) -> nn.Module:
    """The timm ``Mlp`` of a ViT block, or a ``ValueError`` for MLPs the adapter cannot describe.

    Args:
        block: A timm ViT block.
        for_moe: Also reject what switch-MoE experts cannot reproduce (gated MLPs, a norm inside the MLP).
    """
    mlp = getattr(block, "mlp", None)
    if mlp is None or not hasattr(mlp, "fc1") or not hasattr(mlp, "fc2"):
        raise ValueError(f"Expected a timm ViT block with an `mlp` (fc1, fc2); got {type(block).__name__}.")
    if for_moe:
        if not hasattr(mlp, "act") or hasattr(mlp, "fc1_g"):
            raise ValueError(
                "Switch MoE for timm needs blocks whose `mlp` is a timm `Mlp` (fc1, act, fc2); got "
                f"{type(mlp).__name__}. Gated MLPs (SwiGLU, GluMlp) are not supported yet."
            )
        if not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity):
            raise ValueError("Switch MoE for timm does not support an `Mlp` with a norm layer inside it.")
    return mlp


class TimmResNetAdapter(TimmAdapter):
    """timm ResNets (and ResNet-D/T variants): stages ``layer1..4``, blocks inside them."""

    family = "resnet"
    model_classes = ("ResNet",)

    def stem_modules(self) -> list[nn.Module]:
        model = self.model
        return [model.conv1, model.bn1, model.act1, model.maxpool]

    def stage_modules(self) -> list[nn.Module]:
        return [self.model.layer1, self.model.layer2, self.model.layer3, self.model.layer4]


class TimmEfficientNetAdapter(TimmAdapter):
    """timm EfficientNet / MobileNetV2 / MobileNetV3 / MixNet (``blocks`` is a sequence of stages)."""

    family = "efficientnet"
    model_classes = ("EfficientNet", "MobileNetV3")

    def stem_modules(self) -> list[nn.Module]:
        return [self.model.conv_stem, self.model.bn1]

    def stage_modules(self) -> list[nn.Module]:
        return list(self.model.blocks)

    def final_logits(self, hidden_states: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        model = self.model
        if type(model).__name__ != "MobileNetV3" and hasattr(model, "conv_head"):
            # EfficientNet's forward_features ends with conv_head + bn2; MobileNetV3 runs them in forward_head.
            hidden_states = model.bn2(model.conv_head(hidden_states))
        return model.forward_head(hidden_states, pre_logits=pre_logits)


class TimmConvNeXtAdapter(TimmAdapter):
    """timm ConvNeXt: ``stages``; a stage's downsampling runs with its first block."""

    family = "convnext"
    model_classes = ("ConvNeXt",)

    def stem_modules(self) -> list[nn.Module]:
        return [self.model.stem]

    def stage_modules(self) -> list[nn.Module]:
        return list(self.model.stages)

    def block_units(self) -> list[nn.Module]:
        units: list[nn.Module] = []
        for stage in self.model.stages:
            for j, block in enumerate(stage.blocks):
                units.append(nn.Sequential(stage.downsample, block) if j == 0 else block)
        return units

    def final_logits(self, hidden_states: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.model.forward_head(self.model.norm_pre(hidden_states), pre_logits=pre_logits)


TIMM_ADAPTERS: list[type[TimmAdapter]] = [
    TimmViTAdapter,
    TimmResNetAdapter,
    TimmEfficientNetAdapter,
    TimmConvNeXtAdapter,
]


def register_timm_adapter(adapter: type[TimmAdapter]) -> None:
    """Adds support for another timm family (checked before the built-in adapters).

    Args:
        adapter: A :class:`TimmAdapter` subclass with ``model_classes`` set.
    """
    TIMM_ADAPTERS.insert(0, adapter)


def timm_adapter_for(model: nn.Module) -> type[TimmAdapter]:
    """The adapter class for a timm model, or a ``ValueError`` naming the supported families.

    Args:
        model: A timm model.
    """
    for adapter in TIMM_ADAPTERS:
        if adapter.handles(model):
            return adapter
    supported = ", ".join(name for adapter in TIMM_ADAPTERS for name in adapter.model_classes)
    raise ValueError(
        f"Unsupported timm model class {type(model).__name__}. Supported classes (and their subclasses): "
        f"{supported}. To add one, subclass adaptive_hf.core.adapters.timm.TimmAdapter (set model_classes, "
        "override stem_modules/stage_modules and final_logits if the head differs) and call "
        "adaptive_hf.core.adapters.timm.register_timm_adapter(YourAdapter)."
    )
