"""Vision backbone adapters: run a timm or Hugging Face image model one block or stage at a time.

An adapter wraps a stock model (a timm ``VisionTransformer``/``ResNet``/``EfficientNet``/``MobileNetV3``/
``ConvNeXt``, or a transformers ``ViTModel``) and exposes what early exits need: the stem, unit ``i`` (a block or a
stage) run on whatever images are still active, pooling of a unit's output, and the model's own head for the final
exit. It calls the model's modules in the order the model's own ``forward_features``/``forward_head`` does; it never
copies modeling code, so policy ``none`` reproduces the model's logits.

To support another timm family, subclass :class:`TimmAdapter` (set ``model_classes`` and override ``stem_modules``,
``stage_modules`` and, if needed, ``block_units``/``final_logits``) and pass it to
:func:`register_timm_adapter`.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedConfig

from .adapters.timm import (  # noqa: F401  (re-exported: their home before core/adapters)
    GRANULARITIES,
    TIMM_ADAPTERS,
    VISION_POOLINGS,
    ImageState,
    TimmAdapter,
    TimmConvNeXtAdapter,
    TimmEfficientNetAdapter,
    TimmResNetAdapter,
    TimmViTAdapter,
    pool_features,
    register_timm_adapter,
    timm_adapter_for,
)

logger = logging.getLogger(__name__)


def check_pixel_values(pixel_values: Any, in_chans: int, model: nn.Module | None = None) -> int:
    """Validates an image batch; returns the batch size.

    Args:
        pixel_values: ``(batch, channels, height, width)`` floating-point images.
        in_chans: Channels the model expects.
        model: The backbone (e.g. the timm model). When given, the images must also have the dtype of its stem
            weights, and the exact size of a timm ViT built for a fixed image size.
    """
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"`pixel_values` must be a torch.Tensor of images; got {type(pixel_values).__name__}.")
    if not pixel_values.dtype.is_floating_point:
        raise TypeError(
            f"`pixel_values` must be a floating-point tensor (normalized images, e.g. torch.float32); got "
            f"{pixel_values.dtype}. Convert uint8 images with `.float() / 255` and normalize them."
        )
    if pixel_values.dim() != 4:
        raise ValueError(
            f"`pixel_values` must have shape (batch, channels, height, width); got shape {tuple(pixel_values.shape)}."
            + (" Add a batch dimension with `.unsqueeze(0)`." if pixel_values.dim() == 3 else "")
        )
    if pixel_values.size(0) == 0:
        raise ValueError("Empty batch: `pixel_values` has 0 images; pass at least one.")
    if pixel_values.size(1) != in_chans:
        raise ValueError(f"`pixel_values` must have {in_chans} channels (dim 1); got {pixel_values.size(1)}.")
    if model is not None:
        check_pixels_fit_model(pixel_values, model)
    return pixel_values.size(0)


def check_pixels_fit_model(pixel_values: torch.Tensor, model: nn.Module) -> None:
    """Raises ``TypeError`` when the images' dtype differs from the model's stem weights, and ``ValueError`` when a
    timm ViT built for one image size gets another (timm would raise an ``AssertionError``, gone under ``-O``).

    Args:
        pixel_values: Images (or video frames), height and width last.
        model: The backbone.
    """
    stem = stem_conv(model)
    if stem is not None and stem.weight.dtype != pixel_values.dtype:
        raise TypeError(
            f"`pixel_values` has dtype {pixel_values.dtype}, but the model's weights are {stem.weight.dtype}. Pass "
            f"`pixel_values.to({stem.weight.dtype})`, or convert the model with `model.to({pixel_values.dtype})`."
        )
    size = fixed_image_size(model)
    if size is not None and tuple(pixel_values.shape[-2:]) != size:
        raise ValueError(
            f"`pixel_values` must be {size[0]}x{size[1]} images (height x width) for this model, which was built "
            f"for that size; got {pixel_values.size(2)}x{pixel_values.size(3)}. Resize the images, or build the "
            "timm model with `model_args={'dynamic_img_size': True}` to accept other sizes."
        )


def fixed_image_size(model: nn.Module) -> tuple[int, int] | None:
    """The one ``(height, width)`` a timm model with a strict patch embedding accepts, or ``None`` (any size).

    Args:
        model: A timm model (other models return ``None``).
    """
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is None or not getattr(patch_embed, "strict_img_size", False):
        return None
    if getattr(patch_embed, "dynamic_img_pad", False):
        return None
    img_size = getattr(patch_embed, "img_size", None)
    return tuple(int(side) for side in img_size) if img_size is not None else None


def stem_conv(model: nn.Module) -> nn.Conv2d | None:
    """The first ``nn.Conv2d`` of a model (the stem of a CNN, the patch embedding of a ViT), or ``None``.

    Args:
        model: E.g. a timm model.
    """
    return next((module for module in model.modules() if isinstance(module, nn.Conv2d)), None)


def check_timm_model_args(field: str, value: Any) -> None:
    """Rejects timm constructor arguments that are not a dict or that hold ``num_classes``/``pretrained``.

    Args:
        field: The config field, for the message (``"model_args"``, ``"glance_model_args"``).
        value: Its value.
    """
    if not isinstance(value, dict):
        raise TypeError(f"`{field}` must be a dict of timm constructor arguments; got {value!r}.")
    if "num_classes" in value or "pretrained" in value:
        raise ValueError(f"`{field}` must not hold `num_classes` or `pretrained`; use `num_labels` instead.")


def create_timm_model(architecture: str, num_classes: int, model_args: dict[str, Any], **kwargs: Any) -> nn.Module:
    """``timm.create_model(architecture, pretrained=False, num_classes=..., **model_args)`` with a clear error.

    Args:
        architecture: A timm model name.
        num_classes: Classifier width.
        model_args: Extra keyword arguments for the timm constructor.
        **kwargs: Passed to ``timm.create_model`` as well.
    """
    import timm

    if not isinstance(architecture, str) or not timm.is_model(architecture):
        raise ValueError(
            f"`architecture` must be a timm model name (see timm.list_models()); got {architecture!r}. Examples: "
            "'resnet18', 'tf_efficientnet_lite0', 'mobilenetv3_small_100', 'convnext_atto', "
            "'vit_tiny_patch16_224', 'deit_tiny_patch16_224'."
        )
    check_timm_model_args("model_args", model_args)
    return timm.create_model(architecture, pretrained=False, num_classes=num_classes, **model_args, **kwargs)


@dataclass(frozen=True)
class TimmDescription:
    """Shapes and costs of a timm model split into units, measured once on the meta device.

    Attributes:
        family: Adapter family.
        granularity: ``"stage"`` or ``"block"``.
        num_units: Number of units (exit points).
        widths: Channels (or token width) after each unit.
        spatial: Positions pooled after each unit (H*W, or tokens).
        stem_flops: FLOPs of the stem, one image.
        unit_flops: FLOPs of each unit, one image.
        final_head_flops: FLOPs of the model's own head (rest of ``forward_features`` + ``forward_head``).
        image_size: ``(height, width)`` the costs were measured at.
        in_chans: Input channels.
        default_pooling: The pooling the model's own head uses (``"cls"`` or ``"mean"``).
    """

    family: str
    granularity: str
    num_units: int
    widths: tuple[int, ...]
    spatial: tuple[int, ...]
    stem_flops: int
    unit_flops: tuple[int, ...]
    final_head_flops: int
    image_size: tuple[int, int]
    in_chans: int
    default_pooling: str


def describe_timm(
    architecture: str,
    model_args: dict[str, Any],
    granularity: str | None = None,
    image_size: tuple[int, int] | None = None,
    num_classes: int = 1000,
) -> TimmDescription:
    """Builds the model on the meta device (no memory, no init cost) and measures units, widths and FLOPs.

    Args:
        architecture: timm model name.
        model_args: timm constructor arguments.
        granularity: ``"stage"``/``"block"``; ``None`` = the family default.
        image_size: ``(height, width)``; ``None`` = the model's nominal input size.
        num_classes: Classifier width (for the cost of the model's own head).
    """
    key = json.dumps(model_args, sort_keys=True)
    size = tuple(int(s) for s in image_size) if image_size is not None else None
    return _describe(architecture, key, granularity, size, num_classes)


class TimmClassifierConfig(PreTrainedConfig):
    """A timm classifier by name and constructor arguments: the base of every config that wraps a timm model.

    The model is ``timm.create_model(architecture, pretrained=False, num_classes=num_labels, **model_args)`` (see
    :func:`create_timm_model`), so ``from_pretrained`` rebuilds it exactly. Subclasses may change the default
    ``architecture``; both fields are saved in ``config.json`` under these names.

    Args:
        architecture: A timm model name, e.g. ``"vit_tiny_patch16_224"``, ``"deit_small_patch16_224"`` or
            ``"resnet18"``.
        model_args: Extra ``timm.create_model`` keyword arguments (``img_size``, ``depth``, ``embed_dim``,
            ``in_chans``, ...); ``num_classes`` comes from ``num_labels``. Values must be JSON-serializable.
        **kwargs: ``PreTrainedConfig`` fields (``num_labels``, ``id2label``, ...).
    """

    architecture: str = "vit_tiny_patch16_224"
    model_args: dict | None = None

    def __post_init__(self, **kwargs: Any):
        super().__post_init__(**kwargs)
        if self.model_args is None:
            self.model_args = {}

    def meta_model(self) -> nn.Module:
        """The timm model on the meta device (shapes only, no memory; built once per architecture and arguments)."""
        return _meta_model(self.architecture, json.dumps(self.model_args or {}, sort_keys=True), self.num_labels)

    def describe_blocks(self) -> TimmDescription:
        """The timm model split into blocks at its nominal input size (see :func:`describe_timm`)."""
        return describe_timm(self.architecture, self.model_args or {}, "block", None, self.num_labels)

    def check_vision_transformer(self, supported: str, hint: str = "") -> TimmDescription:
        """:meth:`describe_blocks`, or a ``ValueError`` when ``architecture`` is not a timm vision transformer.

        Args:
            supported: Start of the message, e.g. ``"X supports timm vision transformers (ViT, DeiT)"``.
            hint: Appended to the message (what to use instead).
        """
        description = self.describe_blocks()
        if description.family != "vit":
            raise ValueError(
                f"{supported}; `architecture={self.architecture!r}` is a {description.family} model.{hint}"
            )
        return description


@functools.lru_cache(maxsize=64)
def _meta_model(architecture: str, model_args_json: str, num_classes: int) -> nn.Module:
    with torch.device("meta"):
        model = create_timm_model(architecture, num_classes, json.loads(model_args_json))
    return model.eval()


@functools.lru_cache(maxsize=128)
def _describe(
    architecture: str, model_args_json: str, granularity: str | None, image_size, num_classes: int
) -> TimmDescription:
    from timm.models._input import get_model_input_config
    from torch.utils.flop_counter import FlopCounterMode

    model = _meta_model(architecture, model_args_json, num_classes)
    adapter_class = timm_adapter_for(model)
    if granularity is None:
        granularity = "block" if adapter_class.is_transformer else "stage"
    adapter = adapter_class(model, granularity)
    input_size = get_model_input_config(model)["input_size"]
    in_chans = int(input_size[0])
    size = tuple(int(s) for s in (image_size or input_size[1:]))

    def flops_of(fn, *args):
        with FlopCounterMode(display=False) as counter:
            out = fn(*args)
        return out, int(counter.get_total_flops())

    with torch.no_grad():
        state, stem_flops = flops_of(adapter.embed, torch.empty(1, in_chans, *size, device="meta"))
        widths, spatial, unit_flops = [], [], []
        for index in range(adapter.num_layers):
            state.hidden_states, flops = flops_of(adapter.run_layer, index, state)
            hidden = state.hidden_states
            widths.append(int(hidden.size(1) if hidden.dim() == 4 else hidden.size(-1)))
            spatial.append(int(hidden.size(2) * hidden.size(3) if hidden.dim() == 4 else hidden.size(1)))
            unit_flops.append(flops)
        _, head_flops = flops_of(adapter.final_logits, state.hidden_states)
    return TimmDescription(
        family=adapter_class.family,
        granularity=granularity,
        num_units=adapter.num_layers,
        widths=tuple(widths),
        spatial=tuple(spatial),
        stem_flops=stem_flops,
        unit_flops=tuple(unit_flops),
        final_head_flops=head_flops,
        image_size=size,
        in_chans=in_chans,
        default_pooling=adapter.default_pooling(),
    )


def read_state_dict(weights) -> dict[str, torch.Tensor]:
    """A plain state dict from a dict, a ``.safetensors`` file, or a ``.pt``/``.pth`` file (``weights_only``).

    Args:
        weights: A state dict or a path to a weights file (a ``{"state_dict": ...}`` checkpoint is unwrapped).
    """
    if isinstance(weights, dict):
        return dict(weights)
    path = Path(weights)
    if not path.is_file():
        raise ValueError(f"`pretrained_weights` must be a state dict or a weights file; {str(path)!r} is no file.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TypeError(f"`pretrained_weights` file {str(path)!r} holds a {type(state).__name__}, not a state dict.")
    return state


def timm_classifier_keys(timm_model: nn.Module) -> list[str]:
    """State-dict names of a timm model's classifier (from its ``pretrained_cfg``)."""
    names = timm_model.pretrained_cfg.get("classifier") or ()
    names = [names] if isinstance(names, str) else list(names)
    return [f"{name}.{suffix}" for name in names for suffix in ("weight", "bias")]


# Prefixes that wrappers put in front of a timm model's own names (DDP, Lightning modules, our own models).
WRAPPER_PREFIXES = ("module.", "model.", "timm_model.", "backbone.", "base_model.")

# EfficientNet-PyTorch (lukemelas) names of the parts of an EfficientNet, and timm's names for the same modules.
# Top level: stem, head and classifier; in a block: the part names depend on whether the block expands first
# (timm's InvertedResidual: expand, depthwise, project) or not (DepthwiseSeparableConv: depthwise, project).
_EFFICIENTNET_PYTORCH_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
_EFFICIENTNET_PYTORCH_EXPANDING = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
}
_EFFICIENTNET_PYTORCH_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
}


