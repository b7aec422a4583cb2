"""Early-exit configs for image classifiers: any timm model, and the Hugging Face image families (ViT, DINOv2,
ConvNeXt v1/v2, and any other :class:`~adaptive_hf.core.adapters.hf_vision.HFVisionAdapter` family).

* :class:`EarlyExitTimmConfig` is a ``core.vision_backbones.TimmClassifierConfig`` (the timm ``architecture`` and
  ``model_args``, so ``from_pretrained`` rebuilds the timm model exactly) plus the exit fields shared with the text
  classifiers.
* ``EarlyExit<Arch>Config`` (:class:`EarlyExitViTConfig`, ...) *is* the family's config (plain checkpoints load into
  it) with the exit fields, made by :func:`make_hf_vision_exit_config_class`.

The exit fields and their validation are those of :class:`~adaptive_hf.early_exit.config.EarlyExitConfigMixin`.
Vision adds ``exit_granularity`` (timm CNNs exit after ``"stage"``\\ s or ``"block"``\\ s) and ``exit_dropout``;
``head_pooling`` is ``"cls"`` or ``"mean"`` (feature maps are always averaged).
"""

from __future__ import annotations

from typing import Any

from ..core.adapters.convnext import ConvNextAdapter, ConvNextV2Adapter
from ..core.adapters.dinov2 import Dinov2Adapter
from ..core.adapters.hf_vision import HFVisionAdapter, HFViTAdapter
from ..core.configuration import check_choice, check_number, make_family_config_class
from ..core.vision_backbones import (
    GRANULARITIES,
    VISION_POOLINGS,
    TimmClassifierConfig,
    TimmDescription,
    describe_timm,
)
from .config import EXIT_FIELD_SPECS, EXIT_FIELDS, EXIT_RENAMED_FIELDS, EarlyExitConfigMixin


class _VisionExitConfigMixin(EarlyExitConfigMixin):
    """Pooling/dropout checks shared by the vision configs (``pooler`` pooling does not exist for images)."""

    def _check_vision_fields(self, token_model: bool) -> None:
        check_choice("head_pooling", self.head_pooling, VISION_POOLINGS)
        if self.head_pooling == "cls" and not token_model:
            raise ValueError(
                "`head_pooling='cls'` needs a transformer with a class token; CNN feature maps are averaged. Use "
                "'mean'."
            )
        check_number("exit_dropout", self.exit_dropout, 0.0, 1.0, high_inclusive=False)
        for name in ("image_mean", "image_std"):
            value = getattr(self, name, None)
            if value is None:
                continue
            values = [value] if isinstance(value, (int, float)) else list(value)
            if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise ValueError(
                    f"`{name}` must be None, a number or a list of numbers (one per channel); got {value!r}."
                )
            if name == "image_std" and min(values) <= 0:
                raise ValueError(f"`image_std` values must be > 0; got {value!r}.")
            setattr(self, name, [float(v) for v in values])


class EarlyExitTimmConfig(_VisionExitConfigMixin, TimmClassifierConfig):
    """Config of :class:`~adaptive_hf.early_exit.vision_modeling.EarlyExitTimmForImageClassification`.

    Args:
        architecture: A timm model name, e.g. ``"tf_efficientnet_lite0"`` or ``"vit_tiny_patch16_224"``.
        model_args: Extra ``timm.create_model`` keyword arguments (``img_size``, ``depth``, ``in_chans``, ...); see
            :class:`~adaptive_hf.core.vision_backbones.TimmClassifierConfig`.
        exit_granularity: ``"stage"`` or ``"block"``; ``None`` = ``"block"`` for vision transformers, ``"stage"``
            for CNNs. ``exit_layers`` are 1-based indices of these units.
        image_size: ``[height, width]`` the cost model assumes; ``None`` = the timm model's nominal input size.
        exit_dropout: Dropout in the intermediate exit heads.
        head_pooling: ``"cls"`` or ``"mean"`` for transformers; ``None`` = what the model's own head uses.
            Formerly ``exit_pooling`` (still accepted, deprecated).
        head_type: ``"linear"`` or ``"mlp"`` for the intermediate heads (the final exit is the timm head).
            Formerly ``exit_head`` (still accepted, deprecated).
        image_mean: Per-channel mean the training inputs were normalized with (after scaling to [0, 1]); recorded
            so tools such as ``adaptive-hf evaluate`` preprocess new images the same way. ``None`` = the timm
            model's ``pretrained_cfg`` mean.
        image_std: Per-channel standard deviation, likewise.
        eval_chunk_elements: In eval mode, run each CNN unit on at most this many input values (rows x channels x
            height x width) at a time; larger batches are split by rows and concatenated (same results). Keeps
            high-resolution stages inside the CPU caches at batch 64 (e.g. ``131072``); ``None`` = never split.
            A runtime knob, read at every forward.
        **kwargs: The exit fields of :class:`~adaptive_hf.early_exit.config.EarlyExitConfigMixin` and
            ``PreTrainedConfig`` fields (``num_labels``, ``id2label``, ...).
    """

    model_type = "early_exit_timm"

    architecture: str = "resnet18"
    exit_granularity: str | None = None
    image_size: list[int] | None = None
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    eval_chunk_elements: int | None = None
    exit_dropout: float = 0.0
    exit_layers: list[int] | None = None
    head_pooling: str | None = None
    head_type: str = "linear"
    exit_policy: str = "none"
    exit_threshold: float | None = None
    patience: int = 2
    nonfinite_logits: str = "warn"
    exit_training: str = "joint"
    exit_loss_weights: list[float] | None = None
    exit_training_stage: int = 1
    distill_temperature: float = 2.0
    calibration: dict | None = None

    def describe(self, image_size: tuple[int, int] | None = None) -> TimmDescription:
        """Units, widths and per-unit FLOPs of the timm model (measured once on the meta device, then cached).

        Args:
            image_size: ``(height, width)``; ``None`` = ``config.image_size``.
        """
        size = image_size if image_size is not None else self.image_size
        try:
            return describe_timm(self.architecture, self.model_args, self.exit_granularity, size, self.num_labels)
        except (ValueError, TypeError):
            raise
        except Exception as error:  # timm asserts on shapes it cannot take
            raise ValueError(
                f"timm could not run {self.architecture!r} with model_args={self.model_args} at image_size={size}: "
                f"{error}"
            ) from error

    @property
    def num_backbone_layers(self) -> int:
        return self.describe().num_units

    def validate_early_exit(self) -> None:
        if self.eval_chunk_elements is not None:
            check_number("eval_chunk_elements", self.eval_chunk_elements, 1, None, integer=True)
        if self.exit_granularity is not None:
            check_choice("exit_granularity", self.exit_granularity, GRANULARITIES)
        if self.image_size is not None:
            size = [self.image_size] * 2 if isinstance(self.image_size, int) else list(self.image_size)
            if len(size) != 2:
                raise ValueError(f"`image_size` must be [height, width] or one int; got {self.image_size!r}.")
            for side in size:
                check_number("image_size", side, 1, None, integer=True)
            self.image_size = size
        description = self.describe()
        self.exit_granularity = description.granularity
        self.image_size = list(description.image_size)
        if self.head_pooling is None:
            self.head_pooling = description.default_pooling
        self._check_vision_fields(token_model=description.family == "vit")
        super().validate_early_exit()


