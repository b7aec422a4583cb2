"""Early-exit image classifiers: any timm model (:class:`EarlyExitTimmForImageClassification`), and the image
machinery shared with the Hugging Face families (``hf_vision_modeling.py``: ViT, DINOv2, ConvNeXt).

All reuse the exit loop of :class:`~adaptive_hf.early_exit.modeling.EarlyExitModelMixin`: training mode runs every
unit and every head and returns the configured training objective as ``loss``; eval mode is batched adaptive
inference where images that exit leave the batch before the next block or stage runs. The final exit is the
backbone's own classifier (the timm head, or the HF family's stock classifier), so policy ``none``
reproduces the plain model's logits; intermediate exits are new heads (pool, LayerNorm, linear or MLP).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from ..core.flops import classifier_head_flops
from ..core.hub import own_loaded_tensors
from ..core.inputs import check_class_labels, check_pixel_forward_options
from ..core.layer_keyed import LayerKeyedModules
from ..core.peft import refuse_nested_peft_wrappers
from ..core.timm_construction import TimmBackboneMixin
from ..core.vision_backbones import (
    ImageState,
    TimmAdapter,
    check_pixel_values,
    create_timm_model,
    load_timm_state_dict,
    match_timm_names,
    read_state_dict,
    stem_conv,
    timm_adapter_for,
    timm_classifier_keys,
)
from .config import validate_exit_settings
from .heads import ExitHead
from .modeling import EarlyExitModelMixin
from .vision_config import EarlyExitTimmConfig, split_exit_settings
from .vision_folding import folded_copy
from .vision_streaming import classify_image_stream


@dataclass
class EarlyExitImageClassifierOutput(ModelOutput):
    """Output of the early-exit image classifiers.

    Args:
        loss: Training objective (exit losses included) when ``labels`` are given. In eval mode, the cross-entropy
            of the returned logits.
        logits: ``(batch, num_labels)`` logits of the exit each image took.
        exit_layer: ``(batch,)`` 1-based unit (block or stage) at which each image exited.
        exit_logits: When requested, one ``(batch, num_labels)`` tensor per exit, in ``exit_layers`` order. Rows
            that exited before an exit hold NaN there, since that head never ran for them.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    exit_layer: torch.Tensor | None = None
    exit_logits: tuple[torch.Tensor, ...] | None = None