def _efficientnet_pytorch_names(timm_model: nn.Module, names: list[str]) -> dict[str, str] | None:
    """Maps EfficientNet-PyTorch names (``_blocks.7._expand_conv.weight``) to timm's, or ``None`` if not that naming.

    Block ``n`` of the flat ``_blocks`` list is the ``n``-th block of timm's ``blocks`` stages, in order; each
    part maps by its name (see the tables above), so tensors never move by their position in the file.
    """
    if not any(name.startswith("_blocks.") for name in names) or not hasattr(timm_model, "blocks"):
        return None
    blocks = [f"blocks.{s}.{b}" for s, stage in enumerate(timm_model.blocks) for b in range(len(stage))]
    classifier = getattr(timm_model, "pretrained_cfg", {}).get("classifier") or "classifier"
    expanding = {name.split(".")[1] for name in names if name.startswith("_blocks.") and "._expand_conv." in name}
    mapping = {}
    for name in names:
        parts = name.split(".")
        if parts[0] == "_fc":
            mapping[name] = ".".join([classifier, *parts[1:]])
        elif parts[0] in _EFFICIENTNET_PYTORCH_TOP:
            mapping[name] = ".".join([_EFFICIENTNET_PYTORCH_TOP[parts[0]], *parts[1:]])
        elif parts[0] == "_blocks" and len(parts) > 3 and parts[1].isdigit() and int(parts[1]) < len(blocks):
            table = _EFFICIENTNET_PYTORCH_EXPANDING if parts[1] in expanding else _EFFICIENTNET_PYTORCH_SEPARABLE
            if parts[2] not in table:
                return None
            mapping[name] = ".".join([blocks[int(parts[1])], table[parts[2]], *parts[3:]])
        else:
            return None
    return mapping