class HFVisionExitConfigMixin(_VisionExitConfigMixin):
    """The exit fields on a Hugging Face image family's own config (``ViTConfig``, ``Dinov2Config``, ...).

    The final exit is the family's stock classifier; the intermediate heads pool each unit's output
    (``head_pooling``, formerly ``exit_pooling``: ``"cls"`` or ``"mean"`` for transformers, always ``"mean"`` for
    CNN feature maps), then LayerNorm and a linear or MLP classifier (``head_type``, formerly ``exit_head``) with
    ``exit_dropout``. ``image_mean``/``image_std`` record the normalization of the training inputs for tools that
    preprocess new images (``None`` = the family's image processor default).
    """

    def validate_early_exit(self) -> None:
        self._check_vision_fields(token_model=self.backbone_adapter.token_model)
        super().validate_early_exit()


def hf_vision_exit_field_specs(adapter: type[HFVisionAdapter]) -> dict[str, tuple[str, Any]]:
    """The exit fields of an HF image family's early-exit config and their defaults.

    Args:
        adapter: The family's :class:`~adaptive_hf.core.adapters.hf_vision.HFVisionAdapter`.
    """
    return {
        **EXIT_FIELD_SPECS,
        "head_pooling": ("str", adapter.default_head_pooling),
        "head_type": ("str", "linear"),
        "exit_dropout": ("float", 0.0),
        "image_mean": ("list[float] | None", None),
        "image_std": ("list[float] | None", None),
    }


def make_hf_vision_exit_config_class(adapter: type[HFVisionAdapter]) -> type:
    """``EarlyExit<Arch>Config``: the family's config class plus the exit fields (plain checkpoints load into it).

    Args:
        adapter: The family's :class:`~adaptive_hf.core.adapters.hf_vision.HFVisionAdapter`.
    """
    return make_family_config_class(
        adapter,
        class_name=f"EarlyExit{adapter.class_prefix}Config",
        model_type=f"early_exit_{adapter.model_type}",
        mixin=HFVisionExitConfigMixin,
        fields=hf_vision_exit_field_specs(adapter),
        module=__name__,
    )


EarlyExitViTConfig = make_hf_vision_exit_config_class(HFViTAdapter)
EarlyExitDinov2Config = make_hf_vision_exit_config_class(Dinov2Adapter)
EarlyExitConvNextConfig = make_hf_vision_exit_config_class(ConvNextAdapter)
EarlyExitConvNextV2Config = make_hf_vision_exit_config_class(ConvNextV2Adapter)
# model_type of the family -> its early-exit config class (the registry's early-exit builder adds new families).
HF_VISION_EXIT_CONFIGS: dict[str, type] = {
    cls.backbone_adapter.model_type: cls
    for cls in (EarlyExitViTConfig, EarlyExitDinov2Config, EarlyExitConvNextConfig, EarlyExitConvNextV2Config)
}


VISION_EXIT_FIELDS = ("exit_granularity", "exit_dropout", "image_mean", "image_std", "eval_chunk_elements")


def split_exit_settings(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Splits keyword arguments into exit settings (config fields) and the rest.

    Args:
        kwargs: Mixed keyword arguments.
    """
    names = set(EXIT_FIELDS) | set(EXIT_RENAMED_FIELDS) | set(VISION_EXIT_FIELDS) | {"image_size"}
    settings = {key: kwargs.pop(key) for key in list(kwargs) if key in names}
    return settings, kwargs