class VisionExitHead(nn.Module):
    """Intermediate exit: LayerNorm on the pooled features, then a linear or MLP classifier.

    Args:
        width: Channels (or token width) of the pooled vector.
        num_labels: Number of classes.
        head_type: ``"linear"`` or ``"mlp"``.
        dropout: Dropout probability.
    """

    def __init__(self, width: int, num_labels: int, head_type: str, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.head = ExitHead(width, num_labels, head_type, dropout)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        norm, head = self.norm, self.head
        hidden = F.layer_norm(pooled, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        if self.training or head.dense is not None:
            return head(hidden)
        # Eval-mode linear head: the same two ops without three module calls, which cost as much as the ops on the
        # one image of batch-1 inference.
        return F.linear(hidden, head.classifier.weight, head.classifier.bias)


class _VisionEarlyExitMixin(EarlyExitModelMixin):
    """Forward, cost model and card shared by the two image classifiers."""

    auto_class_name = "AutoModelForImageClassification"
    main_input_name = "pixel_values"
    output_class = EarlyExitImageClassifierOutput
    accepts_loss_kwargs = False

    def pipeline_tag(self) -> str:
        return "image-classification"

    def _in_chans(self) -> int:
        raise NotImplementedError

    def _embed(self, pixel_values: torch.Tensor, **kwargs) -> ImageState:
        return self.adapter.embed(pixel_values, **kwargs)

    def _head_logits(self, k: int, state: ImageState) -> torch.Tensor:
        if k == len(self.config.exit_layers) - 1:
            return self._final_logits(state.hidden_states)
        pooled = self.adapter.pool(state.hidden_states, self.config.head_pooling)
        return self.exit_heads[k](pooled)

    def _final_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _run(self, pixel_values, labels, output_exit_logits, return_dict, **embed_kwargs):
        config = self.config
        if self.training and self.__dict__.get("_batch_norms_folded"):
            raise ValueError(
                "This model's batch norms were folded for inference (fold_batch_norms()); it cannot train. Reload "
                "the saved model instead."
            )
        refuse_nested_peft_wrappers(self)
        batch_size = check_pixel_values(pixel_values, self._in_chans(), getattr(self, "timm_model", None))
        if labels is not None:
            check_class_labels(labels, batch_size, config.num_labels)
        validate_exit_settings(config)
        state = self._embed(pixel_values, **embed_kwargs)
        if self.training:
            output = self._forward_all_exits(state, labels, bool(output_exit_logits))
        else:
            output = self._forward_adaptive(state, labels, bool(output_exit_logits))
        if return_dict is False:
            return output.to_tuple()
        return output

    def classify_stream(self, batches, pool_rows: int | None = None):
        """Eval-mode inference over many batches, pooling the images that continue past an exit across batches.

        Each image gets the exit and logits that ``model(pixel_values)`` gives it; the later segments of the
        backbone run on about ``pool_rows`` images at a time instead of the few left of one batch. See
        :func:`adaptive_hf.early_exit.vision_streaming.classify_image_stream`.

        Args:
            batches: Iterable of ``(batch, channels, height, width)`` normalized float image tensors, or of
                mappings with ``"pixel_values"``.
            pool_rows: Images that must wait in front of a segment before it runs (default: the first batch's size).

        Yields:
            One output (``logits``, ``exit_layer``) per input batch, in input order.
        """
        return classify_image_stream(self, batches, pool_rows)

    # ---------------------------------------------------------------------------------------------- cost model
    def _unit_costs(self, image_size) -> tuple[int, list[int], list[int], list[int], int]:
        """``(stem, per-unit FLOPs, widths, positions pooled, final head FLOPs)`` for one image."""
        raise NotImplementedError

    def exit_flops(self, image_size: int | tuple[int, int] | None = None) -> tuple[list[int], int]:
        """Theoretical cost of exiting at each exit, and of the full-depth model (policy ``none``), for one image.

        Args:
            image_size: ``(height, width)`` or one side; ``None`` = the configured input size. (Calibration code
                written for text passes a token count here; image models have a fixed cost per image, so pass
                ``None``.)

        Returns:
            ``(costs, full_cost)``: ``costs[k]`` is the FLOPs spent by an image that exits at exit ``k`` (stem,
            every unit up to it and every head evaluated on the way); ``full_cost`` is the plain model's forward.
        """
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        stem, units, widths, spatial, final_head = self._unit_costs(image_size)
        config = self.config
        costs, heads = [], 0
        last = len(config.exit_layers) - 1
        for k, layer in enumerate(config.exit_layers):
            if k == last:
                heads += final_head
            else:
                heads += classifier_head_flops(
                    widths[layer - 1],
                    config.num_labels,
                    mlp=config.head_type == "mlp",
                    pooler=False,
                    seq_len=spatial[layer - 1],
                )
            costs.append(stem + sum(units[:layer]) + heads)
        return costs, stem + sum(units) + final_head

    # ----------------------------------------------------------------------------------------------- weights
    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        """``PreTrainedModel.from_pretrained``, with aligned copies of the tensors (see ``own_loaded_tensors``)."""
        return own_loaded_tensors(super().from_pretrained(*args, **kwargs))

    def _init_weights(self, module: nn.Module) -> None:
        # Only the new exit heads are ours to initialise; backbone modules keep their own initialisation.
        from transformers import initialization as init

        if not getattr(module, "_ahf_exit_module", False):
            return
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    def _build_exit_heads(self, widths: list[int]) -> LayerKeyedModules:
        config = self.config
        # The last exit is the backbone's own classifier: heads only for the earlier exit layers.
        heads = LayerKeyedModules(
            config.exit_layers[:-1],
            [
                VisionExitHead(widths[layer - 1], config.num_labels, config.head_type, config.exit_dropout)
                for layer in config.exit_layers[:-1]
            ],
            config_field="exit_layers",
        )
        for module in heads.modules():
            module._ahf_exit_module = True
        return heads


# ------------------------------------------------------------------------------------------------------ timm
class EarlyExitTimmForImageClassification(TimmBackboneMixin, _VisionEarlyExitMixin, PreTrainedModel):
    """Early exits on any supported timm classifier (ViT/DeiT blocks; ResNet, EfficientNet, MobileNet, ConvNeXt
    stages or blocks).

    The timm model lives in ``self.timm_model`` and is built exactly as
    ``timm.create_model(config.architecture, pretrained=False, num_classes=config.num_labels, **config.model_args)``.
    Use :meth:`from_timm` to start from a timm name and optional local weights.

    Args:
        config: An :class:`~adaptive_hf.early_exit.vision_config.EarlyExitTimmConfig`.
    """

    config_class = EarlyExitTimmConfig
    base_model_prefix = "timm_model"
    input_modalities = ("image",)

    def __init__(self, config: EarlyExitTimmConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.timm_model = create_timm_model(config.architecture, config.num_labels, config.model_args)
        self.exit_heads = self._build_exit_heads(list(config.describe().widths))
        self.post_init()
        self._apply_training_stage()

    @property
    def adapter(self) -> TimmAdapter:
        """The backbone adapter over ``self.timm_model``."""
        cached = self.__dict__.get("_adapter")
        if cached is None or cached.model is not self.timm_model or cached.granularity != self.config.exit_granularity:
            cached = timm_adapter_for(self.timm_model)(self.timm_model, self.config.exit_granularity)
            # Every unit call (the exit loop, calibration, timing) goes through the row-chunking rule below.
            cached.run_layer = functools.partial(_run_unit_in_chunks, cached, self)
            self.__dict__["_adapter"] = cached
        return cached

    @property
    def adapter_class(self) -> type[TimmAdapter]:
        return type(self.adapter)

    def backbone_parameters(self):
        """Parameters of the timm model, its own classifier (the final exit) included."""
        return self.timm_model.parameters()

    def final_exit_parameters(self):
        return iter(())  # the final exit is the timm head, already among the backbone parameters

    def card_tags(self) -> list[str]:
        return ["timm", self.adapter_class.family, self.config.architecture, self.pipeline_tag()]

    def _in_chans(self) -> int:
        return self.config.describe().in_chans

    def _embed(self, pixel_values: torch.Tensor, **kwargs) -> ImageState:
        # After `model.to(memory_format=torch.channels_last)` (much faster CNNs on CPU), feed the stem the same
        # layout; compaction keeps it (ImageState.select), so every stage runs channels_last.
        stem = self.__dict__.get("_stem_conv")
        if stem is None or stem[0] is not self.timm_model:
            stem = self.__dict__["_stem_conv"] = (self.timm_model, stem_conv(self.timm_model))
        conv = stem[1]
        if conv is not None and pixel_values.dim() == 4 and conv.weight.dim() == 4:
            if conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous():
                pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        return self.adapter.embed(pixel_values, **kwargs)

    def _final_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.adapter.final_logits(hidden_states)

    def _unit_costs(self, image_size):
        d = self.config.describe(image_size)
        return d.stem_flops, list(d.unit_flops), list(d.widths), list(d.spatial), d.final_head_flops

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_exit_logits: bool | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **unsupported,
    ) -> EarlyExitImageClassifierOutput | tuple:
        """Classifies a batch of images, exiting early per image in eval mode.

        Args:
            pixel_values: ``(batch, channels, height, width)`` normalized float images.
            labels: ``(batch,)`` class ids; adds ``loss``.
            output_exit_logits: Also return every exit's logits. With policy ``none`` in eval mode this evaluates
                every head on every image (what calibration uses).
            return_dict: Return a tuple when ``False``.
            output_attentions: Accepted as ``None``/``False`` (what peft and the pipelines pass); ``True`` is refused.
            output_hidden_states: Accepted as ``None``/``False``; ``True`` is refused.
            **unsupported: Text inputs given as ``None`` (peft's ``SEQ_CLS`` wrapper passes them) are accepted;
                any other keyword is refused by name.
        """
        check_pixel_forward_options(type(self).__name__, output_attentions, output_hidden_states, unsupported)
        return self._run(pixel_values, labels, output_exit_logits, return_dict)

    # ----------------------------------------------------------------------------------------- timm interop
    @property
    def num_classes(self) -> int:
        """timm's name for ``config.num_labels`` (read by timm's export helpers)."""
        return self.config.num_labels

    @property
    def num_features(self) -> int:
        return self.timm_model.num_features

    @property
    def _model_args(self) -> dict[str, Any]:
        """Everything ``timm.create_model("early_exit_<architecture>", ...)`` needs to rebuild this model.

        timm's ``save_for_hf`` writes this into ``config.json``; it is derived from the config, so calibrated
        settings changed after construction are included.
        """
        config = self.config
        args = dict(config.model_args)
        args["num_classes"] = config.num_labels
        for name in (
            "exit_layers",
            "exit_granularity",
            "head_pooling",
            "head_type",
            "exit_dropout",
            "image_mean",
            "image_std",
            "eval_chunk_elements",
            "exit_policy",
            "exit_threshold",
            "patience",
            "exit_training",
            "exit_loss_weights",
            "distill_temperature",
        ):
            value = getattr(config, name)
            if value is not None:
                args[name] = list(value) if isinstance(value, (list, tuple)) else value
        return args

    @_model_args.setter
    def _model_args(self, value: dict[str, Any]) -> None:
        pass  # timm's factory records its kwargs here; the config is already the source of truth

    @classmethod
    def from_timm(
        cls,
        architecture: str,
        pretrained_weights: str | Path | dict[str, torch.Tensor] | None = None,
        num_labels: int | None = None,
        model_args: dict[str, Any] | None = None,
        **exit_settings: Any,
    ) -> EarlyExitTimmForImageClassification:
        """Builds an early-exit classifier from a timm model name and, optionally, local weights.

        Args:
            architecture: A timm model name, e.g. ``"tf_efficientnet_lite0"``.
            pretrained_weights: A plain timm state dict, or a path to one (``.safetensors``, or a ``.pt``/``.pth``
                file read with ``torch.load(weights_only=True)``). Keys are matched by name: timm's own names, the
                same behind a wrapper prefix (``module.``), or the EfficientNet-PyTorch naming (the packaged
                EfficientNet-Lite0); see :func:`~adaptive_hf.core.vision_backbones.match_timm_names`.
                When ``num_labels`` differs from the weights' classifier, the classifier is re-initialized (a
                warning says so) and every other tensor is loaded.
            num_labels: Number of classes; ``None`` = the weights' classifier width (1000 without weights).
            model_args: Extra ``timm.create_model`` arguments (``img_size``, ``in_chans``, ...).
            **exit_settings: Exit fields (``exit_layers``, ``exit_policy``, ``exit_threshold``, ``patience``,
                ``exit_granularity``, ``exit_training``, ...) and config fields such as ``id2label``. Other keyword
                arguments are added to ``model_args``.
        """
        settings, rest = split_exit_settings(dict(exit_settings))
        for key in ("id2label", "label2id"):
            if key in rest:
                settings[key] = rest.pop(key)
        model_args = {**(model_args or {}), **rest}
        state_dict = read_state_dict(pretrained_weights) if pretrained_weights is not None else None
        if num_labels is None:
            num_labels = _classifier_width(architecture, model_args, state_dict) if state_dict is not None else 1000
        config = EarlyExitTimmConfig(
            architecture=architecture, model_args=model_args, num_labels=num_labels, **settings
        )
        model = cls(config)
        if state_dict is not None:
            model.load_timm_weights(state_dict)
        return model

    def fold_batch_norms(self) -> int:
        """Folds every batch norm that directly follows a convolution into that convolution, for CPU inference.

        Eval-mode batch norm is an affine map per channel, so it becomes the convolution's weights and bias (torch's
        ``fuse_conv_bn_eval``); a timm ``BatchNormAct2d`` keeps its activation. This removes a full pass over every
        feature map, most of the time of the high-resolution stages at large batches, for the adaptive and the
        full-depth runs alike. The 1x1 and depthwise convolutions of the copy also run through faster kernels where
        that pays (a few rows, or 1x1 feature maps, as in the late stages of adaptive inference; see
        :func:`~adaptive_hf.early_exit.vision_folding.folded_copy`). Logits stay equal up to float rounding (checked
        here on a random batch; the fold is refused, and the model left unchanged, when they are not). The folded
        model is for inference only: training and ``save_pretrained`` raise; reload the saved model to train or save.

        Returns:
            The number of batch norms folded.
        """
        if self.training:
            raise ValueError("fold_batch_norms() is for inference: call model.eval() first.")
        folded, count = folded_copy(self.timm_model)
        size = self.config.image_size
        probe = torch.randn(2, self._in_chans(), *size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected, got = self.timm_model(probe), folded(probe)
        if not torch.allclose(got, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()) + 1e-5):
            raise ValueError(
                f"Folding the batch norms of {self.config.architecture!r} changes its outputs (a norm that does not "
                "directly follow the convolution before it); the model was left unchanged."
            )
        stem = stem_conv(self.timm_model)
        if stem is not None and not stem.weight.is_contiguous():
            folded.to(memory_format=torch.channels_last)  # keep the layout the model was given
        self.timm_model = folded
        self.__dict__["_batch_norms_folded"] = count
        return count

    def _check_not_folded(self, action: str) -> None:
        if self.__dict__.get("_batch_norms_folded"):
            raise ValueError(
                f"This model's batch norms were folded for inference (fold_batch_norms()); it cannot {action}. "
                "Reload the saved model instead."
            )

    def save_pretrained(self, *args: Any, **kwargs: Any):
        self._check_not_folded("be saved")
        return super().save_pretrained(*args, **kwargs)

    def load_timm_weights(self, state_dict: dict[str, torch.Tensor]) -> list[str]:
        """Loads a plain timm state dict into ``self.timm_model`` (exit heads untouched).

        Args:
            state_dict: timm-named tensors, or a naming that ``match_timm_names`` accepts (matched by name).

        Returns:
            The names of the timm parameters left as initialized (the classifier when its width differs).
        """
        self._check_not_folded("load timm weights")
        return load_timm_state_dict(self.timm_model, state_dict, self.config.architecture, self.config.num_labels)


def _run_unit_in_chunks(adapter: TimmAdapter, model, index: int, state: ImageState) -> torch.Tensor:
    """Runs a unit on at most ``config.eval_chunk_elements`` input values at a time (eval mode, feature maps only).

    High-resolution CNN stages at batch 64 overflow the CPU caches and run several times slower per image than on
    a few dozen rows; splitting their rows keeps them cache-sized. Eval-mode units treat rows independently, so the
    result is the same; training never splits (batch-norm statistics are over the whole batch).
    """
    hidden = state.hidden_states
    budget = model.config.eval_chunk_elements
    if not budget or adapter.model.training or hidden.dim() != 4 or state.layer_kwargs:
        return type(adapter).run_layer(adapter, index, state)
    rows = max(1, budget // max(1, hidden[0].numel()))
    if hidden.size(0) <= rows:
        return type(adapter).run_layer(adapter, index, state)
    return torch.cat([type(adapter).run_layer(adapter, index, ImageState(part)) for part in hidden.split(rows)])


def _classifier_width(architecture: str, model_args: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> int:
    with torch.device("meta"):
        reference = create_timm_model(architecture, 1000, model_args)
    keys = timm_classifier_keys(reference)
    weight = next((k for k in keys if k.endswith("weight")), None)
    if weight is None:
        return 1000
    tensor = match_timm_names(reference, state_dict, architecture).get(weight)
    return int(tensor.shape[0]) if tensor is not None else 1000


# ------------------------------------------------------------------------------------------ timm registration
TIMM_EARLY_EXIT_PREFIX = "early_exit_"
BUILTIN_TIMM_ARCHITECTURES = (
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "resnet18",
    "resnet50",
    "tf_efficientnet_lite0",
    "efficientnet_b0",
    "mobilenetv2_100",
    "mobilenetv3_large_100",
    "convnext_atto",
    "convnext_tiny",
)


def register_timm_early_exit(architecture: str, name: str | None = None) -> str:
    """Registers ``timm.create_model("early_exit_<architecture>", ...)``, which builds an early-exit classifier.

    Keyword arguments of ``create_model`` that are exit fields go to the config; the others go to the timm
    constructor. ``pretrained=True`` loads the base model's pretrained weights through timm (e.g. with
    ``pretrained_cfg_overlay=dict(file=...)`` offline); a folder written by ``timm.models.save_for_hf(model, dir)``
    reloads with ``timm.create_model("local-dir:" + dir, pretrained=True)``, exit heads and settings included.

    Args:
        architecture: The timm model name to wrap.
        name: The registered name; default ``"early_exit_" + architecture``.

    Returns:
        The registered name.
    """
    import timm
    from timm.models import load_pretrained, register_model

    if not timm.is_model(architecture):
        raise ValueError(f"`architecture` must be a timm model name; got {architecture!r}.")
    name = name or TIMM_EARLY_EXIT_PREFIX + architecture

    def entrypoint(pretrained=False, pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None, **kwargs):
        kwargs.pop("pretrained_model_args", None)
        num_classes = kwargs.pop("num_classes", None)
        # "local-dir:"/"hf-hub:" sources are exports of this very name (timm resolved the name from their config).
        own_checkpoint = isinstance(pretrained_cfg, dict) and pretrained_cfg.get("source") in ("local-dir", "hf-hub")
        weights = None
        if pretrained and not own_checkpoint:
            settings, timm_args = split_exit_settings(dict(kwargs))
            extra = {"num_classes": num_classes} if num_classes is not None else {}
            base = timm.create_model(
                architecture,
                pretrained=True,
                pretrained_cfg=pretrained_cfg,
                pretrained_cfg_overlay=pretrained_cfg_overlay,
                cache_dir=cache_dir,
                **timm_args,
                **extra,
            )
            weights = base.state_dict()
            num_classes = base.num_classes
        model = EarlyExitTimmForImageClassification.from_timm(
            architecture, pretrained_weights=weights, num_labels=num_classes, **kwargs
        )
        cfg = dict(model.timm_model.pretrained_cfg)
        cfg.update(architecture=name, tag=None, hf_hub_id=None, url=None, file=None, state_dict=None, source=None)
        if cfg.get("classifier"):
            classifier = cfg["classifier"]
            classifier = [classifier] if isinstance(classifier, str) else list(classifier)
            cfg["classifier"] = tuple(f"timm_model.{c}" for c in classifier)
        if cfg.get("first_conv"):
            cfg["first_conv"] = f"timm_model.{cfg['first_conv']}"
        if own_checkpoint:
            load_pretrained(model, pretrained_cfg=pretrained_cfg, num_classes=model.num_classes, strict=True)
            cfg.update({k: v for k, v in pretrained_cfg.items() if k in ("mean", "std", "input_size", "crop_pct")})
        model.pretrained_cfg = cfg
        model.default_cfg = cfg
        return model

    entrypoint.__name__ = name
    entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"Early-exit {architecture} (adaptive_hf.EarlyExitTimmForImageClassification)."
    if name not in timm.list_models(name):
        register_model(entrypoint)
    return name