def match_timm_names(
    timm_model: nn.Module, state_dict: dict[str, torch.Tensor], architecture: str
) -> dict[str, torch.Tensor]:
    """The tensors of ``state_dict`` under the timm model's own names, matched by name only.

    Accepted: timm's own names; the same names behind one wrapper prefix (``module.``, ``model.``,
    ``timm_model.``, ``backbone.``, ``base_model.``); the EfficientNet-PyTorch naming of an EfficientNet (e.g. the
    packaged EfficientNet-Lite0). Anything else is an error naming the keys: same-shape tensors under unknown names
    could be matched by position only, and would load into the wrong places without a sound.

    Args:
        timm_model: The timm model the weights are for.
        state_dict: The tensors to load.
        architecture: The timm name, for messages.

    Raises:
        ValueError: Naming the keys that match no tensor of the timm model.
    """
    target = set(timm_model.state_dict())
    names = list(state_dict)
    if set(names) <= target:
        return dict(state_dict)
    for prefix in WRAPPER_PREFIXES:
        if names and all(name.startswith(prefix) for name in names):
            stripped = {name[len(prefix) :]: tensor for name, tensor in state_dict.items()}
            if set(stripped) <= target:
                return stripped
    mapping = _efficientnet_pytorch_names(timm_model, names)
    if mapping is not None and set(mapping.values()) <= target and len(set(mapping.values())) == len(mapping):
        return {mapping[name]: tensor for name, tensor in state_dict.items()}
    unknown = [name for name in names if name not in target]
    absent = [name for name in timm_model.state_dict() if name not in state_dict]
    raise ValueError(
        f"`pretrained_weights` do not fit {architecture}: {len(unknown)} of their {len(names)} keys are not names of "
        f"the timm model, e.g. {unknown[:5]}; the model's tensors not among the weights include {absent[:5]}. Weights "
        "are matched by name only (timm's names, the same behind a prefix such as 'module.', or the EfficientNet-"
        "PyTorch naming); rename the keys to timm's names."
    )


def load_timm_state_dict(
    timm_model: nn.Module, state_dict: dict[str, torch.Tensor], architecture: str, num_labels: int
) -> list[str]:
    """Loads a plain timm state dict into ``timm_model``, re-initializing only a classifier of another width.

    Args:
        timm_model: The timm model to fill.
        state_dict: timm-named tensors, or a naming that :func:`match_timm_names` accepts (e.g. the packaged
            EfficientNet-Lite0); tensors are matched by name, never by position.
        architecture: The timm name, for messages.
        num_labels: The model's classifier width, for messages.

    Returns:
        The names of the tensors left as initialized (the classifier when its width differs).
    """
    target = timm_model.state_dict()
    state_dict = match_timm_names(timm_model, state_dict, architecture)
    skipped = [name for name, tensor in state_dict.items() if tuple(tensor.shape) != tuple(target[name].shape)]
    classifier = set(timm_classifier_keys(timm_model))
    wrong = [name for name in skipped if name not in classifier]
    if wrong:
        shapes = ", ".join(f"{n}: {tuple(state_dict[n].shape)} vs {tuple(target[n].shape)}" for n in wrong[:3])
        raise ValueError(f"`pretrained_weights` shapes do not match {architecture}: {shapes}.")
    if skipped:
        logger.warning(
            "The weights' classifier has another width than num_labels=%d: %s re-initialized; every other tensor "
            "was loaded.",
            num_labels,
            ", ".join(skipped),
        )
    loadable = {name: tensor for name, tensor in state_dict.items() if name not in skipped}
    missing, unexpected = timm_model.load_state_dict(loadable, strict=False)
    missing = [name for name in missing if name not in skipped]
    if missing or unexpected:
        raise ValueError(f"`pretrained_weights` are incomplete: missing {missing[:5]}, unexpected {unexpected[:5]}.")
    return skipped
